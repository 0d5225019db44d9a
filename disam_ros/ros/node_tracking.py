"""The localizer node's sequence state around its ONE `Tracker` (`NodeTracking`): the tracker built from the node's
parameters, the lock that orders the frame worker's steps against `~/reset` and CameraInfo, the odometry distance
between frames, and the diagnostics snapshot the timer publishes. The frame loop that calls it: node_worker.py."""
from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from disam_ros.ros.node_stats import OdometryDistance

if TYPE_CHECKING:
    from disam_ros.relocalizer import Relocalizer
    from disam_ros.ros.node_params import LocalizerConfig
    from disam_ros.tracking.tracker import TrackStep

ODOM_JUMP_FACTOR = 3.0  # an odometry step faster than this x max_speed_mps is a reset of the odometry, not motion


class NodeTracking:
    """The node's sequence state around ONE `Tracker`: the lock that orders the worker's steps against
    `~/reset`, the odometry distance accumulated between frames, and the diagnostics snapshot the timer
    publishes (taken under the lock after each step, so /diagnostics never waits for a frame)."""

    def __init__(self, reloc: Relocalizer, cfg: LocalizerConfig) -> None:
        from disam_ros.tracking.sequence import SequenceConfig
        from disam_ros.tracking.tracker import Tracker, TrackerConfig
        from disam_ros.verify.verifier import VerifyConfig

        seq = SequenceConfig(mode=cfg.mode, min_speed_mps=cfg.min_speed_mps, max_speed_mps=cfg.max_speed_mps,
                             speed_change_prob=cfg.speed_change_prob)
        verify = VerifyConfig(enabled=cfg.verify, candidates=cfg.verify_candidates, min_inliers=cfg.verify_min_inliers,
                              enough_inliers=max(VerifyConfig.enough_inliers, cfg.verify_min_inliers),
                              min_agreeing_inliers=min(VerifyConfig.min_agreeing_inliers, cfg.verify_min_inliers),
                              track_frames=cfg.verify_track_frames, belief_sigma_m=cfg.verify_belief_sigma_m,
                              turn_search_deg=cfg.verify_turn_search_deg,
                              unguided_candidates=cfg.verify_unguided_candidates,
                              gradient_candidates=cfg.verify_dense_candidates,
                              gradient_max_tilt_deg=cfg.verify_dense_max_tilt_deg,
                              gradient_with_prior=cfg.verify_dense_with_prior,
                              first_scale=cfg.verify_first_scale, motion_speed_factor=cfg.verify_motion_speed_factor,
                              flow_frames=cfg.verify_flow_frames, polish_images=cfg.verify_polish_images,
                              prior_min_inliers=cfg.verify_prior_min_inliers,
                              regate_far_poses=cfg.verify_regate_far_poses,
                              verify_features=cfg.verify_features, budget_ms=cfg.verify_budget_ms)
        self.tracker = Tracker(reloc, TrackerConfig(mode=cfg.mode, sequence=seq, standstill_ratio=cfg.standstill_ratio,
                                                    loop_closure_min_consecutive=cfg.loop_closure_min_consecutive,
                                                    verify=verify, keyframes=cfg.verify_keyframes,
                                                    keyframe_wait_ms=cfg.verify_wait_ms,
                                                    flow_skips_retrieval=cfg.verify_flow_skips_retrieval))
        self.last_verification: Any = None  # the latest answered frame's Verification (for /diagnostics)
        self.camera_info_topic = ""  # what the active CameraInfo subscription listens on (node_verify)
        self.places = len(reloc.map)
        self.lock = threading.Lock()
        self.odometry = OdometryDistance(ODOM_JUMP_FACTOR * cfg.max_speed_mps) if cfg.odom_topic else None
        self.degraded_steps = 0  # frames whose odometry was degraded (they moved by the speed band)
        self._diag = self.tracker.diagnostics()

    @property
    def calibration(self) -> str:
        return str(self._diag.get("calibration", ""))

    @property
    def calibrated(self) -> bool:
        """The map holds a calibration for this mode (confidence is then a probability)."""
        cal = self.tracker.calibration
        return cal is not None and self.tracker.mode in cal.modes

    @property
    def suggested_min_confidence(self) -> float | None:
        """The threshold the map's calibration chose for this mode (None: uncalibrated, or none reached the
        calibration's precision target)."""
        return self.tracker.suggested_min_confidence

    def step(self, rgb: np.ndarray, stamp: float, prior: Any) -> TrackStep:
        """THE per-frame call: odometry since the previous frame and one tracker step. No odometry step since
        the previous frame gives the tracker None, degraded odometry (a glitch or reset spans this interval,
        `OdometryDistance`) NaN: both move the belief by the speed band, not by a distance known to be wrong.
        A frame that gave the belief no evidence (junk, or refused as a bad image) does not move it either: its
        distance (and whether it was degraded) carries over to the next frame."""
        dist, degraded = self.odometry.take_step() if self.odometry is not None else (None, False)
        odom = math.nan if degraded else dist
        self.degraded_steps += int(degraded)
        step = None
        try:
            with self.lock:
                step = self.tracker.step(rgb, stamp if stamp > 0.0 else None, prior, odom)
                self._diag = self.tracker.diagnostics()
                self.last_verification = getattr(step.result, "verification", None) or self.last_verification
        finally:
            if (dist is not None or degraded) and (step is None or step.estimate is None) \
                    and self.tracker.mode != "single":
                self.odometry.restore(dist, degraded)
        return step

    def take_late(self) -> tuple:
        """Keyframes verified after their frames and not yet handed on (verify_keyframes), between frames."""
        with self.lock:
            return self.tracker.take_late()

    def close(self) -> None:
        """Stop the tracker's keyframe thread (verify_keyframes) when the node releases its map."""
        self.tracker.close()

    def reset(self, reason: str) -> str:
        """Belief back to uniform; returns the service's answer."""
        with self.lock:
            self.tracker.reset(reason)
            self._diag = self.tracker.diagnostics()
        if self.tracker.mode == "single":
            return "mode single keeps no belief: nothing to reset"
        return f"belief reset to uniform over {self.places} map places (mode {self.tracker.mode})"

    @property
    def verifying(self) -> bool:
        """Verification is active: the map has geometry and parameter `verify` is true."""
        return self.tracker.verifier is not None

    def set_camera(self, camera: Any, source: str) -> None:
        """The query camera's intrinsics for the verifier (CameraInfo), ordered against the frame in flight."""
        if self.tracker.verifier is not None:
            with self.lock:
                self.tracker.verifier.set_camera(camera, source)

    def add_odometry(self, stamp: float, position: tuple[float, float, float]) -> bool:
        return self.odometry is not None and self.odometry.add(stamp, position)

    def reset_odometry(self) -> None:
        if self.odometry is not None:
            self.odometry.reset()

    def diagnostics(self) -> dict[str, Any]:
        out = {**self._diag, **self.tracker.keyframe_diagnostics()}  # the keyframe thread's, live
        if self.odometry is not None:
            out["odometry_degraded_steps"] = self.degraded_steps
        return out
