"""What a PoseGraph is configured with and what it reports: its config (noise, node spacing, robustness, bounds),
the closures it holds, and the bounds it keeps. Apart from graph.py so that the graph's module holds the graph."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from disam_ros.posegraph.conventions import ROBUST_KINDS

LOOSE_PRIOR_M = 100.0  # node 0's default prior: position sigma per axis (m) ...
LOOSE_PRIOR_RAD = math.pi  # ... and rotation sigma per axis (rad): any heading is plausible
MAX_CLOSURES = 10000  # closures kept for reports (the oldest go first)
HELD_MAX = 64  # measurements held while waiting for agreeing ones to anchor the graph (the oldest go first)
REJECTED_WEIGHT = 0.1  # a closure whose robust weight is below this counts as rejected in reports


@dataclass
class PoseGraphConfig:
    """Noise, node spacing, robustness and memory bounds of a PoseGraph.

    robust_k is in sigmas of the WHOLE 6-D whitened residual (GTSAM's robust models act on its norm r). For a
    correct, well-calibrated closure r follows a chi distribution with 6 degrees of freedom: median 2.3, 95 % 3.5.
    With k = 1 such an inlier would typically get a Cauchy weight of 1/(1 + 2.3^2) = 0.16, i.e. count as rejected;
    k = 3 keeps a median inlier at 0.63 and a 95 % one at 0.42, while a closure 9 sigma off drops to 0.1 and one
    metres off (hundreds of sigma) to ~0.
    """

    robust: str = "cauchy"  # "cauchy" | "huber" | "none": kernel on closure and absolute factors only
    robust_k: float = 3.0  # kernel width on the whitened residual norm, in sigmas (see the class docstring)
    odom_sigma_m_per_m: float = 0.02  # odometry translation sigma per metre travelled (each axis)
    odom_sigma_deg_per_m: float = 0.3  # odometry rotation sigma per metre travelled (each axis)
    odom_sigma_floor_m: float = 0.005  # sigmas for standstill steps (a zero sigma would be a hard constraint)
    odom_sigma_floor_deg: float = 0.05
    keyframe_m: float = 0.0  # a new node once any enabled threshold is reached; 0 disables that threshold,
    keyframe_deg: float = 0.0  # and with all three 0 every odometry sample is a node
    keyframe_s: float = 0.0
    closure_max_dt_s: float = 0.5  # a closure attaches to the nearest node within this time, else it is refused
    max_nodes: int = 20000  # past it the graph restarts at its newest node (its marginal covariance as prior)
    odom_buffer: int = 4096  # raw odometry samples kept for reading the odometry at a closure's stamp
    anchor_agree: int = 2  # measurements that must agree on map->odom before the graph anchors (1: the first does)
    anchor_agree_m: float = 2.0  # ... within this (plus 3 odometry sigmas of the path between them)
    anchor_agree_deg: float = 5.0
    max_odom_position_m: float = 1e7  # odometry farther than this from its origin is refused (odometry_guard.py)

    def __post_init__(self) -> None:
        if self.robust not in ROBUST_KINDS:
            raise ValueError(f"robust must be one of {ROBUST_KINDS}, got {self.robust!r}")
        positive = ("robust_k", "odom_sigma_m_per_m", "odom_sigma_deg_per_m", "odom_sigma_floor_m",
                    "odom_sigma_floor_deg", "max_odom_position_m")
        for name in (*positive, "keyframe_m", "keyframe_deg", "keyframe_s", "closure_max_dt_s"):
            v, strict = getattr(self, name), name in positive
            if not (v > 0 if strict else v >= 0):  # NaN fails both
                raise ValueError(f"{name} must be {'>' if strict else '>='} 0, got {v}")
        if not (self.anchor_agree >= 1 and self.anchor_agree_m > 0 and self.anchor_agree_deg > 0):
            raise ValueError(f"anchor_agree must be >= 1 and anchor_agree_m / _deg > 0, got {self.anchor_agree}, "
                             f"{self.anchor_agree_m}, {self.anchor_agree_deg}")
        if not math.isfinite(self.max_odom_position_m):
            raise ValueError(f"max_odom_position_m must be finite, got {self.max_odom_position_m}")
        if self.max_nodes < 2 or self.odom_buffer < 2:
            raise ValueError(f"max_nodes and odom_buffer must be >= 2, got {self.max_nodes}, {self.odom_buffer}")


@dataclass
class Closure:
    """One loop-closure ("between", from a map keyframe) or absolute factor as added, for reports and markers."""

    t: float
    node: int
    kind: str  # "between" | "absolute"
    keyframe_id: int | None
    keyframe_position: np.ndarray | None
    keyframe_quat: np.ndarray | None
    measured_position: np.ndarray  # the map-frame pose it asks for at t
    measured_quat: np.ndarray
    weight: float = 1.0  # robust weight at the current estimate: 1 = fully used, -> 0 = rejected

    rejected = property(lambda self: self.weight < REJECTED_WEIGHT)  # not a field: no annotation
