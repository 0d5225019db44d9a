"""The Tracker's steps in keyframes mode (tracking/keyframes.py): each frame followed by optical flow from the
last verified pose, keyframes handed to the thread beside the frame loop, and, in sequence mode, frames that flow
verifies answered without retrieval. Kept apart from tracking/tracker.py so that each module holds one concern; the
methods read and write the Tracker's own state."""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from disam_ros.maps.verified_confidence import verified_confidence
from disam_ros.pose.features import to_grey
from disam_ros.retrieval import RetrievalResult, SpatialPrior
from disam_ros.retrieval.frame_gate import check_frame
from disam_ros.tracking.keyframes import Keyframe
from disam_ros.tracking.place_graph import headings_from_quats
from disam_ros.tracking.tracker_config import LateAnswer, TrackStep
from disam_ros.verify.verifier import Verification


class FlowLook(NamedTuple):
    """A frame's optical-flow step (keyframes mode): its grey image, camera, and flow's answer (None: no chain)."""

    grey: np.ndarray | None
    cam: Any
    source: str
    answer: Verification | None
    t0: float


class KeyframeSteps:
    """The Tracker's frame steps in keyframes mode (a mixin: the state is the Tracker's)."""

    def wait_keyframes(self, timeout_s: float) -> bool:
        """Keyframes mode: wait until no keyframe is in flight (a paced replay); True at once without keyframes."""
        return self._keyframes is None or self._keyframes.wait_idle(timeout_s)

    def keyframe_times(self) -> tuple[int, int, list[float]]:
        """Keyframes mode: the keyframes solved so far, how many of them verified, and the recent ones' verification
        times (ms, since the last reset, newest last)."""
        return (0, 0, []) if self._keyframes is None else self._keyframes.times()

    def take_late(self) -> tuple[LateAnswer, ...]:
        """Late answers ready now, without a frame: keyframes solved since the last step, as that step would have
        returned them (`TrackStep.late`). Why: between frames (a camera that stopped, the end of a drive, a slow
        camera) a late loop closure would otherwise wait for the next frame, or be lost with a reset."""
        if self._keyframes is None:
            return ()
        late, self._late = self._late + self._late_keyframes(), ()
        return late

    def on_late(self, callback: Callable[[], None] | None) -> None:
        """Keyframes mode: `callback()` is called on the keyframe thread whenever an answer no frame took is ready
        (then `take_late` has it); the node wakes its frame loop with it."""
        if self._keyframes is not None:
            self._keyframes.on_late = callback

    def keyframe_diagnostics(self) -> dict[str, Any]:
        """Keyframes mode: the keyframe thread's figures as they are now (it runs between frames); {} without."""
        return {} if self._keyframes is None else self._keyframes.diagnostics()

    def _verified_before(self) -> np.ndarray | None:
        """The previous frame's verified position (None: it had none, e.g. a junk frame, or the drive was reset)."""
        last = self._last
        v = None if last is None else last.result.verification
        return last.result.position if v is not None and v.verified else None

    def _flow_look(self, rgb: np.ndarray, stamp: float) -> FlowLook:
        """This frame followed by optical flow from the chain (run once a frame: it moves the chain on)."""
        t0, verifier = time.perf_counter(), self.verifier
        grey = to_grey(rgb) if verifier.config.flow_frames > 0 else None
        self._keyframes.seen(stamp, grey)
        cam, source = verifier.camera_for(rgb.shape[1], rgb.shape[0])
        v = verifier.chain.follow(grey, stamp, cam) if cam is not None else None
        return FlowLook(grey, cam, source, v, t0)

    def _flow_first(self, rgb: np.ndarray, stamp: float, prior: SpatialPrior | None) -> FlowLook | None:
        """Keyframes, sequence mode, the last frame verified: flow runs before retrieval, so that a frame it verifies
        needs none (`_followed`). None where it does not apply, or for a frame the gate refuses (answered as usual:
        no pose)."""
        cfg = self.config
        if (self._keyframes is None or cfg.mode != "sequence" or not cfg.flow_skips_retrieval or prior is not None
                or self._verified_before() is None or cfg.verify.belief_sigma_m <= 0):
            return None
        return self._flow_look(rgb, stamp) if check_frame(rgb, self.reloc.gate).ok else None

    def _followed(self, rgb: np.ndarray, stamp: float, flow: FlowLook, odom: float | None) -> TrackStep | None:
        """A frame flow verified from the last verified one, answered without retrieval. Why: at camera rate its
        scores add little to a belief the verified poses pin down, and the encoder and the search are a third of
        a followed frame's time, time the keyframe thread needs on a shared core. The belief moves by odometry,
        else by the distance between the two verified poses, and observes no scores; the flow pose then narrows it
        (`_use`). None (the usual path runs) when flow did not verify or the belief restarts (a stamp gap)."""
        v = flow.answer
        if v is None or not v.verified:
            return None
        moved = odom if odom is not None else float(np.linalg.norm(v.position - self._verified_before()))
        est = self._seq.hold(stamp, moved)
        if est is None:
            return None
        self.still, self._belief_t = False, stamp
        res = RetrievalResult.failure("")  # no retrieval: _sequence_step answers from the belief
        step = self._sequence_step(self.reloc.select(stamp), res, est)
        self._verify_beside(rgb, step.result, stamp, flow, step.loop_closure)
        return step

    def _verify_beside(self, rgb: np.ndarray, res: RetrievalResult, stamp: float, flow: FlowLook | None = None,
                       loop_closure: bool = False) -> None:
        """Keyframes (tracking/keyframes.py): this frame by flow from the chain (`flow`, when it ran already); when
        flow fails, or the chain asks for renewal, the frame goes to the keyframe thread if it is free, and is
        waited for when flow failed. Without an answer in time the frame's verification is "pending" (the
        retrieval or belief answers); `loop_closure` (the frame's gate) goes with the keyframe to its late answer."""
        kf, verifier = self._keyframes, self.verifier
        grey, cam, source, v, t0 = flow if flow is not None else self._flow_look(rgb, stamp)
        seed = verifier.chain.seed
        if (v is None or seed is None or seed.hops >= self._renew_after) and kf.idle:
            prior = (v.position.copy(), v.quat.copy()) if v is not None and v.verified else None
            job = Keyframe(rgb, grey, self._candidates(res), self._points, stamp, self._dense(res), prior,
                           result=res, loop_closure=loop_closure)
            if kf.submit(job) and v is None:
                v = kf.wait(job, self.config.keyframe_wait_ms / 1e3)
        if v is None:
            v = Verification("pending", camera=source)
        if v.flow:
            v.order, v.camera = "optical flow", source
        v.ms = v.ms if v.ms and not v.flow else 1e3 * (time.perf_counter() - t0)
        self._use(res, v)

    def _late_keyframes(self) -> tuple[LateAnswer, ...]:
        """Keyframes answered after their frame was: their map points carry on, and a verified one narrows the
        belief (`_late_sigma`). Returns the verified ones as late answers (`_late_answer`)."""
        late = []
        for job in self._keyframes.finished():
            v = job.answer
            if v is None or not v.verified:
                continue
            self._points = v.support
            sigma = self._late_sigma(job.stamp)
            if self._seq is not None and sigma > 0:
                self._seq.observe_position(v.position, sigma, self.config.verify.belief_floor,
                                           heading=float(headings_from_quats(v.quat[None])[0]))
            answer = self._late_answer(job)
            if answer is not None:
                late.append(answer)
        return tuple(late)

    def _late_sigma(self, stamp: float) -> float:
        """How near a late verified keyframe's position says the camera is now (m; 0: it says nothing). Its frame
        may lie behind the belief's present by several frames (at camera rate it nearly always does); the camera
        has since moved at most max speed x that age, so the verified place narrows the belief that much more
        loosely. Why: without it, a belief lost in fog stayed lost while keyframes verified right."""
        cfg, sigma = self.config, self.config.verify.belief_sigma_m
        age = self._belief_t - stamp
        if sigma <= 0 or not 0 <= age <= cfg.late_keyframe_max_age_s:
            return 0.0
        return float(np.hypot(sigma, cfg.sequence.max_speed_mps * age))

    def _late_answer(self, job: Keyframe) -> LateAnswer | None:
        """The keyframe's frame answered again with its verified pose, as `_use` would have answered it in time: the
        pose, covariance and verification replace the answer's, and the confidence comes from the inliers where a
        calibration fitted verified poses. None when the frame went out verified already (by flow: a renewal)."""
        res, v = job.result, job.answer
        if res is None or (res.verification is not None and res.verification.verified):
            return None
        out = copy.copy(res)
        out.verification, out.timings_ms = v, {"verify": float(v.ms)}
        out.position, out.quat, out.covariance = v.position.copy(), v.quat.copy(), v.covariance.copy()
        record = self._verified_record()
        if record is not None:
            out.confidence = verified_confidence(record, v.inliers)
        return LateAnswer(float(job.stamp), out, bool(job.loop_closure), job.rgb)


__all__ = ["FlowLook", "KeyframeSteps"]
