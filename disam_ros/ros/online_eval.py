"""`disam-eval-online`: replay query bags into a running localizer node, record what it says, score it.

    disam-eval-online --map MAP --bag night=bags/night --bag bags/snow --world WORLD --out report/

The node runs as its own process (started with the launcher's configuration, DDS on loopback). Each bag's
camera topic is replayed at `--rate`; before each drive the node's `weather` parameter is set as a driver
would set it. The node's outputs are recorded into `<out>/node_outputs` (a rosbag2) and scored with the same
code as `disam-eval`, so offline and online reports compare line by line. A frame the node dropped or did
not answer counts as an abstention.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from disam_ros.cliutil import OneLineParser, os_error_line, output_dir_error, positive_float
from disam_ros.data.bags import BagError, bag_info
from disam_ros.eval.metrics import DEFAULT_RECALL_NS
from disam_ros.eval.offline import example_pair, parse_bag_arg
from disam_ros.eval.queries import Query, bag_queries, world_weather
from disam_ros.eval.report import CANDIDATES
from disam_ros.eval.scoring import THRESHOLDS, Answer, is_correct, query_result, summary_rows, write_report
from disam_ros.relocalizer import Relocalizer
from disam_ros.retrieval import LocalizationMap
from disam_ros.ros import env, launcher
from disam_ros.ros.client import LocalizerClient
from disam_ros.ros.record import BagRecorder
from disam_ros.ros.replay import BagPlayer, ReplayError

IMAGE_TYPES = {"sensor_msgs/msg/Image": False, "sensor_msgs/msg/CompressedImage": True}
NODE_NAME = "disam_localizer"
RECALL_K = max(DEFAULT_RECALL_NS)  # the node's top_k unless -p top_k:= says otherwise: every R@N is measured


@dataclass(frozen=True)
class Drive:
    condition: str
    bag: Path
    weather: str | None
    image_topic: str
    compressed: bool


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


def wait_answers(client: LocalizerClient, keys: list[tuple[int, int]], idle_s: float) -> None:
    """Until every key is answered, or nothing new arrived for idle_s (the node abstained or dropped)."""
    seen, last = -1, time.monotonic()
    while True:
        got = sum(k in client.rx.loop for k in keys)
        if got == len(keys):
            return
        if got != seen:
            seen, last = got, time.monotonic()
        elif time.monotonic() - last > idle_s:
            return
        time.sleep(0.05)


NODE_LOG_LINE = re.compile(r"^\[(?:ERROR|FATAL)\] \[[\d.]+\] \[[^\]]*\]: ")  # rcl console format


def node_error_line(log: Any) -> str:
    """The node's own reason, from the log file it writes into: its last ERROR/FATAL (or `error:`) line without
    the rcl prefix, else its last line. The caller's one-line error then says what the node said."""
    path = getattr(log, "name", None)
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except (TypeError, OSError):  # no log file: the node wrote to this process's terminal
        return "see its output above"
    logged = [ln for ln in lines if NODE_LOG_LINE.match(ln)]
    raised = [ln for ln in lines if "error:" in ln.lower()]  # argparse usage errors, a Python exception's last line
    last = (logged or raised or lines or ["(no output)"])[-1]
    return NODE_LOG_LINE.sub("", last)


def check_node(proc: subprocess.Popen | None, log: Any = None) -> None:
    """RuntimeError with the node's own error line as soon as its process has exited."""
    if proc is not None and proc.poll() is not None:
        raise RuntimeError(f"the localizer node exited with code {proc.returncode}: {node_error_line(log)}")


def wait_for_node(player: BagPlayer, proc: subprocess.Popen | None, log: Any = None, timeout_s: float = 60.0) -> None:
    """Until the node subscribes (once its map and models are loaded), polling its process meanwhile: a node
    that dies at start (missing or corrupt map, bad parameter) fails this in a fraction of a second, not after
    the whole timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        check_node(proc, log)
        try:
            player.wait_for_subscribers(timeout_s=0.2)
            return
        except ReplayError:
            if time.monotonic() > deadline:
                raise ReplayError(f"the localizer node did not subscribe to the camera topic within {timeout_s:g} s"
                                  f": see its log ({getattr(log, 'name', 'its output')})") from None


def replay_drive(client: LocalizerClient, drive: Drive, rate: float, idle_s: float,
                 proc: subprocess.Popen | None = None, log: Any = None) -> dict[int, float]:
    """Replay one bag's camera topic; returns publish time (monotonic) per log time in ns."""
    player = BagPlayer(client.node, drive.bag, topics=[drive.image_topic], rate=rate, clock=False)
    sent: dict[int, float] = {}
    try:
        wait_for_node(player, proc, log)
        if drive.weather:
            ok = client.set_parameters({"weather": drive.weather})
            if not all(s for s, _ in ok):
                raise ValueError(f"node refused weather {drive.weather!r}: {[r for _, r in ok]}")
        player.play(on_message=lambda _t, log_ns: sent.__setitem__(int(log_ns), time.monotonic()))
    finally:
        player.close()
    wait_answers(client, [divmod(ns, 1_000_000_000) for ns in sent], idle_s)
    return sent


def answers_for(client: LocalizerClient, queries: list[Query], sent: dict[int, float]) -> list[Answer]:
    """Join the node's loop-closure hints (they carry index, pose and candidates) to the queries by stamp."""
    out = []
    for q in queries:
        ns = int(q.name.split(".")[0])
        hit = client.rx.loop.get(divmod(ns, 1_000_000_000))
        if hit is None:
            out.append(Answer(None))
            continue
        t_recv, doc = hit
        latency = t_recv - sent[ns] if ns in sent else None  # bags from disam-bag: header stamp == log time
        out.append(Answer(int(doc["map_index"]), np.array(doc["position"]), np.array(doc["orientation_xyzw"]),
                          tuple(int(c["map_index"]) for c in doc["candidates"]), latency, str(doc["domain"])))
    return out


def record_outputs(client: LocalizerClient, path: Path) -> Path:
    """Write what the node published into a rosbag2 (log time = receipt time). Done after the replay, from
    this thread: the bag writer's sqlite handle may not be used from the listening thread."""
    from std_msgs.msg import String

    rx, fqn = client.rx, client.fqn
    streams = {
        f"{fqn}/pose": ("geometry_msgs/msg/PoseStamped", rx.pose.values()),
        f"{fqn}/pose_with_covariance": ("geometry_msgs/msg/PoseWithCovarianceStamped", rx.pose_cov.values()),
        f"{fqn}/candidates": ("geometry_msgs/msg/PoseArray", rx.candidates.values()),
        f"{fqn}/loop_closure": ("std_msgs/msg/String",
                                [(t, String(data=json.dumps(doc))) for t, doc in rx.loop.values()]),
    }
    if path.exists():  # a re-run replaces the report's own outputs bag, and nothing else
        if not (path / "metadata.yaml").is_file():
            raise ValueError(f"{path} exists and is not a rosbag2: choose another --out")
        shutil.rmtree(path)
    recorder = BagRecorder(client.node, path, {t: ty for t, (ty, _) in streams.items()}, subscribe=False)
    try:
        offset = time.time() - time.monotonic()  # receipt times are monotonic; bags want wall-clock ns
        for topic, (_, items) in streams.items():
            for t_recv, msg in sorted(items, key=lambda item: item[0]):
                recorder.add(topic, msg, int((t_recv + offset) * 1e9))
    except BaseException:
        recorder.abort()
        raise
    return recorder.close()


def evaluate_online(map_dir: Path, drives: list[Drive], out: Path, rate: float = 5.0, idle_s: float = 5.0,
                    device: str = "auto", node_params: dict | None = None, log=None):
    """Start the node, replay every drive into it, record and score; returns (results, queries, answers)."""
    if len({d.compressed for d in drives}) != 1:
        raise ValueError("all bags must carry the same image type (all Image or all CompressedImage)")
    queries = {d.condition: [q for q in bag_queries(d.bag, d.condition)] for d in drives}
    base = node_base_topic(drives[0].image_topic, drives[0].compressed)
    proc = launcher.start(stdout=log, stderr=subprocess.STDOUT if log else None, map=map_dir,
                          image_topic=base, compressed=drives[0].compressed, device=device,
                          parameters={"top_k": RECALL_K, **(node_params or {})})
    client = LocalizerClient(node_name=NODE_NAME)
    try:
        answers = []
        for d in drives:
            check_node(proc, log)
            sent = replay_drive(client, d, rate, idle_s, proc, log)
            answers += answers_for(client, queries[d.condition], sent)
        if client.callback_errors:
            raise RuntimeError(f"listening to the node failed: {client.callback_errors[0]}")
        record_outputs(client, out / "node_outputs")
    finally:
        client.close()
        stop_node(proc)
    flat = [q for d in drives for q in queries[d.condition]]
    m = LocalizationMap.load(map_dir)
    results = [query_result(q, a, m.positions, m.names) for q, a in zip(flat, answers)]
    return results, flat, answers


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


def report_online(map_dir: Path, results, queries, answers, out: Path, meta: dict | None = None):
    """Write the report folder; returns (terminal summary rows, report paths)."""
    m = LocalizationMap.load(map_dir)
    meta = {"mode": "online (bags replayed into the localizer node over DDS)", "map": str(map_dir),
            "map images": len(m), CANDIDATES: RECALL_K, **(meta or {})}
    paths = write_report(out, results, m.positions, online_examples(map_dir, queries, answers, results), meta,
                         title="DISAM online localisation report")
    return summary_rows(results), paths


def stop_node(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
    p.add_argument("--rate", type=positive_float, default=5.0,
                   help="replay time factor (higher = faster; frames may drop)")
    p.add_argument("--idle", type=positive_float, default=5.0, help="seconds without new answers that end a drive")
    p.add_argument("--device", default="auto", help="node device: auto, cpu, cuda[:N]")
    p.add_argument("-p", "--param", action="append", default=[], help="extra node parameter NAME:=VALUE")
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
        params = dict(parse_param(p) for p in args.param)
        top_k = params.get("top_k", RECALL_K)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"-p top_k:={top_k}: need an integer >= 1 (the candidates kept per frame)")
        drives = drives_from_args(args)
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "node.log", "w") as log:
            results, queries, answers = evaluate_online(args.map, drives, args.out, args.rate, args.idle,
                                                        args.device, params, log)
        rows, paths = report_online(args.map, results, queries, answers, args.out,
                                    {"rate": args.rate, "bags": ", ".join(args.bag),
                                     CANDIDATES: top_k})
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
