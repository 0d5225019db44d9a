"""~/path kept up to date instead of rebuilt: the pose-graph node's trajectory message at a cost bounded by
`max_path_poses`, whatever the drive's length.

Why: rebuilding the Path from the whole graph (one estimate and one PoseStamped per node) took 0.5 s at 5,000
nodes and 0.9-1.9 s at 10-20k; at 100 Hz odometry the node fell behind and lost most messages. Here each
refresh asks the graph only for its live nodes among the newest `max_path_poses` (PoseGraph.estimates), writes
into the kept PoseStamped messages only the poses that moved (more than MOVED_M / MOVED_QUAT), and appends the new
nodes. Poses of nodes the graph no longer holds (after a restart at max_nodes or a chain reset) keep their last
estimate, so the path does not shrink to one pose when the graph restarts; nodes a restart dropped before any
refresh read them leave a gap in the path, not a new start (it keeps `max_poses` over any number of restarts).
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

    Graph node indices increase (PoseGraph); the kept ones are held in `nodes`, ascending, and may have gaps: the
    nodes a restart at max_nodes dropped between two refreshes were never read, and the path goes on across them
    rather than starting over."""

    def __init__(self, frame_id: str, max_poses: int) -> None:
        self.frame_id, self.max_poses = frame_id, int(max_poses)
        self.nodes = np.zeros(0, np.int64)
        self.poses: list[PoseStamped] = []
        self.positions = np.zeros((0, 3))
        self.quats = np.zeros((0, 4))

    @property
    def first_node(self) -> int:
        """The oldest kept node (0 when nothing is kept)."""
        return int(self.nodes[0]) if len(self.nodes) else 0

    def refresh(self, graph: Any) -> Path:
        """Bring the kept poses up to the graph's estimates and return the Path (header stamp: newest node)."""
        newest = graph.newest_node
        if newest is not None:
            self._apply(*graph.estimates(max(newest - self.max_poses + 1, self.first_node)))
        stamp = self.poses[-1].header.stamp if self.poses else sec_to_stamp(0.0)
        return Path(header=Header(stamp=stamp, frame_id=self.frame_id), poses=list(self.poses))

    def positions_of(self, nodes: np.ndarray) -> np.ndarray:
        """(N, 3) kept positions of the given nodes, NaN where the path no longer (or never) held them."""
        want = np.asarray(nodes, np.int64)
        idx = np.minimum(np.searchsorted(self.nodes, want), max(len(self.nodes) - 1, 0))
        ok = (self.nodes[idx] == want) if len(self.nodes) else np.zeros(len(want), bool)
        out = np.full((len(want), 3), np.nan)
        out[ok] = self.positions[idx[ok]]
        return out

    def _apply(self, nodes: np.ndarray, times: np.ndarray, pos: np.ndarray, quat: np.ndarray) -> None:
        if not len(nodes):
            return
        last = self.nodes[-1] if len(self.nodes) else -1
        old = nodes <= last
        k = np.searchsorted(self.nodes, nodes[old])
        held = k < len(self.nodes)
        held[held] = self.nodes[k[held]] == nodes[old][held]  # a live node the path never read: skipped
        k, p_old, q_old = k[held], pos[old][held], quat[old][held]
        moved = (np.abs(self.positions[k] - p_old).max(axis=1, initial=0.0) > MOVED_M) | \
                (np.abs(self.quats[k] - q_old).max(axis=1, initial=0.0) > MOVED_QUAT)
        for j, p, q in zip(k[moved], p_old[moved], q_old[moved]):
            self.poses[j].pose = make_pose(p, q)
        self.positions[k], self.quats[k] = p_old, q_old
        new = ~old
        self.poses += [PoseStamped(header=Header(stamp=sec_to_stamp(float(t)), frame_id=self.frame_id),
                                   pose=make_pose(p, q)) for t, p, q in zip(times[new], pos[new], quat[new])]
        self.nodes = np.concatenate([self.nodes, nodes[new].astype(np.int64)])
        self.positions = np.concatenate([self.positions, pos[new]])
        self.quats = np.concatenate([self.quats, quat[new]])
        self._trim()

    def _trim(self) -> None:
        extra = len(self.poses) - self.max_poses
        if extra > 0:
            del self.poses[:extra]
            self.nodes, self.positions, self.quats = self.nodes[extra:], self.positions[extra:], self.quats[extra:]
