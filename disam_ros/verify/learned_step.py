"""Verification with learned local features (pose/learned.py): the query's learned keypoints matched to a
candidate map image's learned keypoints near where the candidate's pose projects their 3D points, the pose solved
and judged by the same gate as SIFT's (verify/gate.py).

Why a step of its own beside SIFT's: SIFT finds almost nothing to match at night, in rain and in snow; the
network trained on the synthetic world's exact cross-condition correspondences does (docs/keypoints.md). With
`verify_features` both, it runs when SIFT's steps verified nothing; with learned, instead of them. The map holds
the network its keypoints were made with, so the query's come from the same weights.

A learned answer hands no PointTrack to the next frame (map-point tracking matches SIFT descriptors); optical flow
still follows it (verify/flow.py), and it is not polished (verify/polish.py matches SIFT).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.features import Features
from disam_ros.pose.frames import cam_from_map
from disam_ros.pose.guided import guided_match, predicted_pixels
from disam_ros.pose.learned import LEARNED_RATIO, detect_learned, load_net
from disam_ros.verify.config import FEATURE_CHOICES, VerifyConfig
from disam_ros.verify.gate import agreeing, verified_or
from disam_ros.verify.result import Verification

CACHE = 32  # map images whose learned keypoints and points are kept ready (~0.7 MB each at 2000 keypoints)
Solve = Callable[..., Verification]  # Verifier._solve: (query, pairs, points, k, guide_pos, guide_quat, cam)


def resolve_features(choice: str, learned: Any, where: str) -> str:
    """`verify_features` -> what this map verifies with: "map" is the map's own choice (sift for a map without
    learned features); learned / both on a map without them is a one-line ValueError naming the fix."""
    if choice not in FEATURE_CHOICES:
        raise ValueError(f"verify_features {choice!r}: expected one of {', '.join(FEATURE_CHOICES)}")
    if choice == "map":
        return "sift" if learned is None else str(learned.verify_features)
    if choice != "sift" and learned is None:
        raise ValueError(f"verify_features {choice}: map {where} has no learned features; rebuild it with "
                         "disam-build-map --verify-features both, or verify with sift")
    return choice


class LearnedStep:
    """The learned attempts of one map; state: the map's network (loaded on first use) and a small cache."""

    def __init__(self, learned: Any, config: VerifyConfig) -> None:
        self.geometry, self.config = learned, config
        self._net: Any = None
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()

    def features(self, rgb: np.ndarray) -> Features:
        """The query's learned keypoints, found as the map's were (its network and recipe)."""
        if self._net is None:
            self._net = load_net(self.geometry.net_path)
        return detect_learned(rgb, self._net, self.geometry.config)

    def side(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Map image k's learned keypoints with a 3D point: (pixels float64, unit descriptors float32, points)."""
        side = self._cache.get(k)
        if side is None:
            kp, desc, pts = self.geometry.image(k)
            ok = np.isfinite(pts).all(axis=1)
            side = (np.asarray(kp[ok], np.float64), np.asarray(desc[ok], np.float32), np.asarray(pts[ok], np.float64))
            self._cache[k] = side
            while len(self._cache) > CACHE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(k)
        return side

    def attempts(self, rgb: np.ndarray, ks: list[int], positions: np.ndarray, quats: np.ndarray, cam: Intrinsics,
                 solve: Solve) -> tuple[list[Verification], Verification | None]:
        """Each candidate in order guided by its own pose, up to one with `enough_inliers`; then two agreeing
        candidates. Returns every attempt and the verified one (None: none)."""
        cfg = self.config
        query = self.features(rgb)
        found: list[Verification] = []
        if len(query) < cfg.min_inliers:
            return found, None
        for k in ks:
            _, desc, pts = self.side(k)
            pos, quat = np.asarray(positions[k], np.float64), np.asarray(quats[k], np.float64)
            R, t = cam_from_map(pos, quat)
            pairs = guided_match(query.keypoints, query.descriptors, desc, predicted_pixels(pts, R, t, cam),
                                 cfg.learned_radius * cam.width, LEARNED_RATIO)
            v = solve(query, pairs, pts, k, pos, quat, cam)
            v.features, v.support = "learned", None
            found.append(v)
            if v.verified and v.inliers >= cfg.enough_inliers:
                break
        best = verified_or(found, None)
        return found, best if best is not None else agreeing(found, cfg)
