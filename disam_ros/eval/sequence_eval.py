"""Offline comparison of single-frame, sequence (Bayes filter) and window (SeqSLAM) localization on the Nordland
dev route, with calibrated confidence: R@1, coverage and delivered precision on a route part the fit never saw.

`--route node` (the default): each model goes the node's way (eval/node_route.py: disam-build-map, disam-calibrate
on the fit part, --from-map onto a map of the test part, the tracker on the test part), so the figures are the
node's. `--route scores`: this module's own loop over score matrices (winter queries against the summer map, dark
frames dropped when either season's 99th-percentile pixel is below 20), for baselines that are no model: raw
pixels and SeqSLAM's patch-normalised pixels; it runs the Tracker's per-frame steps (place contrast, support, the
posterior mass) with NORDLAND_CONFIG, and its single-frame feature is the posterior's log-odds, not the
retrieval's distinctiveness, so its rows are not the node's. Place i is at (i m, 0, 0) there; right = +-2 frames.

    disam-sequence-eval --json seq.json                                   # untrained encoder, halves, node route
    disam-sequence-eval --checkpoint real --fit 0:889 --test 894:1788     # a model, an explicit split
    disam-sequence-eval --route scores --sets pixels,patchnorm            # score-matrix baselines

The measured tables are in docs/evaluation.md and docs/notes/evaluation.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from disam_ros import logs
from disam_ros.cliutil import OneLineParser
from disam_ros.eval.nordland import NORDLAND_DEFAULT, nordland_frames
from disam_ros.shipped import ASSETS, checkpoint_arg
from disam_ros.tracking.bounded_fit import FOLDS, choose_bounded
from disam_ros.tracking.calibration import ece
from disam_ros.tracking.place_graph import PlaceGraph
from disam_ros.tracking.sequence import ObservationModel, SequenceConfig, SequenceLocalizer
from disam_ros.tracking.track_parts import SUPPORT_FRAMES, PlaceContrast, support

log = logging.getLogger(__name__)

MODES = ("single", "sequence", "window")
SET_NAMES = {"untrained": "untrained tiny encoder", "untrained_small": "untrained small encoder",
             "pixels": "raw pixels 32x32", "patchnorm": "patch-normalised pixels 32x16",
             "shipped": "shipped demo encoder (summer/snow)"}
FeatureFn = Callable[[list[np.ndarray]], np.ndarray]
CONTRAST_FRAMES = 20.0  # the Tracker's default place_contrast_frames
FOLD_GAP = 10.0  # frames between a cross-validation fold and the frames its fit uses (neighbours look alike)
NORDLAND_CONFIG = SequenceConfig(min_speed_mps=0.0, max_speed_mps=3.0, max_gap_s=60.0, mass_radius_m=2.0,
                                 teleport_prob=0.001, speed_change_prob=0.05, window_frames=20, window_speeds=9,
                                 window_min_speed_mps=1.0)


@dataclass(frozen=True, eq=False)
class ScoreSet:
    """One map/query pairing: scores (Q, N) query x map, map positions (N, 3), query stamps (Q,) and the
    ground-truth positions of the queries (Q, 3)."""

    name: str
    scores: np.ndarray
    map_positions: np.ndarray
    map_scores: np.ndarray  # (R, N) map rows against the map, for the observation model
    map_rows: np.ndarray  # (R,) map index of each row of map_scores
    stamps: np.ndarray
    truth: np.ndarray


def run_mode(s: ScoreSet, config: SequenceConfig, observation: ObservationModel,
             contrast_frames: float = CONTRAST_FRAMES) -> dict[str, np.ndarray]:
    """Feed a score matrix frame by frame as the node's Tracker does: per-place contrast before the filter
    (sequence/window), and the candidate confidence features the Tracker offers its calibration (the track's
    support and the log-odds of the mass near the best place; single: the log-odds of the best place's
    mass). Per frame the estimate's map index, those features, NEES and update time."""
    loc = SequenceLocalizer(PlaceGraph.build(s.map_positions), config, observation)
    tracked = config.mode != "single"
    contrast = PlaceContrast(len(s.map_positions), contrast_frames) if tracked and contrast_frames > 0 else None
    answered: deque[float] = deque(maxlen=SUPPORT_FRAMES)
    idx, feature, mass, nees, ms = [], [], [], [], []
    for q in range(len(s.scores)):
        t0 = time.perf_counter()
        scores = contrast(s.scores[q]) if contrast is not None else s.scores[q]
        est = loc.update(scores, float(s.stamps[q]))
        ms.append((time.perf_counter() - t0) * 1e3)
        if est.reinitialised:
            answered.clear()
        answered.append(float(observation.frame_z(scores)[est.index]))
        err = s.truth[q] - est.position
        idx.append(est.index)
        feature.append(support(answered) if tracked else est.log_odds)
        mass.append(est.log_odds)
        nees.append(float(err @ np.linalg.solve(est.covariance, err)))
    return {"index": np.array(idx), "features": {"support": np.array(feature), "mass": np.array(mass)}
            if tracked else {"distinctiveness": np.array(feature)}, "nees": np.array(nees), "ms": np.array(ms)}


def correct(s: ScoreSet, index: np.ndarray, tol_m: float) -> np.ndarray:
    return np.linalg.norm(s.map_positions[index] - s.truth, axis=1) <= tol_m + 1e-9


def observation_for(s: ScoreSet, exclusion_m: float) -> ObservationModel:
    """Estimated from the map's own scores only (never from the queries)."""
    return ObservationModel.estimate(s.map_scores, s.map_rows, s.map_positions, exclusion_m)


def compare(fit: ScoreSet, test: ScoreSet, config: SequenceConfig, tol_m: float, precision: float = 0.99,
            exclusion_m: float = 5.0, contrast_frames: float = CONTRAST_FRAMES, folds: int = FOLDS,
            gap_frames: float = FOLD_GAP) -> list[dict]:
    """Per mode: the confidence feature, bounded calibration and threshold chosen on `fit` (disam-calibrate's
    `choose_bounded`: cross-validated over `folds` contiguous parts of the fit segment), everything reported on
    `test`: what the fit promised the frames it published there (expected) beside what they delivered."""
    rows = []
    obs_fit, obs_test = observation_for(fit, exclusion_m), observation_for(test, exclusion_m)
    for mode in MODES:
        cfg = replace(config, mode=mode)
        a = run_mode(fit, cfg, obs_fit, contrast_frames)
        ok_a = correct(fit, a["index"], tol_m)
        choice = choose_bounded(a["features"], ok_a, fit.stamps, precision, folds=folds, gap=gap_frames,
                                mode=mode, tolerance=(tol_m, 180.0))
        cal, thr = choice.fit, choice.threshold
        if ok_a.all():
            log.warning("%s, %s: every fit frame is right, so neither the margin nor the feature could be checked "
                        "against a wrong one", fit.name, mode)
        b = run_mode(test, cfg, obs_test, contrast_frames)
        ok_b = correct(test, b["index"], tol_m)
        conf = cal.apply(b["features"][choice.key])
        pub = conf >= thr
        cv = choice.table[choice.key]
        rows.append({
            "set": test.name, "mode": mode, "queries": len(ok_b), "r1": float(ok_b.mean()),
            "threshold": thr, "coverage": float(pub.mean()),
            "precision": float(ok_b[pub].mean()) if pub.any() else float("nan"),
            "expected": float(conf[pub].mean()) if pub.any() else float("nan"),
            "published": int(pub.sum()), "right": int(ok_b[pub].sum()),
            "cv_coverage": cv["cv_coverage"], "cv_delivered": cv["cv_delivered"], "cv_expected": cv["cv_expected"],
            "margin": cv["margin"],
            "ece": ece(conf, ok_b), "ece_fit": ece(cal.apply(a["features"][choice.key]), ok_a),
            "feature": choice.key, "feature_table": choice.table,
            "nees_mean": float(b["nees"].mean()), "nees_median": float(np.median(b["nees"])),
            "gain": obs_test.gain, "self_separation": obs_test.self_separation,
            "update_ms_median": float(np.median(b["ms"])), "r1_fit": float(ok_a.mean())})
    return rows


def render(rows: list[dict]) -> str:
    """The table, without NEES: Nordland's places are frame numbers that map and query share, so most errors are
    exactly 0 and a covariance test says nothing (the JSON keeps the values)."""
    head = ("| scores | mode | R@1 +-2 | coverage | expected | delivered | held-out folds: coverage / delivered | "
            "feature | ECE (fit) | ms/frame |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['set']} | {r['mode']} | {100 * r['r1']:.1f} % | {100 * r['coverage']:.1f} % | "
                     f"{_pct(r['expected'])} | {_pct(r['precision'])} ({r['right']}/{r['published']}) | "
                     f"{100 * r['cv_coverage']:.1f} % / {_pct(r['cv_delivered'])} | {r['feature']} | "
                     f"{r['ece']:.3f} ({r['ece_fit']:.3f}) | {_ms(r['update_ms_median'])} |")
    lines.append("NEES: not shown (frame-number places shared by map and queries: most errors are exactly 0)")
    return "\n".join(lines)


def _pct(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{100 * x:.1f} %"


def _ms(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:.2f}"


# --- Nordland: images -> features -> score matrices --------------------------------------------------------

def untrained_features(seed: int = 0, preset_name: str = "tiny") -> Callable[[list[np.ndarray]], np.ndarray]:
    """Eq. 16 coarse vectors of a randomly initialised encoder of the DISAM architecture (the bar to beat)."""
    import torch

    from disam_ros.maps.descriptors import coarse_vectors
    from disam_ros.model import Encoder, preset, seeded_net

    cfg = preset(preset_name, ["summer"])
    enc = Encoder(seeded_net(cfg, seed), cfg, device="cpu")
    return lambda images: torch.cat([coarse_vectors(enc.encode(images[i:i + 64], "summer"))
                                     for i in range(0, len(images), 64)]).numpy()


def pixel_features(size: int = 32) -> Callable[[list[np.ndarray]], np.ndarray]:
    """Raw pixels at size x size, each colour channel mean-subtracted, scored by eq. 16."""
    import cv2
    import torch

    from disam_ros.maps.descriptors import coarse_vectors

    def fn(images: list[np.ndarray]) -> np.ndarray:
        arr = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])
        x = torch.from_numpy(arr).float().permute(0, 3, 1, 2)
        return coarse_vectors(x - x.mean(dim=(2, 3), keepdim=True)).numpy()

    return fn


def patch_normalised_features(width: int = 32, height: int = 16, patch: int = 4) -> FeatureFn:
    """SeqSLAM's image difference made a descriptor: grey, width x height, every patch x patch block scaled to
    zero mean and unit variance (so a block's brightness and contrast do not count), then L2-normalised, so
    the inner product ranks places as SeqSLAM's sum of absolute differences roughly does."""
    import cv2

    def fn(images: list[np.ndarray]) -> np.ndarray:
        out = []
        for im in images:
            g = cv2.resize(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), (width, height), interpolation=cv2.INTER_AREA)
            b = g.astype(np.float64).reshape(height // patch, patch, width // patch, patch).transpose(0, 2, 1, 3)
            b = b.reshape(b.shape[0], b.shape[1], -1)
            b = (b - b.mean(axis=2, keepdims=True)) / (b.std(axis=2, keepdims=True) + 1.0)
            v = b.reshape(-1)
            out.append(v / max(float(np.linalg.norm(v)), 1e-12))
        return np.stack(out).astype(np.float32)

    return fn


def shipped_features(query: bool, map_domain: str = "summer", query_domain: str = "snow") -> FeatureFn:
    """Eq. 16 coarse vectors of the shipped demo encoder (trained on the synthetic town only: Nordland is as
    unseen as data gets): the map through its `summer` encoder, the winter queries through `snow`."""
    import torch

    from disam_ros.maps.descriptors import coarse_vectors
    from disam_ros.model import Encoder

    enc = Encoder.from_checkpoint(ASSETS / "demo_coarse.pt", device="cpu")
    domain = query_domain if query else map_domain
    return lambda images: torch.cat([coarse_vectors(enc.encode(images[i:i + 64], domain))
                                     for i in range(0, len(images), 64)]).numpy()


def feature_pairs(name: str, seed: int) -> tuple[FeatureFn, FeatureFn]:
    """(map features, query features) of a named score set."""
    if name in ("untrained", "untrained_small"):
        fn = untrained_features(seed, "small" if name == "untrained_small" else "tiny")
        return fn, fn
    if name == "pixels":
        return pixel_features(), pixel_features()
    if name == "patchnorm":
        return patch_normalised_features(), patch_normalised_features()
    if name == "shipped":
        return shipped_features(query=False), shipped_features(query=True)
    raise ValueError(f"score set {name!r} is unknown: use one of {list(SET_NAMES)}")


def segment_set(name: str, map_vec: np.ndarray, query_vec: np.ndarray, frames: np.ndarray,
                keep: np.ndarray | slice) -> ScoreSet:
    """One contiguous route segment as its own map and queries (place i at (frame number i m, 0, 0))."""
    m, q, f = map_vec[keep], query_vec[keep], frames[keep].astype(np.float64)
    pos = np.stack([f, np.zeros_like(f), np.zeros_like(f)], axis=1)
    return ScoreSet(name, q @ m.T, pos, m @ m.T, np.arange(len(m)), f, pos)


def halves(name: str, map_vec: np.ndarray, query_vec: np.ndarray, frames: np.ndarray) -> tuple[ScoreSet, ScoreSet]:
    """First and second contiguous half of the route, each its own map and queries."""
    cut = len(frames) // 2
    return (segment_set(f"{name} (first half)", map_vec, query_vec, frames, slice(0, cut)),
            segment_set(f"{name} (second half)", map_vec, query_vec, frames, slice(cut, None)))


def frame_range(text: str) -> tuple[int, int]:
    """'0:894' -> (0, 894): the route's frame numbers [A, B) (file names images-NNNNN), as --fit / --test take
    them."""
    a, sep, b = text.partition(":")
    try:
        lo, hi = int(a), int(b)
    except ValueError:
        lo, hi = 0, -1
    if not sep or not 0 <= lo < hi:
        raise argparse.ArgumentTypeError(f"{text!r} is not a frame range A:B with 0 <= A < B, e.g. 0:894")
    return lo, hi


def segments(name: str, map_vec: np.ndarray, query_vec: np.ndarray, frames: np.ndarray, fit: tuple[int, int],
             test: tuple[int, int]) -> tuple[ScoreSet, ScoreSet]:
    """The fit and test segments given as frame ranges; ValueError (one line) when they overlap or hold fewer
    than 50 kept frames (too few to fit a calibration or to measure one)."""
    if fit[0] < test[1] and test[0] < fit[1]:
        raise ValueError(f"--fit {fit[0]}:{fit[1]} and --test {test[0]}:{test[1]} overlap: the test segment must be "
                         "one the fit never saw")
    out = []
    for label, (lo, hi) in (("fit", fit), ("test", test)):
        keep = np.flatnonzero((frames >= lo) & (frames < hi))
        if len(keep) < 50:
            raise ValueError(f"--{label} {lo}:{hi} holds {len(keep)} usable frames (dark ones dropped): give a "
                             "segment of at least 50, within the route's frames "
                             f"{int(frames.min())}:{int(frames.max()) + 1}")
        out.append(segment_set(f"{name} ({label} {lo}:{hi})", map_vec, query_vec, frames, keep))
    return out[0], out[1]


def checkpoint_features(path: Path, domain: str) -> FeatureFn:
    """Eq. 16 coarse vectors of a user's checkpoint (disam-train's model.pt or an exported one) through the
    encoder of `domain`."""
    import torch

    from disam_ros.maps.descriptors import coarse_vectors
    from disam_ros.model import Encoder

    enc = Encoder.from_checkpoint(path, device="cpu")
    if domain not in enc.domains:
        raise ValueError(f"--checkpoint {path}: no domain {domain!r} (it has {', '.join(enc.domains)}): set "
                         "--map-domain / --query-domain")
    return lambda images: torch.cat([coarse_vectors(enc.encode(images[i:i + 64], domain))
                                     for i in range(0, len(images), 64)]).numpy()


def run_sets(args: argparse.Namespace) -> list[dict]:
    """Every chosen score set and checkpoint: fitted on the fit segment, measured on the test segment."""
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    summer, winter, frames = nordland_frames(args.data)
    pairs = [(SET_NAMES[k], *feature_pairs(k, args.seed)) for k in args.sets]
    pairs += [(f"checkpoint {c.name}", checkpoint_features(c, args.map_domain),
               checkpoint_features(c, args.query_domain)) for c in args.checkpoint]
    rows = []
    for name, map_fn, query_fn in pairs:
        log.info("scoring %s (%d map and %d query frames)", name, len(summer), len(winter))
        mv, qv = map_fn(summer), query_fn(winter)
        fit, test = segments(name, mv, qv, frames, args.fit, args.test) if args.fit else halves(name, mv, qv, frames)
        rows += compare(fit, test, NORDLAND_CONFIG, tol_m=2.0, precision=args.precision,
                        contrast_frames=args.contrast_frames)
    log.info("scored %d set(s) in %.0f s", len(pairs), time.perf_counter() - t0)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="disam-sequence-eval", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=NORDLAND_DEFAULT, help="nordland_trimmed_dev folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the untrained encoder")
    p.add_argument("--precision", type=float, default=0.99, help="precision the publishing threshold aims at")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: a bounded, comparable run)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--contrast-frames", type=float, default=CONTRAST_FRAMES,
                   help="the Tracker's place_contrast_frames (0: off)")
    p.add_argument("--sets", default=None,
                   help=f"comma-separated score sets, from {','.join(SET_NAMES)} (default: untrained with "
                        "the node route, all with --route scores; none with --checkpoint)")
    p.add_argument("--checkpoint", type=checkpoint_arg, action="append", default=[],
                   help="also score this model (disam-train's model.pt, an exported checkpoint, or 'real': the "
                        "shipped real-camera default); repeatable")
    p.add_argument("--map-domain", default="summer", help="--checkpoint: the map images' encoder (default summer)")
    p.add_argument("--query-domain", default="winter",
                   help="--checkpoint: the queries' encoder (default winter)")
    p.add_argument("--fit", type=frame_range, help="fit segment A:B of route frame numbers (default: first half)")
    p.add_argument("--test", type=frame_range, help="test segment A:B, disjoint from --fit (default: second half)")
    p.add_argument("--route", choices=("node", "scores"), default="node", help="node (default): models through "
                   "disam-calibrate, --from-map and the tracker as the node runs them (eval/node_route.py); scores: "
                   "this module's score-matrix loop, for pixel baselines")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars, only the table")
    args = p.parse_args(argv)
    logs.setup(-1 if args.quiet else 0)
    default_sets = "" if args.checkpoint else ("untrained" if args.route == "node" else ",".join(SET_NAMES))
    args.sets = [k.strip() for k in (args.sets if args.sets is not None else default_sets).split(",") if k.strip()]
    unknown = [k for k in args.sets if k not in SET_NAMES]
    if unknown or not (args.sets or args.checkpoint):
        p.error(f"--sets {unknown or 'empty'}: use names from {','.join(SET_NAMES)}")
    if (args.fit is None) != (args.test is None):
        p.error("give --fit and --test together (or neither: first and second half)")
    missing = [str(c) for c in args.checkpoint if not c.is_file()]
    if missing:
        p.error(f"--checkpoint {missing[0]}: no such file; pass disam-train's model.pt or an exported checkpoint")
    try:
        if args.route == "node":
            from disam_ros.eval.node_route import node_rows

            rows = node_rows(args)
        else:
            rows = run_sets(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"disam-sequence-eval: error: {exc}", file=sys.stderr)
        return 2
    print(render(rows))
    if args.json:
        args.json.write_text(json.dumps({"suite": "sequence_eval", "config": NORDLAND_CONFIG.__dict__,
                                         "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
