"""Geometric verification of a retrieval, and the metric pose it yields: the query's SIFT keypoints matched to the map
keypoints of the best few candidate places (guided by each candidate's pose), the absolute pose solved by RANSAC +
refinement (PoseLib by default, disam_ros.pose.solver), and a gate that says whether it may be published as verified.

Why guided matching by the candidate's own pose: across conditions plain SIFT matching finds almost nothing at night,
in fog or at dusk, while matching only near where the candidate's pose projects each map point finds enough
(docs/pose.md, disam-match-eval). Why several candidates: a retrieval one map image (~3 m) off loses most matches, so
the retrieval's top few places are tried, best inlier count kept.

The gate (what "verified" means; thresholds in VerifyConfig, chosen on a development town, not the demo's): enough
RANSAC inliers, and enough of the guided matches among them (or, weaker alone, two candidates whose separately solved
poses agree, in sequence modes only once the drive has a verified pose: gate.may_agree); a solved position no
less certain than `max_position_std_m`; a pose near the candidate that guided it (within `max_shift_m` and
`max_turn_deg`: the guided matches were chosen where that pose projects the map points, so a solution far from it fits
noise; with `regate_far_poses`, one failing only that is judged again at itself: verify/regate.py). A pose that fails
the gate is reported with its reason (`outcome`) and never replaces the retrieval's answer.

Cameras that look from elsewhere (`turn_search_deg`, `unguided_candidates`): the best candidate guides again turned
left and right about the camera's vertical, then candidates match without a guide. Learned local features
(`verify_features`, verify/learned_step.py): matched instead of SIFT's steps or after them.

A first look at reduced scale (`first_scale`): the candidates are first tried with SIFT on the half-size image (~20 ms
of a 640x480 frame against ~90 ms at full scale); the first verified look that is also sure (`sure`) is the answer, so
only frames no look answers (night, fog, rain, snow) pay for the full-scale steps (docs/pose.md); a verified look not
sure is polished (verify/polish.py), with its own features first, and so, on a keyframe no look verified, is the look
refused only for its inlier count or ratio (`first_polish_near`, first_look.near_look: dusk's looks at the right place).

Map-point tracking (`track_frames` > 0): a verified frame hands its inliers (with the MAP points they matched) to
the next frame, matched to them when its own candidates do not verify: consecutive frames match each other well
across conditions, and the points stay the map's, so nothing drifts. The chain ends after `track_frames` frames
without a map-verified one, a gap of `track_max_gap_s`, or too few points. Around the flow pose (`prior_min_inliers`,
verify/prior_step.py): a frame flow posed but does not answer (a renewal keyframe) is matched around that pose first.

A verified SIFT pose is then polished (`polish_images`, verify/polish.py): matched again from itself against the map
images around it, replaced by the pooled solve when that stays near it; the first full-scale candidate to verify at
once (a pool of `candidate_polish_inliers` ends the search). The dense search (`gradient_candidates`,
verify/gradient_search.py) comes last, except on drives only it verifies (rain, snow, fog): there first, or alone;
and on a keyframe whose first looks saw nothing in the dark (night) or in clutter (rain, snow) it comes next, before
the full-scale SIFT steps (in clutter, instead of them): the order's rules count frames, so a drive's first
keyframes would otherwise pay ~200 ms of SIFT steps that fail there (verify/first_look.py).
"""
from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from disam_ros.geometry import quat_to_rot, rot_to_quat
from disam_ros.pose.camera import Intrinsics, intrinsics_for
from disam_ros.pose.features import (
    Features,
    SiftConfig,
    detect_sift,
    root_sift,
    to_grey,
)
from disam_ros.pose.frames import about_y, cam_from_map
from disam_ros.pose.gradients import from_u8
from disam_ros.pose.guided import guided_match, predicted_pixels
from disam_ros.pose.solver import SolverConfig, solve_absolute_pose
from disam_ros.verify.config import VerifyConfig
from disam_ros.verify.dense_step import dense_attempts
from disam_ros.verify.first_look import FirstLook, near_look
from disam_ros.verify.flow_chain import FlowChain
from disam_ros.verify.gate import agreeing, judged, may_agree, verified_or
from disam_ros.verify.gradient_search import QueryGrid, query_grid
from disam_ros.verify.learned_step import LearnedStep, resolve_features, sift_refined
from disam_ros.verify.order import StepOrder
from disam_ros.verify.polish import polish_sift, polished_look
from disam_ros.verify.prior_step import PriorStep
from disam_ros.verify.regate import regated
from disam_ros.verify.result import OUTCOMES, PointTrack, Verification
from disam_ros.verify.support import support_pairs
from disam_ros.verify.unguided import attempt_unguided

__all__ = ["OUTCOMES", "PointTrack", "Verification", "Verifier", "VerifyConfig"]  # from verify.result, .config

MAP_CACHE = 32  # map images whose RootSIFT descriptors and points are kept ready (~1 MB each at 2000 keypoints)


@dataclass(frozen=True)
class _MapSide:
    keypoints: np.ndarray
    descriptors: np.ndarray  # RootSIFT, float32
    points: np.ndarray  # float64 map frame
    gradients: np.ndarray | None  # unit gradient descriptors for the dense search (None: the map has none)


class Verifier:
    """Verifies retrievals against one map's geometry; state: the camera and a small cache of map images."""

    def __init__(self, loc_map: Any, config: VerifyConfig | None = None, max_speed_mps: float = 0.0,
                 device: str = "cpu") -> None:
        """`max_speed_mps`: the tracker's top speed in sequence/window modes (0 in single mode: no motion check);
        `device`: where the learned keypoint network runs (the encoders' device)."""
        if loc_map.map_geometry is None:
            raise ValueError(f"map {getattr(loc_map, 'root', '')} has no map geometry ({loc_map.geometry_note})")
        self.map = loc_map
        self.config = config or VerifyConfig()
        self.sift = loc_map.map_geometry.sift
        self.map_camera: Intrinsics = loc_map.map_geometry.intrinsics
        self.camera: Intrinsics | None = None  # the query camera (CameraInfo / camera.yaml); None: the map's
        self.camera_source = ""
        self._map_side = functools.lru_cache(maxsize=MAP_CACHE)(self._load_side)  # per verifier, bounded
        self._looks = FirstLook(self.config)  # the first look and its misses (verify/first_look.py)
        self._order = StepOrder(self.config)  # which steps a frame runs, from the frames before (verify/order.py)
        self._prior = PriorStep(self.config)  # a frame posed by flow verified around that pose (verify/prior_step.py)
        self.chain = FlowChain(self.config, max_speed_mps, lambda k: self._map_side(k).points)  # flow + motion
        self._deadline, self._stop = math.inf, bool  # no step starts after this perf_counter time, or once _stop()
        self._axes: np.ndarray | None = None  # the map images' optical axes (_forwards)
        self._frame_features: dict[SiftConfig, Features] = {}  # the latest frame's, by recipe (its steps share them)
        self._frame_grid: QueryGrid | None = None  # ... and its dense-search descriptor grid
        learned = getattr(loc_map.map_geometry, "learned", None)
        self.features = resolve_features(self.config.verify_features, learned, str(getattr(loc_map, "root", "")))
        self.learned = LearnedStep(learned, self.config, device) if self.features != "sift" else None

    def reset(self) -> None:
        """A new drive (Tracker.reset): the first look and the SIFT steps are tried again from its next frame on."""
        self._looks.reset()
        self._order.reset()
        self._prior.reset()
        self.chain.reset()

    def set_camera(self, camera: Intrinsics | None, source: str) -> None:
        """The query camera's intrinsics (node: CameraInfo; folders: camera.yaml); None falls back to the map's."""
        self.camera, self.camera_source = camera, source if camera is not None else ""

    def camera_for(self, width: int, height: int) -> tuple[Intrinsics | None, str]:
        """Intrinsics for a query image of this size and where they came from (pose/camera.intrinsics_for)."""
        return intrinsics_for(width, height, self.camera, self.camera_source, self.map_camera)

    def _forwards(self) -> np.ndarray:
        """The map images' optical axes in the map frame (N,3), computed once (verify/polish.py picks by them)."""
        if self._axes is None:
            self._axes = quat_to_rot(np.asarray(self.map.quats, np.float64))[:, :, 2]
        return self._axes

    def _load_side(self, k: int) -> _MapSide:
        """Map image k's keypoints with a 3D point, RootSIFT descriptors, points and gradients (`_map_side`)."""
        kp, desc, pts = self.map.geometry(k)
        ok = np.isfinite(pts).all(axis=1)
        grads = self.map.map_geometry.image_gradients(k)
        return _MapSide(np.asarray(kp[ok], np.float64), root_sift(np.asarray(desc[ok], np.float32)),
                        np.asarray(pts[ok], np.float64), None if grads is None else from_u8(grads[ok]))

    def query_features(self, rgb: np.ndarray, sift: SiftConfig | None = None) -> Features:
        """The query's keypoints found exactly as the map's were (the map's SIFT recipe, or `sift`: the first
        look's half-scale copy of it), RootSIFT descriptors."""
        f = detect_sift(rgb, sift or self.sift)
        return Features(f.keypoints, root_sift(f.descriptors), f.scales, f.responses)

    def verify(self, rgb: np.ndarray, candidates: list[int], previous: PointTrack | None = None,
               stamp: float = math.nan, dense: bool = True, keyframe: bool = False,
               prior: tuple[np.ndarray, np.ndarray] | None = None, stop: Callable[[], bool] = bool) -> Verification:
        """Try the candidate map images in order; the verified solution with the most inliers wins. When none
        verifies, `previous` (the last verified frame's PointTrack) is tracked into this frame, if tracking is on
        and it is recent enough (module docstring). A verified result carries its own PointTrack (`support`).
        `dense` False skips the dense search this frame (single mode without a prior: Tracker). `keyframe`: a
        frame verified beside the frame loop (tracking/keyframes.py): no flow, and the caller settles the chain;
        `prior`: its pose by flow (inline: the chain's guess, FlowChain.guess), matched around first
        (verify/prior_step.py). No step starts after `budget_ms`, nor once `stop()` is true (the answer then says
        `timed_out`)."""
        t0 = time.perf_counter()
        self._deadline = t0 + self.config.budget_ms / 1e3 if self.config.budget_ms > 0 else math.inf
        self._stop = stop  # false for good by default (bool() is False); a keyframe whose drive was reset: true
        self._agree = may_agree(self.config, self.chain.motion)  # two agreeing may verify (gate.py)
        self._frame_features, self._frame_grid = {}, None
        h, w = rgb.shape[:2]
        cam, source = self.camera_for(w, h)
        if not self.config.enabled:
            return Verification("off", camera=source)
        if cam is None:
            return Verification("no_intrinsics", camera=source, ms=_ms(t0))
        if w < self.config.min_width_px:
            return Verification("image_too_small", camera=source, ms=_ms(t0))
        ks = _unique(candidates, len(self.map.positions))[: self.config.candidates]
        grey = to_grey(rgb) if self.config.flow_frames > 0 and not keyframe else None  # only flow reads it
        flow = self.chain.follow(grey, stamp, cam)  # verify/flow_chain.py; else a guide for prior_step.py:
        flow = flow or self._prior.answer(self, rgb, prior or self.chain.guess(grey, stamp, cam), cam)
        if keyframe and (prior is not None or not self.chain.outruns_flow(self.map.positions[ks], stamp)):
            self._order.flow_follows()
        best, attempts, used = (flow, [flow], None) if flow is not None else \
            self._steps(rgb, ks, cam, previous, stamp, dense, keyframe)
        if best.verified and used is not None and not best.dense and not best.polished and not self._late():
            best = polish_sift(best, used, cam, self.map, self._forwards(), self._map_side, self.config)
        best.order = "optical flow" if best.flow else best.order if flow is not None else self._order.last
        best.timed_out = self._late()
        if not best.flow and not keyframe:  # an answer around a flow guess renews the chain, as a full one does
            self.chain.settle(best, grey, stamp, cam)
        return self._answer(best, attempts, source, t0, stamp)

    def _features(self, rgb: np.ndarray, sift: SiftConfig | None = None) -> Features:
        """`query_features`, computed once a frame per recipe (the steps after the prior's share them)."""
        key = sift or self.sift
        if key not in self._frame_features:
            self._frame_features[key] = self.query_features(rgb, key)
        return self._frame_features[key]

    def _grid(self, rgb: np.ndarray, cam: Intrinsics) -> QueryGrid:
        """The dense search's query grid, computed once a frame (the search around a flow pose and the one after)."""
        if self._frame_grid is None:
            self._frame_grid = query_grid(rgb, int(self.map.map_geometry.gradient_cell), self.map_camera, cam,
                                          self.config)
        return self._frame_grid

    def _late(self) -> bool:
        """This frame's time box is spent (or its caller stopped it): no further step or candidate starts."""
        return time.perf_counter() > self._deadline or self._stop()

    def _steps(self, rgb: np.ndarray, ks: list[int], cam: Intrinsics, previous: PointTrack | None, stamp: float,
               dense: bool = True, keyframe: bool = False
               ) -> tuple[Verification, list[Verification], Features | None]:
        """The steps in the order verify/order.py gives (a `keyframe` only tracking answered leaves its counts): dense
        search first after frames only it verified; first look and full-scale SIFT unless a run of frames they failed
        skips them (a `keyframe` whose looks were blind in the dark or in clutter runs the dense search right after
        them, and nothing after it, nor after a failed dense search that ran first: keyframe_dark_sift keeps them in
        the dark); dense search last if not first. Returns answer, attempts, the answer's query features (or None)."""
        cfg, order = self.config, self._order
        order.begin()
        dense_on = dense and cfg.gradient_candidates > 0 and self.map.map_geometry.gradients is not None and bool(ks)
        attempts = self._dense_attempts(rgb, ks[: cfg.gradient_candidates], cam, None) \
            if dense_on and order.dense_first(keyframe) else []  # the first step always runs: the time box starts after
        early, best = bool(attempts), verified_or(attempts, Verification("too_few_inliers"))
        if best.verified:
            order.dense_verified()
            return best, attempts, None
        query = used = None
        if self.features != "learned" and (not dense_on or order.sift()) and not (early and self._late()):
            looks, answer, used = self._looks.run(self, rgb, ks, cam)
            attempts += looks
            why = self._looks.hopeless(rgb, self.sift) if answer is None and keyframe and dense_on \
                and not self._late() else ""
            if why and not early:  # the dense search next (first_look.py): SIFT would see no more than the looks
                order.last, early, best = "dense next", True, self._dense_step(rgb, ks, cam, attempts)
                if best.verified:
                    return best, attempts, None
            # in clutter (and in the dark unless keyframe_dark_sift) no SIFT step follows a failed dense search, next
            # or first (counted as failed): there it verified (almost) no frame the dense search missed
            blind = ("cluttered",) if cfg.keyframe_dark_sift else ("cluttered", "dark")
            if answer is None and why not in blind and not (looks and self._late()):  # a spent time box ends it too
                look = max((v for v in looks if v.verified), key=lambda v: v.inliers, default=None)
                near = look is None and keyframe and cfg.first_polish_near
                look = near_look(looks, cfg) if near else look
                if cfg.first_polish_half and used is not None:  # the look's own features first: no full-scale SIFT
                    answer = polished_look(look, used, cam, self.map, self._forwards(), self._map_side, cfg, half=True,
                                           near=near)
                if answer is None:
                    query = used = self._features(rgb)
                    answer = polished_look(look, query, cam, self.map, self._forwards(), self._map_side, cfg,
                                           near=near)
                if answer is not None:  # polished already; the attempts hold the published pose
                    attempts[attempts.index(look)], used = answer, None
                best = answer or (self._sift_steps(query, ks, cam, previous, stamp, attempts)
                                  if len(query) >= cfg.min_inliers else Verification("no_features"))
            best = answer or best
            order.sift_ran(best.verified, tracked=keyframe and best.verified and best.hops > 0,
                           full=query is not None and not best.dense and self._looks.tried)
        if self.learned is not None and not best.verified and not self._late():
            found, answer = self.learned.attempts(rgb, ks, self.map.positions, self.map.quats, cam, self._solve,
                                                  agree=self._agree)
            attempts += found
            best = best if answer is None else sift_refined(answer, query, cam, self.map, self._forwards(),
                                                            self._map_side, cfg)
        if dense_on and not early and not best.verified and not self._late():
            best = self._dense_step(rgb, ks, cam, attempts, query, best)
        return best, attempts, used

    def _dense_step(self, rgb: np.ndarray, ks: list[int], cam: Intrinsics, attempts: list[Verification],
                    query: Features | None = None, best: Verification | None = None) -> Verification:
        """The dense search after the first look (`dense next`) or last: its attempts appended to `attempts`, the
        verified one (else `best`) returned, and counted when it verifies (verify/order.py)."""
        dense = self._dense_attempts(rgb, ks[: self.config.gradient_candidates], cam, query)
        attempts += dense
        best = verified_or(dense, best or Verification("too_few_inliers"))
        if best.verified:
            self._order.dense_verified()
        return best

    def _sift_steps(self, query: Features, ks: list[int], cam: Intrinsics, previous: PointTrack | None,
                    stamp: float, attempts: list[Verification]) -> Verification:
        """The full-scale steps in order (candidates guided by their poses, up to the first verified alone or by two
        agreeing that its polish confirms; turned guides, far poses judged at themselves, unguided, tracking), each
        only when those before verified nothing; their attempts appended to `attempts`."""
        cfg, polished = self.config, False
        for n, k in enumerate(ks):
            if n and self._late():
                break
            attempts.append(self._attempt(query, k, cam))
            if attempts[-1].verified and attempts[-1].inliers >= cfg.enough_inliers:
                break
            first = None if not cfg.candidate_polish_inliers or polished else attempts[-1] if attempts[-1].verified \
                else agreeing(attempts, cfg) if n and self._agree else None  # the first verified alone or by two
            if first is not None:
                polished = True  # the first verified one, polished in place (verify() does not polish it again)
                v = polish_sift(first, query, cam, self.map, self._forwards(), self._map_side, cfg)
                if v.polished >= cfg.candidate_polish_inliers:  # confirmed: the rest would compete for its place
                    return v
        best = max(attempts, key=lambda v: (v.verified, v.inliers), default=Verification("too_few_inliers"))
        if not best.verified:
            best = (agreeing(attempts, cfg) if self._agree else None) or best
        if not best.verified and cfg.turn_search_deg > 0 and ks and not self._late():
            turns = [self._attempt(query, ks[0], cam, turn) for turn in (-cfg.turn_search_deg, cfg.turn_search_deg)]
            attempts += turns
            best = verified_or(turns, best)
        if not self._late():
            best = regated(best, attempts, ks, self.map, lambda j: self._attempt(query, j, cam), cfg)  # regate.py
        if not best.verified and cfg.unguided_candidates and not self._late():
            free = [attempt_unguided(self, query, k, cam) for k in ks[: cfg.unguided_candidates]]
            attempts += free
            best = verified_or(free, best)
        if not best.verified and self._trackable(previous, stamp):
            attempts.append(self.track(query, previous, cam))
            best = verified_or(attempts[-1:], best)
        return best

    def _dense_attempts(self, rgb: np.ndarray, ks: list[int], cam: Intrinsics, query: Features | None
                        ) -> list[Verification]:
        """The dense search over candidates `ks` (verify/dense_step.py)."""
        return dense_attempts(self._grid(rgb, cam), ks, cam, query, self.map, self._map_side, self.config, self._late)

    def _answer(self, best: Verification, attempts: list[Verification], source: str, t0: float, stamp: float
                ) -> Verification:
        best.tried, best.camera, best.ms, best.attempts = len(attempts), source, _ms(t0), attempts
        if best.verified and best.support is not None:
            best.support = replace(best.support, stamp=stamp)
        return best

    def _trackable(self, previous: PointTrack | None, stamp: float) -> bool:
        """Tracking is on, `previous` has hops left and is at most track_max_gap_s old (unknown stamps: untrusted)."""
        cfg = self.config
        return (previous is not None and cfg.track_frames > 0 and previous.hops < cfg.track_frames
                and 0.0 <= stamp - previous.stamp <= cfg.track_max_gap_s)

    def track(self, query: Features, previous: PointTrack, cam: Intrinsics) -> Verification:
        """Match this frame's keypoints to the previous verified frame's inliers (guided by that frame's pose) and
        solve against their map points; judged by the same gate, with the previous pose as the guide."""
        cfg = self.config
        R, t = cam_from_map(previous.position, previous.quat)
        pairs = guided_match(query.keypoints, query.descriptors, previous.descriptors,
                             predicted_pixels(previous.points, R, t, cam), cfg.radius * cam.width, cfg.ratio)
        return self._solve(query, pairs, previous.points, previous.keyframe, previous.position, previous.quat, cam,
                           hops=previous.hops + 1)

    def _attempt(self, query: Features, k: int, cam: Intrinsics, turn_deg: float = 0.0, max_trials: int = 0
                 ) -> Verification:
        """Guided by candidate k's own pose, turned by `turn_deg` about its camera's vertical (y) axis: match,
        solve, judge against that guide (a pose matched only where a guess projects the map points must not be
        judged by matches re-made around itself: that test always passes). Why turned guides: a camera turned
        20-30 degrees from the map image sees each map point ~150-250 px from where the map image's pose
        predicts it, beyond the search radius, in any weather; a guide turned about as much puts it back."""
        cfg, side = self.config, self._map_side(k)
        key_pos, key_quat = np.asarray(self.map.positions[k], np.float64), np.asarray(self.map.quats[k], np.float64)
        if turn_deg:
            key_quat = rot_to_quat(quat_to_rot(key_quat) @ about_y(turn_deg))
        R, t = cam_from_map(key_pos, key_quat)
        pairs = guided_match(query.keypoints, query.descriptors, side.descriptors,
                             predicted_pixels(side.points, R, t, cam), cfg.radius * cam.width, cfg.ratio)
        return self._solve(query, pairs, side.points, k, key_pos, key_quat, cam, max_trials=max_trials)

    def _solve(self, query: Features, pairs: np.ndarray, points: np.ndarray, k: int, guide_pos: np.ndarray,
               guide_quat: np.ndarray, cam: Intrinsics, hops: int = 0, gate: tuple[float, int] | None = None,
               max_trials: int = 0) -> Verification:
        """Solve from (query keypoint, map point) pairs and judge against the guiding pose; a verified result
        keeps its inliers as the next frame's PointTrack (stamp filled in by `verify`)."""
        cfg = self.config
        solver = SolverConfig(max_error_px=cfg.max_error_px, min_inliers=cfg.min_agreeing_inliers,
                              sigma_floor_px=cfg.sigma_floor_px)
        if max_trials:  # the first look wants only clear solutions, found early; a failed look costs less
            solver = replace(solver, max_trials=max(solver.min_trials, max_trials))
        sol = None
        if len(pairs) >= solver.min_inliers:
            p2 = query.keypoints[pairs[:, 0]].astype(np.float64)
            sol = solve_absolute_pose(p2, points[pairs[:, 1]], cam, solver)
        if sol is None:
            return Verification("too_few_inliers", index=k, matches=len(pairs), hops=hops)
        v = judged(sol, k, len(pairs), guide_pos, guide_quat, cfg, gate)
        v.hops = hops
        if v.verified and cfg.track_frames > 0:
            qi, mi = support_pairs(pairs[sol.inlier_mask], query.keypoints,
                                    predicted_pixels(points, sol.R, sol.t, cam), cfg.track_radius_px)
            v.support = PointTrack(query.keypoints[qi].astype(np.float64), query.descriptors[qi],
                                   points[mi], v.position.copy(), v.quat.copy(), math.nan, k, hops)
        return v


def _unique(ids: list[int], n: int) -> list[int]:
    """Map indices in order, once each, those outside 0..n-1 dropped."""
    seen: set[int] = set()
    return [int(i) for i in ids if 0 <= int(i) < n and not (int(i) in seen or seen.add(int(i)))]


def _ms(t0: float) -> float:
    return 1000.0 * (time.perf_counter() - t0)
