"""What one frame's verification says (`Verification`) and what a verified frame hands to the next (`PointTrack`):
plain records, shared by the verifier, the tracker, the evaluation and the node's messages."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from disam_ros.pose.relative import relative_covariance, relative_pose

OUTCOMES = ("verified", "too_few_inliers", "uncertain", "inconsistent", "ambiguous", "jumped", "no_features",
            "image_too_small", "no_intrinsics", "off", "pending")


@dataclass(eq=False)
class Verification:
    """One frame's verification. `verified`: position/quat/covariance are the solved camera pose (optical frame
    in the map frame, ROS covariance order) and `index` the map keyframe it was matched to; otherwise they are
    the best failed attempt's (NaN when nothing was solved) and `outcome` says why (OUTCOMES)."""

    outcome: str
    index: int = -1
    position: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    quat: np.ndarray = field(default_factory=lambda: np.full(4, np.nan))
    covariance: np.ndarray = field(default_factory=lambda: np.full((6, 6), np.nan))
    inliers: int = 0
    matches: int = 0
    inlier_ratio: float = math.nan
    reprojection_px: float = math.nan  # mean over the inliers
    tried: int = 0
    ms: float = 0.0
    camera: str = ""  # where the intrinsics came from
    agreed: bool = False  # verified by two candidates' agreeing poses rather than by one alone
    attempts: list = field(default_factory=list)  # every candidate's own Verification (for evaluation)
    hops: int = 0  # 0: solved against a map image's points; n: tracked n frames from the last such frame
    unguided: bool = False  # matched without the candidate's pose as a guide (VerifyConfig.unguided_candidates)
    dense: bool = False  # found by the dense search, no query keypoints (VerifyConfig.gradient_candidates)
    scale: float = 1.0  # the query's SIFT detection scale, a share of the map's (VerifyConfig.first_scale)
    order: str = "usual"  # the steps this frame ran (verify/order.py): usual, dense first, SIFT skipped, or both
    support: PointTrack | None = None  # a verified frame's inliers, for the next frame's tracking
    flow: bool = False  # tracked by optical flow from the previous verified frame (verify/flow.py)
    polished: int = 0  # inliers of the pooled solve that replaced the first pose (verify/polish.py; 0: not)
    far_only: bool = False  # "inconsistent" only by its distance from its guide: inliers, ratio and sigma pass
    features: str = "sift"  # the local features it was solved from: sift or learned (verify/learned_step.py)
    regated_from: int = -1  # a second attempt at a map image near the pose that candidate's attempt solved
    #                         (verify/regate.py; -1: none)
    timed_out: bool = False  # its time box (VerifyConfig.budget_ms) ran out before every step had run
    inlier_pixels: np.ndarray | None = field(default=None, repr=False)  # the solve's inliers (pixels, map
    inlier_points: np.ndarray | None = field(default=None, repr=False)  # points): where optical flow starts

    @property
    def verified(self) -> bool:
        return self.outcome == "verified"

    def relative(self, key_position: np.ndarray, key_quat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position, xyzw, covariance) of the query camera in the keyframe's optical frame (pose/relative.py)."""
        p, q = relative_pose(key_position, key_quat, self.position, self.quat)
        return p, q, relative_covariance(self.covariance, key_quat)

    def diagnostics(self) -> dict[str, Any]:
        return {"verification": self.outcome, "verified_keyframe": self.index, "inliers": self.inliers,
                "inlier_ratio": self.inlier_ratio, "reprojection_px": self.reprojection_px,
                "candidates_tried": self.tried, "verified_by_agreement": self.agreed, "refine_ms": self.ms,
                "intrinsics": self.camera, "tracked_frames": self.hops,
                "verified_unguided": self.unguided, "verified_dense": self.dense, "features_scale": self.scale,
                "verify_order": self.order, "tracked_by_flow": self.flow,
                "polished_inliers": self.polished, "regated_from": self.regated_from,
                "verified_features": self.features, "verify_timed_out": self.timed_out}


@dataclass(frozen=True, eq=False)
class PointTrack:
    """A verified frame's inliers handed to the next frame: its keypoints (N,2) and RootSIFT descriptors (N,128),
    the map points (N,3) they matched, its pose, stamp, the keyframe the points came from and the frames
    tracked since a map-verified one."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    points: np.ndarray
    position: np.ndarray
    quat: np.ndarray
    stamp: float
    keyframe: int
    hops: int = 0
