"""Season and foliage of a stamp's date, hemisphere-aware (no ROS, no ephemeris)."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from disam_ros.conditions.vocabulary import DEFAULT_FOLIAGE_BY_MONTH, SEASONS, TROPIC_DEG


def _utc(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, tz=timezone.utc)


def season(stamp: float, latitude: float) -> str:
    """Meteorological season of the stamp's UTC date (DJF = winter in the north, summer in the south)."""
    month = _utc(stamp).month
    if latitude < 0:
        month = (month + 5) % 12 + 1
    return SEASONS[(month % 12) // 3]


def foliage(stamp: float, latitude: float, by_month: Sequence[str] = DEFAULT_FOLIAGE_BY_MONTH) -> str:
    """Foliage class of the stamp's UTC date: table by month (northern), shifted six months south of the
    equator; evergreen (``full``) within the tropics where leaf cover does not follow the calendar."""
    if abs(latitude) < TROPIC_DEG:
        return "full"
    month = _utc(stamp).month
    if latitude < 0:
        month = (month + 5) % 12 + 1
    return by_month[month - 1]

