"""`disam-bench retrieval accuracy`: what each compact map mode costs against exact mode.

For a synthetic world (reference map, other conditions as queries; correct = retrieved pose within 5 m and
10 degrees of the query, the paper's coarse threshold) and Nordland (summer map, winter queries; correct =
within +-2 frames; near-black frames dropped), every mode is built from the same encoded features and
scored on: R@1 and R@5 of the coarse-to-fine answer, R@1 of the coarse stage alone, top-1 agreement with
exact mode (same image / within one map image), and confidence of right vs wrong answers. Encoders: a
coarse + fine DISAM model (random-init "tiny" unless checkpoints are given) and a raw-pixel baseline.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from disam_ros.cliutil import OneLineParser, check_output_files
from disam_ros.data.folders import iter_frames, load_condition, read_image
from disam_ros.fsutil import atomic_write_text
from disam_ros.geometry import quat_angle_deg
from disam_ros.maps.builder import build_map
from disam_ros.maps.descriptors import estimate_map_size, settings_for_mode
from disam_ros.maps.localization_map import LocalizationMap
from disam_ros.retrieval.search import Localizer, SearchConfig

if TYPE_CHECKING:
    import torch

# torch (and the table encoder, which imports it) is imported where it is used: a typo or --help answers without it

MODES = ("exact", "exact16", "pooled", "pca", "ivf", "hnsw", "pca-full", "ivf-full", "hnsw-full", "ivfpq")
NORDLAND_DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "data" / "nordland_trimmed_dev"
DARK_MAX_PIXEL = 100  # tunnel frames: max pixel ~85-88 (overlay) in both seasons


class PixelEncoder:
    """Raw-pixel baseline: the image resized to size x size, each colour channel mean-subtracted, so eq. 16
    becomes the mean over channels of normalised cross-correlation."""

    def __init__(self, size: int = 32, domains: tuple[str, ...] = ("ref", "query")) -> None:
        self.size, self.domains, self.checkpoint_sha256 = size, domains, None
        self.content_shape = (3, size, size)

    def encode(self, images: list[np.ndarray], domain: str) -> torch.Tensor:
        import torch

        arr = np.stack([cv2.resize(im, (self.size, self.size), interpolation=cv2.INTER_AREA) for im in images])
        x = torch.from_numpy(arr).float().permute(0, 3, 1, 2)
        return x - x.mean(dim=(2, 3), keepdim=True)


@dataclass
class Dataset:
    """Map images with poses, queries, and a correctness test over retrieved map indices (Q, k)."""

    name: str
    map_images: list[np.ndarray]
    positions: np.ndarray
    quats: np.ndarray
    queries: dict[str, list[np.ndarray]]
    correct: dict[str, Callable[[np.ndarray], np.ndarray]]


def synthetic_dataset(root: Path, reference: str = "sunny") -> Dataset:
    ref = load_condition(root, reference, require_poses=True)
    queries, correct = {}, {}
    names = sorted(p.name for p in root.iterdir() if (p / "images").is_dir() and p.name != reference)
    for name in names:
        q = load_condition(root, name, require_poses=True)
        queries[name] = [f.image for f in iter_frames(q)]
        dpos = np.linalg.norm(q.trajectory.positions[:, None] - ref.trajectory.positions[None], axis=2)
        dang = quat_angle_deg(q.trajectory.quats[:, None], ref.trajectory.quats[None])
        ok = (dpos <= 5.0) & (dang <= 10.0)
        correct[name] = lambda top, ok=ok: ok[np.arange(len(top))[:, None], top]
    return Dataset("synthetic", [f.image for f in iter_frames(ref)], ref.trajectory.positions,
                   ref.trajectory.quats, queries, correct)


def nordland_dataset(root: Path, tolerance: int = 2, first: int = 0) -> Dataset:
    """Summer map, winter queries, frames `first`.. of the route (894: the held-out second half that training
    never reads, docs/training.md)."""
    summer = sorted(glob.glob(str(root / "summer" / "*.png")))
    winter = sorted(glob.glob(str(root / "winter" / "*.png")))
    if not summer or [Path(p).name for p in summer] != [Path(p).name for p in winter]:
        raise FileNotFoundError(f"{root}: expected summer/ and winter/ with the same PNG names")
    s_img, w_img = [read_image(p) for p in summer], [read_image(p) for p in winter]
    keep = np.flatnonzero([i >= first and a.max() > DARK_MAX_PIXEL and b.max() > DARK_MAX_PIXEL
                           for i, (a, b) in enumerate(zip(s_img, w_img))])
    pos = np.stack([keep.astype(np.float64), np.zeros(len(keep)), np.zeros(len(keep))], 1)
    quats = np.tile([0.0, 0.0, 0.0, 1.0], (len(keep), 1))

    def correct(top: np.ndarray) -> np.ndarray:
        return np.abs(keep[top] - keep[:, None]) <= tolerance

    return Dataset("nordland", [s_img[i] for i in keep], pos, quats, {"winter": [w_img[i] for i in keep]},
                   {"winter": correct})


def _encode(enc: Any, images: list[np.ndarray], domain: str) -> np.ndarray:
    import torch

    out = [enc.encode(images[i:i + 128], domain) for i in range(0, len(images), 128)]
    return torch.cat(out).float().cpu().numpy()


def _features(enc: Any, ds: Dataset, domain: str) -> np.ndarray:
    """Map images under the reference domain, each query set under its own condition's encoder when the
    model has one (DISAM's query-side domain choice), else the reference domain."""
    parts = [_encode(enc, ds.map_images, domain)]
    for q, images in ds.queries.items():
        parts.append(_encode(enc, images, q if q in enc.domains else domain))
    return np.concatenate(parts)


def evaluate(ds: Dataset, coarse: Any, fine: Any, label: str, modes: tuple[str, ...], workdir: Path,
             domain: str) -> list[dict[str, Any]]:
    """Every mode on every query set of `ds`, from features encoded once."""
    from disam_ros.bench.table_encoder import TableEncoder

    n = len(ds.map_images)
    qnames = list(ds.queries)
    table_c = TableEncoder(_features(coarse, ds, domain))
    table_f = None if fine is None else TableEncoder(_features(fine, ds, domain), checkpoint_sha256="f" * 64)
    frames = [(TableEncoder.image_for(i), float(i), ds.positions[i], ds.quats[i], f"{i:06d}") for i in range(n)]
    rows, exact_top = [], {}
    for mode in modes:
        out = workdir / f"{ds.name}_{label}_{mode}"
        build_map(frames, table_c, table_f, out, "ref", settings_for_mode(mode), progress=False, overwrite=True)
        m = LocalizationMap.load(out)
        loc = Localizer(m, table_c, table_f, SearchConfig(device="cpu", top_k=5))
        offset = n
        for q in qnames:
            rows.append(_score(ds, q, m, loc, offset, label, mode, exact_top))
            offset += len(ds.queries[q])
    return rows


def _score(ds: Dataset, q: str, m: LocalizationMap, loc: Localizer, offset: int, label: str, mode: str,
           exact_top: dict[str, np.ndarray]) -> dict[str, Any]:
    from disam_ros.bench.table_encoder import TableEncoder

    nq = len(ds.queries[q])
    t0 = time.perf_counter()
    res = [loc.localize(TableEncoder.image_for(offset + i), "query") for i in range(nq)]
    ms = 1e3 * (time.perf_counter() - t0) / nq
    top5 = np.array([[i for i, _ in r.topk] + [r.topk[0][0]] * (5 - len(r.topk)) for r in res])
    coarse1 = np.array([r.coarse_topn[0][0] for r in res])
    ok5 = ds.correct[q](top5)
    top1 = top5[:, 0]
    exact = exact_top.setdefault(f"{label}/{q}", top1)
    conf = np.array([r.confidence for r in res])
    sure = conf >= 0.5
    disk = sum(m.disk_bytes().get(f, 0) for f in ("coarse.npy", "coarse.faiss", "fine.npy", "pca.npz"))
    est = estimate_map_size(len(m), tuple(m.model_info("coarse")["content_shape"]),
                            None if m.fine_shape is None else tuple(m.model_info("fine")["content_shape"]), m.settings)
    return {
        "dataset": ds.name, "queries": q, "encoder": label, "mode": mode, "n_map": len(m), "n_query": nq,
        "r1": float(ok5[:, 0].mean()), "r5": float(ok5.any(axis=1).mean()),
        "r1_coarse": float(ds.correct[q](coarse1[:, None])[:, 0].mean()),
        "agree": float(np.mean(top1 == exact)), "agree_pm1": float(np.mean(np.abs(top1 - exact) <= 1)),
        "conf_right": float(conf[ok5[:, 0]].mean()) if ok5[:, 0].any() else float("nan"),
        "conf_wrong": float(conf[~ok5[:, 0]].mean()) if (~ok5[:, 0]).any() else float("nan"),
        "r1_conf50": float(ok5[sure, 0].mean()) if sure.any() else float("nan"), "kept_conf50": float(sure.mean()),
        "ms_per_query": ms, "kib_per_image": disk / len(m) / 1024.0,
        "ram_kib_per_image": (est.ram - 200 * len(m)) / len(m) / 1024.0,  # resident coarse search, names aside
    }


def render(rows: list[dict[str, Any]]) -> str:
    head = ("| dataset | queries | encoder | mode | R@1 | R@5 | R@1 coarse | = exact | = exact +-1 | "
            "conf right / wrong | R@1 at conf>=0.5 (kept) | disk KiB/img | RAM KiB/img |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['queries']} | {r['encoder']} | {r['mode']} | {r['r1']:.3f} | {r['r5']:.3f} | "
            f"{r['r1_coarse']:.3f} | {r['agree']:.2f} | {r['agree_pm1']:.2f} | "
            f"{r['conf_right']:.2f} / {r['conf_wrong']:.2f} | {r['r1_conf50']:.3f} ({r['kept_conf50']:.2f}) | "
            f"{r['kib_per_image']:.1f} | {r['ram_kib_per_image']:.2f} |")
    return "\n".join(lines)


def _encoders(args: argparse.Namespace) -> list[tuple[str, Any, Any, str]]:
    """(label, coarse, fine, reference domain) for the DISAM model and the raw-pixel baseline."""
    import torch

    from disam_ros.model import DisamNet, Encoder, preset

    if args.coarse:
        coarse = Encoder.from_checkpoint(args.coarse, device="cpu")
        fine = Encoder.from_checkpoint(args.fine, device="cpu") if args.fine else None
        label = "disam " + Path(args.coarse).stem
    else:
        nets = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            cfg = preset(args.preset, ["sunny", "night"])
            nets.append(Encoder(DisamNet(cfg), cfg, device="cpu"))
        coarse, fine, label = nets[0], nets[1], f"disam {args.preset} random-init"
    domain = args.domain or coarse.domains[0]
    return [(label, coarse, fine, domain), ("raw pixels 32x32", PixelEncoder(32), None, "ref")]


def _world(args: argparse.Namespace, tmp: Path) -> Path:
    if args.world:
        return args.world
    from disam_ros.data.synthetic import WorldConfig, make_world

    cfg = WorldConfig(seed=0, image_size=64, frames=60 if args.quick else args.frames,
                      conditions=("sunny", "sunny_repeat", "overcast", "night", "snow"), workers=2)
    return make_world(cfg, tmp / "world", progress=False)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="disam-bench retrieval accuracy", description=__doc__.splitlines()[0])
    p.add_argument("--world", type=Path, help="synthetic world root (default: render one, seed 0, 64 px)")
    p.add_argument("--frames", type=int, default=200, help="frames per condition of the rendered world")
    p.add_argument("--nordland", type=Path, default=NORDLAND_DEFAULT, help="nordland_trimmed_dev root")
    p.add_argument("--nordland-from", type=int, default=0,
                   help="first Nordland frame used (894: the held-out second half; default 0, the whole route)")
    p.add_argument("--no-world", action="store_true", help="Nordland only (skip the synthetic world)")
    p.add_argument("--coarse", type=Path, help="coarse checkpoint (default: random-init --preset model)")
    p.add_argument("--fine", type=Path, help="fine checkpoint")
    p.add_argument("--domain", help="reference domain of the model (default: its first domain)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--threads", type=int, default=1, help="torch threads (latency is not measured here)")
    p.add_argument("--quick", action="store_true", help="60-frame world, no Nordland")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    check_output_files(p, args, "--json")
    import torch

    torch.set_num_threads(args.threads)
    modes = tuple(m for m in args.modes.split(",") if m)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="disam-bench-accuracy-") as tmp:
        datasets = [] if args.no_world and not args.quick else [synthetic_dataset(_world(args, Path(tmp)))]
        if not args.quick and args.nordland.is_dir():
            datasets.append(nordland_dataset(args.nordland, first=args.nordland_from))
        elif not args.quick:
            print(f"Nordland not found at {args.nordland}: skipped", file=sys.stderr)
        for ds in datasets:
            for label, coarse, fine, domain in _encoders(args):
                enc_modes = modes if fine is not None else tuple(m for m in modes if m in ("exact", "pooled"))
                rows += evaluate(ds, coarse, fine, label, enc_modes, Path(tmp), domain)
                print(f"  {ds.name} / {label}: done", file=sys.stderr)
    print(render(rows))
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=2))
    return 0
