"""`disam-bench node --rate HZ`: does the localizer node keep up with a camera?

    disam-bench node --rate 30 [--conditions sunny_repeat,night,snow,fog,rain,dusk] [--dense] [--frames 16]
                     [--cores 1] [--param NAME:=VALUE ...] [--runs 1] [--workdir D] [--json out.json]
                     [--plot out.png [--against other.json]]
    disam-bench node --from run.json --plot out.png [--against other.json]   # redraw saved runs, measure nothing

Camera-rate mode of `disam-bench node`. The demo's world (synthetic town, seed 0, 640x480, `--frames` per drive)
and map (the `sunny` reference drive, shipped demo weights, with geometry, so the node verifies) are rendered and
built once per `--workdir` and reused. One node process, started with the launcher's configuration and pinned to
the first `--cores` CPUs (its `threads` parameter and OMP_NUM_THREADS = cores), serves every drive: before each
drive its `weather` parameter is set as a driver would set it and `~/reset` empties its belief (one node, not one
per drive: a vehicle's node runs warm; three frames answered one by one warm it up first). This process, pinned
to the other CPUs when there are any, publishes each query drive's frames at a fixed `--rate` without waiting
for answers (a busy node replaces an unprocessed frame: dropped), then waits up to 3 s for the last answers.
Query drives: `--conditions` at the town's 3 m spacing, and with `--dense` each `<condition>_dense` drive
(filmed at 8x the frame rate, 0.3-0.4 m apart: what a camera sees). Per drive and overall: frames sent,
answered, dropped (never answered), latency image published -> pose received over the answered frames, the
share of SENT frames whose published pose is within (0.25 m, 2 deg) and within (5 m, 10 deg) of the ground
truth, the verified share, and the median verification time per frame from the node's loop-closure hints
(`refine_ms`; every published pose is hinted here); then how long the drive took to its first verified frame and
the (0.25 m, 2 deg) share of the frames from that one on (`from_first_verified`: what a short drive's start
hides); with `verify_keyframes` the late hints (keyframes verified after their frames were answered) and the share
of sent frames a SLAM back end got a verified hint within (0.25 m, 2 deg) for, in time or late. `--param
NAME:=VALUE` passes node parameters through. `--runs N` repeats every drive N times, each time with a fresh node,
and reports per-drive medians with the 0.25 m share's range (on one shared core a drive's share
moves by several points from run to run). The rows: bench/node_rate_summary.py.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from disam_ros.bench.node_rate_summary import (  # noqa: F401  (the summary's names, used here and re-exported)
    COARSE,
    COUNTERS,
    FINE,
    FrameRecord,
    combine_runs,
    from_first_verified,
    summarize_all,
    summarize_frames,
    table,
)
from disam_ros.cliutil import OneLineParser, check_output_files, image_size, name_list, positive_float, positive_int
from disam_ros.fsutil import atomic_write_text

DEFAULT_CONDITIONS = ("sunny_repeat", "night", "snow", "fog", "rain", "dusk")
DEFAULT_FRAMES = 16
ANSWER_WAIT_S = 3.0  # after a drive's last frame
KEYFRAME_END_S = 5.0  # ... then at most this for the keyframe in flight (verify_keyframes), its late hint scored
WARMUP = 3
NODE_STAGES = ("queue", "decode", "localize", "retrieval_verify", "retrieval_track", "publish", "total")
# python -c PIN CPUS PROGRAM ARGS...: pin, then become the node (affinity survives exec; every thread inherits it)
PIN = "import os, sys; os.sched_setaffinity(0, [int(c) for c in sys.argv[1].split(',')]); " \
      "os.execv(sys.argv[2], sys.argv[2:])"


# ------------------------------------------------------------------------------------------------ pure parts

def parse_param(text: str) -> tuple[str, Any]:
    """'NAME:=VALUE', the value a YAML scalar (bool, int, float or str, as rcl types `-p`); ValueError otherwise."""
    name, sep, value = text.partition(":=")
    if not sep or not name.strip():
        raise ValueError(f"--param {text!r} is not NAME:=VALUE (e.g. --param mode:=single)")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        raise ValueError(f"--param {text!r}: the value is not a YAML scalar; quote a string") from None
    if parsed is None:
        raise ValueError(f"--param {text!r} has no value: give one (an empty string is {name}:=\"''\")")
    if not isinstance(parsed, (bool, int, float, str)):
        raise ValueError(f"--param {text!r}: the value must be a bool, number or string, got {type(parsed).__name__}")
    return name.strip(), parsed


def schedule(n: int, rate_hz: float, start: float) -> list[float]:
    """When frame k is due: start + k / rate."""
    return [start + k / rate_hz for k in range(n)]


def publish_at_rate(n: int, rate_hz: float, publish: Callable[[int], Any],
                    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
                    ) -> list[float]:
    """Call publish(k) for k < n at the fixed rate (never waiting for anything else; a late frame goes at once,
    the schedule does not shift); returns each frame's publish time (taken just before publish)."""
    sent = []
    for due in schedule(n, rate_hz, clock()):
        if (left := due - clock()) > 0:
            sleep(left)
        sent.append(clock())
        publish(len(sent) - 1)
    return sent


def counters(diag: Mapping[str, Any]) -> dict[str, int]:
    """The node's counters from one /diagnostics status (string values; missing = 0)."""
    return {k: int(float(diag.get(k, 0) or 0)) for k in COUNTERS}


def delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in COUNTERS}


def split_cpus(available: Sequence[int], cores: int) -> tuple[list[int], list[int]]:
    """(the node's CPUs: the first `cores`, the publisher's: the rest, or all when none are left)."""
    cpus = sorted(available)
    return cpus[:cores], cpus[cores:] or cpus


# ------------------------------------------------------------------------------------------------ world, map, node

def prepare(work: Path, size: tuple[int, int], frames: int, drives: Sequence[str], device: str) -> tuple[Path, Path]:
    """The world (rendered once; again, with every drive it held, when a drive is missing) and the map."""
    from disam_ros.data.folders import list_conditions
    from disam_ros.data.synthetic import WorldConfig, make_world
    from disam_ros.maps import MapBuildConfig, build_map_from_folder
    from disam_ros.shipped import ASSETS

    root, map_dir = work / f"world_{size[0]}x{size[1]}_{frames}", work / f"map_{size[0]}x{size[1]}_{frames}"
    have = list_conditions(root) if (root / "world.yaml").is_file() else []
    if missing := [d for d in drives if d not in have]:
        print(f"rendering the reference + {len(set(have) | set(drives)) - ('sunny' in have)} drives x {frames} "
              f"frames at {size[0]}x{size[1]} "
              f"(missing: {', '.join(missing)})", file=sys.stderr, flush=True)
        keep = [c for c in have if c != "sunny"] + missing
        make_world(WorldConfig(seed=0, image_size=size, frames=frames, conditions=("sunny", *keep),
                               workers=min(2, os.cpu_count() or 1)), root, progress=False, force=bool(have))
    if missing or not (map_dir / "manifest.json").is_file():
        build_map_from_folder(MapBuildConfig(out=map_dir, dataset=root, condition="sunny",
                                             coarse=ASSETS / "demo_coarse.pt", fine=ASSETS / "demo_fine.pt",
                                             device=device, overwrite=(map_dir / "manifest.json").is_file(),
                                             progress=False))
    return root, map_dir


def start_node(map_dir: Path, cpus: Sequence[int], device: str, compressed: bool, params: Mapping[str, Any],
               log: Any) -> subprocess.Popen:
    """The launcher's node command, pinned to `cpus` before it starts (PIN execs it)."""
    from disam_ros.ros import launcher
    from disam_ros.ros.env import child_env

    cmd = launcher.node_command(map=map_dir, compressed=compressed, device=device, namespace="bench",
                                parameters=params)
    return subprocess.Popen([sys.executable, "-c", PIN, ",".join(map(str, cpus)), *cmd], stdout=log,
                            stderr=subprocess.STDOUT, env=child_env({"OMP_NUM_THREADS": str(len(cpus))}))


def _fresh_counters(client: Any, timeout: float = 3.0) -> dict[str, int]:
    """Counters of a /diagnostics status sent after now (the latest one when none comes in time)."""
    d = client.wait_diagnostics(lambda _: True, timeout, after=time.monotonic())
    return counters(d or (client.rx.diagnostics[-1][1] if client.rx.diagnostics else {}))


def run_drive(client: Any, root: Path, drive: str, rate: float, compressed: bool) -> tuple[list[FrameRecord], dict]:
    """Reset the node, publish the drive at `rate`, wait for the answers; (frame records, counter differences)."""
    from disam_ros.data.folders import iter_frames, load_condition
    from disam_ros.data.image_codec import encode_compressed
    from disam_ros.eval.poses import hint_fields
    from disam_ros.eval.queries import world_weather
    from disam_ros.ros.client import DONE_COUNTERS

    frames = list(iter_frames(load_condition(root, drive, require_poses=True)))
    payload = [encode_compressed(f.image, "jpeg", 95).data if compressed else f.image for f in frames]
    if weather := world_weather(root, drive):
        client.set_parameters({"weather": weather})
    ok, why = client.reset()
    if not ok:
        raise RuntimeError(f"~/reset before drive {drive} failed: {why}")
    client.new_drive()  # drives may share stamps: answers are read per drive
    before = _fresh_counters(client)
    keys: list = []

    def publish(k: int) -> None:
        stamp = float(frames[k].stamp)
        keys.append(client.publish_compressed(None, stamp, data=payload[k]) if compressed
                    else client.publish_raw(payload[k], stamp))

    t_pub = publish_at_rate(len(frames), rate, publish)
    deadline, diag = t_pub[-1] + ANSWER_WAIT_S, {}
    while time.monotonic() < deadline and not all(k in client.rx.pose for k in keys):
        diag = delta(before, counters(client.rx.diagnostics[-1][1])) if client.rx.diagnostics else {}
        if diag and sum(diag[k] for k in DONE_COUNTERS) >= len(keys) and len(client.rx.pose) >= diag["localized"]:
            break  # every frame accounted for by the node, every published pose here
        time.sleep(0.02)
    # the keyframe in flight ends and its late hint goes out (the node sends it once solved), then fresh counters
    client.wait_diagnostics(lambda d: d.get("keyframe_in_flight") != "True", KEYFRAME_END_S, after=time.monotonic())
    node: dict[str, Any] = delta(before, _fresh_counters(client))
    last = client.rx.diagnostics[-1][1] if client.rx.diagnostics else {}
    # verify_keyframes: since this drive's reset
    for key in ("keyframe_ms_median", "keyframe_run_ms_median", "keyframe_verify_run_ms_median"):
        if key in last:
            node[key] = float(last[key])
    if last.get("keyframe_verify_run_ms_recent"):  # each keyframe's, for the median over several runs' keyframes
        node["keyframe_verify_run_ms"] = [float(x) for x in last["keyframe_verify_run_ms_recent"].split()]
    out = []
    for f, key, t in zip(frames, keys, t_pub):
        rec = FrameRecord(t, np.asarray(f.position, float), np.asarray(f.quat, float))
        if (hit := client.rx.pose.get(key)) is not None and hit[0] >= t:
            p, q = hit[1].pose.position, hit[1].pose.orientation
            rec.t_recv, rec.position, rec.quat = hit[0], np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])
            hint = hint_fields(client.rx.loop.get(key, (None, {}))[1]) or {}
            rec.verified, rec.refine_ms = bool(hint.get("verified")), float(hint.get("refine_ms", math.nan))
            if (cov := client.rx.pose_cov.get(key)) is not None:
                rec.covariance = np.asarray(cov[1].pose.covariance, float).reshape(6, 6)[:3, :3]
        late = client.rx.late.get(key, (None, {}))[1]
        if late.get("verified") is True:
            rec.late_position = np.asarray(late["position"], float)
            rec.late_quat = np.asarray(late["orientation_xyzw"], float)
        out.append(rec)
    return out, node


def warm_up(client: Any, root: Path, compressed: bool) -> None:
    """A few reference frames answered one by one (first frames pay lazy initialisation), then ~/reset."""
    from disam_ros.data.folders import iter_frames, load_condition

    for f in list(iter_frames(load_condition(root, "sunny")))[:WARMUP]:
        key = client.publish_compressed(f.image, float(f.stamp)) if compressed else \
            client.publish_raw(f.image, float(f.stamp))
        client.wait_pose(key, timeout=60.0)


def measure(root: Path, map_dir: Path, drives: Sequence[str], args: argparse.Namespace, params: Mapping[str, Any],
            log_path: Path) -> dict[str, Any]:
    """Start the pinned node, run every drive, stop it; the rows, the node's final diagnostics and exit code."""
    from disam_ros.ros.client import LocalizerClient
    from disam_ros.ros.eval_nodes import stop_nodes

    node_cpus, own_cpus = split_cpus(os.sched_getaffinity(0), args.cores)
    mine = os.sched_getaffinity(0)
    with open(log_path, "wb") as log:
        proc = start_node(map_dir, node_cpus, args.device, args.compressed, params, log)
        os.sched_setaffinity(0, own_cpus)  # before the DDS threads: they inherit it
        client = LocalizerClient(namespace="bench")
        try:
            if not client.wait_for_node(args.compressed, timeout=180.0):
                raise RuntimeError(f"localizer node did not come up (log: {log_path})")
            warm_up(client, root, args.compressed)
            done = []
            for drive in drives:
                frames, node = run_drive(client, root, drive, args.rate, args.compressed)
                done.append((drive, frames, node))
                print(f"[{drive}] {sum(f.t_recv is not None for f in frames)}/{len(frames)} answered",
                      file=sys.stderr, flush=True)
            diag = client.rx.diagnostics[-1][1] if client.rx.diagnostics else {}
        finally:
            stop_nodes([proc], timeout=30.0)  # SIGINT, then a kill if it hangs
            rc = proc.returncode
            client.close()
            os.sched_setaffinity(0, mine)
    rows = [summarize_frames(d, f, n) for d, f, n in done] + [summarize_all(done)]
    stages = {s: float(diag[f"latency_{s}_ms_median"]) for s in NODE_STAGES if f"latency_{s}_ms_median" in diag}
    return {"rows": rows, "node_stage_median_ms": stages, "node_cpus": node_cpus, "publisher_cpus": own_cpus,
            "node_exit_code": rc}


# ------------------------------------------------------------------------------------------------ command line

def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="disam-bench node", description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=positive_float, default=None, help="camera rate: frames published per second")
    p.add_argument("--conditions", type=name_list, default=DEFAULT_CONDITIONS,
                   help=f"query drives, comma-separated (default {','.join(DEFAULT_CONDITIONS)})")
    p.add_argument("--dense", action="store_true", help="also each <condition>_dense drive (8x the frame rate)")
    p.add_argument("--frames", type=positive_int, default=DEFAULT_FRAMES, help=f"frames per drive (default "
                   f"{DEFAULT_FRAMES}; rendering costs ~0.7 s a 640x480 frame on 2 cores)")
    p.add_argument("--image-size", type=image_size, default=(640, 480), help="camera image WxH (default 640x480)")
    p.add_argument("--cores", type=positive_int, default=1, help="CPUs the node is pinned to (default 1)")
    p.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE", help="node parameter (repeatable)")
    p.add_argument("--device", default="cpu", help="node (and map build) device (default cpu)")
    p.add_argument("--compressed", action="store_true", help="send CompressedImage (jpeg) instead of rgb8")
    p.add_argument("--runs", type=positive_int, default=1, help="runs of every drive, each with a fresh node; the "
                   "table and `results` give per-drive medians and the 0.25 m share's range (default 1)")
    p.add_argument("--workdir", type=Path, default=None, help="keep the world, map and node log here (default: temp)")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON result to this file")
    p.add_argument("--plot", type=Path, default=None, help="also draw the rows as bars here (PNG: shares of the "
                   "frames answered, right and hinted; latency; keyframe verification times)")
    p.add_argument("--against", type=Path, default=None, metavar="OTHER.json", help="draw another run's --json (e.g. "
                   "inline against verify_keyframes:=true) into --plot as dashed outlines over the same drives")
    p.add_argument("--from", dest="saved", type=Path, default=None, metavar="RUN.json", help="measure nothing: "
                   "redraw a saved run's --json into --plot (with --against, beside another)")
    return p


def load_runs(p: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[dict | None, dict | None]:
    """(--from's document, --against's document), each None when not given; parser.error (one line, exit 2) for a
    file that is not a saved camera-rate run or an option that cannot go with them, before any measuring."""
    from disam_ros.bench.node_rate_plot import load_rate_run

    try:
        saved, against = (load_rate_run(path) if path else None for path in (args.saved, args.against))
    except ValueError as exc:
        p.error(str(exc))
    if (saved or against) and not args.plot:
        p.error(f"{'--from' if saved else '--against'} draws a figure: give --plot OUT.png too")
    if saved and args.json:
        p.error("--from redraws a saved run: it writes --plot only, not --json")
    if saved and args.rate is not None and args.rate != saved.get("rate_hz"):
        p.error(f"--rate {args.rate:g} but {args.saved} was measured at {saved.get('rate_hz')} Hz: leave --rate out")
    if saved is None and args.rate is None:
        p.error("--rate HZ is required (or --from RUN.json --plot OUT.png to redraw a saved run)")
    return saved, against


def draw(doc: dict, path: Path, against: dict | None, names: tuple[str, str]) -> Path:
    """The run's figure, with `against` as dashed outlines named by what tells the two apart (else `names`)."""
    from disam_ros.bench.node_rate_plot import plot_rate, run_labels

    labels = run_labels(doc, against) if against is not None else ("", "")
    return plot_rate(doc["results"], doc["rate_hz"], path, against=against["results"] if against else None,
                     labels=labels if all(labels) else names)


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    """(query drives, node parameters); parser.error (one line, exit 2) for a bad value."""
    from disam_ros.data.synthetic.conditions import CONDITIONS

    if bad := [c for c in args.conditions if c not in CONDITIONS]:
        p.error(f"--conditions: unknown {', '.join(bad)}; use some of {', '.join(CONDITIONS)}")
    if args.frames < 2:
        p.error(f"--frames {args.frames}: need at least 2 (the map is the reference drive's frames)")
    if args.cores > len(os.sched_getaffinity(0)):
        p.error(f"--cores {args.cores}: this process may use {len(os.sched_getaffinity(0))} CPUs")
    params: dict[str, Any] = {"threads": args.cores, "diagnostics_period_s": 0.2, "loop_closure_min_consecutive": 1}
    for text in args.param:
        try:
            name, value = parse_param(text)
        except ValueError as exc:
            p.error(str(exc))
        if name in ("map", "compressed", "device"):
            p.error(f"--param {name}: set by the benchmark (use --workdir/--compressed/--device)")
        params[name] = value
    drives = list(dict.fromkeys(args.conditions))
    return drives + ([f"{c}_dense" for c in drives] if args.dense else []), params


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    check_output_files(parser, args, "--json", "--plot")
    saved, against = load_runs(parser, args)
    names = (args.saved.name if saved else "this run", args.against.name if against else "")
    if saved is not None:
        print(f"plot: {draw(saved, args.plot, against, names)}", file=sys.stderr)
        return 0
    drives, params = check_args(parser, args)
    from disam_ros.ros import env

    env.isolated_env()  # the benchmark's own DDS graph: loopback and a private random domain, before any rclpy
    with tempfile.TemporaryDirectory(prefix="disam_bench_rate_") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        root, map_dir = prepare(work, args.image_size, args.frames, drives, args.device)
        print(f"world and map ready in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
        runs = [measure(root, map_dir, drives, args, params, work / f"node_rate{'' if k == 0 else f'_{k + 1}'}.log")
                for k in range(args.runs)]
    r = runs[0] if len(runs) == 1 else {
        "rows": combine_runs([x["rows"] for x in runs]), "node_cpus": runs[0]["node_cpus"],
        "publisher_cpus": runs[0]["publisher_cpus"], "node_exit_code": max(x["node_exit_code"] for x in runs),
        "node_stage_median_ms": {k: statistics.median(x["node_stage_median_ms"][k] for x in runs
                                                      if k in x["node_stage_median_ms"])
                                 for k in runs[0]["node_stage_median_ms"]}}
    w, h = args.image_size
    doc = {"suite": "node", "mode": "rate", "rate_hz": args.rate, "image": f"{w}x{h}", "frames_per_drive":
           args.frames, "cores": args.cores, "node_cpus": r["node_cpus"], "publisher_cpus": r["publisher_cpus"],
           "device": args.device, "transport": "CompressedImage(jpeg)" if args.compressed else "Image(rgb8)",
           "node_parameters": params, "thresholds": {"fine": list(FINE), "coarse": list(COARSE)},
           "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
           "node_stage_median_ms": r["node_stage_median_ms"], "node_exit_code": r["node_exit_code"],
           "runs": args.runs, "results": r["rows"]}
    if len(runs) > 1:
        doc["results_per_run"] = [x["rows"] for x in runs]
    print(table(r["rows"]))
    print("node stage medians (ms, its last 200 frames): " +
          ", ".join(f"{k} {v:.1f}" for k, v in r["node_stage_median_ms"].items()))
    print(json.dumps(doc, indent=1))
    if args.json:
        atomic_write_text(args.json, json.dumps(doc, indent=1))
    if args.plot:
        print(f"plot: {draw(doc, args.plot, against, names)}", file=sys.stderr)
    return 0 if r["node_exit_code"] == 0 and r["rows"][-1]["answered"] else 1
