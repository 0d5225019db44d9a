"""The verifier's dense-search step (VerifyConfig.gradient_candidates; the search itself: verify/gradient_search.py):
candidates searched in order until one verifies or two agree, the answer checked against rival places,
polished, and handed on for map-point tracking. Kept apart from the Verifier, which only decides when it runs
(verify/order.py)."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from disam_ros.geometry import quat_to_rot
from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.features import Features
from disam_ros.pose.frames import cam_from_map
from disam_ros.pose.guided import predicted_pixels
from disam_ros.verify.config import VerifyConfig
from disam_ros.verify.gate import agreeing, judged, verified_or
from disam_ros.verify.gradient_search import QueryGrid, dense_gate, polish, rivalled, search_pose
from disam_ros.verify.result import PointTrack, Verification
from disam_ros.verify.support import support_pairs


def tilt_deg(quat: np.ndarray, key_quat: np.ndarray) -> float:
    """Angle (deg) between the two cameras' vertical (optical y) axes: their pitch and roll apart, whatever the turn
    about the vertical. Why the dense gate looks at it: a camera on a vehicle keeps its pitch and roll on the road the
    map was driven on, while a dense pose fitted to the wrong finds tilts freely (development town seed 3, fog:
    four such poses tilted 5.9-7.2 deg, 1-10 m off, dragged the belief along; right dense poses on the development
    towns and the bench town tilted at most 2.2 deg)."""
    a, b = quat_to_rot(np.asarray(quat, np.float64))[:, 1], quat_to_rot(np.asarray(key_quat, np.float64))[:, 1]
    return math.degrees(math.acos(float(np.clip(a @ b, -1.0, 1.0))))


def dense_attempts(grid: QueryGrid, ks: list[int], cam: Intrinsics, query: Features | None, loc_map: Any,
                   map_side: Callable[[int], Any], cfg: VerifyConfig, late: Callable[[], bool] = lambda: False
                   ) -> list[Verification]:
    """The candidates searched densely in order, up to the first verified one, or else two whose poses agree
    (each from at least `gradient_agree_inliers`: a wrong solution stays near the pose that guided it, and two
    candidates' guides are metres apart); the verified one hands on the map points its pose puts on the query's
    SIFT keypoints (map-point tracking; none when the search ran first and no SIFT keypoints were found).
    `map_side(k)`: candidate k's map points and gradient descriptors (the verifier's cache). A dense pose whose
    camera is tilted from its candidate's by more than `gradient_max_tilt_deg` is "inconsistent" (`tilt_deg`).
    `grid`: the query's (gradient_search.query_grid, computed once a frame). `late()` True: the frame's time box is
    spent, no further candidate is searched."""
    out, solved = [], []
    gate = dense_gate(cfg)
    for k in ks:
        if out and late():
            break
        side = map_side(k)
        key_pos, key_quat = np.asarray(loc_map.positions[k], np.float64), np.asarray(loc_map.quats[k], np.float64)
        sol, searched = search_pose(grid, side.gradients, side.points, *cam_from_map(key_pos, key_quat), cam, cfg)
        v = Verification("too_few_inliers", index=k, matches=searched) if sol is None else \
            judged(sol, k, searched, key_pos, key_quat, cfg, gate)
        if v.verified and 0 < cfg.gradient_max_tilt_deg < tilt_deg(v.quat, key_quat):
            v.outcome = "inconsistent"
        v.dense = True
        v.covariance = v.covariance * cfg.gradient_covariance_scale
        out.append(v)
        if sol is not None:
            solved.append((v, sol, side))
        if v.verified:
            break
    best = verified_or(out, None) or agreeing(out, cfg, cfg.gradient_agree_inliers)
    if best is not None and rivalled(best, grid, loc_map, map_side, cam, cfg):
        best.outcome, best = "ambiguous", None
    if best is not None:
        sol, side = next((s, d) for v, s, d in solved if v is best)
        sol = polish(best, sol, grid, side, cam, cfg)
    if best is not None and cfg.track_frames > 0 and query is not None:
        qi, mi = support_pairs(np.zeros((0, 2), np.int64), query.keypoints,
                                predicted_pixels(side.points, sol.R, sol.t, cam), cfg.track_radius_px)
        best.support = PointTrack(query.keypoints[qi].astype(np.float64), query.descriptors[qi], side.points[mi],
                                  best.position.copy(), best.quat.copy(), math.nan, best.index, 0)
    return out
