"""A peer of the localizer node for tests and the benchmark: publishes camera frames (and odometry), records
everything the node publishes (with receipt times), changes its parameters, calls `~/reset`, and reads its
/rosout lines.

Runs its own rclpy context and executor thread, so it can live next to other rclpy users in one process.
Uses RELIABLE QoS and waits for matching, since best-effort images drop heavily between processes here.
The caller chooses the DDS graph before creating one (tests and benchmarks: `disam_ros.ros.env.isolated_env()`).
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray, PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import Log, Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.exceptions import InvalidHandle
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger

from disam_ros.data.image_codec import encode_compressed, encode_image
from disam_ros.ros.messages import sec_to_stamp

Stamp = tuple[int, int]
# Diagnostics counters that account for a frame sent to the node (see LocalizerClient.frames_done).
DONE_COUNTERS = ("dropped_in_queue", "dropped_by_node", "localized", "not_localized", "junk_frames", "bad_input",
                 "errors")


def stamp_key(stamp: Any) -> Stamp:
    return int(stamp.sec), int(stamp.nanosec)


KEYED = ("pose", "pose_cov", "candidates", "loop", "late")  # Received's stores keyed by the query stamp


@dataclass
class Received:
    """What the node published, keyed by the query image stamp; values are (receipt time, message)."""

    pose: dict[Stamp, tuple[float, PoseStamped]] = field(default_factory=dict)
    pose_cov: dict[Stamp, tuple[float, PoseWithCovarianceStamped]] = field(default_factory=dict)
    candidates: dict[Stamp, tuple[float, PoseArray]] = field(default_factory=dict)
    loop: dict[Stamp, tuple[float, dict]] = field(default_factory=dict)
    late: dict[Stamp, tuple[float, dict]] = field(default_factory=dict)  # hints with "late": true (verify_keyframes)
    archive: dict[str, list] = field(default_factory=dict)  # earlier drives' keyed answers (LocalizerClient.new_drive)
    debug: list[tuple[float, Image]] = field(default_factory=list)
    diagnostics: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    rosout: list[tuple[float, Log]] = field(default_factory=list)


class DdsPeer:
    """A private rclpy context + node spun on its own thread, and a condition every callback notifies: the other
    side of a node under test or evaluation (publish to it, record what it publishes, wait for a predicate)."""

    def __init__(self, name_prefix: str) -> None:
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)  # never sys.argv: a CLI's own -p x:=y is not ours
        self.node = rclpy.create_node(f"{name_prefix}_{uuid.uuid4().hex[:8]}", context=self.context)
        self.callback_errors: list[str] = []
        self._cv = threading.Condition()

    def start(self) -> None:
        """Spin on a daemon thread (after the publishers and subscriptions exist)."""
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except InvalidHandle:
                # an entity this process destroyed from another thread (a replay's publisher) while the executor
                # waited on it: rclpy's race with the destroy, not a failing callback (seen once in `make demo`)
                continue
            except Exception as exc:  # noqa: BLE001
                if not self.context.ok():  # shut down under us
                    break
                # a failing callback must not silently end all listening: keep spinning, keep the error
                self.callback_errors.append(f"{type(exc).__name__}: {exc}")

    def _notify(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def wait(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """Block until predicate() is truthy (re-checked on every message); returns its value or None."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cv.wait(min(left, 0.1))

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        self._thread.join(timeout=2.0)


class LocalizerClient(DdsPeer):
    """Talks to one localizer node `/<namespace>/<node_name>` on the topics `image` / `image/compressed`."""

    def __init__(self, namespace: str = "", node_name: str = "disam_localizer") -> None:
        super().__init__("disam_client")
        ns = f"/{namespace.strip('/')}" if namespace.strip("/") else ""
        self.fqn = f"{ns}/{node_name}"
        self.rx = Received()
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_image = self.node.create_publisher(Image, f"{ns}/image", QoSProfile(depth=10))
        self.pub_compressed = self.node.create_publisher(CompressedImage, f"{ns}/image/compressed",
                                                         QoSProfile(depth=10))
        self.pub_prior = self.node.create_publisher(PoseWithCovarianceStamped, f"{ns}/prior", QoSProfile(depth=5))
        sub = self.node.create_subscription
        self.sub_pose = sub(PoseStamped, f"{self.fqn}/pose", self._keyed(self.rx.pose), qos)
        sub(PoseWithCovarianceStamped, f"{self.fqn}/pose_with_covariance", self._keyed(self.rx.pose_cov), qos)
        sub(PoseArray, f"{self.fqn}/candidates", self._keyed(self.rx.candidates), qos)
        sub(String, f"{self.fqn}/loop_closure", self._on_loop, qos)
        sub(Image, f"{self.fqn}/debug_image", lambda m: self._append(self.rx.debug, m), QoSProfile(depth=2))
        sub(DiagnosticArray, "/diagnostics", self._on_diag, qos)
        sub(Log, "/rosout", self._on_log, QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
        self.param_client = self.node.create_client(SetParameters, f"{self.fqn}/set_parameters")
        self.reset_client = self.node.create_client(Trigger, f"{self.fqn}/reset")
        self._ns = ns
        self._archived = 0  # poses moved to the archive by new_drive (the node's `localized` counts them too)
        self._odom_pubs: dict[str, Any] = {}
        self.start()

    # ------------------------------------------------------------------------------------------ receive

    def new_drive(self) -> None:
        """Start matching a new drive's answers: answers are keyed by stamp, and two drives may share stamps (a
        drive and its camera-rate copy start together), so the previous drive's move to `rx.archive` (kept for the
        record, never matched again) and a frame of this drive is never scored by another's answer."""
        with self._cv:
            self._archived += len(self.rx.pose_cov)
            for name in KEYED:
                store = getattr(self.rx, name)
                self.rx.archive.setdefault(name, []).extend(store.values())
                store.clear()

    def keyed(self, name: str) -> list:
        """Every (receipt time, message) of a keyed store, earlier drives' included."""
        return [*self.rx.archive.get(name, []), *getattr(self.rx, name).values()]

    def _keyed(self, store: dict) -> Callable[[Any], None]:
        def cb(msg: Any) -> None:
            store[stamp_key(msg.header.stamp)] = (time.monotonic(), msg)
            self._notify()
        return cb

    def _append(self, store: list, item: Any) -> None:
        store.append((time.monotonic(), item))
        self._notify()

    def _on_loop(self, msg: String) -> None:
        doc = json.loads(msg.data)
        ns = int(doc["query_stamp_ns"])
        store = self.rx.late if doc.get("late") is True else self.rx.loop  # a late one never replaces its frame's
        store[(ns // 1_000_000_000, ns % 1_000_000_000)] = (time.monotonic(), doc)
        self._notify()

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name.startswith(f"{self.fqn}:"):
                self._append(self.rx.diagnostics, {kv.key: kv.value for kv in st.values})

    def _on_log(self, msg: Log) -> None:
        if msg.name == self.fqn.lstrip("/").replace("/", "."):
            self._append(self.rx.rosout, msg)

    def wait_pose(self, stamp: Any, timeout: float) -> PoseStamped | None:
        key = stamp if isinstance(stamp, tuple) else stamp_key(stamp)
        hit = self.wait(lambda: self.rx.pose.get(key), timeout)
        return None if hit is None else hit[1]

    def wait_diagnostics(self, predicate: Callable[[dict[str, str]], bool], timeout: float,
                         after: float = 0.0) -> dict[str, str] | None:
        def find() -> dict[str, str] | None:
            for t, d in reversed(self.rx.diagnostics):
                if t >= after and predicate(d):
                    return d
            return None
        return self.wait(find, timeout)

    def frames_done(self, timeout: float = 10.0) -> tuple[int, int]:
        """(frames the node accounted for, frames it localized) by its latest diagnostics (waiting for a first
        one): every frame sent is lost before it, or processed to an outcome; `localized` counts a frame only
        once its poses are published."""
        self.wait(lambda: self.rx.diagnostics, timeout)
        d = self.rx.diagnostics[-1][1] if self.rx.diagnostics else {}
        return sum(int(d.get(k, 0)) for k in DONE_COUNTERS), int(d.get("localized", 0))

    def wait_frames_done(self, sent: int, base: tuple[int, int], idle_s: float) -> bool:
        """Until the node has accounted for `sent` frames since `base` (frames_done before sending) and every pose
        it published has arrived here; False when nothing moved for idle_s first (a node that stopped reporting)."""
        seen, last = None, time.monotonic()
        while True:
            done, localized = self.frames_done(0.0)
            got = len(self.rx.pose_cov) + self._archived
            if done - base[0] >= sent and got >= localized:
                return True
            if (done, got) != seen:
                seen, last = (done, got), time.monotonic()
            elif time.monotonic() - last > idle_s:
                return False
            time.sleep(0.05)

    def errors(self, after: float = 0.0) -> list[str]:
        return [m.msg for t, m in self.rx.rosout if t >= after and m.level >= Log.ERROR]

    # ------------------------------------------------------------------------------------------ send

    def wait_for_node(self, compressed: bool, timeout: float = 30.0) -> bool:
        """Until the node's image subscription, its pose publisher and the parameter service are matched (~1.3 s
        discovery): a pose published before its publisher matches this client is never delivered."""
        pub = self.pub_compressed if compressed else self.pub_image
        ok = self.wait(lambda: pub.get_subscription_count() > 0 and self.sub_pose.get_publisher_count() > 0, timeout)
        return bool(ok) and self.param_client.wait_for_service(timeout_sec=timeout)

    def publish_raw(self, rgb: np.ndarray | None, stamp: float | tuple[int, int], encoding: str = "rgb8",
                    padding: int = 0, frame_id: str = "camera", **override: Any) -> Stamp:
        """Publish an Image (fields from the codec; `override` replaces any of them to make bad frames)."""
        st = sec_to_stamp(stamp) if isinstance(stamp, float) else _time(stamp)
        f = encode_image(rgb, encoding if encoding in _ENCODABLE else "rgb8", padding=padding) \
            if rgb is not None else None
        fields = dict(height=f.height, width=f.width, encoding=encoding, is_bigendian=f.is_bigendian, step=f.step,
                      data=f.data) if f is not None else {"encoding": encoding}
        fields.update(override)
        self.pub_image.publish(Image(header=Header(stamp=st, frame_id=frame_id), **fields))
        return stamp_key(st)

    def publish_compressed(self, rgb: np.ndarray | None, stamp: float | tuple[int, int], fmt: str = "jpeg",
                           data: bytes | None = None, frame_id: str = "camera") -> Stamp:
        st = sec_to_stamp(stamp) if isinstance(stamp, float) else _time(stamp)
        payload = data if data is not None else encode_compressed(rgb, fmt, 95).data
        self.pub_compressed.publish(CompressedImage(header=Header(stamp=st, frame_id=frame_id), format=fmt,
                                                    data=payload))
        return stamp_key(st)

    def set_parameters(self, values: Mapping[str, Any], timeout: float = 10.0) -> list[tuple[bool, str]]:
        """Call the node's SetParameters service; returns (successful, reason) per parameter."""
        if not self.param_client.wait_for_service(timeout_sec=timeout):  # a request sent before is lost
            raise TimeoutError(f"no SetParameters service on {self.fqn} after {timeout} s: is the node running?")
        req = SetParameters.Request(parameters=[Parameter(name=k, value=_param_value(v)) for k, v in values.items()])
        fut = self.param_client.call_async(req)
        done = self.wait(fut.done, timeout)
        if not done:
            raise TimeoutError(f"SetParameters on {self.fqn} timed out after {timeout} s")
        return [(r.successful, r.reason) for r in fut.result().results]

    def reset(self, timeout: float = 10.0) -> tuple[bool, str]:
        """Call the node's `~/reset` (std_srvs/Trigger); returns (success, message)."""
        if not self.reset_client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"no ~/reset service on {self.fqn} after {timeout} s: is the node configured?")
        fut = self.reset_client.call_async(Trigger.Request())
        if not self.wait(fut.done, timeout):
            raise TimeoutError(f"~/reset on {self.fqn} timed out after {timeout} s")
        return bool(fut.result().success), str(fut.result().message)

    def odometry_publisher(self, topic: str = "odom") -> Any:
        """The nav_msgs/Odometry publisher on `topic` (relative: in the client's namespace), made on first use;
        wait for `get_subscription_count()` before publishing, as for images."""
        name = topic if topic.startswith("/") else f"{self._ns}/{topic}"
        if name not in self._odom_pubs:
            self._odom_pubs[name] = self.node.create_publisher(
                Odometry, name, QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        return self._odom_pubs[name]

    def publish_odometry(self, position: Any, stamp: float, topic: str = "odom", frame_id: str = "odom") -> None:
        """One Odometry message with this position (identity orientation)."""
        msg = Odometry(header=Header(stamp=sec_to_stamp(float(stamp)), frame_id=frame_id), child_frame_id="base_link")
        msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = (float(v) for v in position)
        msg.pose.pose.orientation.w = 1.0
        self.odometry_publisher(topic).publish(msg)

_ENCODABLE = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3", "8UC4", "mono16", "16UC1")


def _time(key: tuple[int, int]) -> Any:
    from builtin_interfaces.msg import Time

    return Time(sec=int(key[0]), nanosec=int(key[1]))


def _param_value(v: Any) -> ParameterValue:
    if isinstance(v, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
    if isinstance(v, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)
    if isinstance(v, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(v))
