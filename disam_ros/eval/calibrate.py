"""`disam-calibrate`: fit the map's calibrated confidence on drives with ground truth, and store it in the map.

    disam-calibrate --map MAP --dataset ROOT --conditions dusk,night,snow [--modes single,sequence,window]
    disam-calibrate --map MAP --bag dusk=bags/dusk --bag bags/night --world ROOT
    disam-calibrate --map MAP --remove
    disam-calibrate --map TARGET --from-map SOURCE     # SOURCE's fit onto a map built with the same model

Why: a SLAM back end fed a wrong loop closure corrupts its map, so `min_confidence` must mean what it says.
The node's stream localizer (`disam_ros.tracking.tracker.Tracker`) runs over the calibration drives exactly as it
runs on the vehicle; per mode, an isotonic fit (tracking/bounded_fit.py) maps the mode's raw score to a LOWER
bound (Clopper-Pearson, 95 %) of the share of answers within the tolerance, block by block, so a block
promises only what its evidence supports. The default `min_confidence` is `--precision` itself: only blocks whose
bound reaches it are published. Why more than a fit: a threshold fitted on one route part promised 99 % and
delivered 76-98 % on another. So the drives are also cut into `--folds` contiguous route segments; each is held
out in turn, and the distance its needed threshold lay above the threshold fitted without it becomes a margin
on the raw score (the band below it is not published). The summary prints what the held-out segments
delivered without that margin (the evidence for it) and the coverage left with it. Everything is chosen on the
calibration drives only: evaluate on other drives (disam-eval).

The same run scales each mode's position covariance so that the right answers' mean normalised
estimation error squared (NEES) is 3 on these drives: the belief's spread plus the map-spacing floor is
the shape, the calibration drives give the scale.

With `--verify` (maps with geometry) a second pass runs verification as the node does and fits, per mode, the
confidence of VERIFIED poses from their inlier counts: per inlier bin the Clopper-Pearson 95 % lower bound of
their precision at the tolerance (maps/verified_confidence.py). The node then publishes that confidence for a
verified frame instead of the retrieval's. The retrieval fit above stays retrieval-only (verified frames carry
the solver's covariance, which would skew the scale).

The fit holds for the tracker settings it was made with (speed band, window, contrast, tolerance): they are
stored with it, and a tracker started with other settings says so in its diagnostics. The observation
model estimated from the map is stored too, so the node does not re-estimate it at start.

`--domain D` forces encoder domain D for every calibration frame (as disam-eval --domain does); the calibration
records it (config.domain, source), since its fit holds for that domain. `--from-map SOURCE` copies SOURCE's
calibration onto --map when both were built with the same checkpoints (eval/calibration_transfer.py).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from disam_ros import logs
from disam_ros.cliutil import (
    OneLineParser,
    name_list,
    os_error_line,
    positive_float,
    positive_int,
)
from disam_ros.eval.calibration_transfer import settings_mismatch, transfer_calibration
from disam_ros.eval.offline import add_tracker_args, evaluate_modes, query_groups, tracker_config
from disam_ros.eval.scoring import TrackedFrame
from disam_ros.maps.localization_map import LocalizationMap
from disam_ros.maps.map_calibration import (
    COVARIANCE_SCALE_RANGE,
    MapCalibration,
    finite_or_none,
    remove_calibration,
    write_calibration,
)
from disam_ros.maps.verified_confidence import ALPHA, fit_verified
from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
from disam_ros.retrieval import SearchConfig
from disam_ros.tracking.bounded_fit import FOLDS, choose_bounded
from disam_ros.tracking.calibration import Calibration, ece
from disam_ros.tracking.tracker import TrackerConfig, config_summary

log = logging.getLogger(__name__)


FOLD_GAP = 0.02  # share of a drive kept out between a held-out segment and the frames its fit uses


def fit_mode(frames: Sequence[TrackedFrame], mode: str, tolerance: tuple[float, float],
             precision: float, folds: int = FOLDS) -> tuple[Calibration, float | None, dict]:
    """Bounded isotonic fit of one mode's answered frames (`tracking.bounded_fit.choose_bounded`): per block the
    Clopper-Pearson 95 % lower bound of its precision, the admitted region moved up by the margin that
    cross-validation over `folds` contiguous segments of the drives asked for, on the candidate feature that
    still publishes the most. Returns the fit, the threshold (None: no block's bound reaches `precision`) and
    what the fit saw (frames, answered, accuracy, coverage and precision at the threshold, ECE, and per
    candidate its margin, coverage, AUC and what the held-out segments delivered without the margin)."""
    fs = [f for f in frames if f.mode == mode]
    ans = [f for f in fs if f.est_position is not None and np.isfinite(f.feature)]
    if len(ans) < 2:
        raise ValueError(f"mode {mode}: {len(ans)} answered calibration frames; calibrate on drives the map covers "
                         "(more frames, other --conditions)")
    ok = np.array([f.correct(tolerance) for f in ans], float)
    right_nees = np.array([f.nees for f in ans if f.correct(tolerance) and np.isfinite(f.nees)])
    # the position covariance, scaled so that right answers have a mean NEES of 3 (3 DOF) on these drives
    scale = float(right_nees.mean() / 3.0) if len(right_nees) else 1.0
    lo, hi = COVARIANCE_SCALE_RANGE  # what a map accepts (MapCalibration.from_dict says why)
    if not lo <= scale <= hi:
        log.warning("mode %s: covariance scale %.3g from %d right answers is outside [%g, %g]; storing the nearest "
                    "bound (check the calibration drives' ground truth)", mode, scale, len(right_nees), lo, hi)
        scale = min(max(scale, lo), hi)
    cands = candidate_features(ans)
    where = drive_share(fs)
    choice = choose_bounded(cands, ok, np.array([where[id(f)] for f in ans]), precision, folds=folds, gap=FOLD_GAP,
                            mode=mode, tolerance=tolerance,
                            extra={"feature": FEATURE_TEXT.get(mode, ""), "covariance_scale": scale})
    cal, thr = choice.fit, choice.threshold
    conf = cal.apply(cands[choice.key])
    pub = conf >= thr
    stats = {"frames": len(fs), "answered": len(ans), "accuracy": float(ok.mean()), "ece": ece(conf, ok),
             "coverage": float(pub.sum() / len(fs)), "precision": float(ok[pub].mean()) if pub.any() else None,
             "feature": choice.key, "folds": folds,
             "features": {k: {n: finite_or_none(v) for n, v in t.items()} for k, t in choice.table.items()}}
    return cal, (float(thr) if np.isfinite(thr) else None), stats


def drive_share(frames: Sequence[TrackedFrame]) -> dict[int, float]:
    """Each frame's place along its drive as the share of the drive's frames before it (0 at its start, just
    under 1 at its end): the route coordinate the cross-validation folds cut, so a held-out segment is the same
    stretch of route in every calibration drive."""
    by_drive: dict[str, list[TrackedFrame]] = {}
    for f in frames:
        by_drive.setdefault(f.condition, []).append(f)
    return {id(f): i / len(fs) for fs in by_drive.values() for i, f in enumerate(fs)}


FEATURE_TEXT = {"single": "distinctiveness",
                "sequence": "support (mean z of the answered places) or mass (log-odds near the best place)",
                "window": "support (mean z of the answered places) or mass (log-odds near the best place)"}


def candidate_features(frames: Sequence[TrackedFrame]) -> dict[str, np.ndarray]:
    """The finite features every answered frame carries, in the tracker's order (its default first); frames
    without a `features` record give their `feature` under the mode's default name."""
    keys = [k for k in frames[0].features if all(k in f.features for f in frames)]
    cands = {k: np.array([f.features[k] for f in frames], float) for k in keys}
    cands = {k: v for k, v in cands.items() if np.isfinite(v).all()}
    default = "distinctiveness" if frames[0].mode == "single" else "support"
    return cands or {default: np.array([f.feature for f in frames], float)}


def fit_verified_mode(frames: Sequence[TrackedFrame], mode: str, tolerance: tuple[float, float]
                      ) -> tuple[dict | None, dict]:
    """The verified-confidence record of one mode (None: no frame verified) and what it saw."""
    ver = [f for f in frames if f.mode == mode and f.verified]
    seen = {"frames": sum(f.mode == mode for f in frames), "verified": len(ver),
            "right": sum(f.correct(tolerance) for f in ver)}
    if not ver:
        return None, seen
    return fit_verified([f.inliers for f in ver], [f.correct(tolerance) for f in ver]), seen


def calibrate(reloc: Relocalizer, groups: Sequence, modes: Sequence[str], config: TrackerConfig, precision: float,
              source: str, progress: bool = True, folds: int = FOLDS, verify: bool = False) -> MapCalibration:
    """Run the tracker over the calibration drives and fit every mode (the map's own calibration is ignored
    while doing so: a calibration is fitted on raw scores, never on an older fit). Retrieval only: what is fitted
    is the retrieval's confidence and covariance scale (a verified pose's covariance comes from its solver, so
    refined frames would skew the scale), and it is faster."""
    if verify and not reloc.map.has_geometry:
        raise ValueError(f"--verify: the map has no geometry ({reloc.map.geometry_note}): rebuild it with "
                         "disam-build-map --geometry auto, or calibrate without --verify")
    reloc.map.calibration = None
    verify_on = replace(config.verify, enabled=True)
    config = replace(config, verify=replace(config.verify, enabled=False))
    tracked, trackers, *_ = evaluate_modes(reloc, groups, modes, config, 0, progress)
    tol = (config.tolerance_m, config.tolerance_deg)
    fits, thresholds, stats = {}, {}, {}
    for mode in modes:
        fits[mode], thresholds[mode], stats[mode] = fit_mode(tracked, mode, tol, precision, folds)
    if verify:
        checked, *_ = evaluate_modes(reloc, groups, modes, replace(config, verify=verify_on), 0, progress)
        for mode in modes:
            record, stats[mode]["verified"] = fit_verified_mode(checked, mode, tol)
            if record is not None:
                fits[mode] = replace(fits[mode], extra={**fits[mode].extra, "verified": record})
    obs = next((t.observation for t in trackers.values() if t.observation is not None), None)
    summary, source = forced_domain(config_summary(config), source, getattr(reloc.selector, "override", ""))
    return MapCalibration(modes=fits, min_confidence=thresholds, tolerance=tol, observation=obs,
                          precision_target=precision, fitted=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          source=source, config=summary, stats=stats)


def forced_domain(summary: dict, source: str, domain: str) -> tuple[dict, str]:
    """The settings and source text with a forced encoder domain recorded ("" = the selector chose per frame:
    nothing added). Why: a fit made with one domain forced holds for that domain, and the user must see it."""
    if not domain:
        return summary, source
    return {**summary, "domain": domain}, f"{source}; encoder domain forced to {domain}"


def summary_lines(cal: MapCalibration) -> list[str]:
    out = []
    for mode, st in cal.stats.items():
        thr = cal.min_confidence.get(mode)
        at = (f"min_confidence {thr:.3f}: coverage {100 * st['coverage']:.1f} %, precision "
              f"{100 * st['precision']:.1f} %" if thr is not None and st.get("precision") is not None
              else f"no block's bound reached {100 * cal.precision_target:g} % precision (that takes "
                   f"{frames_to_promise(cal.precision_target)} right frames in a row in one block: calibrate on more "
                   "drives, or lower --precision)")
        out.append(f"{mode:9s} {st['answered']}/{st['frames']} answered, {100 * st['accuracy']:.1f} % within "
                   f"({cal.tolerance[0]:g} m, {cal.tolerance[1]:g} deg), ECE {st['ece']:.3f} (on the fitting "
                   f"drives); {at}; feature {st.get('feature', '?')}")
        cv = (st.get("features") or {}).get(st.get("feature"), {})
        if cv.get("cv_published") is not None:
            out.append(f"{'':9s} held-out segments ({st.get('folds', '?')} folds, fitted without each): expected "
                       f"{_pct(cv.get('cv_expected'))}, delivered {_pct(cv.get('cv_delivered'))} at coverage "
                       f"{_pct(cv.get('cv_coverage'))}; margin {cv.get('margin') or 0:.3g} on the raw score")
        if st["accuracy"] >= 1.0:
            out.append(f"{'':9s} warning: no wrong answer on these drives, so neither the margin nor the feature "
                       "could be checked against one; add harder drives (night, another route part)")
        v, rec = st.get("verified"), cal.modes[mode].extra.get("verified")
        if v is not None:
            bounds = ", ".join(f">={e}: {c:.3f}" for e, c in zip(rec["edges"], rec["confidence"])) if rec else "none"
            out.append(f"{'':9s} verified {v['verified']}/{v['frames']} frames, {v['right']} right; verified "
                       f"confidence by inliers (95 % lower bound) {bounds}")
    return out


def frames_to_promise(precision: float, alpha: float = ALPHA) -> int:
    """The fewest frames, all right, whose Clopper-Pearson lower bound reaches `precision` (alpha^(1/n) >=
    precision): 299 for 99 %, 59 for 95 %."""
    return math.ceil(math.log(alpha) / math.log(precision))


def _pct(x: float | None) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:.1f} %"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="disam-calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--map", required=True, type=Path, help="map directory (disam-build-map); the calibration is "
                   "written into it")
    p.add_argument("--remove", action="store_true", help="drop the map's calibration and exit")
    p.add_argument("--from-map", type=Path, metavar="SOURCE", help="copy SOURCE's calibration onto --map (both "
                   "built with the same coarse/fine checkpoints; the observation model is re-estimated on --map)")
    p.add_argument("--dataset", type=Path, help="dataset root ROOT/<condition>/images + poses.txt")
    p.add_argument("--conditions", type=name_list, help="with --dataset: the calibration drives (required: keep the "
                   "drives you evaluate on out of it)")
    p.add_argument("--bag", action="append", help="calibration bag, 'NAME=PATH' or PATH")
    p.add_argument("--world", type=Path, help="with --bag: dataset root whose world.yaml gives each drive's weather")
    p.add_argument("--image-topic"), p.add_argument("--pose-topic")
    p.add_argument("--precision", type=positive_float, default=0.99,
                   help="precision the default min_confidence must reach on the calibration drives (default 0.99)")
    p.add_argument("--folds", type=positive_int, default=FOLDS,
                   help=f"contiguous route segments for cross-validation (default {FOLDS}; at least 2): the margin "
                        "and the expected-vs-delivered report come from them")
    p.add_argument("--coarse", default="", help="coarse checkpoint (default: the one recorded in the map)")
    p.add_argument("--fine", default="", help="fine checkpoint (default: the one recorded in the map)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--weather", help="weather for every drive (default: world.yaml, else sunny)")
    p.add_argument("--domain", default="", help="force one encoder domain for every query (default: the condition "
                   "selector chooses per frame, as the node does); recorded with the calibration")
    p.add_argument("--every", type=positive_int, default=1, help="use every N-th image")
    p.add_argument("--verify", action="store_true", help="also fit verified poses' confidence from their inlier "
                   "counts (a second pass with verification; maps with geometry)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_tracker_args(p)
    return p


def check_args(args: argparse.Namespace) -> None:
    """ValueError (one line) for what would fail only after the models are loaded."""
    if not args.map.is_dir():
        raise ValueError(f"--map {args.map}: no such map folder; pass a folder written by disam-build-map")
    if args.remove:
        return
    if args.from_map is not None:
        check_from_map_args(args)
        return
    if bool(args.dataset) == bool(args.bag):
        raise ValueError("pass the calibration drives as --dataset ROOT --conditions A,B or as --bag (one of them)")
    if args.dataset is not None and not args.conditions:
        raise ValueError("--dataset needs --conditions: name the calibration drives, and evaluate on others")
    if args.dataset is not None and not args.dataset.is_dir():
        raise ValueError(f"--dataset {args.dataset}: no such folder; pass a dataset root ROOT/<condition>/images")
    if not 0.0 < args.precision < 1.0:
        raise ValueError(f"--precision {args.precision} must lie in (0, 1), e.g. 0.99")
    if args.folds < 2:
        raise ValueError(f"--folds {args.folds}: cross-validation needs at least 2 segments (default {FOLDS})")


def check_from_map_args(args: argparse.Namespace) -> None:
    """ValueError (one line) for --from-map combined with what only a fit uses: a copy runs no drive."""
    if not args.from_map.is_dir():
        raise ValueError(f"--from-map {args.from_map}: no such map folder; pass a calibrated map folder")
    if args.dataset or args.bag or args.domain:
        raise ValueError("--from-map copies a fitted calibration: drop --dataset/--bag/--domain (they are for "
                         "fitting one)")


def given_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Destinations of the options written on the command line (`--x v` or `--x=v`), defaults left out."""
    words = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    return {a.dest for a in parser._actions if words & set(a.option_strings)}


def copy_calibration(args: argparse.Namespace, given: set[str] | None = None) -> MapCalibration:
    """--from-map: SOURCE's calibration re-targeted to --map (calibration_transfer). The copy holds for the settings
    SOURCE was fitted with and takes them; a tracker setting written on the command line (`given`; None: every
    one) that differs from them is refused in one line."""
    source, target = LocalizationMap.load(args.from_map), LocalizationMap.load(args.map)
    try:
        cal = transfer_calibration(source, target, str(args.from_map), str(args.map))  # model checked first
        differ = settings_mismatch(cal, config_summary(tracker_config(args)))
        if differ := [k for k in differ if given is None or k in given]:
            raise ValueError(f"{args.from_map} was calibrated with other tracker settings ({', '.join(differ)}): "
                             "drop those options to take its own, or calibrate --map itself")
        return cal
    finally:
        source.close()
        target.close()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    logs.setup(-1)  # its result is the table and the written file; the library's info lines would bury them
    try:
        check_args(args)
        if args.remove:
            done = remove_calibration(args.map)
            print(f"disam-calibrate: {'removed the calibration of' if done else 'no calibration in'} {args.map}")
            return 0
        if args.from_map is not None:
            cal = copy_calibration(args, given_options(parser, argv))
            path = write_calibration(args.map, cal)
            print(f"disam-calibrate: {cal.source}\ncalibration: {path}")
            return 0
        reloc = Relocalizer.from_map(args.map, RelocalizerConfig(
            coarse_checkpoint=args.coarse, fine_checkpoint=args.fine, domain=args.domain,
            search=SearchConfig(device=args.device)))
        groups = query_groups(args, str(reloc.map.domain))
        source = (f"{args.dataset} conditions {','.join(args.conditions)}" if args.dataset
                  else "bags " + ", ".join(args.bag))
        cal = calibrate(reloc, groups, args.modes, tracker_config(args), args.precision, source, not args.quiet,
                        args.folds, args.verify)
        reloc.map.close()
        path = write_calibration(args.map, cal)
    except ValueError as exc:  # MapError included
        print(f"disam-calibrate: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"disam-calibrate: error: {os_error_line(exc, 'check the paths and that the map is writable')}",
              file=sys.stderr)
        return 2
    print("\n".join(summary_lines(cal)))
    print(f"calibration: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
