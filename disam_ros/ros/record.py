"""`disam-record OUT_BAG --topics ...`: record topics of a live ROS 2 graph into a rosbag2 (rosbags writer).

Replaces `ros2 bag record` where rosbag2 is not installed. Subscriptions are RELIABLE and `raw`, so what is
written is the exact CDR that arrived (no deserialise/serialise round trip); messages handed to
`BagRecorder.add()` in-process (e.g. the localizer's own output) are serialised with
rclpy.serialization.serialize_message. The log time is the receive time (system clock, ns), as rosbag2 does.
Types come from the graph (the recorder waits for a publisher of each topic) or from --types TOPIC:TYPE.

The bag is written under a temp name beside OUT_BAG and renamed when it is closed, so OUT_BAG only ever
exists complete; Ctrl-C (SIGINT/SIGTERM) closes it cleanly. A bad argument (an OUT_BAG under a file, a topic
name rcl refuses, a non-positive --duration) is one line and exit status 2, before DDS starts.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from rclpy.exceptions import InvalidTopicNameException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.serialization import serialize_message
from rclpy.validate_topic_name import validate_topic_name
from rosbags.rosbag2 import Writer

from disam_ros.cliutil import (
    OneLineParser,
    non_negative_float,
    os_error_line,
    output_dir_error,
    positive_float,
    positive_int,
)
from disam_ros.data.bags import STORAGES, TYPESTORE, BagError, publish_dir, staging_dir
from disam_ros.data.bags.write import BAG_OUTPUT
from disam_ros.ros import env
from disam_ros.ros.replay import message_class, reliable_qos


class RecordError(RuntimeError):
    """The recording cannot start (topic never appeared, type unknown to the bag writer)."""


def discover_types(node: Node, topics: Sequence[str], timeout_s: float = 10.0) -> dict[str, str]:
    """Topic -> type from the graph, waiting up to timeout_s for publishers; RecordError naming the rest."""
    deadline = time.monotonic() + timeout_s
    while True:
        graph = {name: types for name, types in node.get_topic_names_and_types()}
        missing = [t for t in topics if not graph.get(t)]
        if not missing:
            return {t: graph[t][0] for t in topics}
        if time.monotonic() > deadline:
            seen = ", ".join(sorted(graph)) or "none"
            raise RecordError(f"topic(s) {', '.join(missing)} not seen after {timeout_s:g} s (graph has: {seen}); "
                              "start the publisher first (same ROS_DOMAIN_ID) or pass --types TOPIC:TYPE")
        time.sleep(0.05)


@dataclass
class RecordSummary:
    path: Path
    counts: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def summary(self) -> str:
        listed = ", ".join(f"{t}: {n}" for t, n in sorted(self.counts.items()))
        return f"recorded {sum(self.counts.values())} messages ({listed}) into {self.path} in {self.wall_s:.2f} s"


class BagRecorder:
    """Writes messages of the given topics (type map topic -> 'pkg/msg/Type') into a new rosbag2."""

    def __init__(self, node: Node, out: str | Path, types: dict[str, str], storage: str = "sqlite3",
                 qos_depth: int = 100, subscribe: bool = True) -> None:
        if storage not in STORAGES:
            raise RecordError(f"unknown storage {storage!r}: use one of {', '.join(STORAGES)}")
        unknown = {t: ty for t, ty in types.items() if ty not in TYPESTORE.types}
        if unknown:
            raise RecordError(f"type(s) {', '.join(sorted(set(unknown.values())))} unknown to the rosbags "
                              "typestore: record standard message types only, or leave those topics out")
        classes = {t: message_class(ty) for t, ty in types.items()} if subscribe else {}  # before staging
        self.node, self.final = node, Path(out)
        # A killed recorder's leftovers beside OUT_BAG go on the next run; the marker lets a re-run replace it.
        self.stage = staging_dir(self.final, kind=BAG_OUTPUT)
        try:
            self.writer = Writer(self.stage.path, version=9, storage_plugin=STORAGES[storage])
            self.writer.open()
            self.connections = {t: self.writer.add_connection(t, ty, typestore=TYPESTORE) for t, ty in types.items()}
        except BaseException:
            self.stage.abort()
            raise
        self.counts = {t: 0 for t in types}
        self.last_ns = 0
        self.subscriptions = []
        for t, cls in classes.items():
            self.subscriptions.append(node.create_subscription(
                cls, t, lambda raw, t=t: self.add(t, raw), reliable_qos(qos_depth), raw=True))

    def add(self, topic: str, msg: object, stamp_ns: int | None = None) -> None:
        """Write one message: raw CDR bytes as they are, an rclpy message via serialize_message."""
        data = msg if isinstance(msg, (bytes, bytearray, memoryview)) else serialize_message(msg)
        t = time.time_ns() if stamp_ns is None else int(stamp_ns)
        self.writer.write(self.connections[topic], t, bytes(data))
        self.counts[topic] += 1
        self.last_ns = time.monotonic_ns()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> Path:
        """Finish the bag and move it to its final path."""
        for sub in self.subscriptions:
            self.node.destroy_subscription(sub)
        self.subscriptions.clear()
        self.writer.close()
        return publish_dir(self.stage)

    def abort(self) -> None:
        for sub in self.subscriptions:
            self.node.destroy_subscription(sub)
        self.writer.close()
        self.stage.abort()


def spin_until(executor, recorder: BagRecorder, duration_s: float | None, max_messages: int | None,
               idle_s: float | None) -> None:
    """Spin until the duration passed, max_messages arrived, or idle_s passed since the last message."""
    start = time.monotonic()
    while True:
        executor.spin_once(timeout_sec=0.05)
        now = time.monotonic()
        if duration_s is not None and now - start >= duration_s:
            return
        if max_messages is not None and recorder.total >= max_messages:
            return
        if idle_s is not None and recorder.total and now - recorder.last_ns * 1e-9 >= idle_s:
            return


def parse_types(items: Sequence[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        topic, sep, typ = item.partition(":")
        if not sep or typ.count("/") != 2:
            raise RecordError(f"--types {item!r}: expected TOPIC:pkg/msg/Type, "
                              "e.g. /camera/image_raw:sensor_msgs/msg/Image")
        out[topic] = typ
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="disam-record", description="Record live topics into a rosbag2.")
    ap.add_argument("bag", type=Path, help="output bag directory (must not exist)")
    ap.add_argument("--topics", nargs="+", required=True)
    ap.add_argument("--types", nargs="+", default=None, help="TOPIC:pkg/msg/Type for topics not yet published")
    ap.add_argument("--storage", choices=tuple(STORAGES), default="sqlite3")
    ap.add_argument("--duration", type=positive_float, default=None, help="stop after this many seconds")
    ap.add_argument("--max-messages", type=positive_int, default=None,
                    help="stop after this many messages (all topics)")
    ap.add_argument("--idle-timeout", type=positive_float, default=None, help="stop this long after the last message")
    ap.add_argument("--discovery-timeout", type=non_negative_float, default=15.0,
                    help="seconds to wait for the topics to appear")
    ap.add_argument("--qos-depth", type=positive_int, default=100)
    return ap


def check_args(a: argparse.Namespace) -> None:
    """RecordError (one line) for what would otherwise fail after DDS start-up, or as a traceback: an output
    path under a file, a topic name rcl refuses, a malformed --types."""
    if problem := output_dir_error(a.bag, "OUT_BAG"):
        raise RecordError(problem)
    for topic in [*a.topics, *parse_types(a.types)]:
        try:
            validate_topic_name(topic)
        except InvalidTopicNameException:
            raise RecordError(f"{topic!r} is not a ROS topic name: use letters, digits, _ and / "
                              "(e.g. /camera/image_raw)") from None


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        check_args(a)
    except RecordError as exc:
        print(f"disam-record: error: {exc}", file=sys.stderr)
        return 2
    try:
        dds = env.apply_ros_defaults()  # a user tool: the user's ROS graph, like the node (before rclpy.init)
    except env.EnvError as exc:
        print(f"disam-record: error: {exc}", file=sys.stderr)
        return 2
    print(f"disam-record: {dds.describe()}", file=sys.stderr, flush=True)
    rclpy.init(args=None)
    node = rclpy.create_node("disam_record")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    recorder = None
    start = time.monotonic()
    try:
        types = parse_types(a.types)
        types.update(discover_types(node, [t for t in a.topics if t not in types], a.discovery_timeout))
        recorder = BagRecorder(node, a.bag, {t: types[t] for t in a.topics}, a.storage, a.qos_depth)
        print(f"disam-record: recording {', '.join(a.topics)} into {a.bag}", flush=True)
        spin_until(executor, recorder, a.duration, a.max_messages, a.idle_timeout)
    except (RecordError, BagError) as exc:
        print(f"disam-record: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the disk filled up, the folder vanished...
        print(f"disam-record: error: {os_error_line(exc, 'choose another OUT_BAG')}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if recorder is not None:
            counts, path = dict(recorder.counts), recorder.close()
            print(f"disam-record: {RecordSummary(path, counts, time.monotonic() - start).summary()}", flush=True)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
