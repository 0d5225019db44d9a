"""Hostile odometry and long drives for the pose graph and its node's feed, without DDS: absurd positions and jumps
(refused, the chain goes on), a stamp days in the future (refused, the next good one continues), a clock that
restarts (the chain resets after three messages continue it), every message accounted for, no non-finite output,
bounded work per hint and per ~/path refresh. The same inputs over real DDS are in test_posegraph_node.py."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("gtsam")

from disam_ros.posegraph import weights as W  # noqa: E402
from disam_ros.posegraph.graph import PoseGraph, PoseGraphConfig  # noqa: E402
from disam_ros.posegraph.odometry_guard import CONFIRM, OdometryGuard, OdometryLimits  # noqa: E402
from disam_ros.ros import posegraph_msgs as PM  # noqa: E402
from disam_ros.ros import posegraph_params as PP  # noqa: E402
from disam_ros.ros.messages import LOOP_CLOSURE_SCHEMA  # noqa: E402
from disam_ros.ros.posegraph_feed import GraphFeed  # noqa: E402
from disam_ros.ros.posegraph_path import IncrementalPath  # noqa: E402

Q0 = np.array([0.0, 0.0, 0.0, 1.0])
DAYS_11_6 = 11.6 * 86400.0


def feed_of(**params) -> GraphFeed:
    table = {p.name: p.default for p in PP.PARAMETERS}
    cfg = replace(PP.PoseGraphNodeConfig(**table), **params)
    return GraphFeed(PoseGraph(PoseGraphConfig(**cfg.graph_kwargs())), cfg, lambda _: None, lambda _: None)


def odom(feed: GraphFeed, t: float, x: float, y: float = 0.0) -> bool:
    return feed.odometry("odom", t, np.array([x, y, 0.0]), Q0)


def accounted(feed: GraphFeed) -> bool:
    c = feed.counts
    return c["odometry_received"] == c["odometry_processed"] + c["odometry_merged"] + c["odometry_rejected"]


def received(feed: GraphFeed, t: float, x: float, y: float = 0.0) -> bool:
    """What the node does per message: count it, then feed it."""
    feed.counts["odometry_received"] += 1
    return odom(feed, t, x, y)


def hint(t: float, x: float, key: int) -> str:
    """A verified hint: the base at (x, 0, 0), seen from keyframe `key` 1 m behind it."""
    return json.dumps({"schema": LOOP_CLOSURE_SCHEMA, "query_stamp": t, "query_stamp_ns": int(round(t * 1e9)),
                       "map_index": key, "frame_id": "map", "verified": True, "position": [x, 0.0, 0.0],
                       "orientation_xyzw": [0, 0, 0, 1], "keyframe_index": key,
                       "keyframe_position": [x - 1.0, 0.0, 0.0], "keyframe_orientation_xyzw": [0, 0, 0, 1],
                       "relative_position": [1.0, 0.0, 0.0], "relative_orientation_xyzw": [0, 0, 0, 1],
                       "relative_covariance": (np.eye(6) * 1e-4).reshape(-1).tolist()})


# ---------------------------------------------------------------------------------------------- P3: absurd odometry


def test_graph_refuses_a_position_beyond_the_bound_and_stays_finite():
    g = PoseGraph()
    for i in range(5):
        g.add_odometry(10 + 0.1 * i, np.array([0.1 * i, 0, 0]), Q0)
        g.update()
    with pytest.raises(ValueError, match="max_odom_position_m"):
        g.add_odometry(10.5, np.array([1e308, 1e308, 0.0]), Q0)
    with pytest.raises(ValueError, match="max_odom_position_m"):
        g.add_odometry(10.6, np.array([1e300, 1e300, 0.0]), Q0)
    for i in range(7, 12):
        g.add_odometry(10 + 0.1 * i, np.array([0.1 * i, 0, 0]), Q0)
        g.update()
    t, p, _, cov = g.latest()
    assert t == pytest.approx(11.1) and p == pytest.approx([1.1, 0.0, 0.0], abs=1e-9)  # map == odom, unanchored
    assert np.isfinite(cov).all() and len(g) == 10
    assert g.map_to_odom()[0] == pytest.approx(np.zeros(3), abs=1e-9)


def test_feed_refuses_absurd_odometry_and_the_node_outputs_stay_finite():
    """The probe's input: (1e308, 1e308) then (1e300, 1e300) between good messages. Before the bound every later
    pose sat at x = -4.5e291 with a NaN covariance."""
    feed = feed_of()
    xs = [0.0, 0.1, 0.2, 1e308, 1e300, 0.3, 0.4, 0.5]
    for i, x in enumerate(xs):
        received(feed, 100.0 + 0.1 * i, x, x if x > 1 else 0.0)
        feed.graph.update()
    t, p, q, cov = feed.graph.latest()
    mo_p, mo_q = feed.graph.map_to_odom()
    assert p == pytest.approx([0.5, 0.0, 0.0], abs=1e-9) and PM.non_finite_output(p, q, cov, mo_p, mo_q) == ""
    assert feed.counts["odometry_rejected"] == 2 and feed.counts["odometry_processed"] == 6 and accounted(feed)
    assert "max_odom_position_m" in feed.last_error


def test_a_single_jump_is_refused_and_the_chain_goes_on():
    feed = feed_of()
    for i, x in enumerate([0.0, 0.1, 0.2, 5000.0, 0.3, 0.4]):  # 5000 m in 0.1 s: 50 km/s
        received(feed, 100.0 + 0.1 * i, x)
    assert feed.counts["odometry_rejected"] == 1 and feed.counts["odometry_resets"] == 0 and accounted(feed)
    assert feed.graph.latest()[1] == pytest.approx([0.4, 0.0, 0.0], abs=1e-9) and len(feed.graph) == 5


def test_non_finite_output_names_what_is_not_finite():
    p, q, cov = np.zeros(3), Q0, np.eye(6)
    assert PM.non_finite_output(p, q, cov, p, q) == ""
    assert PM.non_finite_output(p, q, np.full((6, 6), np.nan), p, q) == "covariance"
    assert PM.non_finite_output(np.array([np.nan, 0, 0]), q, cov, p, q) == "pose"
    assert PM.non_finite_output(p, q, cov, np.array([0, np.inf, 0]), q) == "map->odom transform"


# ---------------------------------------------------------------------------------------------- P4: clock jumps


def test_one_stamp_days_in_the_future_does_not_poison_the_chain():
    """The probe's input: one odometry stamp 11.6 days ahead, then 100 good messages (all refused before)."""
    feed = feed_of()
    received(feed, 1000.0, 0.0)
    received(feed, 1000.0 + DAYS_11_6, 0.0)
    for i in range(1, 101):
        received(feed, 1000.0 + 0.1 * i, 0.01 * i)
    c = feed.counts
    assert (c["odometry_rejected"], c["odometry_processed"], c["odometry_resets"]) == (1, 101, 0) and accounted(feed)
    assert feed.hint(hint(1009.95, 0.995, key=3))  # a hint at the good clock still finds its node
    assert feed.counts["closures_added"] == 1 and feed.last_odom_t == pytest.approx(1010.0)


def test_a_clock_restart_resets_the_chain_after_it_is_confirmed():
    feed = feed_of(anchor_agree=1)
    for i in range(20):
        received(feed, 1000.0 + 0.1 * i, 0.1 * i)
    assert feed.hint(hint(1001.0, 1.0 + 5.0, key=1))  # anchors map->odom at +5 m in x
    feed.graph.update()
    for i in range(10):  # the clock restarts at 5 s; the odometry carries on from 1.9 m
        received(feed, 5.0 + 0.1 * i, 1.9 + 0.1 * (i + 1))
    c = feed.counts
    assert c["odometry_resets"] == 1 and c["odometry_rejected"] == CONFIRM - 1 and accounted(feed)
    assert c["odometry_processed"] == 20 + 10 - (CONFIRM - 1) and feed.last_odom_t == pytest.approx(5.9)
    t, p, _, _ = feed.graph.latest()
    # The new chain starts at the old map->odom (+5 m, and the odometry frame did not move): the pose carries on.
    assert t == pytest.approx(5.9) and p == pytest.approx([2.9 + 5.0, 0.0, 0.0], abs=1e-6)
    assert "chain reset" in feed.last_error


def test_a_pause_longer_than_the_gap_continues_the_chain_without_a_reset():
    feed = feed_of()
    for i in range(5):
        received(feed, 100.0 + 0.1 * i, 0.1 * i)
    for i in range(5):  # 30 s of silence, parked: the same pose
        received(feed, 130.0 + 0.1 * i, 0.4)
    c = feed.counts
    assert (c["odometry_resets"], c["odometry_rejected"], c["odometry_processed"]) == (0, CONFIRM - 1, 8)
    assert len(feed.graph) == 8 and feed.graph.newest_node == 7  # one chain: node indices never jumped


def test_guard_confirms_only_a_consistent_new_chain():
    g = OdometryGuard(OdometryLimits(max_speed_mps=10.0))
    assert g.offer(0.0, np.zeros(3)).accept
    # Three jumps that disagree with each other never make a chain; the old chain goes on.
    for t, x in ((0.1, 500.0), (0.2, -500.0), (0.3, 900.0)):
        assert not g.offer(t, np.array([x, 0, 0])).accept
    assert g.offer(0.4, np.array([0.5, 0, 0])).accept
    v = [g.offer(0.5 + 0.1 * i, np.array([700.0 + i, 0, 0])) for i in range(CONFIRM)]
    assert [x.accept for x in v] == [False] * (CONFIRM - 1) + [True] and v[-1].reset


def test_limits_are_checked():
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="max_speed_mps"):
            OdometryLimits(max_speed_mps=bad)
    with pytest.raises(ValueError, match="max_odom_gap_s"):
        PP.check_value("max_odom_gap_s", 0.0)


# ---------------------------------------------------------------------------------------------- P7 / P6: bounded work


def test_every_message_is_processed_merged_or_rejected():
    feed = feed_of(keyframe_m=0.5)
    for i in range(40):
        received(feed, 10.0 + 0.1 * i, 0.1 * i if i != 17 else 1e9)
    received(feed, 9.0, 0.0)  # out of order
    c = feed.counts
    assert c["odometry_received"] == 41 and accounted(feed)
    assert c["odometry_rejected"] == 2 and c["odometry_merged"] > 0 and c["odometry_processed"] == len(feed.graph)


def test_closure_weights_per_update_are_bounded_however_many_hints_share_a_node(monkeypatch):
    """P6: 1000 hints on 40 nodes; before, every update re-weighed every closure on the newest 100 nodes."""
    weighed: list[int] = []
    real = W.ClosureWeights._weigh
    monkeypatch.setattr(W.ClosureWeights, "_weigh", lambda self, live, est: (weighed.append(len(live)),
                                                                               real(self, live, est)))
    g = PoseGraph(PoseGraphConfig(anchor_agree=1))
    for i in range(40):
        g.add_odometry(10 + 0.1 * i, np.array([0.1 * i, 0, 0]), Q0)
    cov = np.eye(6) * 1e-4
    for k in range(1000):
        i = k % 40
        g.add_closure(10 + 0.1 * i, k % 7, np.array([0.1 * i - 1, 0, 0]), Q0, np.array([1.0, 0, 0]), Q0, cov)
        weighed.clear()
        g.update()
        assert sum(weighed) <= W.WEIGHT_RECENT_MAX + W.WEIGHT_SWEEP
    g.refresh_weights()
    assert len(g.closures) == 1000 and not any(c.rejected for c in g.closures)  # all consistent, all used


def test_incremental_path_reads_only_the_newest_nodes_and_matches_the_graph():
    g = PoseGraph(PoseGraphConfig(max_nodes=50, anchor_agree=1))
    path = IncrementalPath("map", max_poses=30)
    asked: list[int] = []
    real = g.estimates
    g.estimates = lambda since: (lambda out: (asked.append(len(out[0])), out)[1])(real(since))
    yaw = lambda i: np.array([0.0, 0.0, math.sin(0.005 * i), math.cos(0.005 * i)])  # noqa: E731
    for i in range(200):
        g.add_odometry(10 + 0.1 * i, np.array([0.1 * i, 0.01 * i, 0.0]), yaw(i))
        if i == 120:
            g.add_closure(10 + 0.1 * i, 1, np.array([0.1 * i - 1, 0.5, 0]), Q0, np.array([1.0, 0, 0]), yaw(i),
                          np.eye(6) * 1e-4)  # moves the whole live graph 0.5 m - 1.2 m in y
        g.update()
        if i % 7 == 0:
            msg = path.refresh(g)
    msg = path.refresh(g)
    assert max(asked) <= 30 and len(msg.poses) == 30 and msg.header.frame_id == "map"
    times, positions, quats = g.trajectory()  # the graph holds < 50 nodes (restarts at max_nodes)
    live = len(times)
    got = np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in msg.poses])
    assert got[-live:] == pytest.approx(positions[-30:] if live >= 30 else positions, abs=2e-4)
    assert [p.header.stamp.sec + p.header.stamp.nanosec * 1e-9 for p in msg.poses][-1] == pytest.approx(times[-1])
    assert np.isfinite(path.positions_of(np.arange(g.newest_node - 40, g.newest_node + 2))).sum() == 3 * 30


def test_incremental_path_keeps_its_length_across_restarts_it_did_not_see():
    """Refreshed every 25 nodes while the graph restarts at 20 (keeping only its newest node), the path never
    reads some nodes; it goes on across those gaps, holds the newest max_poses nodes it read, in order, each at
    the last estimate read for it, and the nodes of a gap read as NaN."""
    g = PoseGraph(PoseGraphConfig(max_nodes=20, anchor_agree=1))
    path = IncrementalPath("map", max_poses=60)
    last_read: dict[int, np.ndarray] = {}
    real = g.estimates

    def spy(since):
        nodes, times, pos, quat = real(since)
        last_read.update({int(n): p.copy() for n, p in zip(nodes, pos)})
        return nodes, times, pos, quat

    g.estimates = spy
    for i in range(400):
        g.add_odometry(10 + 0.1 * i, np.array([0.1 * i, 0.0, 0.0]), Q0)
        g.update()
        if i % 25 == 24:
            msg = path.refresh(g)
    kept = sorted(last_read)[-60:]
    assert len(msg.poses) == 60 and list(path.nodes) == kept
    assert np.any(np.diff(kept) > 1)  # gaps: refreshes missed the nodes restarts dropped
    stamps = [p.header.stamp.sec + p.header.stamp.nanosec * 1e-9 for p in msg.poses]
    assert np.all(np.diff(stamps) > 0)
    got = np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in msg.poses])
    assert got == pytest.approx(np.array([last_read[n] for n in kept]), abs=2e-4)
    missing = np.setdiff1d(np.arange(kept[0], kept[-1]), kept)
    assert np.isnan(path.positions_of(missing)).all() and np.isfinite(path.positions_of(kept)).all()
