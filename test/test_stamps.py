"""Stamp <-> file name: exact in nanoseconds, no float drift, and folders read stamps from such names.

The expected values are computed with `decimal` at 60 digits (exact here), not with the module's own
Fraction arithmetic.
"""
from __future__ import annotations

import random
import struct
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import cv2
import numpy as np
import pytest

from disam_ros.data.folders import iter_frames, load_condition
from disam_ros.data.stamps import (
    name_for_stamp,
    name_for_stamp_ns,
    ns_to_stamp,
    stamp_from_name,
    stamp_ns_from_name,
    stamp_to_ns,
)
from disam_ros.data.tum import make_trajectory, write_tum

RNG = random.Random(12)


def exact_ns(x: float) -> int:
    """Nearest nanosecond of the double's exact value, ties to even, in decimal."""
    with localcontext() as ctx:
        ctx.prec = 60
        return int((Decimal(x) * 10**9).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def exact_seconds(ns: int) -> float:
    """The double nearest to ns / 1e9 (Decimal -> float conversion is correctly rounded)."""
    with localcontext() as ctx:
        ctx.prec = 60
        return float(Decimal(ns) / Decimal(10**9))


def random_double(lo: float, hi: float) -> float:
    """A double with random low mantissa bits (uniform() alone rarely exercises the last bits)."""
    x = RNG.uniform(lo, hi)
    bits = struct.unpack("<Q", struct.pack("<d", x))[0] ^ RNG.getrandbits(20)
    return min(max(struct.unpack("<d", struct.pack("<Q", bits))[0], lo), hi)


def test_the_name_format_is_the_one_bags_have_always_been_exported_with():
    assert name_for_stamp_ns(1_700_000_000_123_456_789) == "01700000000123456789.png"
    assert name_for_stamp_ns(0, ".jpg") == "00000000000000000000.jpg"
    assert stamp_ns_from_name("01700000000123456789.png") == 1_700_000_000_123_456_789


def test_nanoseconds_round_trip_exactly_and_names_sort_in_time_order():
    ns = [RNG.randrange(0, 2**64) for _ in range(5000)] + [0, 2**64 - 1, 10**20 - 1]
    names = [name_for_stamp_ns(n) for n in ns]
    assert [stamp_ns_from_name(n) for n in names] == ns
    assert sorted(names) == [name_for_stamp_ns(n) for n in sorted(ns)]


def test_wall_clock_float_stamps_round_trip_exactly():
    # from 2**23 s on, a double cannot resolve 1 ns, so name -> float gives back the very same double
    stamps = [random_double(2.0**23, 4.2e9) for _ in range(20000)] + [1700000000.123456789, 2.0**23]
    for x in stamps:
        name = name_for_stamp(x)
        assert int(name[:20]) == exact_ns(x), x
        assert stamp_from_name(name) == x, (x, name)


def test_small_stamps_are_exact_to_the_nanosecond():
    for x in [random_double(0.0, 2.0**23) for _ in range(5000)] + [0.0, 1e-10, 0.5e-9, 1.5e-9]:
        ns = stamp_to_ns(x)
        assert ns == exact_ns(x), x
        assert abs(Decimal(stamp_from_name(name_for_stamp(x))) - Decimal(x)) < Decimal("1e-9")


def test_nanoseconds_become_the_correctly_rounded_float_unlike_times_1e_minus_9():
    ns = [RNG.randrange(10**18, 2 * 10**18) for _ in range(20000)]
    got = [ns_to_stamp(n) for n in ns]
    assert got == [exact_seconds(n) for n in ns]
    assert any(n * 1e-9 != g for n, g in zip(ns, got))  # the shortcut bags used drifts by an ulp
    assert [stamp_from_name(name_for_stamp_ns(n)) for n in ns[:500]] == got[:500]


@pytest.mark.parametrize("name,ns", [
    ("1305031102.175304.png", 1_305_031_102_175_304_000),  # TUM RGB-D style decimal seconds
    ("/data/run/images/1305031102.5.jpg", 1_305_031_102_500_000_000),
    ("12.000000001", 12_000_000_001),
    ("01700000000123456789", 1_700_000_000_123_456_789),
    ("000017.png", None),  # a frame index, not a stamp
    ("img_0001.png", None),
    ("1700000000123456789.png", None),  # 19 digits: not our 20-digit form
    ("12.1234567891.png", None),  # finer than a nanosecond
])
def test_names_that_carry_a_stamp_and_names_that_do_not(name, ns):
    assert stamp_ns_from_name(name) == ns
    assert stamp_from_name(name) == (None if ns is None else exact_seconds(ns))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), 1e12, "1.5", True])
def test_stamps_that_cannot_name_a_file_are_one_line_errors(bad):
    with pytest.raises((ValueError, TypeError)) as err:
        name_for_stamp(bad)
    assert "\n" not in str(err.value) and ("pass" in str(err.value))


def test_integer_and_numpy_inputs():
    assert name_for_stamp(np.float64(2.5)) == name_for_stamp(2.5) == "00000000002500000000.png"
    assert name_for_stamp(np.float32(1.5)) == "00000000001500000000.png"
    assert name_for_stamp(10**10) == "10000000000000000000.png"  # int seconds, no float rounding
    assert name_for_stamp_ns(np.int64(7)) == "00000000000000000007.png"
    with pytest.raises(TypeError, match="must be an integer"):
        name_for_stamp_ns(7.0)
    with pytest.raises(ValueError, match="must start with a dot"):
        name_for_stamp_ns(7, "png")


def _folder(root, names, poses: bool):
    images = root / "drive" / "images"
    images.mkdir(parents=True)
    for n in names:
        cv2.imwrite(str(images / n), np.full((4, 4, 3), 100, np.uint8))
    if poses:
        k = len(names)
        write_tum(root / "drive" / "poses.txt", make_trajectory(np.arange(k) + 5.0, np.zeros((k, 3)),
                                                                np.tile([0, 0, 0, 1.0], (k, 1))))
    return load_condition(root, "drive")


def test_an_unposed_folder_takes_its_stamps_from_stamp_names(tmp_path):
    ns = [1_700_000_000_000_000_001, 1_700_000_000_100_000_002]
    folder = _folder(tmp_path / "a", [name_for_stamp_ns(n) for n in ns], poses=False)
    assert [f.stamp for f in iter_frames(folder)] == [exact_seconds(n) for n in ns]
    plain = _folder(tmp_path / "b", ["000000.png", "000001.png"], poses=False)
    assert [f.stamp for f in iter_frames(plain)] == [None, None]
    posed = _folder(tmp_path / "c", [name_for_stamp_ns(n) for n in ns], poses=True)
    assert [f.stamp for f in iter_frames(posed)] == [5.0, 6.0]  # poses.txt stays the ground truth
