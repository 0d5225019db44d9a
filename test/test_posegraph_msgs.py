"""The pose-graph node's pure parts, without DDS: the hint parser (a good hint, and every kind of bad one -> one
line naming the key), the camera -> base conversion (a hand-worked case and an independent derivation through
GTSAM's adjoint), the message converters, and the input rules of GraphFeed on a real PoseGraph."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rclpy")
gtsam = pytest.importorskip("gtsam")

from disam_ros.geometry import R_BODY_OPTICAL, quat_to_rot, rot_to_quat, yaw_pitch_roll_to_quat  # noqa: E402
from disam_ros.posegraph.graph import PoseGraph, PoseGraphConfig  # noqa: E402
from disam_ros.ros import hint_parse as H  # noqa: E402
from disam_ros.ros import posegraph_msgs as PM  # noqa: E402
from disam_ros.ros import posegraph_params as PP  # noqa: E402
from disam_ros.ros.messages import LOOP_CLOSURE_SCHEMA, sec_to_stamp  # noqa: E402
from disam_ros.ros.posegraph_feed import GraphFeed  # noqa: E402

COV = np.diag([0.04, 0.04, 0.04, 1e-4, 1e-4, 1e-4])


def good_doc(verified: bool = True, stamp: float = 1000.25) -> dict:
    """A schema-2 hint as the localizer writes it (messages.loop_closure + verified_keys)."""
    doc = {"schema": LOOP_CLOSURE_SCHEMA, "query_stamp": stamp, "query_stamp_ns": int(round(stamp * 1e9)),
           "map_index": 7, "map_name": "000007.png", "map_stamp": 12.0, "score": 0.9, "confidence": 0.97,
           "domain": "sunny", "frame_id": "map", "position": [1.0, 2.0, 0.5], "orientation_xyzw": [0, 0, 0, 1],
           "candidates": [{"map_index": 7, "score": 0.9}], "place_position": [1.0, 2.0, 0.5],
           "place_orientation_xyzw": [0, 0, 0, 1], "verified": verified, "verification": "verified",
           "refine_ms": 3.0, "keyframe_index": None, "keyframe_name": None, "keyframe_position": None,
           "keyframe_orientation_xyzw": None, "relative_position": None, "relative_orientation_xyzw": None,
           "relative_covariance": None, "inliers": None, "inlier_ratio": None, "reprojection_px": None}
    if verified:
        doc.update(keyframe_index=7, keyframe_name="000007.png", keyframe_position=[1.0, 1.5, 0.5],
                   keyframe_orientation_xyzw=[0.0, 0.0, 0.0, 1.0], relative_position=[0.0, 0.5, 0.0],
                   relative_orientation_xyzw=[0.0, 0.0, 0.0, 1.0], relative_covariance=COV.reshape(-1).tolist(),
                   inliers=80, inlier_ratio=0.6, reprojection_px=1.1)
    return doc


def test_good_verified_hint():
    h = H.parse_hint(json.dumps(good_doc()))
    assert h.verified and h.keyframe_index == 7 and h.frame_id == "map"
    assert h.stamp == pytest.approx(1000.25, abs=1e-9)
    assert np.allclose(h.keyframe.position, [1.0, 1.5, 0.5]) and np.allclose(h.relative.position, [0, 0.5, 0])
    assert np.allclose(h.relative_cov, COV)


def test_unverified_hint_has_no_keyframe():
    h = H.parse_hint(json.dumps(good_doc(verified=False)))
    assert not h.verified and h.keyframe is None and h.relative_cov is None
    assert np.allclose(h.pose.position, [1.0, 2.0, 0.5])


def _bad(**changes) -> str:
    doc = good_doc()
    for k, v in changes.items():
        if v is KeyError:
            del doc[k]
        else:
            doc[k] = v
    return json.dumps(doc)


ASYM = COV.copy()
ASYM[0, 1] = 0.01


@pytest.mark.parametrize("text,reason", [
    ("{not json", "loop-closure hint is not JSON"),
    ("[1, 2]", "is a JSON list, not an object"),
    (_bad(schema="disam_ros/loop_closure/1"), "of schema \"disam_ros/loop_closure/1\": this node reads"),
    (_bad(schema=KeyError), "of schema null"),
    (_bad(verified=KeyError), "key 'verified' must be true or false, got null"),
    (_bad(verified="yes"), "key 'verified' must be true or false, got \"yes\""),
    (_bad(query_stamp=KeyError, query_stamp_ns=KeyError), "key 'query_stamp' must be a stamp > 0"),
    (_bad(query_stamp=-1.0, query_stamp_ns=KeyError), "key 'query_stamp' must be a stamp > 0 in seconds, got -1.0"),
    (_bad(position=[1.0, 2.0]), "key 'position' must be a list of 3 numbers, got 2 values"),
    (_bad(position=[1.0, None, 2.0]), "key 'position' holds a value that is not a finite number"),
    (_bad(orientation_xyzw=[0, 0, 0, 2]), "key 'orientation_xyzw' is not a unit quaternion (norm 2)"),
    (_bad(keyframe_index=None), "verified but key 'keyframe_index' is not an index >= 0, got null"),
    (_bad(keyframe_position=KeyError), "key 'keyframe_position' must be a list of 3 numbers, got null"),
    (_bad(relative_covariance=[0.1] * 35), "key 'relative_covariance' must be a list of 36 numbers, got 35 values"),
    (_bad(relative_covariance=ASYM.reshape(-1).tolist()), "key 'relative_covariance' is not symmetric"),
    (_bad(relative_covariance=np.diag([0.1, 0.1, 0.0, 0.1, 0.1, 0.1]).reshape(-1).tolist()),
     "has a diagonal entry <= 0"),
    (_bad(frame_id=3), "key 'frame_id' must be a string, got 3"),
    ("x" * (H.MAX_HINT_CHARS + 1), "characters, more than"),
])
def test_bad_hints_are_one_line_reasons(text, reason):
    with pytest.raises(H.HintError) as err:
        H.parse_hint(text)
    msg = str(err.value)
    assert reason in msg and "\n" not in msg and len(msg) < 200, msg


def test_stamp_from_nanoseconds_equals_a_header_stamp():
    from disam_ros.ros.messages import stamp_to_sec

    t = 1_700_000_123.456789012
    stamp = sec_to_stamp(t)
    doc = good_doc(stamp=t)
    doc["query_stamp_ns"] = stamp.sec * 1_000_000_000 + stamp.nanosec
    assert H.parse_hint(json.dumps(doc)).stamp == stamp_to_sec(stamp)


def test_nan_in_json_is_refused():
    """Python's json reads NaN; the localizer never writes it (null instead): either way not a number we use."""
    with pytest.raises(H.HintError, match="relative_position' holds a value that is not a finite number"):
        H.parse_hint(_bad(relative_position=[0.0, float("nan"), 0.0]))


# ---------------------------------------------------------------------------------------------- camera -> base


def test_to_base_hand_worked_lever_arm():
    """Camera 1 m ahead of the base (T_base_cam = translation (1, 0, 0), no rotation); the measured camera sits
    at the origin of its parent frame, unrotated, with 0.01 rad^2 yaw variance. Then the base is at (-1, 0, 0),
    and a small yaw dth moves it by dth x (-1, 0, 0) = (0, -dth, 0): var(y) gains 0.01, cov(y, yaw) = -0.01."""
    cam = H.Pose(np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))
    cov = np.diag([1e-4, 1e-4, 1e-4, 1e-6, 1e-6, 0.01])
    base, cov_b = H.to_base(cam, cov, H.parse_camera_in_base([1, 0, 0, 0, 0, 0, 1]))
    assert np.allclose(base.position, [-1.0, 0.0, 0.0]) and np.allclose(base.quat, [0, 0, 0, 1])
    expected = cov.copy()
    expected[1, 1] += 0.01
    expected[1, 5] = expected[5, 1] = -0.01
    expected[2, 2] += 1e-6  # pitch about y moves (-1, 0, 0) along z too: dth_y x (-1,0,0) = (0, 0, dth_y)
    expected[2, 4] = expected[4, 2] = 1e-6
    assert np.allclose(cov_b, expected, atol=1e-12), cov_b


def test_to_base_identity_changes_nothing():
    cam = H.Pose(np.array([3.0, -1.0, 2.0]), yaw_pitch_roll_to_quat(0.3, 0.1, -0.2))
    base, cov_b = H.to_base(cam, COV, H.parse_camera_in_base(PP.IDENTITY))
    assert np.allclose(base.position, cam.position) and np.allclose(base.quat, cam.quat)
    assert np.allclose(cov_b, COV)


def test_to_base_agrees_with_gtsam_adjoint():
    """The same conversion derived the other way: ROS covariance -> GTSAM tangent, right-composition with the
    adjoint, back to ROS order (disam_ros.posegraph.conventions, tested there by sampling)."""
    from disam_ros.posegraph.conventions import adjoint_covariance, gtsam_cov_to_ros, ros_cov_to_gtsam, to_pose3

    rng = np.random.default_rng(3)
    A = rng.normal(size=(6, 6))
    cov = A @ A.T * 1e-3 + np.eye(6) * 1e-4
    cam = H.Pose(np.array([2.0, 1.0, 0.3]), yaw_pitch_roll_to_quat(0.7, -0.2, 0.4))
    base_cam = H.parse_camera_in_base([0.4, 0.1, 1.2, *rot_to_quat(R_BODY_OPTICAL)])
    base, cov_b = H.to_base(cam, cov, base_cam)
    T_cam = to_pose3(cam.position, cam.quat)
    delta = to_pose3(base_cam.position, base_cam.quat).inverse()
    g = adjoint_covariance(ros_cov_to_gtsam(cov, T_cam.rotation().matrix()), delta)
    T_base = T_cam.compose(delta)
    assert np.allclose(base.position, T_base.translation()) and np.allclose(
        quat_to_rot(base.quat), T_base.rotation().matrix())
    assert np.allclose(cov_b, gtsam_cov_to_ros(g, T_base.rotation().matrix()), atol=1e-12)


@pytest.mark.parametrize("value,reason", [
    ([0, 0, 0, 0, 0, 1], "7 finite numbers"), ([0, 0, 0, 0, 0, 0, 0], "quaternion [qx, qy, qz, qw] is zero"),
    ([0, 0, float("nan"), 0, 0, 0, 1], "7 finite numbers")])
def test_camera_in_base_errors(value, reason):
    with pytest.raises(ValueError, match=re_escape(reason)):
        H.parse_camera_in_base(value)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


# ---------------------------------------------------------------------------------------------- parameters


def test_graph_parameters_default_to_the_graph_defaults():
    """Parameters passed through to PoseGraphConfig start where the graph's own defaults are, except max_nodes:
    the node makes a node per odometry message (100 Hz), where per-message cost must stay flat."""
    defaults = PoseGraphConfig()
    table = {p.name: p.default for p in PP.PARAMETERS}
    for name in PP.GRAPH_FIELDS:
        if name != "max_nodes":
            assert table[name] == getattr(defaults, name), name
    assert table["max_nodes"] == 2000 < defaults.max_nodes
    PoseGraphConfig(**PP.PoseGraphNodeConfig(**table).graph_kwargs())  # the table builds a valid config


def test_parameter_values_checked():
    assert PP.check_value("camera_in_base", [0, 0, 0, 0, 0, 0, 1]) == PP.IDENTITY
    for name, value, reason in [("robust", "tukey", "robust 'tukey' is not valid"),
                                ("max_nodes", 1, "max_nodes must be >= 2"),
                                ("anchor_agree", 0, "anchor_agree must be >= 1"),
                                ("odom_qos", "fast", "odom_qos 'fast' is not valid"),
                                ("closure_max_dt_s", 0.0, "must be > 0"),
                                ("log_throttle_s", 0.0, "parameter 'log_throttle_s' must be > 0"),
                                ("camera_in_base", [1.0], "camera_in_base must be 7 finite numbers")]:
        with pytest.raises(ValueError, match=re_escape(reason)):
            PP.check_value(name, value)


# ---------------------------------------------------------------------------------------------- messages


def test_path_keeps_the_newest_poses():
    times = np.arange(10, dtype=float) + 100.0
    pos = np.c_[np.arange(10.0), np.zeros(10), np.zeros(10)]
    quats = np.tile([0.0, 0.0, 0.0, 1.0], (10, 1))
    msg = PM.path("map", times, pos, quats, max_poses=4)
    assert [p.pose.position.x for p in msg.poses] == [6.0, 7.0, 8.0, 9.0]
    assert msg.header.frame_id == "map" and msg.header.stamp == sec_to_stamp(109.0)
    assert PM.path("map", times[:0], pos[:0], quats[:0], 4).poses == []


def test_transform_and_tf_message():
    tr = PM.transform(5.5, "map", "odom", [1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0])
    assert (tr.header.frame_id, tr.child_frame_id) == ("map", "odom")
    assert (tr.transform.translation.x, tr.transform.rotation.w) == (1.0, 1.0)
    if PM.TFMessage is None:
        with pytest.raises(RuntimeError, match="tf2_msgs is not installed: run `make venv`"):
            PM.tf_message([tr])
    else:
        assert PM.tf_message([tr]).transforms[0].child_frame_id == "odom"


def test_odometry_pose_refuses_unusable_messages():
    from nav_msgs.msg import Odometry

    msg = Odometry()
    with pytest.raises(ValueError, match="odometry without a stamp"):
        PM.odometry_pose(msg)
    msg.header.stamp = sec_to_stamp(10.0)
    msg.pose.pose.orientation.w = 0.0
    with pytest.raises(ValueError, match="quaternion of norm 0"):
        PM.odometry_pose(msg)
    msg.pose.pose.orientation.w = 1.0
    msg.pose.pose.position.x = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        PM.odometry_pose(msg)


def _closure(t, kid, key, weight, measured=(0.0, 0.0, 0.0)):
    return SimpleNamespace(t=t, keyframe_id=kid, keyframe_position=None if key is None else np.array(key, float),
                           measured_position=np.array(measured, float), weight=weight, rejected=weight < 0.1)


def test_markers_ids_colours_and_dropped_nodes():
    times = np.array([10.0, 11.0, 12.0])
    pos = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]])
    closures = [_closure(5.0, 1, [9, 9, 9], 1.0),  # its node left the graph: not drawn
                _closure(11.1, 2, [1, 1, 0], 0.9), _closure(12.0, 2, [1, 1, 0], 0.02),
                _closure(10.0, None, None, 0.5, measured=(0.5, 0.5, 0))]
    nodes = PM.closure_node_positions(closures, times, pos, max_dt_s=0.5)
    assert np.isnan(nodes[0]).all() and np.allclose(nodes[1:], pos[[1, 2, 0]])
    msg = PM.markers(12.0, "map", closures, nodes, max_closures=100)
    spheres, good, bad = msg.markers
    assert [m.id for m in msg.markers] == [0, 1, 2] and [m.ns for m in msg.markers] == list(PM.MARKER_NS)
    assert len(spheres.points) == 1 and spheres.points[0].y == 1.0  # keyframe 2 once
    assert [(p.x, p.y) for p in good.points] == [(1.0, 1.0), (1.0, 0.0), (0.5, 0.5), (0.0, 0.0)]
    assert [(p.x, p.y) for p in bad.points] == [(1.0, 1.0), (2.0, 0.0)]
    assert good.color.g > 0.5 > good.color.r and bad.color.r > 0.5 > bad.color.g
    empty = PM.markers(12.0, "map", [], np.zeros((0, 3)), 100)
    assert all(m.action == m.DELETE for m in empty.markers) and [m.id for m in empty.markers] == [0, 1, 2]


# ---------------------------------------------------------------------------------------------- GraphFeed


def _feed(**params) -> tuple[GraphFeed, list[str]]:
    table = {p.name: p.default for p in PP.PARAMETERS}
    cfg = replace(PP.PoseGraphNodeConfig(**table), **params)
    logged: list[str] = []
    graph = PoseGraph(PoseGraphConfig(**cfg.graph_kwargs()))
    return GraphFeed(graph, cfg, logged.append, logged.append), logged


def _odom(feed: GraphFeed, t: float, x: float, frame: str = "odom") -> bool:
    return feed.odometry(frame, t, np.array([x, 0.0, 0.0]), np.array([0.0, 0.0, 0.0, 1.0]))


def _hint_at(t: float, x_true: float, verified: bool = True, frame_id: str = "map") -> str:
    """A verified hint of a base (= camera: identity camera_in_base) at x_true, seen from a keyframe at x - 1."""
    doc = good_doc(verified, t)
    doc.update(frame_id=frame_id, position=[x_true, 0.0, 0.0])
    if verified:
        doc.update(keyframe_position=[x_true - 1.0, 0.0, 0.0], relative_position=[1.0, 0.0, 0.0],
                   relative_covariance=(np.eye(6) * 1e-4).reshape(-1).tolist())
    return json.dumps(doc)


def test_feed_counts_what_it_refuses():
    feed, logged = _feed()
    assert _odom(feed, 10.0, 0.0) and _odom(feed, 10.1, 0.1)
    assert not _odom(feed, 10.05, 0.05)  # out of order
    assert not _odom(feed, 10.2, 0.2, frame="wheel_odom")
    assert not feed.hint("{")
    assert not feed.hint(_hint_at(10.1, 0.1, frame_id="earth"))
    assert not feed.hint(_hint_at(10.1, 0.1, verified=False))  # use_unverified false
    assert not feed.hint(_hint_at(5.0, 0.0))  # older than any node: unmatched
    assert feed.hint(_hint_at(10.1, 0.1))
    c = feed.counts
    assert (c["odometry_rejected"], c["hints_rejected"], c["hints_unverified_skipped"], c["hints_unmatched"],
            c["closures_added"], c["hints_received"]) == (2, 2, 1, 1, 1, 5)
    assert len(logged) == 5 and all("\n" not in line for line in logged)
    assert any("not after the previous" in line for line in logged)
    assert any("odometry in frame 'wheel_odom', not odom_frame 'odom'" in line for line in logged)


def test_hint_waits_for_its_odometry_and_bounded():
    feed, _ = _feed(pending_hints=2)
    _odom(feed, 10.0, 0.0)
    for t in (10.3, 10.4, 10.5):  # newer than the odometry: held, the oldest dropped past 2
        assert not feed.hint(_hint_at(t, t - 10.0))
    assert feed.counts["hints_dropped"] == 1 and len(feed.pending) == 2
    assert _odom(feed, 10.45, 0.45)  # reaches 10.4: attached now; 10.5 still waits
    assert feed.counts["closures_added"] == 1 and [h.stamp for h in feed.pending] == [pytest.approx(10.5)]


def test_unverified_hint_used_when_asked():
    feed, _ = _feed(use_unverified=True, unverified_sigma_m=2.0)
    _odom(feed, 10.0, 0.0)
    assert feed.hint(_hint_at(10.0, 0.0, verified=False))
    [closure] = feed.graph.closures
    assert closure.kind == "absolute"
    assert np.allclose(np.diag(feed.unverified_cov)[:3], 4.0)
    assert np.diag(feed.unverified_cov)[3] == pytest.approx(math.radians(10.0) ** 2)
