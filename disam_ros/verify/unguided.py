"""A candidate matched without its pose as a guide (VerifyConfig.unguided_candidates): for cameras that look from
elsewhere than the map image. Kept apart from the Verifier's guided steps, which call it as a last resort."""
from __future__ import annotations

from typing import Any

import numpy as np

from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.features import Features, match_unit_descriptors
from disam_ros.pose.frames import cam_from_map
from disam_ros.pose.guided import guided_match, predicted_pixels
from disam_ros.verify.result import Verification


def attempt_unguided(verifier: Any, query: Features, k: int, cam: Intrinsics) -> Verification:
    """Candidate k matched without a guide (ratio test, mutual), for a query that looks from elsewhere than
    the map image (handheld, a photo collection): the candidate's pose predicts its map points too far from
    where they are. Unguided matches of the right place hold too few inliers to verify across conditions, and
    a town's repeated facades give a wrong place as many (24 on the dev town), so they are not judged: a
    solve with at least `unguided_min_inliers` only guides a second, tight guided match
    (`unguided_radius`), and that is judged by the usual inlier gate, with `unguided_max_turn_deg` from
    the candidate (docs/pose.md)."""
    cfg, side = verifier.config, verifier._map_side(k)
    key_pos = np.asarray(verifier.map.positions[k], np.float64)
    key_quat = np.asarray(verifier.map.quats[k], np.float64)
    pairs = match_unit_descriptors(query.descriptors, side.descriptors, cfg.unguided_ratio)
    first = verifier._solve(query, pairs, side.points, k, key_pos, key_quat, cam,
                            gate=(cfg.unguided_max_turn_deg, cfg.unguided_min_inliers, 0.0))
    first.unguided = True
    if first.outcome not in ("verified", "uncertain"):  # too few inliers, or far from the candidate
        return first
    R, t = cam_from_map(first.position, first.quat)
    pairs = guided_match(query.keypoints, query.descriptors, side.descriptors,
                         predicted_pixels(side.points, R, t, cam), cfg.unguided_radius * cam.width, cfg.ratio)
    v = verifier._solve(query, pairs, side.points, k, key_pos, key_quat, cam,
                        gate=(cfg.unguided_max_turn_deg, cfg.min_inliers, cfg.min_inlier_ratio))
    v.unguided = True
    return v
