"""Verification with learned local features (pose/learned.py): the query's learned keypoints matched to a
candidate map image's learned keypoints near where the candidate's pose projects their 3D points, the pose solved
and judged by the same gate as SIFT's (verify/gate.py).

Why a step of its own beside SIFT's: SIFT finds almost nothing to match at night, in rain and in snow; the
network trained on the synthetic world's exact cross-condition correspondences does (docs/keypoints.md). With
`verify_features` both, it runs when SIFT's steps verified nothing; with learned, instead of them. The map holds
the network its keypoints were made with, so the query's come from the same weights.

A verified learned pose is then handed to SIFT (`sift_refined`, with `verify_features` both): the learned
keypoints sit a pixel or two from where the feature is (whole pixels, an 8 px descriptor grid), so their poses are
decimetres off where SIFT's are centimetres; guided from the learned pose, SIFT's matches to the map images around
it need no wide search, and their solve replaces the position and orientation when it lands near the learned pose.

A learned answer hands no PointTrack to the next frame (map-point tracking matches SIFT descriptors); optical flow
still follows it (verify/flow.py), and it is not polished (verify/polish.py matches SIFT).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from disam_ros.geometry import quat_angle_deg
from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.features import Features
from disam_ros.pose.frames import cam_from_map
from disam_ros.pose.guided import guided_match, predicted_pixels
from disam_ros.pose.learned import detect_learned, load_net
from disam_ros.pose.solver import SolverConfig, solve_absolute_pose
from disam_ros.verify.config import FEATURE_CHOICES, VerifyConfig
from disam_ros.verify.gate import agreeing, verified_or
from disam_ros.verify.polish import pooled_around
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

    def __init__(self, learned: Any, config: VerifyConfig, device: str = "cpu") -> None:
        self.geometry, self.config, self.device = learned, config, device
        self._net: Any = None
        self.side = functools.lru_cache(maxsize=CACHE)(self._load_side)  # per map, bounded

    def features(self, rgb: np.ndarray) -> Features:
        """The query's learned keypoints, found as the map's were (its network and recipe)."""
        if self._net is None:
            self._net = load_net(self.geometry.net_path, self.device)
        return detect_learned(rgb, self._net, self.geometry.config)

    def _load_side(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Map image k's learned keypoints with a 3D point: (unit descriptors float32, points float64); guided
        matching needs only where the points project, not the map image's own pixels."""
        _, desc, pts = self.geometry.image(k)
        ok = np.isfinite(pts).all(axis=1)
        return np.asarray(desc[ok], np.float32), np.asarray(pts[ok], np.float64)

    def attempts(self, rgb: np.ndarray, ks: list[int], positions: np.ndarray, quats: np.ndarray, cam: Intrinsics,
                 solve: Solve, agree: bool = True) -> tuple[list[Verification], Verification | None]:
        """Each candidate in order guided by its own pose, up to one with `enough_inliers`; then two agreeing
        candidates (`agree` False: not those). Returns every attempt and the verified one (None: none)."""
        cfg = self.config
        query = self.features(rgb)
        found: list[Verification] = []
        if len(query) < cfg.min_inliers:
            return found, None
        for k in ks:
            pos, quat = np.asarray(positions[k], np.float64), np.asarray(quats[k], np.float64)
            v = self._guided(query, k, pos, quat, cam, solve)
            found.append(v)
            if v.verified and v.inliers >= cfg.enough_inliers and cfg.learned_agree_m <= 0:
                break
        if cfg.learned_agree_m > 0:
            for v in found:
                if v.verified and not _seconded(v, found, cfg):
                    v.outcome = "ambiguous"  # no other map image's solve lands near it
        best = verified_or(found, None)
        return found, best if best is not None else agreeing(found, cfg) if agree else None

    def _guided(self, query: Features, k: int, pos: np.ndarray, quat: np.ndarray, cam: Intrinsics, solve: Solve
                ) -> Verification:
        """Map image k's learned keypoints matched near where the guide (pos, quat) projects their points, solved
        and judged against that guide."""
        cfg = self.config
        desc, pts = self.side(k)
        R, t = cam_from_map(pos, quat)
        pairs = guided_match(query.keypoints, query.descriptors, desc, predicted_pixels(pts, R, t, cam),
                             cfg.learned_radius * cam.width, cfg.learned_ratio)
        v = solve(query, pairs, pts, k, pos, quat, cam,
                  gate=(cfg.max_turn_deg, cfg.learned_min_inliers, cfg.learned_min_inlier_ratio))
        v.features, v.support = "learned", None
        return v


def _seconded(v: Verification, found: list[Verification], cfg: VerifyConfig) -> bool:
    """Another map image's learned solve, with `min_agreeing_inliers`, lands within `learned_agree_m` of `v`."""
    return any(w is not v and w.index != v.index and w.inliers >= cfg.min_agreeing_inliers
               and float(np.linalg.norm(w.position - v.position)) <= cfg.learned_agree_m for w in found)


def sift_refined(v: Verification, query: Features | None, cam: Intrinsics, loc_map: Any, forwards: np.ndarray,
                 map_side: Callable[[int], Any], cfg: VerifyConfig) -> Verification:
    """A verified learned pose `v` with its position and orientation replaced, in place, by a solve of the query's
    SIFT keypoints (`query`; None: not computed this frame) matched around it (`learned_sift_radius`) to the
    `polish_images` map images nearest it, when that solve has `min_agreeing_inliers` and lands within
    `learned_sift_max_shift_m` / `learned_sift_max_turn_deg` of it (module docstring). As with polish, the
    outcome, inliers and covariance stay the learned solve's; `polished` holds the SIFT inliers."""
    if not v.verified or v.features != "learned" or query is None or cfg.learned_sift_radius <= 0 \
            or len(query) < cfg.min_agreeing_inliers:
        return v
    _, pairs, points = pooled_around(query, v.position, v.quat, cam, loc_map, forwards, map_side, cfg,
                                     cfg.learned_sift_radius, max(cfg.polish_images, 1))
    solver = SolverConfig(max_error_px=cfg.max_error_px, min_inliers=cfg.min_agreeing_inliers,
                          sigma_floor_px=cfg.sigma_floor_px)
    if len(pairs) < solver.min_inliers:
        return v
    sol = solve_absolute_pose(query.keypoints[pairs[:, 0]].astype(np.float64), points[pairs[:, 1]], cam, solver)
    if sol is None or float(np.linalg.norm(sol.position - v.position)) > cfg.learned_sift_max_shift_m \
            or float(quat_angle_deg(sol.quat, v.quat)) > cfg.learned_sift_max_turn_deg:
        return v
    v.position, v.quat, v.polished = sol.position.copy(), sol.quat.copy(), sol.num_inliers
    return v
