"""`disam-train-keypoints`: train the learned keypoint detector + descriptor on rendered towns.

Why a command of its own: the keypoint network is trained on exact cross-condition correspondences from
rendered depth and poses (training/keypoint_pairs.py), not on the place-recognition data of `disam-train`; it
shares nothing with that loop but the photometric augmentation. Towns used for training must not be the towns
its figures are reported on: render training towns with their own seeds (`disam-synth --seed 101 --size
640x480 --out towns/101`) and keep the held-out town (seed 11) and the demo town (seed 0) for `disam-bench match`.

    disam-train-keypoints --worlds towns/101 towns/102 --out keypoints.pt [--steps 3000] [--snapshot-every 500]

Snapshots (`keypoints_step500.pt`, ...) are written next to `--out` so a step can be chosen on a validation town
with `disam-bench match --methods learned --keypoints SNAPSHOT --world VALTOWN`; `--out` is the last step.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from tqdm import tqdm

from disam_ros import logs
from disam_ros.cliutil import OneLineParser, positive_float, positive_int
from disam_ros.training.keypoint_pairs import Crop, sample_crop, world_pairs
from disam_ros.training.photometric import augment

if TYPE_CHECKING:  # torch is imported where a step runs: `--help` and argument errors do not wait for it
    import torch

    from disam_ros.model.keypoint_net import KeypointNet

log = logging.getLogger("disam_ros.training.keypoints")


@dataclass(frozen=True)
class KeypointTrainConfig:
    worlds: tuple[Path, ...]
    out: Path
    steps: int = 3000
    batch: int = 4
    crop: int = 256
    lr: float = 1e-3
    seed: int = 0
    snapshot_every: int = 500
    augment: float = 1.0  # photometric augmentation strength (0 = none)
    repeat: float = 0.0  # weight of the detector's repeatability term (training/keypoint_loss.py)
    oversample: tuple[tuple[str, float], ...] = ()  # (condition, weight): its pairs drawn this much more often
    device: str = "cpu"
    progress: bool = True


def to_grey_tensor(rgb: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0)[None]


def draw_batch(rng: np.random.Generator, pairs: list, cams: list, cfg: KeypointTrainConfig) -> list[Crop]:
    """`batch` usable crops from random pairs (a pair with too little overlap is redrawn)."""
    out: list[Crop] = []
    p = pair_weights(pairs, dict(cfg.oversample)) if cfg.oversample else None
    while len(out) < cfg.batch:  # without --oversample: the same draws as when the shipped network was trained
        k = int(rng.integers(len(pairs))) if p is None else int(rng.choice(len(pairs), p=p))
        crop = sample_crop(rng, *pairs[k][:2], cams[pairs[k][2]], cfg.crop)
        if crop is not None:
            if cfg.augment > 0:
                crop.a, crop.b = augment(crop.a, rng, cfg.augment), augment(crop.b, rng, cfg.augment)
            out.append(crop)
    return out


def train_step(net: KeypointNet, opt: torch.optim.Optimizer, crops: list[Crop], device: str,
               repeat: float = 0.0) -> dict:
    import torch

    from disam_ros.training.keypoint_loss import pair_loss

    a = torch.stack([to_grey_tensor(c.a) for c in crops]).to(device)
    b = torch.stack([to_grey_tensor(c.b) for c in crops]).to(device)
    logits, desc = net(torch.cat([a, b]))
    n = len(crops)
    total, stats = 0.0, []
    for i, c in enumerate(crops):
        t = {k: torch.from_numpy(v).to(device) for k, v in
             (("pa", c.pts_a), ("pb", c.pts_b), ("ua", c.unmatched_a))}
        loss, s = pair_loss(logits[i], desc[i], logits[n + i], desc[n + i], t["pa"], t["pb"], t["ua"],
                            repeat=repeat)
        total = total + loss / n
        stats.append(s)
    opt.zero_grad()
    total.backward()
    opt.step()
    return {k: float(np.mean([s[k] for s in stats])) for k in stats[0]} | {"loss": float(total.detach())}


def pair_weights(pairs: list, oversample: dict[str, float]) -> np.ndarray:
    """Drawing probabilities: each pair weighs its query condition's `oversample` weight (default 1)."""
    w = np.array([oversample.get(b.image.parent.parent.name, 1.0) for _, b, _ in pairs], np.float64)
    return w / w.sum()


def condition_weights(text: str) -> tuple[tuple[str, float], ...]:
    """--oversample 'snow=3,rain=2' -> (('snow', 3.0), ('rain', 2.0)); an argparse error names the form."""
    try:
        out = tuple((k.strip(), float(v)) for k, v in (item.split("=") for item in text.split(",") if item.strip()))
    except ValueError:
        out = ()
    if not out or any(not k or not w > 0 for k, w in out):
        raise argparse.ArgumentTypeError(f"{text!r} is not CONDITION=WEIGHT[,...] with weights > 0 (e.g. snow=3)")
    return out


def load_pairs(worlds: tuple[Path, ...]) -> tuple[list, list]:
    pairs, cams = [], []
    for i, root in enumerate(worlds):
        p, cam = world_pairs(root)
        pairs += [(a, b, i) for a, b in p]
        cams.append(cam)
    if not pairs:
        raise ValueError(f"no daylight/query pairs in {', '.join(map(str, worlds))}: render towns with several "
                         "conditions (disam-synth --conditions sunny,night,snow,...)")
    return pairs, cams


def train(cfg: KeypointTrainConfig) -> Path:
    """Train, write snapshots and the final network; returns the final path."""
    import torch

    from disam_ros.model.keypoint_net import KeypointNet, save_keypoint_net

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    pairs, cams = load_pairs(cfg.worlds)
    log.info("%d pairs from %d towns", len(pairs), len(cfg.worlds))
    net = KeypointNet().to(cfg.device).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    meta = {"config": {k: str(v) for k, v in asdict(cfg).items()}, "pairs": len(pairs)}
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(range(1, cfg.steps + 1), disable=not cfg.progress, desc="keypoints", unit="it")
    t0, recent = time.time(), []
    for step in bar:
        recent.append(train_step(net, opt, draw_batch(rng, pairs, cams, cfg), cfg.device, cfg.repeat))
        sched.step()
        if step % 50 == 0:
            avg = {k: np.mean([r[k] for r in recent]) for k in recent[0]}
            bar.set_postfix(loss=f"{avg['loss']:.3f}", matched=f"{avg['matched']:.2f}")
            log.info("step %d loss %.4f desc %.4f det %.4f rep %.4f matched %.3f (%.0f s)", step, avg["loss"],
                     avg["desc"], avg["det"], avg["rep"], avg["matched"], time.time() - t0)
            recent = []
        if cfg.snapshot_every and step % cfg.snapshot_every == 0 and step < cfg.steps:
            save_keypoint_net(cfg.out.with_name(f"{cfg.out.stem}_step{step}{cfg.out.suffix}"), net.eval(),
                              meta | {"step": step})
            net.train()
    save_keypoint_net(cfg.out, net.eval(), meta | {"step": cfg.steps})
    return cfg.out


def parser() -> OneLineParser:
    p = OneLineParser(prog="disam-train-keypoints", description=__doc__.splitlines()[0])
    p.add_argument("--worlds", type=Path, nargs="+", required=True, help="rendered towns (disam-synth, with depth)")
    p.add_argument("--out", type=Path, required=True, help="the trained network (.pt)")
    p.add_argument("--steps", type=positive_int, default=3000)
    p.add_argument("--batch", type=positive_int, default=4, help="pairs per step")
    p.add_argument("--crop", type=positive_int, default=256, help="crop side in pixels, a multiple of 8")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--snapshot-every", type=int, default=500, help="steps between snapshots (0: none)")
    p.add_argument("--augment", type=float, default=1.0, help="photometric augmentation strength (0: none)")
    p.add_argument("--repeat", type=float, default=0.0, help="weight of the detector's repeatability term (0: off)")
    p.add_argument("--oversample", type=condition_weights, default=(),
                   help="draw these query conditions' pairs more often, e.g. snow=3,rain=2")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar; log warnings only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.setup(-1 if args.quiet else 0)
    if args.crop % 8:
        parser().error(f"--crop {args.crop} is not a multiple of 8: use e.g. 256")
    if missing := [str(w) for w in args.worlds if not (w / "sunny" / "images").is_dir()]:
        parser().error(f"{', '.join(missing)}: no sunny/images: render the town first (disam-synth --out DIR)")
    cfg = KeypointTrainConfig(tuple(args.worlds), args.out, args.steps, args.batch, args.crop, args.lr, args.seed,
                              args.snapshot_every, args.augment, args.repeat, args.oversample, args.device,
                              not args.quiet)
    try:
        out = train(cfg)
    except ValueError as exc:
        print(f"disam-train-keypoints: error: {exc}", file=sys.stderr)
        return 2
    print(f"disam-train-keypoints: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
