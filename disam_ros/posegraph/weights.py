"""The robust weight of every closure whose factor is in the graph: for reports, RViz markers and the anchoring
of nothing else (GTSAM applies the kernel itself; these numbers only say how much each closure is being used).

A closure's weight is the kernel's weight of its whitened residual at the current estimate, computed as the
factor computes it (GTSAM's Local(measured, x), the norm of the Gaussian part's whitened vector). Per update only
the closures on the newest WEIGHT_WINDOW nodes (where estimates move; at most the newest WEIGHT_RECENT_MAX of them:
a vehicle parked under a keyframe rule collects every hint on one node, and weighing all of them made each update
cost grow with the hints, ~7 us each) and WEIGHT_SWEEP older ones in turn are refreshed: a bounded cost however
long the drive and however many hints share a node, every weight at most len/WEIGHT_SWEEP updates old.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gtsam
import numpy as np

from disam_ros.posegraph.conventions import robust_weight

WEIGHT_WINDOW = 100  # update() refreshes the weights of closures on the newest this-many nodes
WEIGHT_RECENT_MAX = 64  # ... but at most this many of them (the newest)
WEIGHT_SWEEP = 16  # ... and of this many older ones in turn (refresh_all() does all at once)
MAX_LIVE = 10000  # factors whose weights are tracked (the oldest go first)


@dataclass
class LiveFactor:
    closure: Any  # graph.Closure: its .weight is written here
    key: int  # the node's
    measured: gtsam.Pose3  # T_map_node the factor asks for
    sqrt_info: np.ndarray  # upper-triangular R with R^T R = information (GTSAM convention)


class ClosureWeights:
    """Keeps the live closure factors and refreshes their weights (module docstring)."""

    def __init__(self, robust: str, k: float) -> None:
        self.robust, self.k = robust, k
        self.live: list[LiveFactor] = []
        self._sweep = 0  # where the next round-robin refresh starts

    def add(self, closure: Any, key: int, measured: gtsam.Pose3, sqrt_info: np.ndarray) -> None:
        closure.weight = 1.0
        self.live.append(LiveFactor(closure, key, measured, sqrt_info))
        if len(self.live) > MAX_LIVE + MAX_LIVE // 8:
            del self.live[: len(self.live) - MAX_LIVE]

    def clear(self) -> None:
        self.live = []

    def refresh_all(self, estimate: Callable[[int], gtsam.Pose3]) -> None:
        self._weigh(self.live, estimate)

    def refresh_recent(self, estimate: Callable[[int], gtsam.Pose3], newest_node: int) -> None:
        k, stop = len(self.live), max(0, len(self.live) - WEIGHT_RECENT_MAX)
        while k > stop and self.live[k - 1].closure.node > newest_node - WEIGHT_WINDOW:
            k -= 1
        self._weigh(self.live[k:], estimate)
        if k:
            self._sweep %= k
            self._weigh(self.live[self._sweep: self._sweep + WEIGHT_SWEEP], estimate)
            self._sweep += WEIGHT_SWEEP

    def _weigh(self, live: list[LiveFactor], estimate: Callable[[int], gtsam.Pose3]) -> None:
        for f in live:
            r = float(np.linalg.norm(f.sqrt_info @ f.measured.localCoordinates(estimate(f.key))))
            f.closure.weight = robust_weight(r, self.robust, self.k)
