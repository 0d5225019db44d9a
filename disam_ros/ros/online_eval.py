"""`disam-eval-online`: replay query bags into running localizer nodes, record what they say, score it.

    disam-eval-online --map MAP --bag night=bags/night --bag bags/snow --world WORLD --out report/ \
        --modes sequence,single

One node process per mode (`--modes`; started with the launcher's configuration, DDS on loopback, each in the
namespace of its mode when there are several), all subscribed to the same camera topic, so every mode sees
the same frames at the same time. Each bag's camera topic is replayed once, by default paced by the nodes'
answers (`--pace answer`: each frame waits until every node has accounted for it, at most `--frame-timeout`),
or in real time at `--rate` (`--pace realtime`: a busy node drops frames; drive_replay.py says why paced is the
default); before each drive the nodes' `weather` parameter is set as a driver would set it. What the nodes
publish is recorded into `<out>/node_outputs` (a rosbag2) and scored with the same code as `disam-eval`, so
offline and online reports compare line by line. A frame a node dropped or published no pose for counts as an
abstention (the coverage of that mode; the report states the frames each node dropped and any past the
timeout); a drive ends when every node has accounted for every frame (its diagnostics counters). Each
published pose's loop-closure hint says whether it was verified and which map place retrieval answered, so the
report scores retrieval-only against refined poses too (hints recorded without those keys: retrieval only).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from disam_ros.cliutil import OneLineParser, os_error_line, output_dir_error, positive_float
from disam_ros.data.bags import BagError, bag_info
from disam_ros.data.bags.write import BAG_OUTPUT
from disam_ros.eval.hints import hint_rows, hints_dict, hints_markdown, hints_text
from disam_ros.eval.metrics import DEFAULT_RECALL_NS
from disam_ros.eval.offline import example_pair, parse_bag_arg
from disam_ros.eval.poses import OLD_HINTS, poses_text
from disam_ros.eval.queries import Query, bag_queries, world_weather
from disam_ros.eval.report import CANDIDATES
from disam_ros.eval.scoring import (
    THRESHOLDS,
    Answer,
    TrackedFrame,
    is_correct,
    mode_rows_text,
    query_result,
    summary_rows,
    write_report,
)
from disam_ros.eval.tracker_args import mode_list
from disam_ros.fsutil import remove, replace_refusal
from disam_ros.maps import LocalizationMap
from disam_ros.relocalizer import Relocalizer
from disam_ros.ros import env, launcher
from disam_ros.ros.client import LocalizerClient
from disam_ros.ros.drive_replay import Drive, DriveReplay, replay_drive
from disam_ros.ros.eval_nodes import check_nodes, stop_nodes
from disam_ros.ros.online_collect import ModeRun, collect
from disam_ros.ros.pace import PACED, Pace, add_pace_options, pace_from_args
from disam_ros.ros.record import BagRecorder
from disam_ros.ros.replay import ReplayError
from disam_ros.tracking.tracker import TRACKER_MODES

IMAGE_TYPES = {"sensor_msgs/msg/Image": False, "sensor_msgs/msg/CompressedImage": True}
NODE_NAME = "disam_localizer"
RECALL_K = max(DEFAULT_RECALL_NS)  # the node's top_k unless -p top_k:= says otherwise: every R@N is measured
EVAL_DIAGNOSTICS_S = 0.2  # the nodes' diagnostics period here: how soon a drive's end is seen
# A published pose's confidence reaches the evaluation in its loop-closure hint, so the evaluated nodes hint every
# published pose (the poses, not the hints, are scored; -p loop_closure_min_consecutive:=k still wins).
EVAL_PARAMS = {"top_k": RECALL_K, "diagnostics_period_s": EVAL_DIAGNOSTICS_S, "loop_closure_min_consecutive": 1}
TOLERANCE = (5.0, 10.0)  # the node's tracker tolerance (TrackerConfig's default: the node does not change it)
KEYFRAME_END_S = 30.0  # at most this for a keyframe in flight at a drive's end (a rain keyframe: ~1 s)
DEFAULT_MODES = ("sequence", "single")  # the node's default, and the paper's single-frame retrieval beside it


def camera_topic(bag: Path) -> tuple[str, bool]:
    """The one camera topic of a bag and whether it is compressed; BagError when there is none or several."""
    info = bag_info(bag)
    found = [(t.topic, IMAGE_TYPES[t.msgtype]) for t in info.topics if t.msgtype in IMAGE_TYPES]
    if len(found) != 1:
        listed = ", ".join(f"{t.topic} ({t.msgtype})" for t in info.topics)
        raise BagError(f"{bag}: need exactly one Image or CompressedImage topic, found {len(found)}; topics: {listed}")
    return found[0]


def node_base_topic(topic: str, compressed: bool) -> str:
    """The node subscribes to `<base>` (Image) or `<base>/compressed`; the launcher remaps from the base."""
    return topic[: -len("/compressed")] if compressed and topic.endswith("/compressed") else topic


def _is_rosbag2(path: Path) -> bool:
    """An outputs bag written before bags carried the .disam-made marker."""
    meta = path / "metadata.yaml"
    return meta.is_file() and "rosbag2_bagfile_information" in meta.read_text(errors="replace")


def record_outputs(clients: list[LocalizerClient], path: Path) -> Path:
    """Write what the nodes published into one rosbag2 (log time = receipt time). Done after the replay, from
    this thread: the bag writer's sqlite handle may not be used from the listening thread."""
    from std_msgs.msg import String

    streams = {}
    for client in clients:
        fqn = client.fqn
        streams.update({
            f"{fqn}/pose": ("geometry_msgs/msg/PoseStamped", client.keyed("pose")),
            f"{fqn}/pose_with_covariance": ("geometry_msgs/msg/PoseWithCovarianceStamped", client.keyed("pose_cov")),
            f"{fqn}/candidates": ("geometry_msgs/msg/PoseArray", client.keyed("candidates")),
            f"{fqn}/loop_closure": ("std_msgs/msg/String",  # the frames' own hints and the late ones
                                    [(t, String(data=json.dumps(doc)))
                                     for t, doc in [*client.keyed("loop"), *client.keyed("late")]]),
        })
    # A re-run replaces the report's own outputs bag (marked, or a rosbag2 from before markers), nothing else.
    problem = replace_refusal(path, replace=True, legacy=_is_rosbag2, kind=BAG_OUTPUT)
    if problem:
        raise ValueError(problem)
    remove(path)
    recorder = BagRecorder(clients[0].node, path, {t: ty for t, (ty, _) in streams.items()}, subscribe=False)
    try:
        offset = time.time() - time.monotonic()  # receipt times are monotonic; bags want wall-clock ns
        for topic, (_, items) in streams.items():
            for t_recv, msg in sorted(items, key=lambda item: item[0]):
                recorder.add(topic, msg, int((t_recv + offset) * 1e9))
    except BaseException:
        recorder.abort()
        raise
    return recorder.close()


def start_nodes(map_dir: Path, drive: Drive, modes: tuple[str, ...], device: str, node_params: dict | None,
                log: Any) -> dict[str, subprocess.Popen]:
    """One node per mode; alone in no namespace (topics /disam_localizer/...), several in one each (/<mode>/...)."""
    base = node_base_topic(drive.image_topic, drive.compressed)
    params = {**EVAL_PARAMS, **(node_params or {})}
    return {m: launcher.start(stdout=log, stderr=subprocess.STDOUT if log else None, map=map_dir, image_topic=base,
                              compressed=drive.compressed, device=device, parameters={**params, "mode": m},
                              namespace=m if len(modes) > 1 else "")
            for m in modes}


def evaluate_online_modes(map_dir: Path, drives: list[Drive], out: Path, modes: tuple[str, ...] = DEFAULT_MODES,
                          pace: Pace = PACED, idle_s: float = 5.0, device: str = "auto",
                          node_params: dict | None = None, log=None, progress: Callable[[str], None] | None = None
                          ) -> tuple[dict[str, ModeRun], list[Query]]:
    """Start one node per mode, replay every drive into all of them at once, record; returns ({mode: ModeRun},
    queries). `progress` gets a line per replayed drive (a drive takes as long as its bag, or its answers)."""
    if len({d.compressed for d in drives}) != 1:
        raise ValueError("all bags must carry the same image type (all Image or all CompressedImage)")
    if not modes or len(set(modes)) != len(modes) or not set(modes) <= set(TRACKER_MODES):
        raise ValueError(f"modes {list(modes)}: give each of {', '.join(TRACKER_MODES)} at most once")
    if "mode" in (node_params or {}):
        raise ValueError("-p mode:=... is set per node by the evaluation: choose modes with --modes instead")
    queries = {d.condition: list(bag_queries(d.bag, d.condition)) for d in drives}
    m = LocalizationMap.load(map_dir)  # before any node starts: a broken map fails here, leaving no process behind
    procs = start_nodes(map_dir, drives[0], modes, device, node_params, log)
    clients = {mode: LocalizerClient(namespace=mode if len(modes) > 1 else "", node_name=NODE_NAME) for mode in modes}
    positions, names, runs = np.asarray(m.positions), list(m.names), {mode: ModeRun() for mode in modes}
    try:
        for n, d in enumerate(drives, 1):
            t0 = time.monotonic()
            check_nodes(list(procs.values()), log)
            for client in clients.values():
                client.new_drive()  # drives may share stamps: match this drive's frames to its own answers only
            done = replay_drive(list(clients.values()), d, pace, idle_s, list(procs.values()), log)
            settle_keyframes(list(clients.values()))
            for k, (mode, client) in enumerate(clients.items()):
                collect(runs[mode], mode, client, queries[d.condition], done.sent, positions)
                count_losses(runs[mode], done, k)
            if progress is not None:
                progress(drive_line(n, len(drives), d.condition, done, list(clients), time.monotonic() - t0))
        errors = [e for c in clients.values() for e in c.callback_errors]
        if errors:
            raise RuntimeError(f"listening to the node failed: {errors[0]}")
        record_outputs(list(clients.values()), out / "node_outputs")
    finally:
        for client in clients.values():
            client.close()
        stop_nodes(list(procs.values()))
        m.close()
    flat = [q for d in drives for q in queries[d.condition]]
    for run in runs.values():
        run.results = [query_result(q, a, positions, names) for q, a in zip(flat, run.answers)]
    return runs, flat


def settle_keyframes(clients: list[LocalizerClient]) -> None:
    """After a drive: each node's keyframe in flight (`verify_keyframes`) ends, and its late hint, sent once solved,
    arrives before the next drive (answers are matched per drive); a diagnostics report after that says so."""
    for client in clients:
        client.wait_diagnostics(lambda d: d.get("keyframe_in_flight") != "True", KEYFRAME_END_S, after=time.monotonic())
        client.wait_diagnostics(lambda _: True, 2.0, after=time.monotonic())


def drive_line(n: int, total: int, condition: str, done: DriveReplay, modes: list[str], seconds: float) -> str:
    """'drive 2/10 night: 16 frames in 9.8 s (sequence 0 dropped, single 1 dropped, 1 past the timeout)'."""
    lost = ", ".join(f"{mode} {done.dropped[k]} dropped" + (f", {len(done.timed_out[k])} past the timeout"
                                                           if done.timed_out[k] else "")
                     for k, mode in enumerate(modes))
    return f"drive {n}/{total} {condition}: {len(done.sent)} frames in {seconds:.1f} s ({lost})"


def count_losses(run: ModeRun, done: DriveReplay, k: int) -> None:
    """Add the k-th node's dropped and timed-out frames of one drive to its run."""
    run.dropped += done.dropped[k]
    run.timed_out += done.timed_out[k]


def losses_line(runs: dict[str, ModeRun]) -> str:
    """The frames the nodes dropped or that passed the per-frame timeout, per mode: the report's and terminal's
    line (abstentions that say nothing about the localizer)."""
    return "; ".join(f"{mode} {run.dropped} dropped, {len(run.timed_out)} past the timeout"
                     for mode, run in runs.items())


def evaluate_online(map_dir: Path, drives: list[Drive], out: Path, pace: Pace = PACED, idle_s: float = 5.0,
                    device: str = "auto", node_params: dict | None = None, log=None, mode: str = "single"):
    """One mode (default single: the per-frame answers, comparable with `disam-eval` frame by frame); returns
    (results, queries, answers)."""
    runs, flat = evaluate_online_modes(map_dir, drives, out, (mode,), pace, idle_s, device, node_params, log)
    return runs[mode].results, flat, runs[mode].answers


def online_examples(map_dir: Path, queries: list[Query], answers: list[Answer], results, per_condition: int = 1):
    """Query/match pairs with Grad-SAM maps for the report: one answered query per condition, re-run offline
    with the encoder the node chose (the node publishes poses, not feature maps)."""
    reloc = Relocalizer.from_map(map_dir)
    shown: dict[str, int] = {}
    out = []
    for q, a, r in zip(queries, answers, results):
        if a.index is None or shown.get(q.condition, 0) >= per_condition:
            continue
        res = reloc.localizer.localize(q.image, a.domain or reloc.selector.fallback)
        ex = example_pair(reloc, q, res, is_correct(r, THRESHOLDS[-1]), a.domain) if res.ok else None
        if ex is not None:
            out.append(ex)
            shown[q.condition] = shown.get(q.condition, 0) + 1
    return out


def report_online(map_dir: Path, runs: dict[str, ModeRun], queries: list[Query], out: Path,
                  meta: dict | None = None) -> tuple[list[str], dict[str, Path]]:
    """Write the report folder (detailed tables of the first mode, the modes side by side); returns (terminal
    rows: per condition for the first mode, then every mode, then retrieval-only against refined poses, and the
    report paths)."""
    first = runs[next(iter(runs))]
    m = LocalizationMap.load(map_dir)
    try:
        tracked = [f for run in runs.values() for f in run.tracked]
        no_refine = refine_reason_online(m, tracked)
        meta = {"mode": "online (bags replayed into localizer nodes over DDS)", "tracker modes": ", ".join(runs),
                "detailed tables": next(iter(runs)), "map": str(map_dir), "map images": len(m), CANDIDATES: RECALL_K,
                "frames lost": losses_line(runs),
                "confidence": "from each published pose's loop-closure hint; unpublished frames carry none online, "
                              "so ECE is over published poses", "verification": no_refine or "on (loop-closure hints)",
                **(meta or {})}
        publish = {mode: run.threshold for mode, run in runs.items()}
        hints = hint_rows(tracked, {mode: run.late for mode, run in runs.items()}) if not no_refine else []
        paths = write_report(out, first.results, m.positions,
                             online_examples(map_dir, queries, first.answers, first.results), meta,
                             title="DISAM online localisation report", tracked=tracked, publish=publish,
                             tolerance=TOLERANCE, map_quats=m.quats, no_refine=no_refine,
                             sections=[("hints", hints_markdown(hints), hints_dict(hints))] if hints else ())
        rows = [*summary_rows(first.results), *mode_rows_text(tracked, publish, TOLERANCE, (m.positions, m.quats)),
                *poses_text(tracked, no_refine), *hints_text(hints), f"frames lost: {losses_line(runs)}"]
    finally:
        m.close()
    return rows, paths


def refine_reason_online(loc_map: Any, tracked: list[TrackedFrame]) -> str | None:
    """Why the report has no refined rows (None: it has them): a map without geometry, or hints recorded by a node
    without verification (no `verified` key in any hint)."""
    if not loc_map.has_geometry:
        return f"the map has no geometry ({loc_map.geometry_note})"
    return None if any(f.verification for f in tracked) else OLD_HINTS


def parse_param(text: str) -> tuple[str, object]:
    """'name:=value' with the value typed as YAML, as rcl types `-p` overrides."""
    name, sep, value = text.partition(":=")
    if not sep or not name:
        raise ValueError(f"-p {text!r} is not NAME:=VALUE (e.g. -p top_n:=5)")
    return name, yaml.safe_load(value)


def drives_from_args(args: argparse.Namespace) -> list[Drive]:
    drives = []
    for text in args.bag:
        cond, path = parse_bag_arg(text)
        topic, compressed = camera_topic(path)
        drives.append(Drive(cond, path, args.weather or world_weather(args.world, cond), topic, compressed))
    return drives


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="disam-eval-online", description=__doc__.split("\n\n")[0])
    p.add_argument("--map", required=True, type=Path, help="map directory (disam-build-map)")
    p.add_argument("--bag", required=True, action="append", help="query bag, 'NAME=PATH' or PATH")
    p.add_argument("--world", type=Path, help="dataset root whose world.yaml gives each drive's weather")
    p.add_argument("--weather", help="weather for every drive (default: world.yaml, else the node's parameter)")
    p.add_argument("--out", required=True, type=Path, help="report folder (node outputs bag goes inside)")
    add_pace_options(p, rate=5.0)
    p.add_argument("--idle", type=positive_float, default=5.0, help="seconds without new answers that end a drive")
    p.add_argument("--device", default="auto", help="node device: auto, cpu, cuda[:N]")
    p.add_argument("--modes", type=mode_list, default=DEFAULT_MODES,
                   help=f"tracker modes, one node each, comma-separated from {','.join(TRACKER_MODES)} (default "
                        f"{','.join(DEFAULT_MODES)}; the first one gets the detailed report)")
    p.add_argument("-p", "--param", action="append", default=[], help="extra node parameter NAME:=VALUE")
    p.add_argument("--quiet", action="store_true", help="no line per replayed drive on stderr")
    return p


def check_paths(args: argparse.Namespace) -> None:
    """ValueError (one line) before a node is started: no map folder, or an --out that cannot be a folder."""
    if not args.map.is_dir():
        raise ValueError(f"--map {args.map}: no such map folder; pass a folder written by disam-build-map")
    if problem := output_dir_error(args.out, "--out"):
        raise ValueError(problem)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env.isolated_env()  # its own node and replay: loopback and a private random domain, before any rclpy
    try:
        check_paths(args)
        pace = pace_from_args(args)
        params = dict(parse_param(p) for p in args.param)
        top_k = params.get("top_k", RECALL_K)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"-p top_k:={top_k}: need an integer >= 1 (the candidates kept per frame)")
        drives = drives_from_args(args)
        args.out.mkdir(parents=True, exist_ok=True)
        say = None if args.quiet else (lambda line: print(f"disam-eval-online: {line}", file=sys.stderr, flush=True))
        with open(args.out / "node.log", "w") as log:
            runs, queries = evaluate_online_modes(args.map, drives, args.out, args.modes, pace, args.idle,
                                                  args.device, params, log, say)
        rows, paths = report_online(args.map, runs, queries, args.out,
                                    {"replay": pace.describe(), "bags": ", ".join(args.bag), CANDIDATES: top_k})
    except (ValueError, BagError, ReplayError, RuntimeError) as exc:
        print(f"disam-eval-online: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # FileNotFoundError included
        print(f"disam-eval-online: error: {os_error_line(exc, 'check the paths')}", file=sys.stderr)
        return 2
    print("\n".join(rows))
    print(f"report: {paths['markdown']}  (node log: {args.out / 'node.log'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
