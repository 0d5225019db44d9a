"""~/path kept up to date instead of rebuilt: the pose-graph node's trajectory message at a cost bounded by
`max_path_poses`, whatever the drive's length.

Why: rebuilding the Path from the whole graph (one estimate and one PoseStamped per node) took 0.5 s at 5,000
nodes and 0.9-1.9 s at 10-20k; at 100 Hz odometry the node fell behind and lost most messages. Here each
refresh asks the graph only for its live nodes among the newest `max_path_poses` (PoseGraph.estimates), writes
into the kept PoseStamped messages only the poses that moved (more than MOVED_M / MOVED_QUAT), and appends the new
nodes. Poses of nodes the graph no longer holds (after a restart at max_nodes or a chain reset) keep their last
estimate, so the path does not shrink to one pose when the graph restarts.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from std_msgs.msg import Header

from disam_ros.ros.messages import make_pose, sec_to_stamp

MOVED_M = 1e-4  # a kept pose is rewritten when its position moved more than this ...
MOVED_QUAT = 1e-6  # ... or a quaternion component more than this


class IncrementalPath:
    """The newest `max_poses` graph nodes as PoseStamped messages, refreshed in place (module docstring).

    Graph node indices are contiguous and increasing (PoseGraph), so the kept nodes are the range
    first_node .. first_node + len - 1 and a node's entry is found by subtraction."""

    def __init__(self, frame_id: str, max_poses: int) -> None:
        self.frame_id, self.max_poses = frame_id, int(max_poses)
        self.first_node = 0
        self.poses: list[PoseStamped] = []
        self.positions = np.zeros((0, 3))
        self.quats = np.zeros((0, 4))

    def refresh(self, graph: Any) -> Path:
        """Bring the kept poses up to the graph's estimates and return the Path (header stamp: newest node)."""
        newest = graph.newest_node
        if newest is not None:
            start = max(newest - self.max_poses + 1, self.first_node if self.poses else 0)
            self._apply(*graph.estimates(start))
        stamp = self.poses[-1].header.stamp if self.poses else sec_to_stamp(0.0)
        return Path(header=Header(stamp=stamp, frame_id=self.frame_id), poses=list(self.poses))

    def positions_of(self, nodes: np.ndarray) -> np.ndarray:
        """(N, 3) kept positions of the given nodes, NaN where the path no longer (or never) held them."""
        idx = np.asarray(nodes, np.int64) - self.first_node
        ok = (idx >= 0) & (idx < len(self.poses))
        out = np.full((len(idx), 3), np.nan)
        out[ok] = self.positions[idx[ok]]
        return out

    def _apply(self, nodes: np.ndarray, times: np.ndarray, pos: np.ndarray, quat: np.ndarray) -> None:
        if not len(nodes):
            return
        if not self.poses or nodes[0] > self.first_node + len(self.poses):  # nothing kept, or a gap: start over
            self._reset(int(nodes[0]))
        end = self.first_node + len(self.poses)  # the first node not kept yet
        old = nodes < end
        k = nodes[old] - self.first_node
        moved = (np.abs(self.positions[k] - pos[old]).max(axis=1, initial=0.0) > MOVED_M) | \
                (np.abs(self.quats[k] - quat[old]).max(axis=1, initial=0.0) > MOVED_QUAT)
        for j, p, q in zip(k[moved], pos[old][moved], quat[old][moved]):
            self.poses[j].pose = make_pose(p, q)
        self.positions[k], self.quats[k] = pos[old], quat[old]
        new = ~old
        self.poses += [PoseStamped(header=Header(stamp=sec_to_stamp(float(t)), frame_id=self.frame_id),
                                   pose=make_pose(p, q)) for t, p, q in zip(times[new], pos[new], quat[new])]
        self.positions = np.concatenate([self.positions, pos[new]])
        self.quats = np.concatenate([self.quats, quat[new]])
        self._trim()

    def _reset(self, first: int) -> None:
        self.first_node, self.poses = first, []
        self.positions, self.quats = np.zeros((0, 3)), np.zeros((0, 4))

    def _trim(self) -> None:
        extra = len(self.poses) - self.max_poses
        if extra > 0:
            del self.poses[:extra]
            self.positions, self.quats = self.positions[extra:], self.quats[extra:]
            self.first_node += extra
