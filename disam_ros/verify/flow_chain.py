"""The optical-flow chain and the motion check of one drive, shared by the frame loop and the keyframe thread.

A verified pose seeds the chain (verify/flow.py); each later frame follows its points by optical flow and, when
that verifies, carries the chain on. The motion check (verify/motion.py) judges every verified pose against the
last one. Both are one drive's state, and with verification beside the frame loop (tracking/keyframes.py) two
threads touch them: the frame loop follows the chain on every frame (a few ms), while the keyframe thread solves
a keyframe against the map (100 ms and more) and then renews the chain from it. One lock orders them; flow itself
runs outside it, so neither thread waits for the other's image work.

The renewal catches up: a keyframe answered 200 ms after it was taken is six camera frames old, too far for
flow to jump in one step, so its seed follows the frames seen since, one by one, to the newest. Frames keep
arriving while it does, so it asks again for those after the last it followed until none are left: on one core
a night keyframe took 350-900 ms and its catch-up ~400 ms more, and a catch-up over the frames seen when it began
ended ~10 frames behind the camera, too far for the frame loop to follow (no night frame verified in real time).
Frame by frame (~10 ms each on one core) a catch-up can fall behind the camera for good where the frame loop leaves
the thread a third of the core (a 2-core machine over DDS: 26-30 frames followed in 0.7-0.9 s, the chain spent before
it was renewed), so from each frame it follows the farthest one flow would follow in one step (`flow_catch_up_far`:
the predicted motion within flow_max_step_m; the next frame when the seed's speed is unknown, or when that one does
not verify): at 9 m/s and 30 Hz every other frame.

A keyframe also checks the chain where the chain answered its frame (`_measure`): their distance over the frames
followed is the drive's flow drift, which then widens every flow pose's covariance, and a keyframe that disagrees
with the chain (flow_keyframe_check_m) ends it, so a drifted chain does not go on past a right keyframe.
"""
from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from disam_ros.geometry import quat_angle_deg
from disam_ros.pose.camera import Intrinsics
from disam_ros.verify.config import VerifyConfig
from disam_ros.verify.flow import FlowSeed, flow_attempt, next_seed, trackable
from disam_ros.verify.motion import MotionGate
from disam_ros.verify.result import Verification

CATCH_UP_MAX_GAP_S = 0.2  # a catch-up step follows frames at most this far apart (camera rate; slower: no chain)
PUBLISHED = 64  # the chain's last flow poses kept, to check a keyframe answered late against (~2 s at 30 Hz)
DRIFT_MIN_HOPS = 5  # a keyframe measures the chain's drift only this many frames on (a solve's own error over
#                      fewer frames would pass for drift)


class FlowChain:
    """The flow seed and the motion gate of one drive, behind one lock (module docstring). `map_points(k)`: map
    image k's points (the seed adds those the pose puts on the image, verify/flow.next_seed)."""

    def __init__(self, config: VerifyConfig, max_speed_mps: float, map_points: Callable[[int], np.ndarray]) -> None:
        c = self.config = config
        self.motion = MotionGate(max_speed_mps * c.motion_speed_factor, c.motion_slack_m, c.motion_window_s)
        self.max_speed_mps = max_speed_mps  # the tracker's top speed (0: single mode, no motion known)
        self._map_points = map_points
        self._seed: FlowSeed | None = None
        self._lock = threading.Lock()
        self._published: deque[tuple[float, Verification]] = deque(maxlen=PUBLISHED)  # the current chain's
        self.drive = 0  # counts resets: a keyframe taken before one renews nothing after it
        self.drift_m = c.flow_drift_m  # this drive's flow drift a frame: keyframes measure it (_measure)
        self._frame_stamp = self.frame_dt = math.nan  # the frame loop's latest frame and the interval before it

    def reset(self) -> None:
        with self._lock:
            self._renew(None)
            self.drift_m = self.config.flow_drift_m
            self.motion.reset()
            self.drive += 1
            self._frame_stamp = self.frame_dt = math.nan

    @property
    def seed(self) -> FlowSeed | None:
        return self._seed

    def follow(self, grey: np.ndarray | None, stamp: float, cam: Intrinsics, catch_up: bool = False
               ) -> Verification | None:
        """This frame's pose by flow from the chain's seed, when it is trackable and verifies (the chain then
        moves on to this frame); None otherwise. A verified flow pose that jumps is returned as "jumped" and ends
        the chain. `catch_up`: the seed's speed may be unknown (a keyframe's first seed) when the frame follows
        within CATCH_UP_MAX_GAP_S."""
        if grey is not None and not catch_up:  # the frame loop's: the camera's frame interval
            dt, self._frame_stamp = stamp - self._frame_stamp, stamp
            self.frame_dt = dt if 0.0 < dt <= self.config.track_max_gap_s else self.frame_dt
        seed = self._seed
        if grey is None or seed is None or not (trackable(seed, grey, stamp, self.config) or (
                catch_up and _close_behind(seed, grey, stamp, self.config))):
            return None
        v = flow_attempt(seed, grey, cam, self.config, self.drift_m)
        if not v.verified:
            return None
        with self._lock:
            if self._seed is not seed:  # renewed by a keyframe meanwhile: that seed is the better one
                return None
            self._judge(v, stamp)
            self._seed = self._next(seed, v, grey, stamp, cam)
            if v.verified:
                self._published.append((stamp, v))
        return v

    def outruns_flow(self, places: np.ndarray | None = None, stamp: float = math.nan) -> bool:
        """The camera moves farther between two frames than flow follows (flow_max_step_m): the speed between the
        last two verified poses times the frame loop's frame interval. Before a drive's second verified pose, the
        speed from its first to the nearest of `places` (a keyframe's candidate places at `stamp`), at most the
        tracker's top speed: a lower bound when retrieval put one candidate where the camera is, and capped so that
        a camera-rate drive (at most 15 m/s x 43 ms = 0.65 m a frame) is never judged too fast, whatever retrieval
        says. False while all is unknown (a keyframe that could not be followed looks the same as one whose pose
        was too rough to seed a chain)."""
        speed = self.motion.speed_mps
        if not math.isfinite(speed) and places is not None:
            speed = min(self.motion.speed_to(places, stamp), self.max_speed_mps)
        return speed * self.frame_dt > self.config.flow_max_step_m

    def guess(self, grey: np.ndarray | None, stamp: float, cam: Intrinsics) -> tuple[np.ndarray, np.ndarray] | None:
        """The pose flow follows a seed whose hops are spent to, the chain left as it is: the guide of the full
        verification that renews it (verify/prior_step.py). None when flow would not follow the seed here for any
        other reason, or does not verify. (The seed's own pose as a guide after flow lost a frame was tried: on
        validation town 7 it verified no frame more and cost rain and snow 12 % a frame.)"""
        seed, cfg = self._seed, self.config
        if grey is None or seed is None or seed.hops < cfg.flow_frames \
                or not trackable(replace(seed, hops=0), grey, stamp, cfg):
            return None
        v = flow_attempt(seed, grey, cam, cfg)
        return (v.position.copy(), v.quat.copy()) if v.verified else None

    def settle(self, v: Verification, grey: np.ndarray | None, stamp: float, cam: Intrinsics,
               since: Callable[[float], Sequence[tuple[float, np.ndarray]]] | None = None, drive: int | None = None
               ) -> None:
        """A solved (not flow) answer: judged by the motion check; a verified one seeds the chain. Inline (`since`
        None) any answer replaces the seed, so a failed frame ends the chain. A keyframe's (`since(t)`: stamp and
        grey of the frames seen after stamp t, oldest first) only renews it: its seed follows those frames, and
        those seen meanwhile, up to the newest that flow keeps up with, and replaces the chain's unless the chain
        is already further on. `drive`: the chain's drive the answer was taken in; after a reset it is ignored."""
        with self._lock:
            if drive is not None and drive != self.drive:
                return
            if v.verified:
                self._judge(v, stamp)
            mine = self._published_at(stamp) if since is not None and v.verified else None
            if mine is not None and self._measure(v, mine):
                self._renew(None)
                return
            seed = self._next(self._seed, v, grey, stamp, cam)
            if since is None or seed is None:
                if since is None:
                    self._renew(seed)
                return
        head = FlowChain(self.config, 0.0, self._map_points)  # the catch-up runs on a private chain
        head._seed, head.drift_m = seed, self.drift_m
        followed = True
        while followed and (frames := [(t, g) for t, g in since(head._seed.stamp) if t > head._seed.stamp]):
            if self.config.flow_catch_up_far:
                followed = head._catch_up(frames, cam)
            else:
                followed = all(head.follow(g, t, cam, catch_up=True) is not None for t, g in frames)  # stops at a miss
        with self._lock:
            current = self._seed
            if drive is not None and drive != self.drive:
                return
            if current is None or head._seed.stamp >= current.stamp or current.hops >= self.config.flow_frames:
                self._renew(head._seed)

    def _catch_up(self, frames: Sequence[tuple[float, np.ndarray]], cam: Intrinsics) -> bool:
        """One step of a catch-up over `frames` (stamp, grey; oldest first, after the seed): the farthest one flow
        follows in one step from the seed (`trackable`: its predicted motion within flow_max_step_m), else, or when
        that one does not verify, the next one. Returns whether the chain moved on."""
        seed = self._seed
        far = next(((t, g) for t, g in reversed(frames[1:]) if trackable(seed, g, t, self.config)), None)
        return any(self.follow(g, t, cam, catch_up=True) is not None for t, g in ([far] if far else []) + [frames[0]])

    def _renew(self, seed: FlowSeed | None) -> None:
        """(lock held) A solve's seed (or none) starts a new chain: the old chain's poses are no longer its own."""
        self._seed = seed
        self._published.clear()

    def _published_at(self, stamp: float) -> Verification | None:
        """(lock held) The flow pose the current chain published for the frame at `stamp`, if it did."""
        return next((v for t, v in self._published if t == stamp), None)

    def _measure(self, v: Verification, mine: Verification) -> bool:
        """(lock held) A verified keyframe `v` against the chain's own pose for its frame, `mine`: their distance over
        the frames followed is this drive's drift a frame (at least flow_drift_m; from DRIFT_MIN_HOPS frames on).
        Returns whether `v` contradicts the chain (farther than flow_keyframe_check_m or agree_deg). Why: a keyframe
        answered late renews the chain only when its catch-up gets ahead of it, so a chain that drifted, or was
        seeded from a wrong solve, went on publishing verified poses past right keyframes (a fog drive: 0.6 to 2.5 m
        off over 30 frames, keyframes 0.03-0.07 m); and fog drifts several times faster than flow_drift_m, so the
        flow poses' covariance said centimetres where they were a metre off."""
        cfg = self.config
        d = float(np.linalg.norm(v.position - mine.position))
        if mine.hops >= DRIFT_MIN_HOPS:
            self.drift_m = max(cfg.flow_drift_m, d / mine.hops)
        return cfg.flow_keyframe_check_m > 0 and (d > cfg.flow_keyframe_check_m
                                                  or quat_angle_deg(v.quat, mine.quat) > cfg.agree_deg)

    def _judge(self, v: Verification, stamp: float) -> None:
        """The motion check (lock held): a pose too far from the last verified one is "jumped"; a newer plausible
        one becomes the reference."""
        if self.motion.jump(v.position, stamp) is not None:
            v.outcome, v.support = "jumped", None
        elif not stamp <= self.motion.stamp:  # NaN reference: none yet
            self.motion.accept(v.position, stamp)

    def _next(self, seed: FlowSeed | None, v: Verification, grey: np.ndarray | None, stamp: float,
              cam: Intrinsics) -> FlowSeed | None:
        cfg = self.config
        extra = self._map_points(v.index) if v.verified and cfg.flow_frames > 0 and cfg.flow_map_points else None
        return next_seed(seed, v, grey, stamp, cfg, extra, cam) if grey is not None else None


def _close_behind(seed: FlowSeed, grey: np.ndarray, stamp: float, cfg: VerifyConfig) -> bool:
    """A catch-up step: the next camera frame after the seed, hops left, same image size."""
    return (seed.hops < cfg.flow_frames and grey.shape == seed.grey.shape
            and 0.0 < stamp - seed.stamp <= CATCH_UP_MAX_GAP_S)
