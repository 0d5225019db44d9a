"""Image file name <-> stamp: `<integer nanoseconds, 20 digits>.png`, the names `disam-bag to-folder` writes.

Why integer nanoseconds: ROS stamps are (sec, nanosec) integers, and a float64 of a wall-clock stamp
(~1.7e9 s) cannot hold a nanosecond (its resolution there is ~240 ns), so a name made from `stamp * 1e9`
or parsed with `ns * 1e-9` drifts by tens of nanoseconds and two tools disagree about the same frame.
Here every conversion is exact: floats go through their exact binary value (`Fraction`), and nanoseconds
come back as the correctly rounded float (Python's int / int true division). 20 digits hold any uint64
nanosecond count, so names sort in time order as plain text.

Round trips: integer nanoseconds -> name -> nanoseconds is always exact. A float stamp -> name -> float
is exact for every stamp from 2**23 s (97 days after 1970: all wall-clock stamps) on, and within one
nanosecond below that (a double there resolves finer than a name can hold).

Names are also read in decimal-seconds form (`1305031102.175304.png`, as TUM RGB-D and many recorders
write them); other names (`000017.png`, a frame index) carry no stamp.
"""
from __future__ import annotations

import math
import numbers
import re
from fractions import Fraction
from pathlib import PurePath

NS_PER_S = 1_000_000_000
DIGITS = 20
MAX_NS = 10**DIGITS - 1
# The latest stamp a ROS message can carry: builtin_interfaces/Time is (int32 sec, uint32 nanosec), so a later
# one wraps to a negative second when a message is made from it (2**70 ns went out as -524385683 s).
MAX_ROS_TIME_S = 2**31  # exclusive: 2038-01-19 03:14:08 UTC
MAX_ROS_TIME_NS = MAX_ROS_TIME_S * NS_PER_S - 1
SUFFIX = ".png"
_NS_STEM = re.compile(r"^\d{20}$")
_SECONDS_STEM = re.compile(r"^(\d{1,11})\.(\d{1,9})$")


def stamp_to_ns(stamp: float) -> int:
    """Seconds -> the nearest integer nanosecond of the stamp's exact value (ties to even)."""
    if isinstance(stamp, bool) or not isinstance(stamp, numbers.Real):
        raise TypeError(f"stamp {stamp!r} must be a number of seconds; pass a float (or use name_for_stamp_ns)")
    if isinstance(stamp, numbers.Integral):
        exact = Fraction(int(stamp))
    elif math.isfinite(float(stamp)):
        exact = Fraction(float(stamp))  # the double's exact binary value: no rounding before the one below
    else:
        exact = Fraction(-1)
    if exact < 0:
        raise ValueError(f"stamp {stamp!r} s cannot name a file; pass a finite stamp >= 0 (seconds since 1970)")
    return _checked_ns(round(exact * NS_PER_S))


def ns_to_stamp(ns: int) -> float:
    """Nanoseconds -> seconds, correctly rounded (not `ns * 1e-9`, which can be off by one ulp)."""
    return _checked_ns(ns) / NS_PER_S


def name_for_stamp(stamp: float, suffix: str = SUFFIX) -> str:
    """`01700000000123456789.png` for 1700000000.123456789 s (see the module doc for the exact round trip)."""
    return name_for_stamp_ns(stamp_to_ns(stamp), suffix)


def name_for_stamp_ns(ns: int, suffix: str = SUFFIX) -> str:
    """The file name of a frame stamped `ns` nanoseconds (ROS sec * 1e9 + nanosec)."""
    if suffix and not suffix.startswith("."):
        raise ValueError(f"suffix {suffix!r} must start with a dot, e.g. '.png'")
    return f"{_checked_ns(ns):0{DIGITS}d}{suffix}"


def stamp_ns_from_name(name: str | PurePath) -> int | None:
    """Nanoseconds a file name encodes (20-digit or decimal-seconds stem), else None; directories ignored."""
    stem = _stem(name)
    if _NS_STEM.match(stem):
        return int(stem)
    hit = _SECONDS_STEM.match(stem)
    if hit:
        return int(hit.group(1)) * NS_PER_S + int(hit.group(2).ljust(9, "0"))
    return None


def stamp_from_name(name: str | PurePath) -> float | None:
    """Seconds a file name encodes (correctly rounded from its nanoseconds), else None."""
    ns = stamp_ns_from_name(name)
    return None if ns is None else ns / NS_PER_S


def _stem(name: str | PurePath) -> str:
    """The name without folders and without its (one) image suffix; a bare stem is accepted as well."""
    base = PurePath(name).name
    if _NS_STEM.match(base) or _SECONDS_STEM.match(base):
        return base
    return base.rsplit(".", 1)[0] if "." in base else base


def _checked_ns(ns: int) -> int:
    if isinstance(ns, bool) or not isinstance(ns, numbers.Integral):
        raise TypeError(f"nanoseconds {ns!r} must be an integer; pass seconds to name_for_stamp instead")
    if not 0 <= int(ns) <= MAX_NS:
        raise ValueError(f"stamp {int(ns)} ns is outside 0..{MAX_NS}; pass nanoseconds since 1970")
    return int(ns)
