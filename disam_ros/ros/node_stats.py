"""Bookkeeping of the localizer node that needs no ROS: the one-slot frame mailbox, counters and latency windows
for /diagnostics, publisher sequence-gap counting, and throttled logging.

Everything here is bounded by construction (fixed windows, LRU maps of a few entries), because the node runs
for days at camera rate against inputs it does not control (a new `frame_id` or publisher every message must
not grow memory or the log).
"""
from __future__ import annotations

import math
import re
import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from disam_ros.cliutil import version_text

SOFTWARE = version_text("disam-localizer")  # in the start-up log line and /diagnostics: what a bug report names

COUNTERS = ("received", "dropped_in_queue", "dropped_by_node", "processed", "localized", "not_localized",
            "junk_frames", "bad_input", "errors", "encoder_switches", "priors_ignored", "loop_closures",
            "late_loop_closures", "belief_resets", "odometry_received", "odometry_ignored", "verified_frames",
            "unverified_frames", "camera_info_rejected")


class LatestFrame:
    """One-slot mailbox: `put` replaces an unprocessed frame (returns True when it dropped one).

    A newer camera frame is always worth more than an older one, so a slow worker never builds a backlog."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False

    def put(self, item: Any) -> bool:
        with self._cond:
            dropped = self._item is not None
            self._item = item
            self._cond.notify()
            return dropped

    def take(self, timeout: float) -> Any:
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def poke(self) -> None:
        """Wake a waiting `take` without a frame (it returns None): the worker has other work (late hints)."""
        with self._cond:
            self._cond.notify_all()

    def clear(self) -> bool:
        """Forget an unprocessed frame (on deactivate); True when there was one."""
        with self._cond:
            had, self._item = self._item is not None, None
            return had

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False
            self._item = None


class OdometryDistance:
    """Distance travelled between camera frames, summed over consecutive odometry positions (no ROS types).

    Why: with odometry the sequence filter moves its belief by what the vehicle measured instead of a wide
    speed band. The state is one last good (stamp, position), one running sum and two flags, bounded whatever
    arrives.

    * A sample that is not finite (NaN/inf position or stamp) is skipped, and the chain goes on from the last
      good sample: the next good one adds its distance from it, with the jump check scaled by the elapsed time
      (the motion across a glitch is not lost; `add` returns False for the bad sample).
    * A stamp that goes back, or a step faster than `max_step_speed_mps` (an odometry reset, a jumping
      simulator), restarts the chain from the new sample without adding distance (`add` returns False).
    * `take_step` (the worker, once per frame) returns (distance since the previous take or None when no
      odometry step arrived meanwhile, degraded). `degraded` is True when the distance of that frame interval
      is not the vehicle's motion: a chain restart lost part of it, or a glitch spans the take (the interval
      before it misses the motion after its last good sample, the interval after it gets that motion too).
      The worker then gives the filter the speed band for that step instead of a tight but wrong odometry
      band: glitchy odometry once published 15 of 60 poses more than 5 m off with loop-closure hints. A glitch
      bridged between two takes is not degraded: its chord is the distance."""

    def __init__(self, max_step_speed_mps: float) -> None:
        self._lock = threading.Lock()
        self._last: tuple[float, tuple[float, float, float]] | None = None
        self._sum = 0.0
        self._steps = 0
        self._gap = False  # a bad sample arrived since the last good one
        self._degraded = False  # this interval's distance misses (or double-counts) some motion
        self.max_step_speed_mps = float(max_step_speed_mps)

    def add(self, stamp: float, position: tuple[float, float, float]) -> bool:
        """One odometry message; False when it was not usable as a step (skipped, or the chain restarts)."""
        finite = math.isfinite(stamp) and all(math.isfinite(v) for v in position)
        with self._lock:
            last = self._last
            if not finite:  # skipped: the next good sample bridges it from the last good one
                self._gap = last is not None
                return False
            here = (float(stamp), tuple(float(v) for v in position))
            self._last = here
            if last is None:
                return True
            dt, d = here[0] - last[0], math.dist(here[1], last[1])
            if dt == 0.0 and d == 0.0:  # the same message again: nothing moved, nothing lost
                return False
            if dt <= 0.0 or d > self.max_step_speed_mps * dt + 0.5:  # odometry reset: the motion is unknown
                self._gap, self._degraded = False, True
                return False
            self._sum += d
            self._steps += 1
            self._gap = False
            return True

    def take_step(self) -> tuple[float | None, bool]:
        """(distance since the previous take or None, degraded) for one frame; see the class docstring."""
        with self._lock:
            d = self._sum if self._steps else None
            degraded = self._degraded or self._gap
            self._sum, self._steps = 0.0, 0
            self._degraded = self._gap  # the step bridging a pending glitch carries motion of this interval
            return d, degraded

    def take(self) -> float | None:
        """The distance part of `take_step` (None: no odometry step since the previous take)."""
        return self.take_step()[0]

    def restore(self, distance: float | None, degraded: bool = False) -> None:
        """Give back what `take_step` returned for a frame that could not use it (it moves the next frame)."""
        with self._lock:
            if distance is not None and math.isfinite(distance):
                self._sum += float(distance)
                self._steps += 1
            self._degraded = self._degraded or bool(degraded)

    def reset(self) -> None:
        with self._lock:
            self._last, self._sum, self._steps = None, 0.0, 0
            self._gap = self._degraded = False


class Stats:
    """Counters and rolling latency windows for /diagnostics (thread-safe)."""

    WINDOW = 200

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.latency: dict[str, deque] = {}
        self.last_reason = ""
        self.last_error = ""

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def time(self, stage: str, ms: float) -> None:
        with self.lock:
            self.latency.setdefault(stage, deque(maxlen=self.WINDOW)).append(float(ms))

    def note(self, reason: str | None = None, error: str | None = None) -> None:
        with self.lock:
            if reason is not None:
                self.last_reason = reason
            if error is not None:
                self.last_error = error

    def snapshot(self) -> dict[str, Any]:
        """Counters, latency median/p95 per stage, and drop_rate = frames published to the node that were
        never processed (lost in the subscription queue or replaced in the mailbox) / frames published."""
        with self.lock:
            out: dict[str, Any] = dict(self.counts)
            for stage, win in sorted(self.latency.items()):
                vals = sorted(win)
                out[f"latency_{stage}_ms_median"] = statistics.median(vals)
                out[f"latency_{stage}_ms_p95"] = vals[min(len(vals) - 1, int(0.95 * len(vals)))]
            out["last_reason"], out["last_error"] = self.last_reason, self.last_error
        sent = out["received"] + out["dropped_in_queue"]
        out["drop_rate"] = (out["dropped_in_queue"] + out["dropped_by_node"]) / sent if sent else 0.0
        return out


class SequenceGaps:
    """Messages lost before the callback, from gaps in each publisher's sequence numbers.

    rclpy hands a subscription callback `MessageInfo` with `publication_sequence_number` (Fast DDS fills it:
    1, 2, 3, ... per publisher); a jump from s to s + k means k - 1 messages were written to this subscription
    and never reached it (replaced in the KEEP_LAST queue, or lost on the wire for best effort). The first
    message of a publisher counts no gap (earlier ones were written before we listened). Publishers are kept
    in an LRU of `max_publishers`, so a camera restarting every second does not grow memory."""

    def __init__(self, max_publishers: int = 16) -> None:
        self._last: OrderedDict[bytes, int] = OrderedDict()
        self._max = max_publishers
        self.available = False  # did the middleware give sequence numbers at all?

    def __len__(self) -> int:
        return len(self._last)

    def gap(self, info: Any) -> int:
        """Messages missed just before this one (0 when unknown); call once per received message."""
        seq = (info or {}).get("publication_sequence_number") if isinstance(info, dict) else None
        if not isinstance(seq, int) or seq <= 0:
            return 0
        self.available = True
        key = publisher_key((info or {}).get("publisher_gid"))
        last = self._last.get(key)
        self._last[key] = seq
        self._last.move_to_end(key)
        while len(self._last) > self._max:
            self._last.popitem(last=False)
        return seq - last - 1 if last is not None and seq > last + 1 else 0

    def reset(self) -> None:
        """A new subscription (after re-activation) starts fresh: what was published meanwhile is no loss."""
        self._last.clear()


def publisher_key(gid: Any) -> bytes:
    """A hashable identity for rclpy's `publisher_gid` ({'implementation_identifier', 'data'} or None)."""
    if isinstance(gid, dict):
        gid = gid.get("data")
    try:
        return bytes(gid) if gid is not None else b""
    except (TypeError, ValueError):
        return repr(gid).encode()


_NUMBER = re.compile(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def log_kind(text: str) -> str:
    """The kind of a log line: its text with numbers and quoted values blanked, so 'dropping frame 12.3:
    unsupported encoding 'xq7'' and the same problem on the next frame are one kind."""
    return _NUMBER.sub("#", _QUOTED.sub("'…'", text))


class LogThrottle:
    """At most one line per `period_s` per kind; the next line that passes says how many were suppressed.

    Bad frames arrive at camera rate; one line each filled 10 MB of log in a minute of fuzzing. Kinds are
    kept in an LRU of `max_kinds`, so unusual texts cannot grow memory either."""

    def __init__(self, emit: Callable[[str], None], period_s: float = 5.0, max_kinds: int = 64,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._emit = emit
        self.period_s = period_s
        self._kinds: OrderedDict[str, tuple[float, int]] = OrderedDict()  # kind -> (last emitted, suppressed)
        self._max = max_kinds
        self._clock = clock
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._kinds)

    def __call__(self, text: str, kind: str | None = None) -> bool:
        """Log `text` unless its kind was logged less than period_s ago; True when it was logged."""
        kind = log_kind(text) if kind is None else kind
        now = self._clock()
        with self._lock:
            last, suppressed = self._kinds.get(kind, (-float("inf"), 0))
            if now - last < self.period_s:
                self._kinds[kind] = (last, suppressed + 1)
                return False
            self._kinds[kind] = (now, 0)
            self._kinds.move_to_end(kind)
            while len(self._kinds) > self._max:
                self._kinds.popitem(last=False)
        if suppressed:
            text = f"{text} ({suppressed} similar line(s) suppressed in the last {now - last:.0f} s)"
        self._emit(text)
        return True


def selection_values(sel: Any, selector: Any) -> dict[str, Any]:
    """The encoder choice and the query condition behind it, as /diagnostics keys."""
    q = sel.query
    return {"domain": sel.domain, "domain_reason": sel.reason, "weather": q.weather, "daylight": q.daylight,
            "foliage": q.foliage, "season": q.season,
            "solar_elevation_deg": q.elevation_deg if q.elevation_deg is not None else float("nan"),
            "domain_override": selector.override, "condition_table": selector.table.name}


def status_summary(values: dict[str, Any], active: bool) -> tuple[bool, str]:
    """(warn?, message) of the /diagnostics status: WARN after bad frames or errors, or while frames are
    processed but none localized; an inactive node is OK and says it is not listening."""
    if values.get("map_problem"):  # a corrupt map chunk: no pose is served from it until it is rebuilt
        return True, f"map failed its integrity check: {values['map_problem']}"
    if not active:
        return False, f"{values['state']}: not listening (activate to localize)"
    if values["processed"] and not values["localized"]:
        return True, f"no frame localized yet ({values['last_reason']})"
    if values["errors"] or values["bad_input"]:
        return True, f"{values['bad_input']} bad frames, {values['errors']} errors"
    return False, f"localizing with encoder '{values['domain']}'"


def rss_mb() -> float:
    """Resident memory of this process (MiB), for /diagnostics; NaN where /proc is absent."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20
    except OSError:
        return float("nan")


def process_values() -> dict[str, Any]:
    """What the process is: its resident memory and the software that runs (a fleet's /diagnostics say which)."""
    return {"rss_mb": rss_mb(), "software": SOFTWARE}
