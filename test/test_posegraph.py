"""The pose graph (disam_ros.posegraph.graph) on hand-made drives whose truth is known: a 40 m square with a yaw-biased
odometry, closures computed from the truth (with disam_ros.pose.relative, as the localizer's hint does), a wrong
closure among them, closures stamped between nodes, absolute priors, the covariance round trip and the restart."""
from __future__ import annotations

import math

import gtsam
import numpy as np
import pytest

from disam_ros.geometry import R_BODY_OPTICAL, quat_angle_deg, quat_to_rot, rot_to_quat
from disam_ros.pose.relative import relative_covariance, relative_pose
from disam_ros.posegraph import PoseGraph, PoseGraphConfig
from disam_ros.posegraph.conventions import ros_cov_to_gtsam, to_pose3
from disam_ros.posegraph.odometry import OdometryNoise, drifting_odometry, so3_exp

IDENTITY_Q = np.array([0.0, 0.0, 0.0, 1.0])
KEY_OFFSET_P = np.array([1.5, 0.2, -3.0])  # where a map keyframe sits relative to the true body pose it sees
KEY_OFFSET_R = so3_exp(np.radians([2.0, 10.0, -3.0]))
CLOSURE_COV = np.diag([0.01**2] * 3 + [math.radians(0.2) ** 2] * 3)  # map frame, ROS order: 1 cm, 0.2 deg


def camera(heading_rad: float) -> np.ndarray:
    """Optical-frame camera (z forward, y down) on a vehicle with this heading in a z-up map."""
    return so3_exp(np.array([0.0, 0.0, heading_rad])) @ R_BODY_OPTICAL


def square() -> tuple[np.ndarray, np.ndarray]:
    """41 true poses, 1 m apart: 4 sides of 10 m, the camera looking forward and turning 90 deg left at corners."""
    positions, rots, corner = [], [], np.zeros(3)
    for side in range(4):
        heading = math.radians(90 * side)
        direction = np.array([math.cos(heading), math.sin(heading), 0.0])
        for j in range(10 if side < 3 else 11):
            positions.append(corner + j * direction)
            rots.append(camera(heading))
        corner = corner + 10 * direction
    return np.array(positions), rot_to_quat(np.array(rots))


def hint(p: np.ndarray, q: np.ndarray) -> tuple:
    """(keyframe position, quat, relative position, quat, relative covariance) of a keyframe placed near the true
    pose (p, q), seeing it: what the localizer's verified hint carries."""
    R = quat_to_rot(q)
    kp, kq = p + R @ KEY_OFFSET_P, rot_to_quat(R @ KEY_OFFSET_R)
    rp, rq = relative_pose(kp, kq, p, q)
    return kp, kq, rp, rq, relative_covariance(CLOSURE_COV, kq)


def drive_square(closure_every: int | None, bias_deg_per_m: float = 0.3, robust: str = "cauchy",
                 wrong_at: int | None = None, settle: int = 3, anchor_agree: int = 2,
                 ) -> tuple[PoseGraph, np.ndarray, np.ndarray]:
    """The square with yaw-biased odometry, one update per node, a true closure every `closure_every` nodes
    (node 0 included), optionally a wrong one; then `settle` more updates (iSAM2 takes one Gauss-Newton step per
    update, so a closure's pull on the newest node settles over the next frames, as on a running vehicle)."""
    p, q = square()
    op, oq = drifting_odometry(p, q, OdometryNoise(0.0, 0.0, yaw_bias_deg_per_m=bias_deg_per_m, scale_bias=0.0))
    g = PoseGraph(PoseGraphConfig(robust=robust, anchor_agree=anchor_agree))
    for i in range(len(p)):
        assert g.add_odometry(float(i), op[i], oq[i]) == i
        if i == wrong_at:  # a keyframe 15 m away and a relative pose saying the body is right there
            kp = p[i] + np.array([0.0, 15.0, 0.0])
            g.add_closure(float(i), 999, kp, q[i], np.zeros(3), IDENTITY_Q, relative_covariance(CLOSURE_COV, q[i]))
        if closure_every and i % closure_every == 0:
            g.add_closure(float(i), i, *hint(p[i], q[i]))
        g.update()
    for _ in range(settle):
        g.update()
    return g, p, op


def errors(g: PoseGraph, truth: np.ndarray) -> np.ndarray:
    return np.linalg.norm(g.trajectory()[1] - truth, axis=1)


def test_square_without_closures_is_the_odometry():
    g, p, op = drive_square(None)
    _, P, Q = g.trajectory()
    _, oq = drifting_odometry(*square(), OdometryNoise(0.0, 0.0, 0.3, 0.0))
    np.testing.assert_allclose(P, op, atol=1e-6)
    assert np.max(np.abs(quat_to_rot(Q) - quat_to_rot(oq))) < 1e-6
    assert np.linalg.norm(op[-1] - p[-1]) > 1.0  # the drift the closures must remove: 1.44 m
    t, pos, quat, cov = g.latest()
    assert t == 40.0 and np.allclose(pos, op[-1], atol=1e-6) and cov.shape == (6, 6)
    np.testing.assert_allclose(g.map_to_odom()[0], np.zeros(3), atol=1e-6)  # no closure: map == odom


def test_square_with_exact_closures_follows_the_truth():
    g, p, op = drive_square(closure_every=4)
    err = errors(g, p)
    assert err.max() < 0.02, err.round(3)
    odom_final = np.linalg.norm(op[-1] - p[-1])
    assert err[-1] * 20 < odom_final, (err[-1], odom_final)
    assert len(g.closures) == 11 and all(c.kind == "between" for c in g.closures)
    assert min(c.weight for c in g.closures) > 0.5
    c = g.closures[3]  # what it asks for is the true pose at its stamp
    np.testing.assert_allclose(c.measured_position, p[12], atol=1e-9)


def test_a_wrong_closure_is_rejected_by_the_kernel_and_not_without():
    clean = drive_square(closure_every=4)[0].trajectory()[1]
    p = square()[0]
    clean_err = np.linalg.norm(clean - p, axis=1).max()

    g, _, _ = drive_square(closure_every=4, wrong_at=22)
    wrong = [c for c in g.closures if c.keyframe_id == 999]
    good = [c for c in g.closures if c.keyframe_id != 999]
    assert wrong[0].weight < 0.1 and wrong[0].rejected
    assert min(c.weight for c in good) > 0.5
    assert np.linalg.norm(g.trajectory()[1] - clean, axis=1).max() < 0.05

    huber, _, _ = drive_square(closure_every=4, robust="huber", wrong_at=22)  # bounded, not zero, influence
    assert [c.weight for c in huber.closures if c.keyframe_id == 999][0] < 0.1
    huber_shift = np.linalg.norm(huber.trajectory()[1] - clean, axis=1).max()

    plain, _, _ = drive_square(closure_every=4, robust="none", wrong_at=22)
    plain_err = errors(plain, p).max()
    assert plain_err > 10 * clean_err and plain_err > 1.0, (plain_err, clean_err)  # 12.7 m vs 1 cm
    assert huber_shift < 0.1 * plain_err
    assert all(c.weight == 1.0 for c in plain.closures)


def test_a_wrong_first_closure_does_not_anchor_the_map():
    """The first hint of the drive is wrong (15 m off): the graph waits for two hints that agree on map->odom, so
    the right ones anchor it and the kernel rejects the wrong one; anchoring on the first hint alone
    (anchor_agree=1) puts the whole trajectory 15 m off and rejects the right ones instead."""
    clean = drive_square(closure_every=4)[0].trajectory()[1]
    g, p, _ = drive_square(closure_every=4, wrong_at=0)
    wrong = [c for c in g.closures if c.keyframe_id == 999]
    assert wrong[0].rejected and min(c.weight for c in g.closures if c.keyframe_id != 999) > 0.5
    assert np.linalg.norm(g.trajectory()[1] - clean, axis=1).max() < 0.05
    first, _, _ = drive_square(closure_every=4, wrong_at=0, anchor_agree=1)
    assert errors(first, p).min() > 5.0
    assert sum(c.rejected for c in first.closures if c.keyframe_id != 999) >= 8


def test_agreement_on_map_to_odom_by_hand():
    """Views (keyframe, T_odom_node, T_map_node): map->odom is a 10 m shift. Two views implying it agree; one 3 m
    off does not, unless the odometry between them is long enough for its drift allowance (2 m + 3 * 0.02 * d)."""
    from disam_ros.posegraph.anchoring import agrees_with_newest

    shift = gtsam.Pose3(gtsam.Rot3(), np.array([10.0, 0.0, 0.0]))  # T_map_odom

    def view(key, x, off=0.0):
        odom = gtsam.Pose3(gtsam.Rot3.Yaw(0.3), np.array([x, 0.0, 0.0]))
        return key, odom, gtsam.Pose3(gtsam.Rot3(), np.array([0.0, off, 0.0])).compose(shift).compose(odom)

    args = (2.0, 5.0, 0.02, 0.3)
    assert agrees_with_newest([view(1, 0.0), view(2, 5.0)], 2, *args)
    assert not agrees_with_newest([view(1, 0.0), view(2, 5.0, off=3.0)], 2, *args)
    assert agrees_with_newest([view(1, 0.0), view(2, 20.0, off=3.0)], 2, *args)  # 2 + 3 * 0.02 * 20 = 3.2 m
    assert not agrees_with_newest([view(1, 0.0), view(1, 5.0)], 2, *args)  # the same keyframe twice: one witness
    assert agrees_with_newest([view(1, 0.0)], 1, *args) and not agrees_with_newest([view(1, 0.0)], 2, *args)
    assert not agrees_with_newest([view(1, 0.0), view(2, 5.0), view(3, 9.0, off=4.0)], 2, *args)  # newest decides


def test_weights_match_gtsams_own_factor_error():
    """A closure's weight is the Cauchy weight of the residual GTSAM's own factor sees: error() of a Gaussian prior
    at the pose it asks for is r^2 / 2 (a closure from an exact keyframe is that prior, with the map-frame
    covariance, see PoseGraph.add_closure)."""
    g, _, _ = drive_square(closure_every=4, wrong_at=22, settle=0)
    g.refresh_weights()
    for c in g.closures:
        R = quat_to_rot(c.measured_quat)
        noise = gtsam.noiseModel.Gaussian.Covariance(ros_cov_to_gtsam(CLOSURE_COV, R))
        factor = gtsam.PriorFactorPose3(0, to_pose3(c.measured_position, c.measured_quat), noise)
        values = gtsam.Values()
        values.insert(0, to_pose3(*g.pose(c.node)))
        r2 = 2.0 * factor.error(values)
        assert c.weight == pytest.approx(1.0 / (1.0 + r2 / 9.0), rel=1e-6, abs=1e-12)
    assert sorted(c.weight < 0.1 for c in g.closures) == [False] * 11 + [True]


def arc(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True poses on a left-curving drive at 1 m/s, curvature 0.1 /m (constant speed and turn rate)."""
    heading = 0.1 * t
    positions = np.stack([10 * np.sin(heading), 10 * (1 - np.cos(heading)), np.zeros_like(t)], axis=1)
    return positions, rot_to_quat(np.array([camera(h) for h in heading]))


def arc_graph(max_dt: float = 0.5) -> tuple[PoseGraph, np.ndarray, np.ndarray]:
    """Odometry at 10 Hz with no drift, in an odom frame 100 m and 30 deg away from the map; a node every 1 s."""
    t = np.arange(0.0, 6.05, 0.1)
    p, q = arc(t)
    R_om = so3_exp(np.array([0.0, 0.0, math.radians(30)]))
    g = PoseGraph(PoseGraphConfig(keyframe_s=1.0 - 1e-9, closure_max_dt_s=max_dt, anchor_agree=1))
    for ti, pi, qi in zip(t, p, q):
        g.add_odometry(ti, R_om @ pi + np.array([100.0, -20.0, 0.0]), rot_to_quat(R_om @ quat_to_rot(qi)))
    return g, t, p


@pytest.mark.parametrize("stamp, node", [(3.0, 3), (3.3, 3), (3.25, 3), (3.6, 4)])
def test_a_closure_between_nodes_composes_the_odometry(stamp, node):
    """Stamped at a node, at a raw sample between nodes, between two samples (interpolated) or nearer the next
    node: it attaches to the nearest node, and the graph lands on the truth at every node as when stamped at the
    node itself (the truth moves 0.25-0.6 m between stamp and node, so ignoring that motion would show)."""
    g, t, p = arc_graph()
    assert len(g) == 7
    tp, tq = arc(np.array([stamp]))
    c = g.add_closure(stamp, 5, *hint(tp[0], tq[0]))
    assert c is not None and c.node == node
    np.testing.assert_allclose(c.measured_position, tp[0], atol=1e-9)
    g.update()
    times, P, Q = g.trajectory()
    truth_p, truth_q = arc(times)
    tol = 1e-6 if stamp in (3.0, 3.3) else 1e-3  # between samples: linear interpolation of a 0.1 m arc step
    np.testing.assert_allclose(P, truth_p, atol=tol)
    assert np.max(quat_angle_deg(Q, truth_q)) < 0.01


def test_closures_too_far_from_any_node_or_outside_the_odometry_are_refused():
    g, t, p = arc_graph(max_dt=0.3)
    tp, tq = arc(np.array([3.5]))
    assert g.add_closure(3.5, 5, *hint(tp[0], tq[0])) is None  # 0.5 s from nodes 3 and 4
    assert g.add_closure(6.2, 5, *hint(tp[0], tq[0])) is None  # after the newest odometry
    assert g.add_absolute(-0.2, p[0], IDENTITY_Q, np.eye(6)) is None  # before the first
    assert g.closures == []


def test_the_first_absolute_moves_an_unanchored_graph_rigidly():
    """No set_initial, anchor_agree=1: the first map-frame measurement, however far, moves the whole trajectory
    onto it (arc_graph sets anchor_agree=1)."""
    g, t, p = arc_graph()
    odom = g.trajectory()[1]
    target_p, target_q = np.array([500.0, 40.0, 3.0]), rot_to_quat(camera(2.0))
    c = g.add_absolute(2.0, target_p, target_q, np.diag([1e-4] * 3 + [1e-6] * 3))
    g.update()
    pos, quat = g.pose(2)
    np.testing.assert_allclose(pos, target_p, atol=1e-6)
    assert quat_angle_deg(quat, target_q) < 1e-4 and c.weight > 0.99
    moved = g.trajectory()[1]
    np.testing.assert_allclose(np.linalg.norm(np.diff(moved, axis=0), axis=1),
                               np.linalg.norm(np.diff(odom, axis=0), axis=1), atol=1e-6)


@pytest.mark.parametrize("robust, offset, turn_deg", [("none", 0.5, 5.0), ("cauchy", 0.05, 0.5)])
def test_absolute_with_a_tight_covariance_pulls_an_anchored_node(robust, offset, turn_deg):
    """A correction of `offset` metres and `turn_deg` with a 2 mm / 0.05 deg covariance moves the node onto it:
    plainly, or with the Cauchy kernel starting ~25 sigma away (weight ~0.01), over a few updates as the pull
    shrinks the residual and the weight recovers (the rest of the graph, 6 m of odometry, is much looser)."""
    t = np.arange(0.0, 10.0, 1.0)
    p, q = arc(t)
    g = PoseGraph(PoseGraphConfig(robust=robust))
    g.set_initial(p[0], q[0], np.diag([1e-4] * 3 + [1e-6] * 3))
    for ti, pi, qi in zip(t, p, q):
        g.add_odometry(ti, pi, qi)
    target_q = rot_to_quat(so3_exp(np.radians([0.0, 0.0, turn_deg])) @ quat_to_rot(q[6]))
    shift = offset * np.array([0.6, 0.8, 0.0])
    c = g.add_absolute(6.0, p[6] + shift, target_q, np.diag([0.002**2] * 3 + [math.radians(0.05) ** 2] * 3))
    for _ in range(5):
        g.update()
    pos, quat = g.pose(6)
    assert np.linalg.norm(pos - c.measured_position) < 0.05 * offset
    assert quat_angle_deg(quat, target_q) < 0.05 * turn_deg
    assert c.weight > 0.5


def test_latest_covariance_of_a_lone_node_is_its_prior():
    """set_initial's ROS-order covariance goes to GTSAM's convention and back out of iSAM2's marginal unchanged."""
    A = np.random.default_rng(0).normal(size=(6, 6))
    cov = A @ A.T * 1e-3 + np.diag([0.04, 0.09, 0.01, 1e-3, 2e-3, 5e-4])
    pos, quat = np.array([3.0, -4.0, 1.0]), rot_to_quat(camera(0.7))
    g = PoseGraph()
    g.set_initial(pos, quat, cov)
    assert g.add_odometry(5.0, np.zeros(3), IDENTITY_Q) == 0
    t, p, q, c = g.latest()
    assert t == 5.0
    np.testing.assert_allclose(p, pos, atol=1e-9)
    assert quat_angle_deg(q, quat) < 1e-6
    np.testing.assert_allclose(c, cov, rtol=1e-6, atol=1e-12)
    with pytest.raises(RuntimeError, match="before the first add_odometry"):
        g.set_initial(pos, quat, cov)


@pytest.mark.parametrize("kind", ["between", "absolute"])
def test_a_measurement_gives_a_lone_node_its_own_covariance(kind):
    """Under the loose default prior, a node seen once has the measurement's map-frame covariance: the localizer's
    absolute covariance C, sent as C itself (absolute) or as the hint's relative_covariance(C) in the keyframe's
    axes (between). Anisotropic and correlated, so a missed rotation or reorder shows."""
    A = np.random.default_rng(1).normal(size=(6, 6))
    C = A @ A.T * 1e-5 + np.diag([4e-4, 1e-4, 2.5e-5, 1e-5, 4e-6, 2e-5])
    p, q = np.array([20.0, 5.0, 1.0]), rot_to_quat(camera(2.2))
    g = PoseGraph(PoseGraphConfig(robust="none", anchor_agree=1))
    g.add_odometry(0.0, np.zeros(3), IDENTITY_Q)
    if kind == "absolute":
        g.add_absolute(0.0, p, q, C)
    else:
        kp, kq, rp, rq, _ = hint(p, q)
        g.add_closure(0.0, 3, kp, kq, rp, rq, relative_covariance(C, kq))
    _, pos, quat, cov = g.latest()
    np.testing.assert_allclose(pos, p, atol=1e-6)
    # between: the keyframe's own 1e-4 m / 1e-4 rad prior adds ~(3 m lever x 1e-4 rad)^2 = 1e-7 m^2
    np.testing.assert_allclose(cov, C, rtol=2e-3, atol=1e-9 if kind == "absolute" else 3e-7)


def restart_drive(max_nodes: int, check_restarts: bool) -> tuple[PoseGraph, int, np.ndarray, np.ndarray]:
    """100 m of an arc with noisy, biased odometry (within what the default sigmas expect) and an absolute prior
    every 7 nodes, one update per node; with check_restarts, asserts the size bound and that the newest node's
    pose right after each restart is the one read right before it."""
    t = np.arange(0.0, 100.0, 1.0)
    p, q = arc(t)
    op, oq = drifting_odometry(p, q, OdometryNoise(0.01, 0.1, 0.2, 0.01, seed=1))
    g, restarts = PoseGraph(PoseGraphConfig(max_nodes=max_nodes)), 0
    for i, ti in enumerate(t):
        before = g.latest() if check_restarts and len(g) == max_nodes else None
        g.add_odometry(ti, op[i], oq[i])
        if before is not None:  # just restarted: node i - 1 is the new graph's first
            restarts += 1
            pos, quat = g.pose(i - 1)
            np.testing.assert_allclose(pos, before[1], atol=1e-6)
            assert quat_angle_deg(quat, before[2]) < 1e-4
            assert not np.allclose(before[1], op[i - 1], atol=0.05)  # not trivially the odometry
        if i % 7 == 3:
            g.add_absolute(ti, p[i], q[i], np.diag([0.05**2] * 3 + [math.radians(1) ** 2] * 3))
        g.update()
        assert not check_restarts or 1 <= len(g) <= max_nodes
    return g, restarts, p, op


def test_max_nodes_bounds_the_graph_and_keeps_the_estimate_continuous():
    """Past max_nodes the graph restarts at its newest node, with its marginal covariance as prior: the size stays
    bounded, the estimate does not jump, and the end is where an unbounded graph puts it (within 3 cm)."""
    g, restarts, p, op = restart_drive(30, check_restarts=True)
    assert restarts == 3 and len(g.trajectory()[0]) == len(g)
    with pytest.raises(IndexError, match="max_nodes"):
        g.pose(0)
    full = restart_drive(1000, check_restarts=False)[0]
    assert np.linalg.norm(g.latest()[1] - full.latest()[1]) < 0.03
    assert np.linalg.norm(g.latest()[1] - p[-1]) < 0.3 < 2.0 < np.linalg.norm(op[-1] - p[-1])  # 0.13 vs 3.1 m


def test_out_of_order_odometry_is_refused_in_one_line():
    g = PoseGraph()
    g.add_odometry(2.0, np.zeros(3), IDENTITY_Q)
    for bad in (1.0, 2.0):
        with pytest.raises(ValueError, match="not after the previous") as e:
            g.add_odometry(bad, np.ones(3), IDENTITY_Q)
        assert "\n" not in str(e.value)
    assert len(g) == 1


def test_keyframe_rule_spaces_nodes_and_config_is_checked():
    g = PoseGraph(PoseGraphConfig(keyframe_m=1.0))
    made = [g.add_odometry(0.1 * i, np.array([0.25 * i, 0.0, 0.0]), IDENTITY_Q) for i in range(9)]
    assert made == [0, None, None, None, 1, None, None, None, 2]
    g = PoseGraph(PoseGraphConfig(keyframe_deg=10.0))
    made = [g.add_odometry(float(i), np.zeros(3), rot_to_quat(so3_exp(np.radians([0, 0, 4.0 * i])))) for i in range(6)]
    assert made == [0, None, None, 1, None, None]
    with pytest.raises(ValueError, match="robust"):
        PoseGraphConfig(robust="tukey")
    with pytest.raises(ValueError, match="odom_sigma_floor_m"):
        PoseGraphConfig(odom_sigma_floor_m=0.0)


def test_bench_runs_and_reports(tmp_path, capsys):
    """`disam-bench posegraph` smoke run (real figures go in docs/benchmarks.md): table, JSON, wrong closures
    rejected, the corrected drive far better than its odometry."""
    import json

    from disam_ros import bench

    out = tmp_path / "pg.json"
    assert bench.main(["posegraph", "--nodes", "300", "--messages", "150", "--hint-every", "50", "--max-nodes", "100",
                       "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "update ms (median)" in text.splitlines()[0] and "median ms / message" in text
    blob = json.loads(out.read_text())
    [per] = blob["per_message"]  # through the node: every message processed, counted, finite
    assert (per["messages"], per["odometry_received"], per["odometry_processed"], per["hints"]) == (150, 150, 150, 2)
    assert per["outputs_suppressed"] == 0 and 0 < per["median_ms"] <= per["p95_ms"] <= per["max_ms"]
    assert (per["max_nodes"], per["graph_nodes_peak"]) == (100, 100) and "graph peak / max_nodes" in text
    assert per["p95_first_ms"] == per["p95_last_ms"] == per["p95_ms"]  # 150 messages: both windows are the drive
    row = blob["results"][0]
    assert row["nodes"] == 300 and row["closures"] == 29 and row["outliers"] == 1
    assert row["rejected_outliers"] == 1 and row["rejected_inliers"] == 0
    assert row["update_ms"] > 0 and row["rms_error_m"] < 0.2 < 2.0 < row["odometry_rms_error_m"]
