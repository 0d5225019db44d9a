"""~/markers' closures (disam_ros/ros/posegraph_markers.py): what the node walks per publication stays bounded by the
nodes the graph and ~/path hold however many closures the drive has made, and draws exactly what re-reading the
newest max_marker_closures closures drew."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("gtsam")

from disam_ros.posegraph.graph import PoseGraph, PoseGraphConfig  # noqa: E402
from disam_ros.ros import posegraph_msgs as PM  # noqa: E402
from disam_ros.ros.posegraph_markers import DrawableClosures, oldest_held  # noqa: E402
from disam_ros.ros.posegraph_path import IncrementalPath  # noqa: E402

Q0 = np.array([0.0, 0.0, 0.0, 1.0])


@dataclass
class Fake:
    node: int


def drawn_points(msg) -> list[tuple[float, float, float]]:
    return [(p.x, p.y, p.z) for m in msg.markers for p in m.points]


def markers_of(g: PoseGraph, path: IncrementalPath, closures: list, max_closures: int):
    """What the node publishes for these closures (posegraph_node._publish)."""
    nodes = np.array([c.node for c in closures], np.int64)
    positions = g.node_positions(nodes)
    gone = ~np.isfinite(positions).all(axis=1)
    positions[gone] = path.positions_of(nodes[gone])
    return PM.markers(12.0, "map", closures, positions, max_closures)


def test_kept_closures_stay_bounded_and_old_ones_go_first():
    keep, closures = DrawableClosures(max_closures=2000), []
    sizes = []
    for i in range(10_000):
        closures.append(Fake(node=10 * i))
        if len(closures) > 3000:  # the graph trims its list's head too
            del closures[:1000]
        if i % 7 == 0:
            sizes.append(len(keep.refresh(closures, oldest_held=10 * i - 500)))
    kept = keep.refresh(closures, oldest_held=10 * 9_999 - 500)
    assert [c.node for c in kept] == [10 * i for i in range(9_949, 10_000)]
    assert max(sizes) <= 51  # the held window's closures (+ those added since the last call), not the drive's


def test_nothing_held_drops_nothing_and_a_late_closure_is_kept_behind_a_newer_one():
    keep = DrawableClosures(max_closures=3)
    closures = [Fake(1), Fake(2), Fake(9), Fake(4), Fake(12)]
    assert [c.node for c in keep.refresh(closures, None)] == [9, 4, 12]  # the newest 3, as before
    assert [c.node for c in keep.refresh(closures, 10)] == [12]
    closures += [Fake(11)]  # arrives after 12: it is drawn while node 11 is held
    assert [c.node for c in keep.refresh(closures, 10)] == [12, 11]


def test_markers_match_the_newest_closures_through_graph_restarts():
    g = PoseGraph(PoseGraphConfig(max_nodes=60, anchor_agree=1))
    path = IncrementalPath("map", max_poses=40)
    keep = DrawableClosures(max_closures=500)
    yaw = lambda i: np.array([0.0, 0.0, math.sin(0.005 * i), math.cos(0.005 * i)])  # noqa: E731
    walked = []
    for i in range(600):
        g.add_odometry(10 + 0.1 * i, np.array([0.1 * i, 0.01 * i, 0.0]), yaw(i))
        if i % 5 == 0:
            g.add_closure(10 + 0.1 * i, i % 40, np.array([0.1 * i - 1, 0.0, 0]), Q0, np.array([1.0, 0, 0]), yaw(i),
                          np.eye(6) * 1e-4)
        g.update()
        if i % 10 == 9:
            path.refresh(g)
            closures = keep.refresh(g.closures, oldest_held(g, path))
            walked.append(len(closures))
            before = markers_of(g, path, list(g.closures)[-500:], 500)  # what the node drew before
            assert drawn_points(markers_of(g, path, closures, 500)) == drawn_points(before)
    assert len(g.closures) == 120 and max(walked) <= 40 // 5 + 60 // 5 + 2  # path + graph windows, not 120
