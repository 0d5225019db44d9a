"""The node's calibration route on a split of the Nordland dev route: what `disam-calibrate` fits on one part,
what `disam-calibrate --from-map` carries to a map of another part, and what the tracker `disam-eval` runs then
publishes there, in-process, on the same functions the command line calls.

Why: a calibration's figures are worth only what the node delivers. `disam-sequence-eval`'s score-matrix rows
ran their own loop (other speed settings, their own single-frame feature, the observation model estimated
without the place graph) and disagreed with this route on the same split; `disam-sequence-eval --route node`
(the default for models) gives these rows instead, so one split gives one set of figures.

The route in commands, for one split (frame k of the route at k * FRAME_M metres along x and k * FRAME_S
seconds; dark frames dropped as everywhere in the Nordland protocol)::

    disam-build-map --dataset ROOT --condition summer_fit --domain summer --coarse CKPT --geometry none --out A
    disam-calibrate --map A --dataset ROOT --conditions winter_fit --domain winter NODE_ARGS
    disam-build-map --dataset ROOT --condition summer_test ... --out B
    disam-calibrate --map B --from-map A
    disam-eval --map B --dataset ROOT --conditions winter_test --domain winter --no-verify NODE_ARGS
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.eval.calibrate import calibrate
from disam_ros.eval.calibration_transfer import transfer_calibration
from disam_ros.eval.nordland import nordland_frames, nordland_paths
from disam_ros.eval.offline import LazyQueries, QueryGroup, evaluate_modes, tracker_config
from disam_ros.eval.offline import build_parser as eval_parser
from disam_ros.eval.queries import folder_queries
from disam_ros.eval.scoring import TrackedFrame
from disam_ros.maps.build_map import MapBuildConfig, build_map_from_folder
from disam_ros.maps.localization_map import LocalizationMap
from disam_ros.maps.map_calibration import write_calibration
from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
from disam_ros.tracking.calibration import ece
from disam_ros.tracking.tracker import TrackerConfig, publish_threshold

log = logging.getLogger(__name__)

FRAME_M = 2.5  # metres per route frame: the node's default 5 m tolerance and mass radius are then +-2 frames
FRAME_S = 0.2  # seconds per route frame: the longest run of dropped dark frames stays under max_gap_s (10 s)
# The tracker settings of the route, as command-line options (what a user types to repeat it): up to 3 frames a
# step (37.5 m/s at 2.5 m and 0.2 s), speed changes rare on a train, 20-frame windows (SeqSLAM's length), and no
# standstill hold: it compares 32x24 grey thumbnails, and consecutive 64x32 Nordland frames of a snowfield differ
# that little while the train moves (the belief then held on one place for 6 frames, 7-20 m behind, "certain").
NODE_ARGS = ("--max-speed-mps", "37.5", "--speed-change-prob", "0.05", "--window-frames", "20",
             "--standstill-ratio", "0")
MODES = ("single", "sequence", "window")
HALVES_GAP = 10  # route frames left out between the default halves (neighbouring frames see the same scene)


@dataclass(frozen=True)
class RouteModel:
    """One model through the route: its checkpoint and the encoder domains of map and query images."""

    name: str
    checkpoint: Path
    map_domain: str = "summer"
    query_domain: str = "winter"


def route_config(modes: Sequence[str] = MODES) -> TrackerConfig:
    """NODE_ARGS parsed exactly as `disam-eval` parses them (retrieval only: the Nordland map has no geometry)."""
    args = eval_parser().parse_args(["--map", ".", "--dataset", ".", "--out", ".", "--no-verify",
                                     "--modes", ",".join(modes), *NODE_ARGS])
    return tracker_config(args)


def write_part(images: dict[str, list[Path]], frames: np.ndarray, part: tuple[int, int], name: str,
               root: Path) -> int:
    """ROOT/<season>_<name>/images (links to the route's PNGs) + poses.txt (TUM) for the kept frames in [A, B)."""
    keep = np.flatnonzero((frames >= part[0]) & (frames < part[1]))
    for season, paths in images.items():
        cdir = root / f"{season}_{name}"
        (cdir / "images").mkdir(parents=True, exist_ok=True)
        lines = []
        for i in keep:
            k = int(frames[i])
            os.symlink(paths[i].resolve(), cdir / "images" / f"{k:05d}{paths[i].suffix}")
            lines.append(f"{k * FRAME_S:.3f} {k * FRAME_M:.3f} 0 0 0 0 0 1")
        (cdir / "poses.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(keep)


def _map(root: Path, name: str, model: RouteModel, out: Path, progress: bool = False) -> Path:
    return build_map_from_folder(MapBuildConfig(out=out, coarse=model.checkpoint, dataset=root,
                                                condition=f"summer_{name}", domain=model.map_domain,
                                                geometry="none", device="cpu", progress=progress))


def _drive(root: Path, name: str) -> list[QueryGroup]:
    return [QueryGroup(f"winter_{name}", None, LazyQueries(folder_queries, root, f"winter_{name}"))]


def _reloc(map_dir: Path, model: RouteModel) -> Relocalizer:
    return Relocalizer.from_map(map_dir, RelocalizerConfig(coarse_checkpoint=str(model.checkpoint),
                                                           domain=model.query_domain))


def run_route(model: RouteModel, images: dict[str, list[Path]], frames: np.ndarray, fit: tuple[int, int],
              test: tuple[int, int], precision: float = 0.99, modes: Sequence[str] = MODES,
              work: Path | None = None, progress: bool = False) -> list[dict]:
    """Fit on `fit`, copy to a map of `test`, track `test`: one row per mode (see `mode_row`). `progress`:
    a log line per step and the tools' progress bars (a model takes minutes on a CPU)."""
    with tempfile.TemporaryDirectory(prefix="disam-route-", dir=work) as tmp:
        root = Path(tmp) / "data"
        for name, part in (("fit", fit), ("test", test)):
            write_part(images, frames, part, name, root)
        config = route_config(modes)
        say = log.info if progress else log.debug
        say("%s: maps of the fit and test parts", model.name)
        map_a = _map(root, "fit", model, Path(tmp) / "map_fit", progress)
        map_b = _map(root, "test", model, Path(tmp) / "map_test", progress)
        reloc = _reloc(map_a, model)
        say("%s: calibrating on the fit part (disam-calibrate)", model.name)
        cal = calibrate(reloc, _drive(root, "fit"), modes, config, precision, f"route {fit[0]}:{fit[1]}",
                        progress=progress)
        reloc.map.close()
        write_calibration(map_a, cal)
        source, target = LocalizationMap.load(map_a), LocalizationMap.load(map_b)
        write_calibration(map_b, transfer_calibration(source, target, "fit map", "test map"))
        source.close()
        target.close()
        reloc = _reloc(map_b, model)
        say("%s: calibration carried to the test map (--from-map); tracking the test part", model.name)
        tracked, trackers, *_ = evaluate_modes(reloc, _drive(root, "test"), modes, config, 0, progress=progress)
        reloc.map.close()
    tol = (config.tolerance_m, config.tolerance_deg)
    return [mode_row(model.name, test, m, [f for f in tracked if f.mode == m], cal.stats.get(m, {}),
                     publish_threshold(t.calibrated, t.suggested_min_confidence, None), tol)
            for m, t in trackers.items()]


def mode_row(name: str, test: tuple[int, int], mode: str, frames: list[TrackedFrame], stats: dict,
             threshold: float, tol: tuple[float, float]) -> dict:
    """What disam-sequence-eval prints for a mode: R@1 of the answered place, coverage, what the published
    frames were promised (their mean confidence) and what they delivered, and the fit's own held-out folds."""
    right = np.array([f.correct(tol) for f in frames], bool)
    place = np.array([f.retrieval_errors()[0] <= tol[0] + 1e-9 for f in frames], bool)
    conf = np.array([f.confidence if f.est_position is not None else np.nan for f in frames], float)
    pub = np.nan_to_num(conf, nan=-np.inf) >= threshold
    answered = np.isfinite(conf)
    cv = (stats.get("features") or {}).get(stats.get("feature"), {})
    nan = float("nan")
    return {"set": f"{name} (test {test[0]}:{test[1]})", "mode": mode, "route": "node", "queries": len(frames),
            "r1": float(place.mean()), "threshold": threshold, "coverage": float(pub.mean()),
            "precision": float(right[pub].mean()) if pub.any() else nan,
            "expected": float(conf[pub].mean()) if pub.any() else nan,
            "published": int(pub.sum()), "right": int(right[pub].sum()), "feature": stats.get("feature", "?"),
            "feature_table": stats.get("features") or {},
            "cv_coverage": cv.get("cv_coverage") or 0.0, "cv_delivered": _num(cv.get("cv_delivered")),
            "cv_expected": _num(cv.get("cv_expected")), "margin": cv.get("margin") or 0.0,
            "ece": ece(conf[answered], right[answered]) if answered.any() else nan,
            "ece_fit": _num(stats.get("ece")), "update_ms_median": nan, "r1_fit": _num(stats.get("accuracy"))}


def route_images(root: Path) -> tuple[dict[str, list[Path]], np.ndarray]:
    """The route's kept frames (dark ones dropped, as the score-matrix loop drops them) as image paths per season,
    and their frame numbers."""
    _, _, keep = nordland_frames(root)
    return {s: [p[i] for i in keep] for s, p in nordland_paths(root).items()}, keep


def untrained_checkpoint(path: Path, seed: int = 0, preset_name: str = "tiny") -> Path:
    """A randomly initialised encoder of the DISAM architecture saved as a checkpoint (the bar to beat), one
    `summer` domain for map and queries alike, as `disam-sequence-eval`'s untrained set encodes both."""
    from disam_ros.model import preset, save_checkpoint, seeded_net

    cfg = preset(preset_name, ["summer"])
    return save_checkpoint(path, seeded_net(cfg, seed), cfg, parts=("encoders",))


def route_models(sets: Sequence[str], checkpoints: Sequence[Path], map_domain: str, query_domain: str, seed: int,
                 tmp: Path) -> list[RouteModel]:
    """`disam-sequence-eval`'s score sets that are models, as the route takes them; ValueError (one line) for a set
    that is not a model (pixels have no encoder to build a map with)."""
    from disam_ros.shipped import ASSETS

    models = []
    for name in sets:
        if name in ("untrained", "untrained_small"):
            size = "small" if name == "untrained_small" else "tiny"
            models.append(RouteModel(f"untrained {size} encoder", untrained_checkpoint(tmp / f"{name}.pt", seed, size),
                                     "summer", "summer"))
        elif name == "shipped":
            models.append(RouteModel("shipped demo encoder", ASSETS / "demo_coarse.pt", "summer", "snow"))
        else:
            raise ValueError(f"--sets {name}: not a model, so it has no node route (no map can be built with it); "
                             "add --route scores for its score-matrix rows")
    return models + [RouteModel(f"checkpoint {c.name}", c, map_domain, query_domain) for c in checkpoints]


def default_split(frames: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """The kept route's first and second half as frame ranges, HALVES_GAP frames apart."""
    cut = int(frames[len(frames) // 2])
    return (0, cut - HALVES_GAP), (cut, int(frames[-1]) + 1)


def node_rows(args: Any) -> list[dict]:
    """`disam-sequence-eval --route node`: every model of args.sets and args.checkpoint through `run_route` on the
    --fit / --test split (default: the kept route's first and second half, HALVES_GAP frames apart)."""
    images, frames = route_images(args.data)
    fit, test = (args.fit, args.test) if args.fit else default_split(frames)
    rows = []
    with tempfile.TemporaryDirectory(prefix="disam-route-models-") as tmp:
        for m in route_models(args.sets, args.checkpoint, args.map_domain, args.query_domain, args.seed, Path(tmp)):
            log.info("node route: %s, fit %d:%d, test %d:%d", m.name, *fit, *test)
            rows += run_route(m, images, frames, fit, test, args.precision, progress=not args.quiet)
    return rows


def _num(x: float | None) -> float:
    return float("nan") if x is None else float(x)


__all__ = ["FRAME_M", "FRAME_S", "HALVES_GAP", "NODE_ARGS", "RouteModel", "default_split", "mode_row", "node_rows",
           "route_config", "route_images", "route_models", "run_route", "untrained_checkpoint", "write_part"]
