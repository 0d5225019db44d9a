"""`disam-hint-relay`: the localizer's loop-closure hints -> rtabmap's `global_pose` / slam_toolbox's `initialpose`.

The geometry by hand first (covariance rotation keyframe -> map, base pose from the camera pose with a hand-made
camera_in_base, the stamp, the trigger gate), then two real node processes over real DDS on loopback (conftest:
LOCALHOST discovery, a private domain): one per target, fed hints made by the localizer's own hint builder
(disam_ros.ros.messages.loop_closure on a real Verification), then the command line's one-line errors, and the
params file, launch file and docs kept in step with the declared parameters.
"""
from __future__ import annotations

import ast
import json
import math
import re
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from test_node_process_utils import start_node_process, stop  # noqa: E402

from disam_ros import geometry as G  # noqa: E402
from disam_ros.geometry import R_BODY_OPTICAL, quat_to_rot  # noqa: E402
from disam_ros.pose.relative import relative_covariance  # noqa: E402
from disam_ros.ros import hint_parse as H  # noqa: E402
from disam_ros.ros import hint_relay as HR  # noqa: E402
from disam_ros.ros import hint_relay_math as RM  # noqa: E402
from disam_ros.ros.client import DdsPeer  # noqa: E402
from disam_ros.ros.env import child_env  # noqa: E402
from disam_ros.ros.messages import loop_closure  # noqa: E402
from disam_ros.verify.verifier import Verification  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
S2 = math.sqrt(0.5)
YAW90 = np.array([0.0, 0.0, S2, S2])  # rotation of +90 deg about z, xyzw
Q_BODY_OPTICAL = np.array([-0.5, 0.5, -0.5, 0.5])  # R_BODY_OPTICAL (optical z forward -> body x), by hand
# The hand-made mount: the optical frame 0.5 m ahead of the base and 1.0 m up, looking forward.
CAMERA_IN_BASE = [0.5, 0.0, 1.0, *Q_BODY_OPTICAL]
# The scene: the base at (10, 5, 0) facing +y (yaw 90 deg); so the camera is at (10, 5.5, 1.0).
BASE_POSITION = np.array([10.0, 5.0, 0.0])
CAM_POSITION = np.array([10.0, 5.5, 1.0])
KEY_POSITION = np.array([8.0, 5.0, 1.2])
STAMP_NS = 1_700_000_000_123_456_789  # not representable in float seconds: the stamp must stay exact
FENCE_NS = STAMP_NS - 10**4 * 10**9  # the fixture's warm-up hints: far before every test's stamps


def rz(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def axis_angle(axis: Any, deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(R by Rodrigues, the quaternion xyzw) of a rotation by `deg` about `axis`, both from the textbook formulas."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = math.radians(deg)
    K = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    R = np.eye(3) + math.sin(t) * K + (1.0 - math.cos(t)) * K @ K
    return R, np.array([*(a * math.sin(t / 2)), math.cos(t / 2)])


def qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of xyzw quaternions (a then b: R(a) R(b))."""
    (x1, y1, z1, w1), (x2, y2, z2, w2) = a, b
    return np.array([w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2, w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                     w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2, w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2])


def same_rotation(q1: Any, q2: Any) -> bool:
    return abs(abs(float(np.dot(q1, q2))) - 1.0) < 1e-9


CAM_QUAT = qmul(YAW90, Q_BODY_OPTICAL)  # T_map_cam rotation = T_map_base T_base_cam
KEY_QUAT = axis_angle([0.2, -0.3, 1.0], 70.0)[1]
ABS_COV = (lambda A: A @ A.T + np.diag([0.04, 0.05, 0.09, 1e-4, 2e-4, 3e-4]))(
    np.random.default_rng(3).normal(scale=0.05, size=(6, 6)))  # the solver's covariance, map frame, full 6x6


def hint_text(stamp_ns: int = STAMP_NS, verified: bool = True, frame_id: str = "map") -> str:
    """A schema-2 hint made by the localizer's own builder (messages.loop_closure + Verification.relative)."""
    k = 7
    v = Verification(outcome="verified" if verified else "too_few_inliers", index=k, position=CAM_POSITION.copy(),
                     quat=CAM_QUAT.copy(), covariance=ABS_COV.copy(), inliers=80, matches=120, inlier_ratio=0.66,
                     reprojection_px=0.8)
    res = SimpleNamespace(topk=[(k, 0.9)], index=k, name=f"{k:06d}.png", stamp=None, confidence=0.97,
                          position=CAM_POSITION.copy(), quat=CAM_QUAT.copy(), verification=v)
    loc_map = SimpleNamespace(positions=np.tile(KEY_POSITION, (10, 1)), quats=np.tile(KEY_QUAT, (10, 1)),
                              names=[f"{i:06d}.png" for i in range(10)])
    sec, nanosec = divmod(stamp_ns, 10**9)
    return loop_closure(res, Time(sec=sec, nanosec=nanosec), "sunny", frame_id, loc_map).data


# ---------------------------------------------------------------------------------------------- pure geometry


def test_yaw_90_keyframe_swaps_the_x_and_y_variances():
    cov_key = np.diag([1.0, 4.0, 9.0, 0.01, 0.04, 0.09])
    cov_map = RM.keyframe_to_map_covariance(cov_key, YAW90)
    assert np.allclose(cov_map, np.diag([4.0, 1.0, 9.0, 0.04, 0.01, 0.09]), atol=1e-12)


def test_full_covariance_is_rotated_blockwise():
    R, q = axis_angle([1.0, 2.0, -0.5], 123.0)
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6))
    cov = A @ A.T + np.eye(6)
    blocks = [[R @ cov[i:i + 3, j:j + 3] @ R.T for j in (0, 3)] for i in (0, 3)]
    expect = np.block(blocks)  # each 3x3 block rotated: position-position, position-rotation, rotation-rotation
    assert np.allclose(RM.keyframe_to_map_covariance(cov, q), expect, atol=1e-10)
    # ... and it undoes what the localizer did to make the hint's relative_covariance (disam_ros.pose.relative)
    assert np.allclose(RM.keyframe_to_map_covariance(relative_covariance(cov, q), q), cov, atol=1e-10)


def test_covariance_rotation_matches_sampled_perturbations():
    """Perturb the relative pose in the keyframe frame (position additive, rotation on the left), compose with the
    keyframe, read the perturbation off in the map frame: its spread is the rotated covariance."""
    R_key, q_key = axis_angle([0.3, -1.0, 0.4], 40.0)
    cov_key = np.diag([0.04, 0.01, 0.09, 1e-4, 4e-4, 9e-4])
    cov_key[0, 4] = cov_key[4, 0] = 0.5 * math.sqrt(0.04 * 4e-4)
    R_rel = axis_angle([0.0, 1.0, 0.0], 10.0)[0]
    R_map = R_key @ R_rel
    d = np.random.default_rng(1).multivariate_normal(np.zeros(6), cov_key, size=20000)
    out = np.empty_like(d)
    for i, (dp, w) in enumerate(zip(d[:, :3], d[:, 3:])):
        R_w, _ = axis_angle(w, math.degrees(np.linalg.norm(w))) if np.linalg.norm(w) > 0 else (np.eye(3), None)
        E = (R_key @ R_w @ R_rel) @ R_map.T  # the map-frame left perturbation
        out[i, :3] = R_key @ dp
        out[i, 3:] = 0.5 * np.array([E[2, 1] - E[1, 2], E[0, 2] - E[2, 0], E[1, 0] - E[0, 1]])
    sampled = np.cov(out.T)
    expect = RM.keyframe_to_map_covariance(cov_key, q_key)
    assert np.allclose(sampled, expect, atol=0.05 * np.sqrt(np.outer(np.diag(expect), np.diag(expect))).max())
    assert np.allclose(np.diag(sampled), np.diag(expect), rtol=0.05)


def test_base_pose_from_the_camera_pose_and_a_hand_made_mount():
    assert np.allclose(quat_to_rot(Q_BODY_OPTICAL), R_BODY_OPTICAL)  # the hand quaternion is the optical mount
    hint = H.parse_hint(hint_text())
    assert np.allclose(hint.pose.position, CAM_POSITION)
    pose, cov = RM.base_pose(hint, H.parse_camera_in_base(CAMERA_IN_BASE))
    assert np.allclose(pose.position, BASE_POSITION, atol=1e-12)  # (10, 5.5, 1) minus the mount turned 90 deg
    assert same_rotation(pose.quat, YAW90)
    assert np.allclose(cov[3:, 3:], ABS_COV[3:, 3:], atol=1e-12)  # the rotation uncertainty does not change ...
    assert np.all(np.diag(cov)[:3] > 0) and np.allclose(cov, cov.T)  # ... the position one grows by the lever arm
    identity = RM.base_pose(hint, H.parse_camera_in_base(HR.IDENTITY))[0]
    assert np.allclose(identity.position, CAM_POSITION) and same_rotation(identity.quat, CAM_QUAT)
    with pytest.raises(ValueError, match="unverified"):
        RM.base_pose(H.parse_hint(hint_text(verified=False)), H.parse_camera_in_base(HR.IDENTITY))


def test_camera_pose_recovers_the_solver_covariance_and_skips_unverified():
    pose, cov = RM.camera_pose(H.parse_hint(hint_text()))
    assert np.allclose(pose.position, CAM_POSITION) and same_rotation(pose.quat, CAM_QUAT)
    assert np.allclose(cov, ABS_COV, atol=1e-12)  # relative_covariance rotated back into the map frame
    unverified = H.parse_hint(hint_text(verified=False))
    assert RM.camera_pose(unverified) is None
    diag = np.diag([25.0] * 3 + [math.radians(10.0) ** 2] * 3)
    assert np.allclose(RM.camera_pose(unverified, diag)[1], diag)


def test_stamp_is_exact_nanoseconds():
    text = hint_text()
    assert RM.stamp_ns(text, H.parse_hint(text)) == STAMP_NS
    no_ns = text.replace('"query_stamp_ns"', '"ignored_ns"')
    assert abs(RM.stamp_ns(no_ns, H.parse_hint(no_ns)) - STAMP_NS) < 1000  # from float seconds: ~100 ns off


# Hostile hints (reliability checklist R2, R3): a stamp past int32 seconds, and a covariance whose diagonal is
# positive but whose [x, y] block [[1, 5], [5, 1]] has the eigenvalues 1 - 5 = -4 and 1 + 5 = 6.
INDEFINITE_COV = np.eye(6)
INDEFINITE_COV[0, 1] = INDEFINITE_COV[1, 0] = 5.0


def hostile(text: str, **keys: Any) -> str:
    """A good hint with some keys replaced (JSON round trip, so the rest stays the localizer's own)."""
    return json.dumps(json.loads(text) | keys)


def test_the_hand_made_indefinite_covariance_is_what_the_rows_say():
    assert INDEFINITE_COV[0, 1] == INDEFINITE_COV[1, 0] == 5.0 and (np.diag(INDEFINITE_COV) == 1.0).all()
    assert np.allclose(np.linalg.eigvalsh(INDEFINITE_COV), [-4.0, 1.0, 1.0, 1.0, 1.0, 6.0])


@pytest.mark.parametrize("keys,expect", [
    ({"query_stamp_ns": 2**70}, "'query_stamp_ns' 1180591620717411303424 is past the largest ROS time"),
    ({"query_stamp_ns": 2**31 * 10**9}, "is past the largest ROS time (2147483647999999999 ns"),
    ({"query_stamp_ns": None, "query_stamp": 1e10}, "'query_stamp' 10000000000.0 is past the largest ROS time"),
    ({"relative_covariance": INDEFINITE_COV.reshape(36).tolist()},
     "'relative_covariance' is not positive semi-definite (smallest eigenvalue -4, largest 6)"),
])
def test_hints_a_ros_message_cannot_carry_are_refused_in_one_line(keys, expect):
    with pytest.raises(H.HintError) as err:
        H.parse_hint(hostile(hint_text(), **keys))
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_the_last_representable_stamp_still_relays_exactly():
    last = 2**31 * 10**9 - 1  # 2038-01-19 03:14:07.999999999: sec 2147483647 = int32 max
    text = hostile(hint_text(), query_stamp_ns=last)
    assert RM.stamp_ns(text, H.parse_hint(text)) == last
    msg = HR.pose_message(last, "cam", *RM.camera_pose(H.parse_hint(text)))
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (2**31 - 1, 999_999_999)


def test_one_covariance_rule_round_off_passes_a_wrong_sign_does_not():
    good = ABS_COV
    rotated = RM.keyframe_to_map_covariance(good, KEY_QUAT)  # J C J^T: round-off only
    assert G.covariance_problem(good) is None and G.covariance_problem(rotated) is None
    assert G.covariance_problem(np.zeros((6, 6))) is None  # semi-definite (the hint adds its own variance > 0 rule)
    lam = np.linalg.eigvalsh(good)[-1]
    nearly = good - (np.linalg.eigvalsh(good)[0] + 0.5 * G.COVARIANCE_RTOL * lam) * np.eye(6)  # min eig -0.5e-9 max
    assert G.covariance_problem(nearly) is None
    worse = good - (np.linalg.eigvalsh(good)[0] + 10 * G.COVARIANCE_RTOL * lam) * np.eye(6)
    assert "not positive semi-definite" in G.covariance_problem(worse)
    assert "not symmetric" in G.covariance_problem(good + np.eye(6, k=1) * 1e-3)
    assert "not finite" in G.covariance_problem(np.where(np.eye(6) > 0, np.nan, 0.0))
    with pytest.raises(ValueError, match="closure covariance is not positive semi-definite"):
        G.checked_covariance(INDEFINITE_COV, "closure covariance")
    assert np.array_equal(G.checked_covariance(good.reshape(36).tolist(), "c"), 0.5 * (good + good.T))


def test_trigger_gate():
    gate, s = RM.TriggerGate(5.0), 10**9
    assert [gate.allow(t * s) for t in (100, 101, 104, 105, 106, 110)] == [True, False, False, True, False, True]
    assert not gate.allow(108 * s)  # a little older (reordered): still throttled
    assert gate.allow(50 * s)  # far back (a restarted bag): re-armed
    every = RM.TriggerGate(0.0)
    assert all(every.allow(t) for t in (5, 5, 6, 1))


@pytest.mark.parametrize("change,expect", [
    ({"target": "cartographer"}, "target 'cartographer' is not valid: use one of rtabmap, slam_toolbox"),
    ({"camera_frame": ""}, "camera_frame is empty: target rtabmap needs the camera's optical frame"),
    ({"target": "slam_toolbox", "verified_only": False}, "verified_only false does not apply to target slam_toolbox"),
    ({"min_period_s": -1}, "min_period_s must be >= 0"),
    ({"camera_in_base": [1.0, 2.0]}, "camera_in_base must be 7 finite numbers"),
    ({"unverified_sigma_m": 0.0}, "parameter 'unverified_sigma_m' must be > 0"),
    ({"log_throttle_s": 0.0}, "parameter 'log_throttle_s' must be > 0"),
    ({"map_frame": "my map"}, "map_frame 'my map' is not a frame name"),
])
def test_bad_values_are_one_line_errors(change, expect):
    values = {p.name: p.default for p in HR.PARAMETERS} | {"camera_frame": "cam"} | change
    with pytest.raises(ValueError) as err:
        HR.check_config(values)
    assert expect in str(err.value) and "\n" not in str(err.value)
    ok = HR.check_config({p.name: p.default for p in HR.PARAMETERS} | {"target": "slam_toolbox"})
    assert ok.min_period_s == 5.0 and ok.camera_in_base == HR.IDENTITY  # slam_toolbox needs no camera_frame


# ---------------------------------------------------------------------------------------------- over DDS


class Peer(DdsPeer):
    """The test's side: publishes hints to both relays, records what they publish."""

    def __init__(self, ns_rtab: str, ns_slam: str) -> None:
        super().__init__("hint_relay_peer")
        rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.rtab: list[PoseWithCovarianceStamped] = []
        self.slam: list[PoseWithCovarianceStamped] = []
        self.pub_rtab = self.node.create_publisher(String, f"/{ns_rtab}/loop_closure", rel)
        self.pub_slam = self.node.create_publisher(String, f"/{ns_slam}/loop_closure", rel)
        self.topics = (f"/{ns_rtab}/global_pose", f"/{ns_slam}/initialpose")
        self.node.create_subscription(PoseWithCovarianceStamped, self.topics[0], self._into(self.rtab), rel)
        self.node.create_subscription(PoseWithCovarianceStamped, self.topics[1], self._into(self.slam), rel)
        self.start()

    def _into(self, store: list) -> Any:
        def cb(msg: Any) -> None:
            with self._cv:
                store.append(msg)
                self._cv.notify_all()
        return cb

    def ready(self) -> bool:
        return (self.pub_rtab.get_subscription_count() > 0 and self.pub_slam.get_subscription_count() > 0
                and all(self.node.count_publishers(t) > 0 for t in self.topics))

    def fence(self, timeout: float = 60.0) -> bool:
        """True once a hint has gone both ways on both relays. The graph shows the relays' publishers before
        their DDS writers have matched our readers, and a volatile writer drops what it sends before that (a CI
        run lost a test's three initialposes so), so hints stamped long before the tests' own are sent until
        one comes back, then one more is waited for: whatever follows it arrives in order."""
        stamps = iter(FENCE_NS + k * 10 * 10**9 for k in range(10**6))  # 10 s apart: past slam_toolbox's gate
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (self.rtab and self.slam):
            ns = next(stamps)
            self.pub_rtab.publish(String(data=hint_text(ns)))
            self.pub_slam.publish(String(data=hint_text(ns)))
            self.wait(lambda: self.rtab and self.slam, 0.25)
        ns = next(stamps)
        self.pub_rtab.publish(String(data=hint_text(ns)))
        self.pub_slam.publish(String(data=hint_text(ns)))
        left = max(deadline - time.monotonic(), 1.0)
        return all(self.wait_stamp(store, ns, left) is not None for store in (self.rtab, self.slam))

    def wait_stamp(self, store: list, ns: int, timeout: float = 10.0) -> PoseWithCovarianceStamped | None:
        key = Time(sec=ns // 10**9, nanosec=ns % 10**9)
        return self.wait(lambda: next((m for m in store if m.header.stamp == key), None), timeout)


@dataclass
class Relays:
    peer: Peer
    procs: dict[str, subprocess.Popen]
    logs: dict[str, Path]


def start_relay(ns: str, log: Path, params: dict[str, str]) -> subprocess.Popen:
    return start_node_process("disam_ros.ros.hint_relay", REPO / "config" / "hint_relay.yaml", ns, log, params)


@pytest.fixture(scope="module")
def relays(tmp_path_factory):
    """Two relay processes started together: rtabmap (camera_frame cam_optical) and slam_toolbox (the hand-made
    camera_in_base, min_period_s 5)."""
    tmp = tmp_path_factory.mktemp("hint_relay")
    tag = uuid.uuid4().hex[:6]
    ns = {"rtabmap": f"hr_rtab_{tag}", "slam_toolbox": f"hr_slam_{tag}"}
    logs = {k: tmp / f"{k}.log" for k in ns}
    mount = "[" + ", ".join(repr(float(v)) for v in CAMERA_IN_BASE) + "]"
    procs = {"rtabmap": start_relay(ns["rtabmap"], logs["rtabmap"], {"camera_frame": "cam_optical"}),
             "slam_toolbox": start_relay(ns["slam_toolbox"], logs["slam_toolbox"],
                                         {"target": "slam_toolbox", "camera_in_base": mount, "min_period_s": "5.0"})}
    peer = Peer(ns["rtabmap"], ns["slam_toolbox"])
    try:
        if not peer.wait(peer.ready, 60.0) or not peer.fence():
            pytest.fail("relays did not come up:\n" + "\n".join(p.read_text(errors="replace")[-2000:]
                                                               for p in logs.values()))
        yield Relays(peer, procs, logs)
    finally:
        for proc in procs.values():
            stop(proc)
        peer.close()


def pose_of(msg: PoseWithCovarianceStamped) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, o = msg.pose.pose.position, msg.pose.pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([o.x, o.y, o.z, o.w]), np.reshape(msg.pose.covariance, (6, 6))


@pytest.mark.ros
def test_rtabmap_gets_the_verified_camera_pose_in_the_map_frame(relays):
    peer = relays.peer
    peer.pub_rtab.publish(String(data=hint_text()))
    msg = peer.wait_stamp(peer.rtab, STAMP_NS)
    assert msg is not None, relays.logs["rtabmap"].read_text(errors="replace")[-2000:]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert msg.header.frame_id == "cam_optical"
    position, quat, cov = pose_of(msg)
    assert np.allclose(position, CAM_POSITION, atol=1e-12) and same_rotation(quat, CAM_QUAT)
    assert np.allclose(cov, ABS_COV, atol=1e-12)  # the solver's map-frame covariance, recovered


@pytest.mark.ros
def test_unverified_garbage_and_foreign_hints_are_skipped_and_the_node_lives(relays):
    peer = relays.peer
    before = len(peer.rtab)
    for text in (hint_text(STAMP_NS + 10**9, verified=False), "{this is not json", "[1, 2]", "x" * 70000,
                 hint_text(STAMP_NS + 2 * 10**9, frame_id="odom")):
        peer.pub_rtab.publish(String(data=text))
    good = STAMP_NS + 3 * 10**9
    peer.pub_rtab.publish(String(data=hint_text(good)))
    assert peer.wait_stamp(peer.rtab, good) is not None, relays.logs["rtabmap"].read_text(errors="replace")[-2000:]
    # one publisher, reliable: everything sent before the good hint was handled before it
    assert [m.header.stamp for m in peer.rtab[before:]] == [Time(sec=good // 10**9, nanosec=good % 10**9)]
    assert relays.procs["rtabmap"].poll() is None
    text = relays.logs["rtabmap"].read_text(errors="replace")
    assert "is not JSON" in text and "not map_frame 'map'" in text and "Traceback" not in text


@pytest.mark.ros
def test_stamps_past_ros_time_and_indefinite_covariances_never_reach_rtabmap(relays):
    """R2/R3: before, 2**70 ns went out as -524385683 s and the eigenvalue -4 covariance went to rtabmap."""
    peer = relays.peer
    before = len(peer.rtab)
    base = STAMP_NS + 20 * 10**9
    peer.pub_rtab.publish(String(data=hostile(hint_text(base), query_stamp_ns=2**70)))
    peer.pub_rtab.publish(String(data=hostile(hint_text(base + 10**9),
                                              relative_covariance=INDEFINITE_COV.reshape(36).tolist())))
    good = base + 2 * 10**9
    peer.pub_rtab.publish(String(data=hint_text(good)))
    assert peer.wait_stamp(peer.rtab, good) is not None, relays.logs["rtabmap"].read_text(errors="replace")[-2000:]
    assert [m.header.stamp for m in peer.rtab[before:]] == [Time(sec=good // 10**9, nanosec=good % 10**9)]
    text = relays.logs["rtabmap"].read_text(errors="replace")
    assert "is past the largest ROS time" in text and "is not positive semi-definite" in text
    assert relays.procs["rtabmap"].poll() is None and "Traceback" not in text


@pytest.mark.ros
def test_slam_toolbox_gets_the_base_pose_at_most_once_per_period(relays):
    peer = relays.peer
    base = STAMP_NS + 100 * 10**9
    before = len(peer.slam)
    peer.pub_slam.publish(String(data=hint_text(base - 10**9, verified=False)))  # never a trigger
    for dt in (0, 1, 2, 3, 4, 5, 6, 10):
        peer.pub_slam.publish(String(data=hint_text(base + dt * 10**9)))
    last = base + 10 * 10**9
    assert peer.wait_stamp(peer.slam, last) is not None, relays.logs["slam_toolbox"].read_text(errors="replace")
    stamps = [m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec - base * 1e-9 for m in peer.slam[before:]]
    assert np.allclose(stamps, [0.0, 5.0, 10.0], atol=1e-6)
    msg = peer.slam[before]
    assert msg.header.frame_id == "map"
    position, quat, _ = pose_of(msg)
    assert np.allclose(position, BASE_POSITION, atol=1e-9) and same_rotation(quat, YAW90)


@pytest.mark.ros
def test_sigint_and_sigterm_stop_cleanly_with_a_summary(tmp_path):
    """Relays of their own (the shared ones serve the other tests, in any order), started together: one hint
    relayed by each, then SIGINT to one and SIGTERM to the other."""
    tag = uuid.uuid4().hex[:6]
    sigs = {f"hr_int_{tag}": signal.SIGINT, f"hr_term_{tag}": signal.SIGTERM}
    procs = {ns: start_relay(ns, tmp_path / f"{ns}.log", {"camera_frame": "cam_optical"}) for ns in sigs}
    peer = DdsPeer("hint_relay_sig")
    rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {ns: peer.node.create_publisher(String, f"/{ns}/loop_closure", rel) for ns in sigs}
    got: dict[str, list] = {ns: [] for ns in sigs}
    for ns in sigs:
        peer.node.create_subscription(PoseWithCovarianceStamped, f"/{ns}/global_pose", got[ns].append, rel)
    peer.start()
    logs = lambda: "\n".join((tmp_path / f"{ns}.log").read_text(errors="replace")[-2000:] for ns in sigs)  # noqa: E731
    rcs, sent = {}, dict.fromkeys(sigs, 0)
    try:
        up = peer.wait(lambda: all(pubs[ns].get_subscription_count() > 0
                                   and peer.node.count_publishers(f"/{ns}/global_pose") for ns in sigs), 60.0)
        assert up, logs()
        # a reader matched on our side may not have matched us yet (a volatile message to it is lost): resend
        # to a relay that has not answered; its summary must count exactly what it was sent
        for _ in range(5):
            for ns, pub in pubs.items():
                if not got[ns]:
                    pub.publish(String(data=hint_text()))
                    sent[ns] += 1
            if peer.wait(lambda: all(got.values()), 3.0):
                break
        assert all(got.values()), logs()
    finally:
        peer.close()
        rcs = {ns: stop(proc, sigs[ns]) for ns, proc in procs.items()}
    assert all(rc == 0 for rc in rcs.values()), (rcs, logs())
    for ns in sigs:
        text = (tmp_path / f"{ns}.log").read_text(errors="replace")
        assert "Traceback" not in text
        n = sent[ns]
        assert (f"shutting down: {n} poses published from {n} hints (0 refused, 0 unverified skipped, "
                "0 throttled)") in text


# ---------------------------------------------------------------------------------------------- command line


@pytest.mark.ros
@pytest.mark.parametrize("argv,expect", [
    ([], "camera_frame is empty: target rtabmap needs the camera's optical frame name"),
    (["--ros-args", "-p", "target:=cartographer"], "target 'cartographer' is not valid: use one of rtabmap"),
    (["--ros-args", "-p", "camera_frame:=c", "-p", "min_period:=1.0"],
     "unknown parameter 'min_period' for disam_hint_relay: did you mean 'min_period_s'?"),
    (["--ros-args", "-p", "verified_only:=maybe"], "parameter 'verified_only' must be a boolean (true/false)"),
])
def test_configuration_errors_exit_2(tmp_path, argv, expect):
    """`disam-hint-relay` (the installed console script where there is one) with a bad parameter: one error line,
    exit 2, no traceback."""
    script = Path(sys.executable).parent / "disam-hint-relay"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "disam_ros.ros.hint_relay"]
    out = subprocess.run([*cmd, *argv], capture_output=True, text=True, timeout=120,
                         env=child_env({"ROS_LOG_DIR": str(tmp_path)}))
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and expect in errors[0], text
    assert "Traceback" not in text


# ---------------------------------------------------------------------------------------------- files in step


def test_params_file_matches_the_declarations():
    data = yaml.safe_load((REPO / "config" / "hint_relay.yaml").read_text())
    assert list(data) == ["/**"]
    params = data["/**"]["ros__parameters"]
    assert params == {p.name: p.default for p in HR.PARAMETERS}


@contextmanager
def relay_in_process(*ros_args: str):
    """A HintRelayNode in this process, on a context of its own, with these --ros-args."""
    ctx = rclpy.Context()
    rclpy.init(args=[], context=ctx)
    node = None
    try:
        node = HR.HintRelayNode(context=ctx, namespace=f"hr_ip_{uuid.uuid4().hex[:6]}",
                                cli_args=["--ros-args", *ros_args])
        yield node
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.shutdown(context=ctx)


@pytest.mark.ros
def test_node_reads_the_params_file_in_process():
    with relay_in_process("--params-file", str(REPO / "config" / "hint_relay.yaml"), "-p", "camera_frame:=cam") as node:
        assert node.cfg == HR.check_config({p.name: p.default for p in HR.PARAMETERS} | {"camera_frame": "cam"})
        assert all(node.describe_parameter(name).description for name in HR.PARAMETER_NAMES)
        assert node.pub.topic_name.endswith("/global_pose") and node.sub.topic_name.endswith("/loop_closure")
        assert node.relay("{not json") is None and node.counts["hints_rejected"] == 1
        out = node.relay(hint_text())
        assert out is not None and out.header.frame_id == "cam" and node.counts["poses_published"] == 1


@pytest.mark.ros
def test_log_throttle_period_is_the_parameter():
    """`log_throttle_s` 0.25: a refused hint's kind is logged again after 0.3 s (the default 5 s would hold it)."""
    with relay_in_process("-p", "camera_frame:=cam", "-p", "log_throttle_s:=0.25") as node:
        text = "hint refused: not JSON"
        assert node._log_warn(text) and not node._log_warn(text)
        time.sleep(0.3)
        assert node._log_warn(text)


def test_launch_file_and_console_script():
    tree = ast.parse((REPO / "launch" / "hint_relay.launch.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    args = {c.args[0].value: {k.arg: k.value for k in c.keywords} for c in calls
            if getattr(c.func, "id", "") == "DeclareLaunchArgument"}
    assert all("description" in kw for kw in args.values())
    node = next(c for c in calls if getattr(c.func, "id", "") == "Node")
    kw = {k.arg: k.value for k in node.keywords}
    assert kw["executable"].value == HR.PROG and kw["name"].value == HR.NODE_NAME
    remapped = sorted(t.elts[0].value for t in kw["remappings"].elts)
    assert remapped == sorted(["loop_closure", *HR.TOPICS.values()])
    from_file = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign)
                     and getattr(n.targets[0], "id", "") == "FROM_FILE")
    assert set(ast.literal_eval(from_file.value)) <= set(HR.PARAMETER_NAMES) & set(args)
    assert f"{HR.PROG} = disam_ros.ros.hint_relay:main" in (REPO / "setup.py").read_text()


def test_docs_table_lists_every_parameter_with_its_default():
    text = (REPO / "docs" / "posegraph.md").read_text()
    section = text[text.index("## Feeding other back ends"):]
    section = section[: section.index("\n## ", 5)]
    section = section[section.index("### The relay's parameters"):]
    rows = dict(re.findall(r"^\| `([^|`]+)` \| `([^|`]*)` \|", section, re.M))
    assert set(rows) == set(HR.PARAMETER_NAMES), set(rows) ^ set(HR.PARAMETER_NAMES)
    for p in HR.PARAMETERS:
        if isinstance(p.default, bool):
            assert rows[p.name] == ("true" if p.default else "false"), p.name
        elif isinstance(p.default, (float, str)):
            assert rows[p.name] == (repr(p.default) if isinstance(p.default, float) else p.default or '""'), p.name
