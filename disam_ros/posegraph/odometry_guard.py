"""Which odometry a pose graph may take: one rule for the graph library and the ROS node alike.

Why: odometry is a chain, and one absurd sample breaks it for good. A finite but absurd position (1e308 m)
overflows the path length to inf (an infinite sigma: a NaN marginal covariance) and composing 1e308-sized steps
leaves nothing below ulp(1e308) ~ 2e292 m, so the graph never comes back; one stamp days in the future makes
every later, good stamp look "not after the previous" and the chain refuses them all. So:

* magnitude: a position farther than `max_position_m` from the odometry origin is refused outright
  (`check_magnitude`, also called by PoseGraph.add_odometry);
* continuity: a sample continues the chain when its stamp is after the chain's last one by at most `max_gap_s`
  and it moved at most `max_speed_mps` times that time (at least MIN_DT_S of it, so stamp jitter between two
  close messages does not make a fast vehicle look like a jump);
* a sample that does not continue the chain is refused, but remembered as the start of a possible new chain:
  when CONFIRM consecutive samples continue one another but not the old chain, the odometry really jumped (a
  clock or odometry restart). The last of them is accepted: appended to the chain when only the time gap was too
  long (the motion is plausible: the odometry paused), otherwise the chain is reset (the graph starts a new
  chain, PoseGraph.reset_chain). A lone bad sample is refused and the next good one continues the old chain.

Every sample gets a verdict at once (nothing is held), so a caller can count each one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

CONFIRM = 3  # consecutive samples that must agree with one another, not the chain, before the chain jumps
MIN_DT_S = 0.1  # the speed bound allows at least max_speed_mps * MIN_DT_S of motion between two samples


@dataclass(frozen=True)
class OdometryLimits:
    """What physically possible odometry looks like (the defaults suit any road vehicle and any Earth frame:
    UTM northings and ECEF coordinates stay below 1e7 m)."""

    max_position_m: float = 1e7  # |position| in the odometry frame
    max_speed_mps: float = 100.0  # 360 km/h
    max_gap_s: float = 10.0  # a longer silence is taken only once CONFIRM samples continue after it

    def __post_init__(self) -> None:
        for name in ("max_position_m", "max_speed_mps", "max_gap_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")


@dataclass(frozen=True)
class Sample:
    t: float
    position: np.ndarray


@dataclass
class Verdict:
    """What to do with one sample: `accept` it (after `reset`ting the chain when set), or refuse it (`reason`)."""

    accept: bool
    reset: bool = False
    reason: str = ""


def check_magnitude(position: np.ndarray, max_position_m: float) -> str:
    """'' when the position is finite and within max_position_m of the origin, else the one-line reason."""
    p = np.asarray(position, np.float64).reshape(-1)
    if not np.all(np.isfinite(p)):
        return f"odometry position {p.tolist()} is not finite"
    n = float(np.max(np.abs(p))) if p.size else 0.0  # max, not the norm: the norm itself overflows near 1e308
    if n > max_position_m:
        return (f"odometry position {p.tolist()} is {n:.3g} m from the odometry origin, beyond max_odom_position_m "
                f"({max_position_m:g} m): not a physical pose")
    return ""


def continues(prev: Sample, s: Sample, limits: OdometryLimits) -> str:
    """'' when s continues a chain whose last sample is prev, else why not (one line)."""
    dt = s.t - prev.t
    if not dt > 0:
        return f"odometry stamp {s.t:.9f} s is not after the previous {prev.t:.9f} s"
    if dt > limits.max_gap_s:
        return (f"odometry stamp {s.t:.3f} s is {dt:.3g} s after the previous {prev.t:.3f} s, beyond max_odom_gap_s "
                f"({limits.max_gap_s:g} s)")
    moved = float(np.linalg.norm(s.position - prev.position))
    allowed = limits.max_speed_mps * max(dt, MIN_DT_S)
    if moved > allowed:
        return (f"odometry jumped {moved:.3g} m in {dt:.3g} s, beyond max_odom_speed_mps ({limits.max_speed_mps:g} "
                "m/s)")
    return ""


@dataclass
class OdometryGuard:
    """The chain's last accepted sample and a possible new chain (module docstring); not thread-safe."""

    limits: OdometryLimits = field(default_factory=OdometryLimits)
    last: Sample | None = None
    _candidates: list[Sample] = field(default_factory=list)

    def offer(self, t: float, position: np.ndarray) -> Verdict:
        """The verdict on one sample; an accepted one becomes the chain's last."""
        s = Sample(float(t), np.asarray(position, np.float64).reshape(3))
        reason = "" if math.isfinite(s.t) else f"odometry stamp {s.t} is not finite"
        reason = reason or check_magnitude(s.position, self.limits.max_position_m)
        if reason:
            return Verdict(False, reason=reason)  # never the start of a new chain
        if self.last is None:
            self.last = s
            return Verdict(True)
        reason = continues(self.last, s, self.limits)
        if not reason:
            self.last, self._candidates = s, []
            return Verdict(True)
        return self._jump(s, reason)

    def _jump(self, s: Sample, reason: str) -> Verdict:
        """s does not continue the chain: refuse it, unless it is the CONFIRM-th of a new chain (accepted)."""
        if self._candidates and not continues(self._candidates[-1], s, self.limits):
            self._candidates.append(s)
        else:
            self._candidates = [s]
        if len(self._candidates) < CONFIRM:
            return Verdict(False, reason=f"{reason}: refused (taken as a clock or odometry jump once {CONFIRM} "
                                         "messages in a row continue it)")
        first = self._candidates[0]
        dt = first.t - self.last.t  # only the silence was too long when the motion across it is plausible
        gap_only = dt > 0 and float(np.linalg.norm(first.position - self.last.position)) <= \
            self.limits.max_speed_mps * max(dt, MIN_DT_S)
        self.last, self._candidates = s, []
        return Verdict(True, reset=not gap_only, reason=reason)
