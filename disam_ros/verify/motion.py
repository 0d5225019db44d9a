"""A motion check on verified poses (sequence and window modes): a vehicle cannot be 15 m from where it was
verified a third of a second ago, so a verified pose that says so is refused as "jumped".

Why: a town repeats its blocks, and the dense search's gate has a thin margin against them (on the development
town a candidate 3-5 map images away verified densely in ~1 % of searches, 9-15 m off: docs/pose.md). The place-
level ratio test stops most of those but costs more than the search itself; this check costs nothing and needs
no map: the last verified pose and the stamps bound where the camera can be. It is a bound, not a filter: the
allowed distance is the tracker's top speed times a margin times the time since the last verified pose, plus a
slack for the two poses' errors, so right poses of a drive the tracker can follow are never refused.

After a refusal the last verified pose stays the reference; after `motion_window_s` without a verified pose
there is no reference (the check lapses), so one wrong verified pose can cost at most that window of right ones.
"""
from __future__ import annotations

import math

import numpy as np

SPEED_GAP_S = 10.0  # the speed between two verified poses up to this far apart (keyframes at 3 m a frame: ~2.5 s)


def allowed_jump_m(dt_s: float, max_speed_mps: float, slack_m: float) -> float:
    """How far (m) a camera may be from its last verified pose `dt_s` seconds later."""
    return max_speed_mps * dt_s + slack_m


class MotionGate:
    """The last verified pose of a drive and the bound from it. `max_speed_mps` 0: off (single mode)."""

    def __init__(self, max_speed_mps: float, slack_m: float, window_s: float) -> None:
        if max_speed_mps < 0 or slack_m < 0 or window_s <= 0:
            raise ValueError(f"motion gate: max speed {max_speed_mps} m/s, slack {slack_m} m and window {window_s} s "
                             "must be >= 0, >= 0 and > 0 (VerifyConfig.motion_*)")
        self.max_speed_mps, self.slack_m, self.window_s = max_speed_mps, slack_m, window_s
        self.reset()

    def reset(self) -> None:
        """A new drive: no reference."""
        self._position: np.ndarray | None = None
        self._stamp = math.nan
        self._started = False
        self.speed_mps = math.nan  # between the last two references, when SPEED_GAP_S apart at most (NaN: unknown)

    def jump(self, position: np.ndarray, stamp: float) -> float | None:
        """The distance (m) from the reference when it is in force and `position` is farther than allowed from
        it, else None (plausible, or nothing to compare with)."""
        if self.max_speed_mps <= 0 or self._position is None or not math.isfinite(stamp):
            return None
        dt = stamp - self._stamp
        if not 0.0 < dt <= self.window_s:
            return None
        d = float(np.linalg.norm(np.asarray(position, np.float64) - self._position))
        return d if d > allowed_jump_m(dt, self.max_speed_mps, self.slack_m) else None

    def speed_to(self, positions: np.ndarray, stamp: float) -> float:
        """The speed (m/s) from the reference to the nearest of `positions` (N,3) at `stamp`: a lower bound on the
        camera's speed when it is at one of them (NaN: no reference, none given, or not 0 < dt <= SPEED_GAP_S)."""
        dt = stamp - self._stamp if self._position is not None and math.isfinite(stamp) else math.nan
        if not 0.0 < dt <= SPEED_GAP_S or len(positions) == 0:
            return math.nan
        return float(np.linalg.norm(np.asarray(positions, np.float64) - self._position, axis=1).min()) / dt

    @property
    def started(self) -> bool:
        """A verified pose with a stamp has been accepted since the drive began (reset)."""
        return self._started

    @property
    def stamp(self) -> float:
        """The reference's stamp (NaN: none)."""
        return self._stamp

    def accept(self, position: np.ndarray, stamp: float) -> None:
        """A published verified pose becomes the reference (an unknown stamp clears it: nothing to bound by)."""
        ok = math.isfinite(stamp)
        speed = self.speed_to(np.asarray(position, np.float64)[None], stamp)
        self.speed_mps = speed if math.isfinite(speed) else self.speed_mps  # a gap too long keeps the last one
        self._position = np.asarray(position, np.float64).copy() if ok else None
        self._stamp = stamp if ok else math.nan
        self._started = self._started or ok
