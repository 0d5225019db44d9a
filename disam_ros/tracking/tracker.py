"""The stream localizer the node and offline evaluation both run: one Relocalizer, one frame at a time.

Why a layer above the Relocalizer: a moving vehicle's frames are not independent, and single-frame
answers that are wrong are jumps it cannot make. The Tracker encodes each frame ONCE, gets the
retrieval answer and the frame's scores over every map place from that one encoding, and answers in one
of three modes:

* single: the retrieval (coarse top-N, fine re-rank) as before;
* sequence: the best place of a forward Bayes filter over the map's place graph (tracking/sequence.py);
* window: the best end of a SeqSLAM path over the last L frames (tracking/window.py).

Its `confidence` is the calibrated probability that the answer is within the tolerance (5 m, 10 deg by
default; since 2026-11-23 a 95 % lower bound of it, see tracking/bounded_fit.py) when the map carries a
calibration for the mode (`disam-calibrate`), else a heuristic (single: the retrieval's distinctiveness;
sequence/window: posterior mass near the best place), and diagnostics say
which. The calibrated feature is a raw score: distinctiveness (single); for sequence and window one of two,
chosen per map by `disam-calibrate` on its calibration drives (`tracking.bounded_fit.choose_bounded`):
* `support`: the mean standardised score of the places the track answered over the last `SUPPORT_FRAMES`
  frames, or over the last `RECENT_FRAMES` when that is lower (so a kidnapped vehicle, whose new frames do
  not show the road the belief still follows, loses its confidence at once). Where the features fail
  (night, day-trained encoders) the belief still settles on some motion-consistent stretch and its mass says
  "certain"; the frames do not back that stretch, and the support says so (on the demo world's calibration
  drives it tells right from wrong with AUC 0.88, the mass's log-odds with 0.57);
* `mass`: the log-odds of the posterior mass within `mass_radius_m` of the best place. On a route whose
  neighbouring frames look alike (Nordland's railway) the support ranks a track a few frames off as high as
  a right one, while the mass sees the belief spread along it (patch-normalised pixels there: AUC 0.93
  against 0.67; the mass publishes 89.9 % of the held-out frames, all right, the support nothing).
Fits made before the choice existed name no feature and map the support, as they always did.

The place graph comes from the map: positions, stamps and headings, with drives split where the map's
stamps jump back or pause longer than `max_gap_s` (a map merged from several drives records no drive ids;
a gap is where one drive ends). The observation model comes from the map's calibration when stored there,
else it is estimated at load from the map against itself on a bounded subsample of rows (one log line).
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import replace
from typing import Any

import numpy as np

from disam_ros import conditions
from disam_ros.maps.map_calibration import (
    MapCalibration,
    calibrated_probability,
    estimate_observation,
    observation_rows,
    publish_threshold,
)
from disam_ros.maps.verified_confidence import verified_confidence
from disam_ros.relocalizer import Relocalizer, query_stamp
from disam_ros.retrieval import RetrievalResult, SpatialPrior
from disam_ros.retrieval.result import MIN_POS_SIGMA_M, pose_covariance
from disam_ros.tracking.keyframe_steps import KeyframeSteps
from disam_ros.tracking.keyframes import KeyframeThread
from disam_ros.tracking.place_graph import PlaceGraph, headings_from_quats
from disam_ros.tracking.sequence import (
    ObservationModel,
    SequenceConfig,
    SequenceEstimate,
    SequenceLocalizer,
    usable_odometry,
)
from disam_ros.tracking.standstill import StandstillDetector
from disam_ros.tracking.track_parts import (
    SUPPORT_FRAMES,
    PlaceContrast,
    local_covariance,
    map_drives,
    prior_sigma,
    same_prior,
    support,
)
from disam_ros.tracking.tracker_config import TRACKER_MODES, TrackerConfig, TrackStep, config_summary
from disam_ros.tracking.tracker_report import NO_CALIBRATION, calibration_note, tracker_diagnostics
from disam_ros.verify.verifier import PointTrack, Verification, Verifier

log = logging.getLogger(__name__)

SHORTLIST = 256  # places scored per frame on approximate (ivf/hnsw) maps


def map_observation(coarse: np.ndarray, positions: np.ndarray, graph: PlaceGraph,
                    seq_cfg: SequenceConfig) -> ObservationModel:
    """The observation model estimated from a map's own coarse descriptors (rows closer than the exclusion radius
    are the same place, not rivals); ValueError where the map is too small or too sparse. Shared by the Tracker at
    load and by disam-calibrate --from-map, so a copied calibration stores what a fit on the map would."""
    exclusion = max(seq_cfg.mass_radius_m, 1.5 * graph.spacing_m)
    return estimate_observation(coarse, positions, exclusion)


class Tracker(KeyframeSteps):
    """A Relocalizer as a stream localizer (modes single / sequence / window); state: the belief."""

    def __init__(self, reloc: Relocalizer, config: TrackerConfig | None = None) -> None:
        self.reloc = reloc
        self.config = config = config or TrackerConfig()
        m = reloc.map
        self._positions = np.asarray(m.positions, dtype=np.float64)
        self.calibration: MapCalibration | None = getattr(m, "calibration", None)
        self._cal_note, self.calibration = calibration_note(self.calibration, config)
        self._seq: SequenceLocalizer | None = None
        self.observation: ObservationModel | None = None
        self._obs_source = "not used in single mode"
        if config.mode != "single":
            seq_cfg = replace(config.sequence, mode=config.mode)
            graph = PlaceGraph.build(self._positions, map_drives(m.stamps, seq_cfg.max_gap_s), m.stamps,
                                     headings=headings_from_quats(m.quats))
            self.observation = self._observation(graph, seq_cfg)
            self._seq = SequenceLocalizer(graph, seq_cfg, self.observation)
        cf = config.place_contrast_frames
        self._contrast = PlaceContrast(len(self._positions), cf) if cf > 0 and self._seq is not None else None
        ratio = config.standstill_ratio
        self._standstill = StandstillDetector(ratio) if ratio > 0 and self._seq is not None else None
        self.still = False  # the last frame showed the camera where it was (and the belief held)
        self._prior: SpatialPrior | None = None
        self._last: TrackStep | None = None
        self._consistent = 0
        self._prev: tuple[np.ndarray, float] | None = None
        self.frames = 0
        self.last_feature = math.nan  # the raw score the calibration maps (NaN: no answer this frame)
        self.last_features: dict[str, float] = {}  # every candidate feature of this frame (disam-calibrate)
        self._support: deque[float] = deque(maxlen=SUPPORT_FRAMES)
        self._points: PointTrack | None = None  # the last verified frame's inliers (map-point tracking)
        verify = config.verify
        # the dense search needs the place known from outside the frame: a belief's, or a spatial prior's (_verify)
        self.dense_needs_prior = config.mode == "single" and not verify.gradient_single
        if config.mode == "single":  # a single frame stands alone: no flow, map points nor blind looks before it
            verify = replace(verify, flow_frames=0, track_frames=0, first_probe_every=1)
            if not any(verify.gradient_rival_m):  # ... nor a belief nor motion to rule out a place a block away
                verify = replace(verify, gradient_rival_m=verify.gradient_single_rival_m)
        self._renew_after = verify.flow_frames  # keyframes: a chain this long asks for a keyframe when one is free
        if config.keyframes and verify.flow_frames > 0:  # ... and runs on until one renews it
            verify = replace(verify, flow_frames=max(verify.flow_frames, config.keyframe_flow_frames),
                             flow_window_px=config.keyframe_flow_window_px)
        speed = 0.0 if config.mode == "single" else config.sequence.max_speed_mps  # single frames: no motion check
        device = str(getattr(getattr(reloc, "localizer", None), "device", "cpu"))  # retrieval's, resolved
        self.verifier = Verifier(m, verify, speed, device) if verify.enabled and m.has_geometry else None
        self._keyframes = KeyframeThread(self.verifier) if config.keyframes and self.verifier is not None else None
        self._belief_t = math.nan  # the stamp of the frame that last moved the belief (a late keyframe's test)
        self._late: tuple = ()  # late answers collected, not yet returned (a step that raised returns none)

    # ------------------------------------------------------------------------------------------ set-up
    def _observation(self, graph: PlaceGraph, seq_cfg: SequenceConfig) -> ObservationModel:
        stored = self.calibration.observation if self.calibration is not None else None
        if stored is not None:
            self._obs_source = "stored with the map calibration"
            return stored
        t0 = time.perf_counter()
        coarse = self.reloc.map.coarse_matrix()
        try:
            obs = map_observation(coarse, self._positions, graph, seq_cfg)
        except ValueError as exc:  # a map too small or too sparse for the estimate: the default gain
            log.warning("observation model not estimable from this map (%s); using the default gain %.2f",
                        exc, ObservationModel().gain)
            self._obs_source = "default (map too small to estimate)"
            return ObservationModel()
        self._obs_source = f"estimated at load from {obs.rows} map rows"
        log.info("observation model estimated from %d of %d map rows in %.2f s: gain %.3f (d' %.2f)", obs.rows,
                 len(coarse), time.perf_counter() - t0, obs.gain, obs.self_separation)
        return obs

    # ------------------------------------------------------------------------------------------ per frame
    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def calibrated(self) -> bool:
        """The map holds a calibration for this mode (with this tolerance): confidences are probabilities."""
        return self.calibration is not None and self.mode in self.calibration.modes

    @property
    def suggested_min_confidence(self) -> float | None:
        """The threshold chosen on the calibration drives for this mode (None: uncalibrated, or no threshold
        reached the precision target there)."""
        if self.calibration is None or self.mode not in self.calibration.modes:
            return None
        return self.calibration.min_confidence.get(self.mode)

    def reset(self, reason: str = "reset") -> None:
        """Belief back to uniform (the node's ~/reset, a relocalisation request)."""
        if self._seq is not None:
            self._seq.reset()
        if self._contrast is not None:
            self._contrast.reset()
        if self._standstill is not None:
            self._standstill.reset()
        self._prior, self._prev, self._consistent = None, None, 0
        self._support.clear()
        self._points = None  # a relocalisation request: do not carry map points across it
        self._late = ()
        if self._keyframes is not None and not self._keyframes.reset():
            log.warning("tracker reset: the dropped keyframe is still running")
        if self.verifier is not None:
            self.verifier.reset()  # ... nor the first look's record of recent frames
        self._last = None  # diagnostics describe the belief as it is now, not the last frame's
        self.reloc.reset_condition()  # a relocalisation request may follow a new scene: recognise afresh
        log.info("tracker reset: %s", reason)

    def step(self, rgb: np.ndarray, stamp: float | None, prior: SpatialPrior | None = None,
             odom_distance_m: float | None = None) -> TrackStep:
        """One frame: encode once, retrieve, update the belief, answer. Raises ValueError for a bad image.
        `odom_distance_m`: metres driven since the previous frame; None (no odometry) or NaN (odometry bad
        over this step) move the belief by the speed band instead."""
        t0 = time.perf_counter()
        odom_distance_m = usable_odometry(odom_distance_m)
        self.last_feature, self.last_features = math.nan, {}
        if self._keyframes is not None:
            self._late += self._late_keyframes()  # held until a step returns them: a bad image loses none
        late = self._late
        t = query_stamp(stamp)
        flow = self._flow_first(rgb, t, prior)
        followed = self._followed(rgb, t, flow, odom_distance_m) if flow is not None else None
        if followed is not None:
            self.frames += 1
            followed.result.timings_ms["track"] = (time.perf_counter() - t0) * 1e3
            self._last, self._late = replace(followed, late=late), ()
            return self._last
        shortlist = SHORTLIST if self._seq is not None else 0
        # a stream's answer comes from the belief over coarse scores: the fine re-rank would be discarded
        sel, res, scores = self.reloc.localize_scored(rgb, stamp, prior, shortlist=shortlist, fine=self._seq is None)
        self.frames += 1
        if self._seq is None:
            step = self._single(sel, res, t)
        elif scores is None:  # no evidence from this frame: the belief waits for the next one
            step = TrackStep(sel, res, None, False, False)
        else:
            if prior is not None and not same_prior(prior, self._prior):
                self._seq.set_prior(prior.position, prior_sigma(prior))
            self._prior = prior if prior is not None else self._prior
            still = self._standstill is not None and self._standstill(rgb)
            est = self._seq.hold(t) if still and odom_distance_m is None and prior is None else None
            self.still = est is not None
            if est is None:
                if self._contrast is not None and isinstance(scores, np.ndarray):
                    scores = self._contrast(scores)
                est = self._seq.update(scores, t, odom_distance_m)
                self._track_support(scores, est)
            self._belief_t = t
            step = self._sequence_step(sel, res, est)
        if self.verifier is not None and step.result.ok:
            if self._keyframes is None:
                self._verify(rgb, step.result, t)
            else:
                self._verify_beside(rgb, step.result, t, flow, step.loop_closure)
        step.result.timings_ms["track"] = (time.perf_counter() - t0) * 1e3
        self._last, self._late = replace(step, late=late) if late else step, ()
        return self._last

    def _verify(self, rgb: np.ndarray, res: RetrievalResult, stamp: float) -> None:
        """Verify the answer's place and its runners-up (or track the last verified frame's map points into this
        one) inline; a verified pose replaces the map image's (`index` stays the answered place;
        `verification.index` is the keyframe the pose was solved against)."""
        v = self.verifier.verify(rgb, self._candidates(res), self._points, stamp, self._dense(res))
        self._use(res, v)

    def _candidates(self, res: RetrievalResult) -> list[int]:
        return [res.index] + [i for i, _ in res.topk]

    def _dense(self, res: RetrievalResult) -> bool:
        return not self.dense_needs_prior or (self.config.verify.gradient_with_prior and res.used_prior)

    def close(self) -> None:
        """Stop the keyframe thread (keyframes mode); the tracker answers no more frames after this."""
        if self._keyframes is not None:
            self._keyframes.close()

    def _use(self, res: RetrievalResult, v: Verification) -> None:
        """A frame's verification: a verified pose replaces the answer's and narrows the belief."""
        self._points = v.support if v.verified else self._points
        res.verification = v
        res.timings_ms["verify"] = v.ms
        if v.verified:
            res.position, res.quat, res.covariance = v.position.copy(), v.quat.copy(), v.covariance.copy()
            sigma = self.config.verify.belief_sigma_m
            if self._seq is not None and sigma > 0:
                self._seq.observe_position(v.position, sigma, self.config.verify.belief_floor,
                                           heading=float(headings_from_quats(v.quat[None])[0]))
            record = self._verified_record()
            if record is not None:  # the published pose is the verified one: its confidence comes from its inliers
                res.confidence = verified_confidence(record, v.inliers)

    def _verified_record(self) -> dict | None:
        """The calibration's fit of verified poses' precision by inlier count (disam-calibrate --verify), if any."""
        cal = self.calibration
        if cal is None or self.mode not in cal.modes:
            return None
        return cal.modes[self.mode].extra.get("verified")

    def _track_support(self, scores: np.ndarray | tuple[np.ndarray, np.ndarray], est: SequenceEstimate) -> None:
        """Append this frame's standardised score of the answered place (a restarted belief starts afresh)."""
        if est.reinitialised:
            self._support.clear()
        obs, n = self.observation, len(self._positions)
        z = obs.shortlist_z(*scores, n) if isinstance(scores, tuple) else obs.frame_z(scores)
        self._support.append(float(z[est.index]))

    def _calibrated(self, features: dict[str, float], heuristic: float) -> tuple[float, bool]:
        """(confidence, calibrated): the calibration's probability of the feature it was fitted on (the first
        candidate for fits that name none), else the heuristic."""
        self.last_features = {k: float(v) for k, v in features.items()}
        cal = self.calibration
        key = next(iter(features))
        if cal is not None and self.mode in cal.modes:
            key = cal.modes[self.mode].feature_key(key)
        self.last_feature = self.last_features.get(key, math.nan)
        if cal is None or self.mode not in cal.modes:
            return float(heuristic), False
        return calibrated_probability(cal.modes[self.mode], self.last_feature), True

    def _covariance_scale(self) -> float:
        """The calibration's factor making right answers' position NEES 3 on its drives (1 uncalibrated)."""
        if not self.calibrated:
            return 1.0
        scale = float(self.calibration.modes[self.mode].extra.get("covariance_scale", 1.0))
        return scale if math.isfinite(scale) and scale > 0 else 1.0

    def _single(self, sel: conditions.Selection, res: RetrievalResult, stamp: float) -> TrackStep:
        if not res.ok:
            self._consistent, self._prev = 0, None
            return TrackStep(sel, res, None, False, False)
        pos = np.asarray(res.position, dtype=np.float64)
        if self._prev is not None:  # consistent: no farther than the vehicle could have moved since
            reach = self.config.sequence.max_speed_mps * max(stamp - self._prev[1], 0.0)
            near = np.linalg.norm(pos - self._prev[0]) <= reach + self.config.sequence.mass_radius_m
            self._consistent = self._consistent + 1 if near else 1
        else:
            self._consistent = 1
        self._prev = (pos, stamp)
        conf, calibrated = self._calibrated({"distinctiveness": res.confidence}, res.confidence)
        res.confidence = conf
        res.covariance[:3, :3] *= self._covariance_scale()
        return TrackStep(sel, res, None, calibrated, True)

    def _sequence_step(self, sel: conditions.Selection, res: RetrievalResult, est: SequenceEstimate) -> TrackStep:
        m, idx = self.reloc.map, est.index
        conf, calibrated = self._calibrated({"support": support(self._support), "mass": est.log_odds}, est.mass)
        post = self._seq.posterior()
        cov = pose_covariance(max(conf, 1e-3), m.spacing_m, m.spacing_rad)
        cov[:3, :3] = self._covariance_scale() * local_covariance(
            post, self._positions, idx, self.config.sequence.mass_radius_m,
            max(self._seq.graph.spacing_m / 2.0, MIN_POS_SIGMA_M))
        k = len(res.topk) or self.reloc.localizer.config.top_k
        out = RetrievalResult(
            ok=True, reason="", index=idx, name=m.names[idx], stamp=float(m.stamps[idx]),
            position=np.array(self._positions[idx]), quat=np.array(m.quats[idx], dtype=np.float64),
            topk=self._seq.top_places(k), coarse_topn=res.coarse_topn, confidence=conf, covariance=cov,
            timings_ms=res.timings_ms, query_fine=res.query_fine, used_prior=res.used_prior)
        loop = est.consistent_frames >= self.config.loop_closure_min_consecutive
        return TrackStep(sel, out, est, calibrated, loop)

    # ------------------------------------------------------------------------------------------ reporting
    def diagnostics(self) -> dict[str, Any]:
        """What the node puts on /diagnostics: belief state, consistency, calibration, observation model."""
        return tracker_diagnostics(self)


__all__ = ["NO_CALIBRATION", "TRACKER_MODES", "PlaceContrast", "TrackStep", "Tracker", "TrackerConfig",
           "calibrated_probability", "config_summary", "estimate_observation", "local_covariance", "map_drives",
           "observation_rows", "prior_sigma", "publish_threshold", "same_prior", "support"]
