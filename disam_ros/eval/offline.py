"""`disam-eval`: offline evaluation, with the node's retrieval code path run straight on folders or bags.

    disam-eval --map MAP --dataset WORLD [--conditions night,snow] [--modes single,sequence,window] --out report/
    disam-eval --map MAP --bag night=bags/night --bag bags/snow --world WORLD --out report/

Per query: the condition's encoder is chosen exactly as the node chooses it (image stamp -> daylight at the
map's site, weather as a driver would set it), then the node's stream localizer (`disam_ros.tracking.tracker.Tracker`)
in each mode: single (coarse-to-fine retrieval), sequence (Bayes filter over map places), window (SeqSLAM);
each drive starts from a reset tracker. When the map has geometry every answer is verified and refined as the
node does it (`--no-verify`: retrieval only, faster). The report breaks the results down per condition for the
first mode, puts the modes side by side (R@1, coverage and precision at the publishing threshold, ECE, NEES)
with a reliability diagram and a precision-vs-coverage plot, and scores retrieval-only against refined poses
(eval/poses.py). Online evaluation (replay into a running node) is `disam-eval-online`.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from disam_ros.cliutil import (
    OneLineParser,
    name_list,
    non_negative_float,
    non_negative_int,
    os_error_line,
    output_dir_error,
    positive_float,
    positive_int,
    probability_or_one,
)
from disam_ros.eval.keyframe_replay import KeyframeReplay, late_on_frames, replay_config
from disam_ros.eval.kidnap import KidnappedQueries, parse_kidnap, recoveries, recovery_rows, write_recoveries
from disam_ros.eval.metrics import DEFAULT_RECALL_NS, nees
from disam_ros.eval.plots import ExamplePair
from disam_ros.eval.poses import poses_text
from disam_ros.eval.prior_sim import PriorNoise
from disam_ros.eval.queries import Query, bag_queries, folder_conditions, folder_queries, world_weather
from disam_ros.eval.report import CANDIDATES
from disam_ros.eval.scoring import (
    THRESHOLDS,
    Answer,
    TrackedFrame,
    attempt_record,
    is_correct,
    mode_rows_text,
    query_result,
    summary_rows,
    write_report,
)
from disam_ros.eval.tracker_args import add_tracker_args, tracker_config
from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
from disam_ros.retrieval import SearchConfig
from disam_ros.threads import apply_threads
from disam_ros.tracking.tracker import Tracker, TrackerConfig, TrackStep, publish_threshold


@dataclass(frozen=True)
class QueryGroup:
    """One drive: its condition name, the weather a driver would set for it, its queries, and its camera's
    intrinsics (`pose.camera.Intrinsics` from camera.yaml or the bag's CameraInfo; None: the map camera's)."""

    condition: str
    weather: str | None
    queries: Iterable[Query]
    camera: Any = None
    camera_source: str = ""


def answer(reloc: Relocalizer, q: Query) -> tuple[Answer, object]:
    t0 = time.perf_counter()
    sel, res = reloc.localize(q.image, q.stamp)
    latency = time.perf_counter() - t0
    if not res.ok:
        return Answer(None, latency_s=latency, domain=sel.domain), res
    return Answer(int(res.index), np.asarray(res.position), np.asarray(res.quat),
                  tuple(int(i) for i, _ in res.topk), latency, sel.domain), res


def example_pair(reloc: Relocalizer, q: Query, res: object, correct: bool, domain: str) -> ExamplePair | None:
    """Query and match side by side with their Grad-SAM maps (paper Fig. 1), when the map image exists."""
    match = reloc.map_image(res.index)
    if match is None:
        return None
    q_heat, m_heat = reloc.activation_maps(res, q.image, domain)
    return ExamplePair(q.image, match, f"{q.condition} {q.name} [{domain}] -> {reloc.map.names[res.index]}",
                       correct, q_heat, m_heat)


class ScoredRun:
    """Per-query results, answers and up to `per_condition` example pairs of a run (one per drive reset),
    shared by the single-frame and the tracker evaluations so both score and pick examples alike."""

    def __init__(self, reloc: Relocalizer, per_condition: int) -> None:
        self.reloc, self.per_condition = reloc, per_condition
        self.results, self.examples, self.answers, self.shown = [], [], [], 0

    def new_drive(self) -> None:
        self.shown = 0

    def add(self, q: Query, a: Answer, res: object) -> None:
        m = self.reloc.map
        r = query_result(q, a, m.positions, m.names)
        self.results.append(r)
        self.answers.append(a)
        if a.index is not None and self.shown < self.per_condition:
            ex = example_pair(self.reloc, q, res, is_correct(r, THRESHOLDS[-1]), a.domain)
            if ex is not None:
                self.examples.append(ex)
                self.shown += 1


def evaluate(reloc: Relocalizer, groups: Sequence[QueryGroup], examples_per_condition: int = 1,
             progress: bool = True, default_weather: str = "sunny"):
    """Run every query; returns (QueryResults, ExamplePairs, Answers)."""
    run = ScoredRun(reloc, examples_per_condition)
    for g in groups:
        reloc.selector.set_weather(g.weather or default_weather)
        run.new_drive()
        for q in tqdm(g.queries, desc=f"eval {g.condition}", disable=not progress, unit="img"):
            run.add(q, *answer(reloc, q))
    return run.results, run.examples, run.answers


def tracked_frame(mode: str, q: Query, step: TrackStep, feature: float, features: dict[str, float] | None = None,
                  map_poses: tuple[np.ndarray, np.ndarray] | None = None) -> TrackedFrame:
    """The published pose (res.position: refined where verified) and, from `map_poses` (positions, quats), the
    retrieval-only pose of the answered place (res.index)."""
    res = step.result
    if not res.ok:
        return TrackedFrame(mode, q.condition, q.name, np.asarray(q.position), np.asarray(q.quat), None, None,
                            float("nan"), float("nan"), False, float("nan"), stamp=float(q.stamp))
    pos = np.asarray(res.position, float)
    v = res.verification
    place = {} if map_poses is None else {"place_position": np.asarray(map_poses[0][res.index], float),
                                          "place_quat": np.asarray(map_poses[1][res.index], float)}
    checked = {} if v is None else {"verified": bool(v.verified), "verification": str(v.outcome),
                                    "inliers": int(v.inliers), "refine_ms": float(v.ms)}
    if v is not None:
        checked["attempts"] = [attempt_record(a, q.position, q.quat) for a in v.attempts]
    if v is not None and v.verified and map_poses is not None:
        checked.update(keyframe_index=int(v.index), keyframe_position=np.asarray(map_poses[0][v.index], float),
                       keyframe_quat=np.asarray(map_poses[1][v.index], float))
    return TrackedFrame(mode, q.condition, q.name, np.asarray(q.position), np.asarray(q.quat), pos,
                        np.asarray(res.quat, float), float(res.confidence), feature, step.calibrated,
                        nees(np.asarray(q.position) - pos, res.covariance), dict(features or {}), **place, **checked,
                        stamp=float(q.stamp), covariance=np.asarray(res.covariance, float).reshape(6, 6))


def evaluate_modes(reloc: Relocalizer, groups: Sequence[QueryGroup], modes: Sequence[str],
                   config: TrackerConfig | None = None, examples_per_condition: int = 0, progress: bool = True,
                   default_weather: str = "sunny", prior: PriorNoise | None = None,
                   keyframes: KeyframeReplay | None = None):
    """Every query through a Tracker per mode (each drive from a reset belief). Returns (TrackedFrames,
    {mode: Tracker}, and for the FIRST mode: QueryResults, ExamplePairs, Answers as `evaluate` gives them: the
    retrieval-only pose of the answered place, also where verification refined the published one).
    `prior`: single-mode frames get a simulated fix around their true position (eval/prior_sim.py).
    `keyframes`: verification beside the frame loop, paced or at a camera rate, each drive's record kept there
    (eval/keyframe_replay.py)."""
    config = config or TrackerConfig()
    config = replay_config(config, keyframes.rate_hz, keyframes.wait_ms) if keyframes is not None else config
    tracked, trackers = [], {}
    run = ScoredRun(reloc, examples_per_condition)
    poses = (np.asarray(reloc.map.positions, float), np.asarray(reloc.map.quats, float))
    for k, mode in enumerate(modes):
        tracker = trackers[mode] = Tracker(reloc, replace(config, mode=mode))
        for g in groups:
            reloc.selector.set_weather(g.weather or default_weather)
            tracker.reset(f"new drive {g.condition}")
            if tracker.verifier is not None:
                tracker.verifier.set_camera(g.camera, g.camera_source)
            run.new_drive()
            drive_at: dict[float, int] = {}  # this drive's frames by stamp: where a late answer is recorded
            if keyframes is not None:
                keyframes.new_drive(tracker, mode, g.condition)
            frames = g.queries if keyframes is None else keyframes.frames(g.queries)
            for q in tqdm(frames, desc=f"eval {mode} {g.condition}", disable=not progress, unit="img"):
                t0 = time.perf_counter()
                fix = prior.prior_for(q.condition, q.name, q.position) if prior and mode == "single" else None
                step = tracker.step(q.image, q.stamp, fix)
                latency = time.perf_counter() - t0
                tracked.append(tracked_frame(mode, q, step, tracker.last_feature, tracker.last_features, poses))
                if keyframes is not None:
                    drive_at[float(q.stamp)] = len(tracked) - 1
                    late_on_frames(tracked, drive_at, keyframes.after_frame(tracker, tracked[-1], t0 + latency,
                                                                            step.late), poses, float(q.stamp))
                if k:
                    continue
                res = step.result
                a = Answer(int(res.index), poses[0][res.index], poses[1][res.index],
                           tuple(int(i) for i, _ in res.topk), latency, step.selection.domain) if res.ok else \
                    Answer(None, latency_s=latency, domain=step.selection.domain)
                run.add(q, a, res)
            if keyframes is not None:
                late_on_frames(tracked, drive_at, keyframes.end_drive(tracker), poses)
        if keyframes is not None:
            tracker.close()  # the keyframe thread ends with the replay, not mid-keyframe at exit
    return tracked, trackers, run.results, run.examples, run.answers


def parse_bag_arg(text: str) -> tuple[str, Path]:
    """'night=path/to/bag' or 'path/to/night' (the condition is then the bag folder's name)."""
    name, sep, path = text.partition("=")
    return (name, Path(path)) if sep else (Path(text).name, Path(text))


def query_groups(args: argparse.Namespace, reference: str) -> list[QueryGroup]:
    from disam_ros.pose.camera import Intrinsics

    if args.dataset:
        conds = folder_conditions(args.dataset, args.conditions, reference)
        yamls = {c: args.dataset / c / "camera.yaml" for c in conds}
        return [QueryGroup(c, args.weather or world_weather(args.dataset, c),
                           LazyQueries(folder_queries, args.dataset, c, args.every),
                           *((Intrinsics.load(yamls[c]), "camera.yaml") if yamls[c].is_file() else ()))
                for c in conds]
    from disam_ros.data.bags import BagReader

    groups = []
    for text in args.bag:
        cond, path = parse_bag_arg(text)
        # a missing or damaged bag is refused now, in one line, before any progress bar
        with BagReader(path, image_topic=args.image_topic, pose_topic=args.pose_topic) as reader:
            info = reader.camera_info()
        groups.append(QueryGroup(cond, args.weather or world_weather(args.world, cond),
                                 LazyQueries(bag_queries, path, cond, args.image_topic, args.pose_topic,
                                             every=args.every),
                                 *((Intrinsics.from_camera(info), "CameraInfo") if info is not None else ())))
    return groups


class LazyQueries:
    """Re-iterable query stream: the generator is made when iterated, so nothing is read before it's used."""

    def __init__(self, fn, *args, **kwargs) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __iter__(self) -> Iterator[Query]:
        return iter(self.fn(*self.args, **self.kwargs))


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="disam-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--map", required=True, type=Path, help="map directory (disam-build-map)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", type=Path, help="dataset root ROOT/<condition>/images + poses.txt")
    src.add_argument("--bag", action="append", help="query bag, 'NAME=PATH' or PATH (condition = folder name)")
    p.add_argument("--conditions", type=name_list,
                   help="with --dataset: conditions to query (default: all but the map's reference)")
    p.add_argument("--world", type=Path, help="with --bag: dataset root whose world.yaml gives each drive's weather")
    p.add_argument("--image-topic"), p.add_argument("--pose-topic")
    p.add_argument("--out", required=True, type=Path, help="report folder")
    p.add_argument("--coarse", default="", help="coarse checkpoint (default: the one recorded in the map)")
    p.add_argument("--fine", default="", help="fine checkpoint (default: the one recorded in the map)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="CPU threads (default 0 = min(2, cores), as the node; docs/benchmarks.md, CPU threads)")
    p.add_argument("--top-n", type=positive_int, default=3, help="coarse candidates re-ranked by the fine model")
    p.add_argument("--top-k", type=positive_int, default=max(DEFAULT_RECALL_NS),
                   help="candidates kept per query; recall@N above it is reported n/a (default %(default)s: the "
                        "largest N reported)")
    p.add_argument("--min-confidence", type=probability_or_one, default=None,
                   help="publish a calibrated confidence only at or above this (default: the threshold the map's "
                        "calibration chose for each mode)")
    p.add_argument("--min-heuristic-confidence", type=probability_or_one, default=0.0,
                   help="publish an uncalibrated (heuristic) confidence only at or above this (default 0: all)")
    add_tracker_args(p)
    p.add_argument("--weather", help="weather for every drive (default: world.yaml, else sunny)")
    p.add_argument("--domain", default="", help="force one encoder domain for every query")
    p.add_argument("--every", type=positive_int, default=1, help="use every N-th query image")
    p.add_argument("--prior-sigma-m", type=non_negative_float, default=0.0,
                   help="single mode: each frame gets a position prior this many metres (sigma per axis) off its "
                        "true position, as a GNSS fix would (0: none; sequence/window modes get none)")
    p.add_argument("--kidnap", type=parse_kidnap, metavar="AT:SKIP",
                   help="cut frames [AT, AT+SKIP) out of every drive (stamps run on) and report how each mode "
                        "re-localises after the jump (kidnap.json)")
    p.add_argument("--examples", type=non_negative_int, default=1, help="example pairs per condition in examples.png")
    p.add_argument("--no-verify", action="store_true", help="retrieval-only evaluation (faster): no geometric "
                   "verification or refined poses, even when the map has geometry")
    p.add_argument("--keyframes", action="store_true", help="verify beside the frame loop as the node's "
                   "verify_keyframes does, paced: each frame waits for its keyframe, each keyframe runs alone; "
                   "prints and writes (keyframes.json) each drive's keyframe verification ms")
    p.add_argument("--rate", type=positive_float, default=0.0, metavar="HZ",
                   help="with --keyframes: replay each drive at this camera rate instead, the loop taking the newest "
                        "frame when free (the rest dropped); adds frames answered, latency and the share of sent "
                        "frames within 0.25 m, 2 deg (the main tables cover answered frames only)")
    p.add_argument("--wait-ms", type=non_negative_float, default=TrackerConfig.keyframe_wait_ms, metavar="MS",
                   help="with --rate: how long a frame whose flow failed waits for its own keyframe, the node's "
                        "verify_wait_ms (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def check_paths(args: argparse.Namespace) -> None:
    """ValueError (one line) for paths that would fail only after the models are loaded, or after the whole
    evaluation (an --out under a file)."""
    if not args.map.is_dir():
        raise ValueError(f"--map {args.map}: no such map folder; pass a folder written by disam-build-map")
    if args.dataset is not None and not args.dataset.is_dir():
        raise ValueError(f"--dataset {args.dataset}: no such folder; pass a dataset root ROOT/<condition>/images")
    if args.world is not None and not args.world.is_dir():
        raise ValueError(f"--world {args.world}: no such folder; pass the dataset root that holds world.yaml")
    if problem := output_dir_error(args.out, "--out"):
        raise ValueError(problem)
    if args.keyframes and args.no_verify:
        raise ValueError("--keyframes times verification, which --no-verify turns off: drop one of them")
    if args.rate and not args.keyframes:
        raise ValueError(f"--rate {args.rate:g} replays verification beside the frame loop: add --keyframes")
    if args.wait_ms != TrackerConfig.keyframe_wait_ms and not args.rate:
        raise ValueError(f"--wait-ms {args.wait_ms:g} is the wait at a camera rate (paced, each frame waits for its "
                         "keyframe): add --keyframes --rate HZ")


def refine_reason(args: argparse.Namespace, loc_map: Any) -> str | None:
    """Why the report has no refined rows (None: it has them)."""
    if args.no_verify:
        return "verification off (--no-verify): retrieval-only evaluation"
    return None if loc_map.has_geometry else f"the map has no geometry ({loc_map.geometry_note})"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_threads(args.threads)
    try:
        check_paths(args)
        cfg = RelocalizerConfig(coarse_checkpoint=args.coarse, fine_checkpoint=args.fine, domain=args.domain,
                                search=SearchConfig(top_n=args.top_n, top_k=args.top_k, device=args.device))
        reloc = Relocalizer.from_map(args.map, cfg)
        groups = query_groups(args, str(reloc.map.domain))
        if args.kidnap:
            groups = [replace(g, queries=KidnappedQueries(g.queries, *args.kidnap)) for g in groups]
        keyframes = KeyframeReplay(args.rate, args.wait_ms) if args.keyframes else None
        tracked, trackers, results, examples, _ = evaluate_modes(reloc, groups, args.modes, tracker_config(args),
                                                                 args.examples, progress=not args.quiet,
                                                                 prior=PriorNoise(args.prior_sigma_m)
                                                                 if args.prior_sigma_m > 0 else None,
                                                                 keyframes=keyframes)
        no_refine = refine_reason(args, reloc.map)
        publish = {m: publish_threshold(t.calibrated, t.suggested_min_confidence, args.min_confidence,
                                        args.min_heuristic_confidence) for m, t in trackers.items()}
        meta = {"mode": "offline", "tracker modes": ", ".join(args.modes), "detailed tables": args.modes[0],
                "map": str(args.map), "map images": len(reloc.map), "device": str(reloc.localizer.coarse.device),
                "top_n": args.top_n, CANDIDATES: args.top_k, "single-mode prior": (
                    f"simulated fixes, sigma {args.prior_sigma_m:g} m per axis" if args.prior_sigma_m else "none"),
                "source": str(args.dataset or ", ".join(args.bag)),
                "verification": no_refine or "on: answers verified and refined against the map geometry" + (
                    "; beside the frame loop, " + (f"at {args.rate:g} Hz: answered frames only (keyframes.json "
                                                   "has the sent frames)" if args.rate else "paced")
                    + " (--keyframes)" if args.keyframes else ""),
                "calibration": "; ".join(f"{m}: {t.diagnostics()['calibration']}" for m, t in trackers.items()),
                "tracker settings": f"max speed {args.max_speed_mps:g} m/s, speed change {args.speed_change_prob:g}, "
                                    f"window {args.window_frames} frames, place contrast "
                                    f"{args.place_contrast_frames:g} frames, standstill {args.standstill_ratio:g}"}
        paths = write_report(args.out, results, reloc.map.positions, examples, meta,
                             title="DISAM offline localisation report", tracked=tracked, publish=publish,
                             tolerance=args.tolerance, map_quats=reloc.map.quats, no_refine=no_refine)
        map_poses = (reloc.map.positions, reloc.map.quats)
        recs = recoveries(tracked, args.kidnap[0], publish, args.tolerance) if args.kidnap else []
        if args.kidnap:
            paths["kidnap"] = write_recoveries(args.out / "kidnap.json", recs, *args.kidnap)
        if keyframes is not None:
            paths["keyframes"] = keyframes.write(args.out / "keyframes.json")
    except ValueError as exc:
        print(f"disam-eval: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # FileNotFoundError included
        print(f"disam-eval: error: {os_error_line(exc, 'check the paths')}", file=sys.stderr)
        return 2
    print("\n".join(summary_rows(results)))
    print("\n".join(mode_rows_text(tracked, publish, args.tolerance, map_poses)))
    print("\n".join(poses_text(tracked, no_refine)))
    print("\n".join(recovery_rows(recs)))
    print("\n".join(keyframes.rows_text() if keyframes is not None else []))
    print(f"report: {paths['markdown']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
