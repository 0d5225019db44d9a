"""Verified metric poses through the node, over real DDS (loopback, private domain: conftest.py).

A 320x240 synthetic town with depth -> a map with SIFT geometry -> the node in `mode: single` with a
random-init micro model; the test publishes the world's CameraInfo (camera.yaml) and the repeat drive's frames.
Checked against values computed here, not by the node: verified poses are metric against the drive's ground
truth (0.25 m, 2 deg); the hint's relative pose composed with its keyframe's map pose (quaternion algebra
written out below) is the published pose; a malformed CameraInfo is counted and ignored; `withhold` publishes
verified frames only.
"""
from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NS = "vfy"
THROTTLE_S = 2.5  # log_throttle_s of this node (default 5)


@dataclass
class VerifyNode:
    proc: subprocess.Popen
    client: object
    camera_info: object  # publisher of sensor_msgs/CameraInfo on /vfy/camera_info
    log: Path
    camera: object  # CameraIntrinsics of the query drive (camera.yaml)
    queries: list  # (rgb, stamp, gt position, gt xyzw)
    map_positions: np.ndarray
    map_quats: np.ndarray
    map_names: list


# ------------------------------------------------------------------------------------------ hand-written rotations
def rot(q) -> np.ndarray:
    """Rotation matrix of a unit quaternion (x, y, z, w)."""
    x, y, z, w = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    c = (np.trace(Ra.T @ Rb) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def _pose(msg) -> tuple[np.ndarray, np.ndarray]:
    p, o = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([o.x, o.y, o.z, o.w])


# ------------------------------------------------------------------------------------------ fixture
@pytest.fixture(scope="module")
def vnode(tmp_path_factory, geometry_world):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo

    from disam_ros.data.folders import load_condition, read_image
    from disam_ros.maps import LocalizationMap
    from disam_ros.ros import launcher
    from disam_ros.ros.client import LocalizerClient

    tmp = tmp_path_factory.mktemp("node_verify")
    world, map_dir = geometry_world["world"], geometry_world["map"]
    m = LocalizationMap.load(map_dir)
    assert m.has_geometry
    qf = load_condition(world, "sunny_repeat", require_poses=True)
    queries = [(read_image(qf.image_paths[i]), float(qf.trajectory.stamps[i]), np.asarray(qf.trajectory.positions[i]),
                np.asarray(qf.trajectory.quats[i])) for i in range(len(qf))]
    log = tmp / "node.log"
    with open(log, "wb") as f:
        proc = launcher.start(map=map_dir, device="cpu", namespace=NS, stdout=f, stderr=subprocess.STDOUT,
                              parameters=dict(mode="single", diagnostics_period_s=0.3, weather="sunny",
                                              log_throttle_s=THROTTLE_S))
    client = None
    try:
        client = LocalizerClient(namespace=NS)
        if not client.wait_for_node(False, timeout=60.0):
            pytest.fail(f"node did not come up:\n{log.read_text(errors='replace')[-3000:]}")
        pub = client.node.create_publisher(CameraInfo, f"/{NS}/camera_info",
                                           QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        assert client.wait(lambda: pub.get_subscription_count() > 0, 20.0), "node does not subscribe camera_info"
        yield VerifyNode(proc, client, pub, log, qf.camera, queries, np.asarray(m.positions), np.asarray(m.quats),
                         list(m.names))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if client is not None:
            client.close()
        m.close()


def _camera_info(cam, **override):
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    K = [cam.fx, 0.0, cam.cx, 0.0, cam.fy, cam.cy, 0.0, 0.0, 1.0]
    P = [cam.fx, 0.0, cam.cx, 0.0, 0.0, cam.fy, cam.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    fields = dict(header=Header(frame_id="camera"), width=cam.width, height=cam.height, distortion_model="plumb_bob",
                  d=[0.0] * 5, k=K, r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], p=P)
    fields.update(override)
    return CameraInfo(**fields)


def _tail(vn: VerifyNode) -> str:
    return vn.log.read_text(errors="replace")[-3000:]


def _past_camera_info_throttle(client) -> None:
    """Wait out the node's log throttle for camera_info lines if another test (any order) logged one: the window
    opens when the node logs, before the line arrives here, so 0.2 s after the window from its arrival it is closed."""
    seen = [t for t, m in client.rx.rosout if "ignoring CameraInfo" in m.msg]
    if seen:
        time.sleep(max(0.0, max(seen) + THROTTLE_S + 0.2 - time.monotonic()))


def _send(vn: VerifyNode, offset: int) -> list:
    """Every query frame, one at a time, each waited for until the node has accounted for it; returns
    (stamp key, gt position, gt xyzw) per frame."""
    client, sent = vn.client, []
    for k, (rgb, stamp, pos, quat) in enumerate(vn.queries):
        base = client.frames_done()
        key = client.publish_raw(rgb, float(int(stamp) + offset + k * 1e-3))
        assert client.wait_frames_done(1, base, idle_s=20.0), f"frame {k} not accounted for:\n{_tail(vn)}"
        sent.append((key, pos, quat))
    return sent


# ------------------------------------------------------------------------------------------ checks
def test_verified_poses_are_metric_and_the_hint_composes(vnode):
    from disam_ros.verify.verifier import OUTCOMES

    vn, client = vnode, vnode.client
    t0 = time.monotonic()
    vn.camera_info.publish(_camera_info(vn.camera))
    d = client.wait_diagnostics(lambda d: d.get("intrinsics_source", "").startswith("CameraInfo"), 15.0, after=t0)
    assert d is not None, f"CameraInfo not taken:\n{_tail(vn)}"
    assert d["verify_state"].startswith("active") and d["camera_info_topic"] == f"/{NS}/camera_info"
    assert d["verify_state"].endswith("no dense search in single mode)"), d["verify_state"]
    verified = 0
    for key, gt_pos, gt_quat in _send(vn, 0):
        pose = client.rx.pose.get(key)
        assert pose is not None, "unverified_policy publish with an uncalibrated map publishes every answer"
        assert client.wait(lambda key=key: key in client.rx.loop and key in client.rx.pose_cov, 5.0)
        doc, cov_msg = client.rx.loop[key][1], client.rx.pose_cov[key][1]
        p, q = _pose(pose[1])
        assert doc["schema"] == "disam_ros/loop_closure/2"
        i = doc["map_index"]
        np.testing.assert_allclose(doc["place_position"], vn.map_positions[i], atol=1e-9)
        np.testing.assert_allclose(doc["place_orientation_xyzw"], vn.map_quats[i], atol=1e-9)
        if not doc["verified"]:
            assert doc["verification"] in OUTCOMES and doc["verification"] != "verified"
            assert doc["keyframe_index"] is None and doc["relative_position"] is None and doc["inliers"] is None
            np.testing.assert_allclose(p, doc["place_position"], atol=1e-9)  # the retrieval's pose, unrefined
            continue
        verified += 1
        assert doc["verification"] == "verified" and doc["inliers"] >= 15 and 0 < doc["inlier_ratio"] <= 1
        assert doc["refine_ms"] > 0
        # metric: against the drive's recorded pose
        err_m, err_deg = float(np.linalg.norm(p - gt_pos)), angle_deg(rot(q), rot(gt_quat))
        assert err_m < 0.25 and err_deg < 2.0, (err_m, err_deg, doc["inliers"])
        # the hint: keyframe = the map's own pose of that image; keyframe (+) relative = the published pose
        k = doc["keyframe_index"]
        assert doc["keyframe_name"] == vn.map_names[k]
        np.testing.assert_allclose(doc["keyframe_position"], vn.map_positions[k], atol=1e-9)
        np.testing.assert_allclose(doc["keyframe_orientation_xyzw"], vn.map_quats[k], atol=1e-9)
        R_key, p_key = rot(vn.map_quats[k]), vn.map_positions[k]
        composed_p = p_key + R_key @ np.asarray(doc["relative_position"])
        composed_R = R_key @ rot(doc["relative_orientation_xyzw"])
        np.testing.assert_allclose(composed_p, p, atol=1e-6)
        assert angle_deg(composed_R, rot(q)) < 1e-4
        rel_cov = np.asarray(doc["relative_covariance"], np.float64).reshape(6, 6)
        np.testing.assert_allclose(rel_cov, rel_cov.T, atol=1e-12)
        # the relative covariance is the published one seen from the keyframe's axes: same eigenvalues
        pub_cov = np.asarray(cov_msg.pose.covariance).reshape(6, 6)
        np.testing.assert_allclose(np.linalg.eigvalsh(rel_cov), np.linalg.eigvalsh(pub_cov), rtol=1e-6, atol=1e-12)
        assert np.all(np.linalg.eigvalsh(pub_cov) > 0) and pub_cov[:3, :3].trace() < 1.0  # solver's, metre-level
    assert verified >= 5, f"{verified}/{len(vn.queries)} frames verified"
    d = client.wait_diagnostics(lambda d: d.get("verification") == "verified" and int(d["inliers"]) > 0
                                and int(d["verified_frames"]) >= verified, 10.0, after=t0)
    assert d is not None, client.rx.diagnostics[-1:]
    assert d["intrinsics"].startswith("CameraInfo") and float(d["reprojection_px"]) >= 0.0
    assert "latency_retrieval_verify_ms_median" in d and d["unverified_policy"] == "publish"


def test_malformed_camera_info_is_counted_and_ignored(vnode):
    vn, client = vnode, vnode.client
    # a good CameraInfo first (tests run in any order: this one may be the node's first)
    t_good = time.monotonic()
    vn.camera_info.publish(_camera_info(vn.camera))
    good = client.wait_diagnostics(lambda d: str(d.get("intrinsics_source", "")).startswith("CameraInfo"), 10.0,
                                   after=t_good)
    assert good is not None, f"the good CameraInfo was not taken:\n{_tail(vn)}"
    before = client.wait_diagnostics(lambda d: True, 5.0, after=time.monotonic())
    _past_camera_info_throttle(client)
    t0 = time.monotonic()
    zero_k = _camera_info(vn.camera, k=[0.0] * 9)
    rational = _camera_info(vn.camera, distortion_model="rational_polynomial", d=[0.1, 0.01, 0.0, 0.0, 0.0, 0.2, 0, 0])
    for msg in (zero_k, zero_k, rational):
        vn.camera_info.publish(msg)
        time.sleep(0.2)  # the node keeps the last 2 CameraInfo (a newer one replaces an unread older one)
    grown = lambda d: int(d["camera_info_rejected"]) - int(before["camera_info_rejected"]) >= 3  # noqa: E731
    d = client.wait_diagnostics(grown, 10.0, after=t0)
    assert d is not None, f"rejections not counted:\n{_tail(vn)}"
    assert vn.proc.poll() is None, "a malformed CameraInfo stopped the node"
    assert d["intrinsics_source"].startswith("CameraInfo"), "the last good CameraInfo stays in force"
    warns = [m.msg for t, m in client.rx.rosout if t >= t0 and "ignoring CameraInfo" in m.msg]
    assert len(warns) == 1 and "K is all zeros" in warns[0], warns  # logged once, throttled after
    # still serving, still verifying
    rgb, stamp, _, _ = vn.queries[2]
    key = client.publish_raw(rgb, float(int(stamp) + 500))
    assert client.wait_pose(key, timeout=20.0) is not None, _tail(vn)


def test_camera_info_no_camera_has_is_refused_and_the_good_one_stays(vnode):
    """C3: a CameraInfo with fx 1e300 or k1 1e6 was taken silently and verification stopped until a good K came.
    Now the package's one intrinsics rule (disam_ros.data.camera_limits) refuses it: counted, logged once within
    the throttle period, the last good CameraInfo kept."""
    vn, client = vnode, vnode.client
    t_good = time.monotonic()
    vn.camera_info.publish(_camera_info(vn.camera))
    assert client.wait_diagnostics(lambda d: str(d.get("intrinsics_source", "")).startswith("CameraInfo"), 10.0,
                                   after=t_good) is not None, _tail(vn)
    before = client.wait_diagnostics(lambda d: True, 5.0, after=time.monotonic())
    _past_camera_info_throttle(client)
    t0 = time.monotonic()
    c = vn.camera
    huge_f = _camera_info(c, k=[1e300, 0.0, c.cx, 0.0, c.fy, c.cy, 0.0, 0.0, 1.0])
    huge_k1 = _camera_info(c, d=[1e6, 0.0, 0.0, 0.0, 0.0])
    for msg in (huge_f, huge_f, huge_k1):
        vn.camera_info.publish(msg)
        time.sleep(0.2)  # the node keeps the last 2 CameraInfo (a newer one replaces an unread older one)
    grown = lambda d: int(d["camera_info_rejected"]) - int(before["camera_info_rejected"]) >= 2  # noqa: E731
    d = client.wait_diagnostics(grown, 10.0, after=t0)
    assert d is not None, f"absurd CameraInfo not counted:\n{_tail(vn)}"
    assert d["intrinsics_source"].startswith("CameraInfo") and vn.proc.poll() is None
    warns = [m.msg for t, m in client.rx.rosout if t >= t0 and "ignoring CameraInfo" in m.msg]
    assert len(warns) == 1, warns  # fx's line; the same content again and k1 within the window: counted, not logged
    assert "camera intrinsics fx=1e+300 gives a horizontal field of view" in warns[0]
    assert "keeping the previous CameraInfo" in warns[0]
    rgb, stamp, _, _ = vn.queries[3]  # still localizing with the good intrinsics
    key = client.publish_raw(rgb, float(int(stamp) + 700))
    assert client.wait_pose(key, timeout=20.0) is not None, _tail(vn)


def test_the_debug_picture_marks_a_verified_frames_inliers(vnode):
    """With `publish_debug_image`, a verified frame's picture carries its inliers as pure green dots on the query
    panel (a colour neither JET nor its blend with an image can make), an unverified one's none. Frames are sent
    until two verified ones were drawn."""
    from disam_ros.ros.messages import DEBUG_PANEL, INLIER_RGB

    vn, client = vnode, vnode.client
    vn.camera_info.publish(_camera_info(vn.camera))
    assert client.set_parameters({"publish_debug_image": True, "debug_rate_hz": 50.0}) == [(True, "")] * 2
    green: dict[bool, list[int]] = {True: [], False: []}
    try:
        for k, (rgb, stamp, _, _) in enumerate(vn.queries):
            base = client.frames_done()
            key = client.publish_raw(rgb, float(int(stamp) + 3000 + k * 1e-3))
            assert client.wait_frames_done(1, base, idle_s=20.0), f"frame {k} not accounted for:\n{_tail(vn)}"
            picture = client.wait(lambda key=key: next((m for _, m in client.rx.debug if (m.header.stamp.sec,
                                  m.header.stamp.nanosec) == key), None), 5.0)
            if picture is None or not client.wait(lambda key=key: key in client.rx.loop, 5.0):
                continue
            left = np.frombuffer(bytes(picture.data), np.uint8).reshape(picture.height, picture.width, 3)
            green[client.rx.loop[key][1]["verified"]].append(int((left[:, :DEBUG_PANEL[0]] == INLIER_RGB).all(
                axis=2).sum()))
            if len(green[True]) >= 2:
                break
    finally:
        client.set_parameters({"publish_debug_image": False})
    assert len(green[True]) >= 2 and min(green[True]) > 0, green
    assert all(n == 0 for n in green[False]), green


def test_withhold_publishes_verified_frames_only(vnode):
    vn, client = vnode, vnode.client
    assert client.set_parameters({"unverified_policy": "withhold"}) == [(True, "")]
    assert client.set_parameters({"unverified_policy": "sometimes"})[0][0] is False
    try:
        sent = _send(vn, 1000)
        published = [key for key, _, _ in sent if key in client.rx.pose]
        assert client.wait(lambda: all(k in client.rx.loop for k in published), 5.0)
        assert published and all(client.rx.loop[k][1]["verified"] for k in published)
        d = client.wait_diagnostics(lambda d: d["unverified_policy"] == "withhold", 5.0)
        assert d is not None
        held = len(sent) - len(published)
        if held:
            assert "unverified_policy withhold" in d["last_reason"] or int(d["not_localized"]) >= held
    finally:
        client.set_parameters({"unverified_policy": "publish"})


# ------------------------------------------------------------------------------------------ without a node process
def test_camera_info_topic_sits_beside_the_image_topic():
    import rclpy
    from rclpy.node import Node

    from disam_ros.ros.node_verify import camera_info_topic

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        args = ["--ros-args", "-r", "__ns:=/car", "-r", "image:=/cam/image_raw"]
        node = Node("loc", context=ctx, cli_args=args)
        image = node.resolve_topic_name("image")
        assert image == "/cam/image_raw"
        assert camera_info_topic(node, "camera_info", image) == "/cam/camera_info"  # image_transport's rule
        assert camera_info_topic(node, "camera_info", "/cam/image_raw/compressed") == "/cam/camera_info"
        assert camera_info_topic(node, "camera_info", node.resolve_topic_name("prior")) == "/car/camera_info"
        assert camera_info_topic(node, "/abs/info", image) == "/abs/info"
        assert camera_info_topic(node, "", image) == ""
        node.destroy_node()
        remapped = Node("loc2", context=ctx, cli_args=[*args, "-r", "camera_info:=/other/info"])
        assert camera_info_topic(remapped, "camera_info", image) == "/other/info"  # an explicit remap wins
        remapped.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_camera_info_checks():
    from disam_ros.data.folders import CameraIntrinsics
    from disam_ros.ros.node_verify import intrinsics_from_camera_info

    cam = CameraIntrinsics(640, 480, 500.0, 510.0, 319.5, 239.5)
    got = intrinsics_from_camera_info(_camera_info(cam, d=[0.1, -0.05, 0.001, 0.002, 0.0]))
    assert (got.fx, got.fy, got.cx, got.cy, got.width, got.height) == (500.0, 510.0, 319.5, 239.5, 640, 480)
    assert (got.k1, got.k2, got.p1, got.p2) == (0.1, -0.05, 0.001, 0.002)
    assert not intrinsics_from_camera_info(_camera_info(cam, distortion_model="", d=[])).has_distortion
    bad = {"K is all zeros": dict(k=[0.0] * 9), "not supported": dict(distortion_model="equidistant", d=[0.1] * 4),
           "rational terms": dict(distortion_model="rational_polynomial", d=[0, 0, 0, 0, 0, 0.2, 0, 0]),
           "binning": dict(binning_x=2), "fx": dict(k=[-1.0, 0, 320, 0, 500, 240, 0, 0, 1]),
           "width": dict(width=0)}
    for pattern, fields in bad.items():
        with pytest.raises(ValueError, match=pattern):
            intrinsics_from_camera_info(_camera_info(cam, **fields))


def test_publish_decision():
    from types import SimpleNamespace

    from disam_ros.ros.node_verify import publish_decision
    from disam_ros.verify.verifier import Verification

    ok, wrong = Verification("verified"), Verification("too_few_inliers")
    res = lambda v: SimpleNamespace(verification=v, confidence=0.2)  # noqa: E731
    assert publish_decision(res(wrong), True, "g", True, "publish") == (True, "")
    assert publish_decision(res(ok), False, "g", True, "publish") == (True, "")  # verified passes below the gate
    assert publish_decision(res(wrong), False, "g", True, "publish") == (
        False, "confidence 0.200 below g; not verified (too_few_inliers)")
    assert publish_decision(res(ok), False, "g", True, "withhold") == (True, "")
    assert publish_decision(res(wrong), True, "g", True, "withhold")[0] is False
    assert publish_decision(res(None), True, "g", False, "withhold") == (True, "")  # no verification: no effect
    assert publish_decision(res(None), False, "g", False, "withhold") == (False, "confidence 0.200 below g")
