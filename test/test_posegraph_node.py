"""The pose-graph node end to end: a real node process, real DDS on loopback (conftest: LOCALHOST discovery and a
private domain), odometry of a drive that drifts (a known yaw bias) and hand-made verified hints computed from
the drive's ground truth, with the camera mounted off the base (camera_in_base not identity).

The drive is sent once for the module (fixture `drive`) and what the node published is kept; the checks read
it in any order. The bad-input check sends later stamps; the signal checks start nodes of their own.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]
rclpy = pytest.importorskip("rclpy")
pytest.importorskip("gtsam")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from nav_msgs.msg import Path as PathMsg  # noqa: E402
from rcl_interfaces.msg import Log  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402
from test_node_process_utils import start_node_process, stop  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from disam_ros.geometry import R_BODY_OPTICAL, quat_to_rot, rot_to_quat, yaw_pitch_roll_to_quat  # noqa: E402
from disam_ros.ros.client import DdsPeer  # noqa: E402
from disam_ros.ros.messages import LOOP_CLOSURE_SCHEMA, sec_to_stamp, stamp_to_sec  # noqa: E402
from disam_ros.ros.posegraph_msgs import TFMessage  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
T0, DT, STEPS = 1000.0, 0.1, 350  # 35 m at 1 m/s: 20 m straight, a 90 deg left turn over 5 m, 10 m straight
BIAS_DEG_PER_M = 0.8  # the odometry's yaw drift
CAM = np.array([0.4, 0.0, 1.2, *rot_to_quat(R_BODY_OPTICAL)])  # T_base_camera: optical frame 1.2 m up, 0.4 ahead
HINT_EVERY, HINT_LAG = 30, 3  # a hint every 3 m, sent 3 odometry messages after its stamp
MAX_PATH = 300
NODE_PARAMS = {"camera_in_base": "[" + ", ".join(repr(float(v)) for v in CAM) + "]",
               "odom_sigma_deg_per_m": "2.0",  # the drift is a bias: the noise model has to admit it
               "max_path_poses": str(MAX_PATH), "path_period_s": "0.2", "markers_period_s": "0.2",
               "diagnostics_period_s": "0.3"}


def matrix(position: Any, quat: Any) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = quat_to_rot(np.asarray(quat, float)), position
    return m


def pose_of(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return m[:3, 3].copy(), rot_to_quat(m[:3, :3])


def make_drive() -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """(stamps, true T_map_base, odometry T_odom_base): midpoint-integrated unicycle, the odometry's heading
    growing by BIAS_DEG_PER_M per metre on top of the true turn rate. Map = odom at the start."""
    turn = [math.radians(90) / 50 if 200 <= k < 250 else 0.0 for k in range(STEPS)]
    bias = math.radians(BIAS_DEG_PER_M) * DT
    state = {"true": [np.zeros(3), 0.0], "odom": [np.zeros(3), 0.0]}
    stamps, out = [], {"true": [], "odom": []}
    for k in range(STEPS + 1):
        stamps.append(T0 + k * DT)
        for name, (p, yaw) in state.items():
            out[name].append(matrix(p, yaw_pitch_roll_to_quat(yaw)))
            if k < STEPS:
                dyaw = turn[k] + (bias if name == "odom" else 0.0)
                mid = yaw + dyaw / 2
                state[name] = [p + DT * np.array([math.cos(mid), math.sin(mid), 0.0]), yaw + dyaw]
    return np.array(stamps), out["true"], out["odom"]


def hint_json(t: float, T_map_base: np.ndarray, key_index: int) -> str:
    """A verified schema-2 hint: the camera seen from a map keyframe 1 m right, 0.5 m up and 5 deg off."""
    cam = T_map_base @ matrix(CAM[:3], CAM[3:])
    key = cam @ matrix([1.0, -0.5, 0.0], yaw_pitch_roll_to_quat(0.0, math.radians(5.0)))
    rel = np.linalg.inv(key) @ cam
    stamp = sec_to_stamp(t)
    nums = lambda a: [float(v) for v in np.reshape(a, -1)]  # noqa: E731
    return json.dumps({
        "schema": LOOP_CLOSURE_SCHEMA, "query_stamp": t, "query_stamp_ns": stamp.sec * 10**9 + stamp.nanosec,
        "map_index": key_index, "map_name": f"{key_index:06d}.png", "frame_id": "map", "verified": True,
        "position": nums(cam[:3, 3]), "orientation_xyzw": nums(rot_to_quat(cam[:3, :3])),
        "keyframe_index": key_index, "keyframe_position": nums(key[:3, 3]),
        "keyframe_orientation_xyzw": nums(rot_to_quat(key[:3, :3])), "relative_position": nums(rel[:3, 3]),
        "relative_orientation_xyzw": nums(rot_to_quat(rel[:3, :3])),
        "relative_covariance": nums(np.diag([0.05**2] * 3 + [math.radians(1.0) ** 2] * 3))})


def midpoint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The pose halfway from a to b as the graph reads odometry between samples (linear, slerp)."""
    m = np.eye(4)
    m[:3, 3] = 0.5 * (a[:3, 3] + b[:3, 3])
    m[:3, :3] = quat_to_rot(rot_to_quat(a[:3, :3]) + rot_to_quat(b[:3, :3]))
    return m


@dataclass
class Rx:
    pose: list = field(default_factory=list)
    path: list = field(default_factory=list)
    markers: list = field(default_factory=list)
    map_to_odom: list = field(default_factory=list)
    tf: list = field(default_factory=list)
    diagnostics: list = field(default_factory=list)
    rosout: list = field(default_factory=list)


class Peer(DdsPeer):
    """The test's side of the DDS graph: publishes odometry and hints, records what the node publishes."""

    def __init__(self, ns: str) -> None:
        super().__init__("posegraph_peer")
        self.fqn, self.rx = f"/{ns}/disam_posegraph", Rx()
        rel = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_odom = self.node.create_publisher(Odometry, f"/{ns}/odom", rel)
        self.pub_hint = self.node.create_publisher(String, f"/{ns}/loop_closure", rel)
        sub = self.node.create_subscription
        self.sub_pose = sub(PoseWithCovarianceStamped, f"{self.fqn}/pose", self._into(self.rx.pose), rel)
        sub(PathMsg, f"{self.fqn}/path", self._into(self.rx.path), rel)
        sub(MarkerArray, f"{self.fqn}/markers", self._into(self.rx.markers), rel)
        sub(TransformStamped, f"{self.fqn}/map_to_odom", self._into(self.rx.map_to_odom), rel)
        if TFMessage is not None:
            sub(TFMessage, "/tf", self._into(self.rx.tf), rel)
        sub(DiagnosticArray, "/diagnostics", self._on_diag, rel)
        sub(Log, "/rosout", self._on_log, QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
        self.start()

    def _into(self, store: list) -> Any:
        def cb(msg: Any) -> None:
            with self._cv:
                store.append(msg)
                self._cv.notify_all()
        return cb

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name.startswith(f"{self.fqn}:"):
                self._into(self.rx.diagnostics)({kv.key: kv.value for kv in st.values})

    def _on_log(self, msg: Log) -> None:
        if msg.name == self.fqn.lstrip("/").replace("/", "."):
            self._into(self.rx.rosout)(msg)

    def wait_for_node(self, timeout: float = 30.0) -> bool:
        """Matched both ways before the drive: our writers have found the node's readers, our ~/pose reader has
        found its writer, and one of the node's diagnostics has arrived, which shows the node's own side has
        found us (a pose published before its writer matched our reader is lost: that made the first pose
        check fail once in CI)."""
        return bool(self.wait(lambda: self.pub_odom.get_subscription_count() > 0
                              and self.pub_hint.get_subscription_count() > 0
                              and self.sub_pose.get_publisher_count() > 0 and bool(self.rx.diagnostics), timeout))

    def odometry(self, t: float, m: np.ndarray, frame_id: str = "odom") -> None:
        msg = Odometry(header=Header(stamp=sec_to_stamp(t), frame_id=frame_id), child_frame_id="base_link")
        p, q = pose_of(m)
        msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = (float(v) for v in p)
        o = msg.pose.pose.orientation
        o.x, o.y, o.z, o.w = (float(v) for v in q)
        self.pub_odom.publish(msg)

    def pose_at(self, t: float, timeout: float = 10.0) -> PoseWithCovarianceStamped | None:
        key = sec_to_stamp(t)
        return self.wait(lambda: next((m for m in reversed(self.rx.pose) if m.header.stamp == key), None), timeout)

    def diagnostics(self, predicate: Any, timeout: float = 10.0) -> dict | None:
        return self.wait(lambda: next((d for d in reversed(self.rx.diagnostics) if predicate(d)), None), timeout)



def start_node(ns: str, log: Path) -> subprocess.Popen:
    return start_node_process("disam_ros.ros.posegraph_node", REPO / "config" / "posegraph.yaml", ns, log, NODE_PARAMS)


@dataclass
class Drive:
    peer: Peer
    proc: subprocess.Popen
    log: Path
    stamps: np.ndarray
    truth: list
    odom: list
    hints: int
    pose: PoseWithCovarianceStamped
    path: PathMsg
    map_to_odom: TransformStamped
    markers: MarkerArray
    diag: dict
    tf: list
    next_t: list  # the next free odometry stamp for checks that send more


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    """The node, fed the whole drive with flow control (every 25 messages it waits for the node's ~/pose to
    catch up, so no odometry is lost to a full queue), and what it published once it was done. The first pose is
    not waited for: the node's writer may match our reader a moment after ours matched its, and a volatile writer
    drops what it sends before that."""
    ns = f"pg_{uuid.uuid4().hex[:6]}"
    log = tmp_path_factory.mktemp("posegraph") / "node.log"
    proc, peer = start_node(ns, log), Peer(ns)
    try:
        if not peer.wait_for_node(60.0):
            pytest.fail(f"node did not come up:\n{log.read_text(errors='replace')[-3000:]}")
        stamps, truth, odom = make_drive()
        hint_at = {k: stamps[k] + 0.5 * DT for k in range(10, STEPS, HINT_EVERY)}
        for k, t in enumerate(stamps):
            peer.odometry(t, odom[k])
            if (k - HINT_LAG) in hint_at:
                j = k - HINT_LAG
                peer.pub_hint.publish(String(data=hint_json(hint_at[j], midpoint(truth[j], truth[j + 1]), j)))
            if k and k % 25 == 0 and peer.pose_at(t, 10.0) is None:  # not odometry 0: its pose may precede the match
                pytest.fail(f"no ~/pose for odometry {k}:\n{log.read_text(errors='replace')[-3000:]}")
        last = stamps[-1]
        pose = peer.pose_at(last, 10.0)
        key = sec_to_stamp(last)
        path = peer.wait(lambda: next((p for p in reversed(peer.rx.path) if p.header.stamp == key), None), 10.0)
        m2o = peer.wait(lambda: next((m for m in reversed(peer.rx.map_to_odom) if m.header.stamp == key), None), 5.0)
        tf = TFMessage is None or peer.wait(  # /tf is its own topic: its copy may come after ~/map_to_odom's
            lambda: any(t.header.stamp == key for msg in peer.rx.tf for t in msg.transforms), 5.0)
        diag = peer.diagnostics(lambda d: int(d["nodes"]) == len(stamps) and
                                int(d["closures_added"]) == len(hint_at), 10.0)
        markers = peer.wait(lambda: next((m for m in reversed(peer.rx.markers)
                                           if len(m.markers[1].points) + len(m.markers[2].points)
                                           == 2 * len(hint_at)), None), 10.0)
        assert pose and path and m2o and tf and diag and markers, (bool(pose), bool(path), bool(m2o), bool(tf), diag,
                                                                   log.read_text(errors="replace")[-3000:])
        yield Drive(peer, proc, log, stamps, truth, odom, len(hint_at), pose, path, m2o, markers, diag,
                    list(peer.rx.tf), [last + 1.0])
    finally:
        stop(proc)
        peer.close()


def _position(p: Any) -> np.ndarray:
    return np.array([p.x, p.y, p.z])


def test_path_is_far_closer_to_the_truth_than_the_odometry(drive):
    truth_end = drive.truth[-1][:3, 3]
    odom_error = float(np.linalg.norm(drive.odom[-1][:3, 3] - truth_end))
    assert odom_error > 4.0, f"the drive should drift: {odom_error:.2f} m"
    last = drive.path.poses[-1]
    assert last.header.stamp == sec_to_stamp(drive.stamps[-1]) and drive.path.header.frame_id == "map"
    corrected_error = float(np.linalg.norm(_position(last.pose.position) - truth_end))
    assert corrected_error < 0.1 * odom_error and corrected_error < 0.5, (corrected_error, odom_error)
    assert len(drive.path.poses) == MAX_PATH  # 351 nodes, the newest 300 kept
    assert stamp_to_sec(drive.path.poses[0].header.stamp) == pytest.approx(drive.stamps[-MAX_PATH])
    assert _position(drive.pose.pose.pose.position) == pytest.approx(_position(last.pose.position), abs=1e-9)
    cov = np.reshape(drive.pose.pose.covariance, (6, 6))
    assert np.all(np.diag(cov) > 0) and np.allclose(cov, cov.T)


def test_map_to_odom_maps_the_last_odometry_onto_the_corrected_pose(drive):
    tr = drive.map_to_odom.transform
    assert (drive.map_to_odom.header.frame_id, drive.map_to_odom.child_frame_id) == ("map", "odom")
    T_map_odom = matrix(_position(tr.translation), [tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w])
    composed = T_map_odom @ drive.odom[-1]
    p = drive.pose.pose.pose
    corrected = matrix(_position(p.position), [p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w])
    assert np.allclose(composed, corrected, atol=1e-6)
    assert float(drive.diag["map_to_odom_m"]) == pytest.approx(np.linalg.norm(T_map_odom[:3, 3]), abs=1e-3)
    if TFMessage is None:
        pytest.skip("tf2_msgs not installed (make venv generates it): /tf not checked")
    same = [t for msg in drive.tf for t in msg.transforms if t.header.stamp == drive.map_to_odom.header.stamp]
    assert same and same[-1] == drive.map_to_odom


def test_markers_show_the_accepted_closures(drive):
    spheres, good, bad = drive.markers.markers
    assert [m.id for m in drive.markers.markers] == [0, 1, 2] and spheres.header.frame_id == "map"
    assert len(spheres.points) == drive.hints  # one keyframe per hint here
    accepted = int(drive.diag["closures_accepted"])
    assert accepted >= drive.hints - 1 and len(good.points) == 2 * accepted
    assert good.color.g > 0.5 and (bad.action == bad.DELETE) == (accepted == drive.hints)


def test_diagnostics_count_the_drive(drive):
    d = drive.diag
    assert int(d["nodes"]) == len(drive.stamps) and int(d["odometry_received"]) == len(drive.stamps)
    assert int(d["closures_added"]) == drive.hints == int(d["hints_received"])
    assert int(d["closures_accepted"]) + int(d["closures_rejected"]) == drive.hints
    assert float(d["last_update_ms"]) >= 0.0 and d["state"] == "active"


def test_bad_inputs_are_counted_and_the_node_keeps_serving(drive):
    peer = drive.peer
    before = peer.diagnostics(lambda d: True, 5.0)
    t0 = time.monotonic()
    last_odom = drive.odom[-1]
    t = drive.next_t[0]
    peer.pub_hint.publish(String(data="{this is not json"))
    peer.odometry(t, last_odom)
    peer.odometry(t - 0.5, last_odom)  # goes back in time
    peer.odometry(t + 0.1, last_odom)
    drive.next_t[0] = t + 1.0
    assert peer.pose_at(t + 0.1, 10.0) is not None, "the node stopped serving after bad input"
    d = peer.diagnostics(lambda d: int(d["odometry_rejected"]) > int(before["odometry_rejected"])
                         and int(d["hints_rejected"]) > int(before["hints_rejected"]), 10.0)
    assert d is not None, peer.rx.diagnostics[-1:]
    assert int(d["odometry_rejected"]) - int(before["odometry_rejected"]) == 1
    assert int(d["hints_rejected"]) - int(before["hints_rejected"]) == 1
    warned = peer.wait(lambda: [m.msg for m in peer.rx.rosout if "is not after the previous" in m.msg], 5.0)
    assert warned and "\n" not in warned[0]
    assert drive.proc.poll() is None and time.monotonic() - t0 < 15.0


def _fresh_diagnostics(peer: Peer) -> dict | None:
    """A /diagnostics status published after everything sent so far was handled (two statuses from now)."""
    n0 = len(peer.rx.diagnostics)
    return peer.wait(lambda: len(peer.rx.diagnostics) >= n0 + 2 and peer.rx.diagnostics[-1], 10.0)


def test_absurd_odometry_and_a_future_stamp_are_refused_and_outputs_stay_finite(drive):
    """The probe's inputs over DDS: (1e308, 1e308) then (1e300, 1e300) (before: every later pose at -4.5e291 with a
    NaN covariance) and one stamp 11.6 days ahead (before: every later message refused). Now the three are refused
    and counted, the good messages around them are processed, and nothing non-finite is published."""
    peer = drive.peer
    before = _fresh_diagnostics(peer)
    t, base = drive.next_t[0], drive.odom[-1]
    absurd = [base.copy(), base.copy()]
    absurd[0][:2, 3], absurd[1][:2, 3] = 1e308, 1e300
    peer.odometry(t, base)
    peer.odometry(t + 0.1, absurd[0])
    peer.odometry(t + 0.2, absurd[1])
    peer.odometry(t + 11.6 * 86400.0, base)
    good = [t + 0.2 + 0.1 * k for k in range(1, 6)]
    for s in good:
        peer.odometry(s, base)
    drive.next_t[0] = good[-1] + 1.0
    assert all(peer.pose_at(s, 10.0) is not None for s in good), "a good message after the bad ones was lost"
    d = peer.diagnostics(lambda d: int(d["odometry_received"]) - int(before["odometry_received"]) == 9, 10.0)
    assert d is not None, peer.rx.diagnostics[-1:]
    delta = {k: int(d[k]) - int(before[k]) for k in ("odometry_processed", "odometry_rejected", "odometry_resets",
                                                      "outputs_suppressed")}
    assert delta == {"odometry_processed": 6, "odometry_rejected": 3, "odometry_resets": 0, "outputs_suppressed": 0}
    since = sec_to_stamp(t)
    published = [m for m in list(peer.rx.pose) if (m.header.stamp.sec, m.header.stamp.nanosec) >= (since.sec,
                                                                                                  since.nanosec)]
    assert len(published) == 6
    for m in published:
        p, o = m.pose.pose.position, m.pose.pose.orientation
        assert np.isfinite([p.x, p.y, p.z, o.x, o.y, o.z, o.w, *m.pose.covariance]).all()
    assert float(d["map_to_odom_m"]) == pytest.approx(float(before["map_to_odom_m"]), abs=0.5)
    assert drive.proc.poll() is None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_clean_shutdown(tmp_path, sig):
    ns = f"pg_sig_{uuid.uuid4().hex[:6]}"
    log = tmp_path / "node.log"
    proc, peer = start_node(ns, log), Peer(ns)
    try:
        if not peer.wait_for_node(60.0):
            stop(proc, signal.SIGKILL)
            pytest.fail(f"node did not come up:\n{log.read_text(errors='replace')[-3000:]}")
    finally:
        peer.close()
    t0 = time.monotonic()
    rc = stop(proc, sig)
    text = log.read_text(errors="replace")
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text and "shutting down" in text
    assert time.monotonic() - t0 < 5.0
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"


def test_lifecycle_transitions_in_process():
    """configure builds the graph, activate subscribes, deactivate unsubscribes and keeps the graph, cleanup drops
    it, shutdown works from any state; a bad value fails configure with one line and leaves it unconfigured."""
    from rclpy.lifecycle import TransitionCallbackReturn

    from disam_ros.ros.posegraph_node import PoseGraphNode

    ctx = rclpy.Context()
    rclpy.init(args=[], context=ctx)
    node = bad = None
    try:
        node = PoseGraphNode(context=ctx, namespace=f"pg_lc_{uuid.uuid4().hex[:6]}")
        assert node.state == "unconfigured" and node.graph is None
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS and node.state == "inactive"
        assert node.graph is not None and getattr(node, "sub_odom", None) is None
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS and node.state == "active"
        assert node.sub_odom is not None and node.sub_hint is not None
        graph = node.graph
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS and node.state == "inactive"
        assert node.sub_odom is None and node.graph is graph
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS and node.state == "unconfigured"
        assert node.graph is None and node.feed is None
        node.close()
        assert node.state == "finalized"
        bad = PoseGraphNode(context=ctx, cli_args=["--ros-args", "-p", "robust:=tukey"],
                            namespace=f"pg_bad_{uuid.uuid4().hex[:6]}")
        assert bad.trigger_configure() == TransitionCallbackReturn.FAILURE and bad.state == "unconfigured"
        assert bad.config_error == "robust 'tukey' is not valid: use one of cauchy, huber, none"
    finally:
        for n in (node, bad):
            if n is not None:
                n.destroy_node()
        rclpy.shutdown(context=ctx)


def test_log_throttle_period_is_the_parameter():
    """`log_throttle_s` sets how often one kind of warning is logged: at 0.25 s the same kind passes again after
    0.3 s, where the default (5 s) would still hold it back."""
    from disam_ros.ros.posegraph_node import PoseGraphNode

    ctx = rclpy.Context()
    rclpy.init(args=[], context=ctx)
    node = None
    try:
        node = PoseGraphNode(context=ctx, cli_args=["--ros-args", "-p", "log_throttle_s:=0.25"],
                             namespace=f"pg_thr_{uuid.uuid4().hex[:6]}")
        node.start()
        text = "odometry refused: its stamp is not after the previous one"
        assert node._log_warn(text) and not node._log_warn(text)  # the second within the period is held back
        time.sleep(0.3)
        assert node._log_warn(text)
        assert node._log_error.period_s == 0.25
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.shutdown(context=ctx)
