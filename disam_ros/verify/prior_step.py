"""A keyframe verified around the pose optical flow already gave it, before the retrieval's candidates are tried.

Why: a frame whose flow chain is spent (inline), or a keyframe that renews a chain (tracking/keyframes.py), has
already been posed by flow, centimetres off; only the chain's map points need renewing. The retrieval's
candidates are then a detour: their poses are metres off, so each is matched in a wide window and solved by RANSAC
among many wrong matches (five candidates, full-scale SIFT: 200-450 ms at night on one core). From the flow pose,
centimetres off, every map point of the map images around it is predicted within a few pixels, exactly as the SIFT
polish does from a solved pose (verify/polish.py): matched in that narrow window, pooled and solved once. Half-scale
features come first (a quarter of full-scale SIFT's cost); full-scale ones only when those pool too few; the usual
steps only when neither holds.

Where the pooled solve keeps failing (night renewals on the validation town, rain), the step costs a detection the
usual steps do not make; as with blind first looks, after two misses in a row it is tried only every
`first_probe_every`-th time until it answers again.

In the dark (night renewals) half- and full-scale SIFT pool too few (38-39 and 73-77 inliers against 40 on the
bench town's camera-rate night drive, ~200 ms a renewal) while the dense search verifies the same frames. There the
map image nearest the flow pose is first searched densely from that pose (`prior_dense_dark`): the narrow window and
point count of the dense polish (verify/gradient_search.polish), judged by the dense search's gate, and no SIFT
detection at all. Elsewhere the same search comes after the half-scale pool and before full-scale SIFT
(`prior_dense_before_full`): in fog the half-scale pools hold 21-45 inliers against 40, and full-scale detection alone
cost 92-120 ms of a 190-260 ms renewal (validation town 13's camera-rate fog), where the dense search from the flow
pose verifies with 125-245 inliers, 1-8 cm from the truth. Where that search finds nothing, the flow pose is off and
no full-scale pool follows: on the camera-rate drives of validation towns 13 and 15 and of the demo town (fog, dusk,
rain, snow, night, daylight; 88 renewals traced at 30 Hz) the full-scale pool after a failed dense search verified
none of 5, at 147-219 ms each; the usual steps run next.

What is published is never the flow pose: it is the pooled solve against the map's points, judged by the usual gate
against the flow pose that guided it, and kept only with `prior_min_inliers` inliers within `polish_max_shift_m` and
`polish_max_turn_deg` of it (a flow chain gone astray then finds too few, and the usual steps run).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from disam_ros.geometry import quat_angle_deg, quat_to_rot
from disam_ros.maps.covisibility import nearest_alike
from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.features import Features
from disam_ros.pose.frames import cam_from_map
from disam_ros.verify.config import VerifyConfig
from disam_ros.verify.first_look import half_sift, is_dark
from disam_ros.verify.gate import judged
from disam_ros.verify.gradient_search import QueryGrid, dense_gate, narrow, search_pose
from disam_ros.verify.polish import pooled_around
from disam_ros.verify.result import Verification


def _held(v: Verification, position: np.ndarray, quat: np.ndarray, cfg: VerifyConfig) -> bool:
    """An answer around a flow pose stays within `polish_max_shift_m` / `polish_max_turn_deg` of it."""
    return float(np.linalg.norm(v.position - position)) <= cfg.polish_max_shift_m \
        and float(quat_angle_deg(v.quat, quat)) <= cfg.polish_max_turn_deg


def prior_attempt(query: Features, prior: tuple[np.ndarray, np.ndarray], cam: Intrinsics, loc_map: Any,
                  forwards: np.ndarray, map_side: Callable[[int], Any], cfg: VerifyConfig,
                  solve: Callable[..., Verification], scale: float = 1.0) -> Verification | None:
    """The pooled solve around `prior` (position, quaternion in the map frame) as this frame's answer, or None when
    it does not hold (module docstring). `solve(query, pairs, points, k, guide_pos, guide_quat, cam)`: the
    verifier's solve and gate; `forwards`, `map_side`: as verify/polish.polish_sift takes them; `scale`: the
    query features' detection scale, a share of the map's (recorded on the answer)."""
    if len(query) < cfg.min_inliers:
        return None
    position, quat = np.asarray(prior[0], np.float64), np.asarray(prior[1], np.float64)
    ks, pairs, points = pooled_around(query, position, quat, cam, loc_map, forwards, map_side, cfg, cfg.prior_radius,
                                      cfg.polish_images)
    if not len(ks) or len(pairs) < cfg.prior_min_inliers:
        return None
    v = solve(query, pairs, points, int(ks[0]), position, quat, cam)
    if not v.verified or v.inliers < cfg.prior_min_inliers or not _held(v, position, quat, cfg):
        return None
    v.order, v.scale = "around the flow pose", scale
    return v


def dense_prior_attempt(grid: Callable[[], QueryGrid], prior: tuple[np.ndarray, np.ndarray], cam: Intrinsics,
                        loc_map: Any, forwards: np.ndarray, map_side: Callable[[int], Any], cfg: VerifyConfig
                        ) -> Verification | None:
    """The dense search from `prior` against the map image nearest it that looks its way, as this frame's answer:
    verified by the dense gate and within `polish_max_shift_m` / `polish_max_turn_deg` of `prior`, else None (module
    docstring). `grid()`: the query's descriptor grid (the verifier's, computed once a frame and shared with a
    dense search that follows); `map_side(k)` must carry gradient descriptors."""
    position, quat = np.asarray(prior[0], np.float64), np.asarray(prior[1], np.float64)
    ks = nearest_alike(loc_map.positions, forwards, position, quat_to_rot(quat)[:, 2], 1, cfg.polish_max_view_deg)
    if not len(ks):
        return None
    k = int(ks[0])
    side = map_side(k)
    sol, searched = search_pose(grid(), side.gradients, side.points, *cam_from_map(position, quat), cam, narrow(cfg))
    if sol is None:
        return None
    v = judged(sol, k, searched, position, quat, cfg, dense_gate(cfg))
    if not v.verified or not _held(v, position, quat, cfg):
        return None
    v.dense, v.order, v.covariance = True, "around the flow pose", v.covariance * cfg.gradient_covariance_scale
    return v


class PriorStep:
    """The step for one drive (module docstring): its misses in a row decide whether a frame tries it."""

    def __init__(self, config: VerifyConfig) -> None:
        self.config = config
        self.misses = 0

    def reset(self) -> None:
        self.misses = 0

    def answer(self, verifier: Any, rgb: np.ndarray, prior: tuple[np.ndarray, np.ndarray] | None, cam: Intrinsics
               ) -> Verification | None:
        """`verifier`'s answer around `prior` (None: no prior, off, skipped, or it did not hold): the dense search
        first in the dark, else half-scale features, the dense search, then full-scale features only where no dense
        search ran (each computed once for the frame: the usual steps reuse them)."""
        cfg = self.config
        if prior is None or cfg.prior_min_inliers <= 0 or verifier.features == "learned":
            return None
        if self.misses >= 2 and self.misses % cfg.first_probe_every:
            self.misses += 1
            return None
        dense = cfg.gradient_candidates > 0 and verifier.map.map_geometry.gradients is not None
        first = dense and cfg.prior_dense_dark and is_dark(rgb, cfg)  # in the dark before any SIFT detection
        before_full = dense and cfg.prior_dense_before_full and not first  # elsewhere before full-scale SIFT
        if first and (v := self._dense(verifier, rgb, prior, cam)) is not None:
            return v
        half = half_sift(verifier.sift, cfg, rgb)
        for sift, scale in ([(half, cfg.first_scale)] if half else []) + [(verifier.sift, 1.0)]:
            if scale == 1.0 and before_full and (v := self._dense(verifier, rgb, prior, cam)) is not None:
                return v
            if scale == 1.0 and (first or before_full):
                break  # the dense search around the flow pose found nothing: nor would full-scale SIFT (docstring)
            v = prior_attempt(verifier._features(rgb, sift), prior, cam, verifier.map, verifier._forwards(),
                              verifier._map_side, cfg, verifier._solve, scale)
            if v is not None:
                self.misses = 0
                return v
        self.misses += 1
        return None

    def _dense(self, verifier: Any, rgb: np.ndarray, prior: tuple[np.ndarray, np.ndarray], cam: Intrinsics
               ) -> Verification | None:
        """`dense_prior_attempt` with the verifier's grid (computed once a frame), map and cache."""
        v = dense_prior_attempt(lambda: verifier._grid(rgb, cam), prior, cam, verifier.map, verifier._forwards(),
                                verifier._map_side, self.config)
        if v is not None:
            self.misses = 0
        return v
