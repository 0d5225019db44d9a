"""A verified SIFT pose polished against the map images around it (VerifyConfig.polish_images), as hloc pools the
matches of every retrieved image into one solve.

Why: the first solve was matched around a map image's pose, metres and degrees off, with a search radius of a
fifth of the image width, against that one image's points; across conditions its 15-35 inliers now and then put
the camera 0.5-0.9 m off. From the solved pose, centimetres off, each map point is predicted within a few pixels
of its keypoint: a window a few times narrower leaves fewer look-alike candidates, so the ratio test keeps true
matches it refused before, and the map images next to the keyframe add points seen from elsewhere (a wider spread
of depths and bearings constrains the position better). The pooled matches are solved again.

The polished pose replaces the first only when it is at least as well supported (no fewer inliers) and stays near
it (`polish_max_shift_m`, `polish_max_turn_deg`: else the pooled matches found something else and the first
stands). Only the published position and orientation change. Outcome, inlier counts and covariance stay the first
solve's: the gate, the covariance scale and the confidence calibration were all set on those (a polished pose is
more accurate than its covariance says, not less). What the frame hands on (map-point tracking's PointTrack, the
inliers optical flow follows) stays the first solve's too: handing on the pooled inliers made tracked frames worse
on the development towns (dev town seed 7, dusk, map-point tracking: 38 of 40 within 0.25 m against 40, the 90th
percentile error 0.104 m against 0.098 m when the first solve's are handed on). Dense poses have their own polish
(verify/gradient_search.polish); optical-flow poses are not polished.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from disam_ros.geometry import quat_angle_deg, quat_to_rot
from disam_ros.maps.covisibility import nearest_alike
from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.features import Features
from disam_ros.pose.frames import cam_from_map
from disam_ros.pose.guided import guided_match, predicted_pixels
from disam_ros.pose.solver import SolverConfig, solve_absolute_pose
from disam_ros.verify.config import VerifyConfig
from disam_ros.verify.result import Verification


def pooled_pairs(query: Features, sides: list[Any], R: np.ndarray, t: np.ndarray, cam: Intrinsics,
                 radius_px: float, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Guided matches of the query to each map image in `sides` around the pose (R, t), pooled: (M,2) pairs
    (query keypoint, row of the returned (P,3) points). A query keypoint matched in several images keeps the
    match whose map point the pose predicts nearest to it (one observation per keypoint: the covariance and
    RANSAC's inlier count assume independent ones)."""
    pairs, points, dist, offset = [], [], [], 0
    for side in sides:
        predicted = predicted_pixels(side.points, R, t, cam)
        p = guided_match(query.keypoints, query.descriptors, side.descriptors, predicted, radius_px, ratio)
        dist.append(np.linalg.norm(predicted[p[:, 1]] - query.keypoints[p[:, 0]], axis=1))
        pairs.append(p + np.array([0, offset]))
        points.append(side.points)
        offset += len(side.points)
    if not pairs:
        return np.zeros((0, 2), np.int64), np.zeros((0, 3))
    pairs_all, dist_all = np.concatenate(pairs), np.concatenate(dist)
    order = np.lexsort((dist_all, pairs_all[:, 0]))
    first = order[np.r_[True, pairs_all[order[1:], 0] != pairs_all[order[:-1], 0]]] if len(order) else order
    return pairs_all[np.sort(first)], np.concatenate(points)


def pooled_around(query: Features, position: np.ndarray, quat: np.ndarray, cam: Intrinsics, loc_map: Any,
                  forwards: np.ndarray, map_side: Callable[[int], Any], cfg: VerifyConfig, radius: float,
                  images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`pooled_pairs` around a pose against the `images` map images nearest it that look within
    `polish_max_view_deg` of it, each map point searched within `radius` (share of the width) of where the pose
    puts it: (map image indices nearest first, pairs, points). What the SIFT polish, the learned pose's SIFT
    refinement and the search around a flow pose (verify/prior_step.py) match."""
    ks = nearest_alike(loc_map.positions, forwards, position, quat_to_rot(quat)[:, 2], images, cfg.polish_max_view_deg)
    R, t = cam_from_map(position, quat)
    pairs, points = pooled_pairs(query, [map_side(int(k)) for k in ks], R, t, cam, radius * cam.width, cfg.ratio)
    return np.asarray(ks), pairs, points


def polish_sift(v: Verification, query: Features, cam: Intrinsics, loc_map: Any, forwards: np.ndarray,
                map_side: Callable[[int], Any], cfg: VerifyConfig) -> Verification:
    """`v` (verified, solved from `query`'s keypoints), its pose replaced in place by the pooled solve when that
    is kept (module docstring; as the dense polish does, so the frame's attempts hold the published pose).
    `forwards`: the map images' optical axes in the map frame; `map_side(k)`: map image k's keypoints, RootSIFT
    descriptors and points (the verifier's cache)."""
    if cfg.polish_images <= 0 or not v.verified or len(query) < cfg.min_inliers:
        return v
    _, pairs, points = pooled_around(query, v.position, v.quat, cam, loc_map, forwards, map_side, cfg,
                                     cfg.polish_radius, cfg.polish_images)
    solver = SolverConfig(max_error_px=cfg.polish_max_error_px, min_inliers=cfg.min_inliers,
                          sigma_floor_px=cfg.sigma_floor_px)
    if len(pairs) < max(v.inliers, solver.min_inliers):
        return v
    sol = solve_absolute_pose(query.keypoints[pairs[:, 0]].astype(np.float64), points[pairs[:, 1]], cam, solver)
    if sol is None or sol.num_inliers < v.inliers \
            or float(np.linalg.norm(sol.position - v.position)) > cfg.polish_max_shift_m \
            or float(quat_angle_deg(sol.quat, v.quat)) > cfg.polish_max_turn_deg:
        return v
    v.position, v.quat, v.polished = sol.position.copy(), sol.quat.copy(), sol.num_inliers
    return v


def polished_look(look: Verification | None, query: Features, cam: Intrinsics, loc_map: Any, forwards: np.ndarray,
                  map_side: Callable[[int], Any], cfg: VerifyConfig, half: bool = False, near: bool = False
                  ) -> Verification | None:
    """A verified first look that was not sure, polished with `query` (a copy; `polish_sift`), as the frame's answer
    when the pooled solve holds `first_polish_inliers`: dusk frames' looks verify from ~20 half-scale inliers, too
    spread to be sure, and the pooled solve around them finds 130-160 at full scale, while trying every candidate
    at full scale first costs ~60 ms more and ends at the same pose. The verifier tries the look's own half-scale
    features first (`first_polish_half`): where they pool enough, full-scale SIFT is never computed. `half`: `query`
    is those features, held to `first_polish_half_inliers` (a quarter of the keypoints pools fewer). `near`: the
    look was refused only for its inlier count or ratio (a keyframe's, `first_look.near_look`): the pooled solve is
    then its only check. None: off, no (verified or near) look, or too few."""
    if cfg.first_polish_inliers <= 0 or look is None or not (look.verified or near):
        return None
    need = cfg.first_polish_half_inliers if half and cfg.first_polish_half_inliers else cfg.first_polish_inliers
    polished = polish_sift(replace(look, outcome="verified"), query, cam, loc_map, forwards, map_side, cfg)
    return polished if polished.polished >= need else None
