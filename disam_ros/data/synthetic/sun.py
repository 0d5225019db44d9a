"""Sun position and capture times, so a traversal's stamps, its light and its condition agree.

A night traversal must be stamped when the sun is really down at the world's latitude/longitude, and
the sunny one's shadows must fall where the sun really was. The sun comes from the same NOAA ephemeris the
localizer node uses to classify daylight (disam_ros.conditions), so the two always agree.
"""
from __future__ import annotations

import datetime as dt
import math
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from disam_ros.conditions import solar_position


def sun_elevation_azimuth(utc_seconds: float, lat_deg: float, lon_deg: float) -> tuple[float, float]:
    """(elevation, azimuth) in degrees; azimuth clockwise from north (east = 90)."""
    return solar_position(utc_seconds, lat_deg, lon_deg)


def sun_vector_enu(elev_deg: float, az_deg: float) -> np.ndarray:
    """Unit vector towards the sun in the map frame (x east, y north, z up)."""
    e, a = math.radians(elev_deg), math.radians(az_deg)
    return np.array([math.sin(a) * math.cos(e), math.cos(a) * math.cos(e), math.sin(e)])


def local_zone(name: str, lon_deg: float) -> dt.tzinfo:
    """The named IANA zone; without a tz database, the longitude's nominal standard-time offset."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.timezone(dt.timedelta(hours=round(lon_deg / 15.0)))


def local_to_utc_seconds(date: str, hhmm: str, tz: dt.tzinfo) -> float:
    """'2011-04-04', '11:30' local wall-clock time -> UTC seconds since the epoch."""
    stamp = dt.datetime.fromisoformat(f"{date}T{hhmm}").replace(tzinfo=tz)
    return stamp.timestamp()


def evening_time_at_elevation(date: str, elev_deg: float, lat: float, lon: float, tz: dt.tzinfo) -> float:
    """UTC seconds when the afternoon sun sinks through `elev_deg` on that local date (bisection)."""
    lo = local_to_utc_seconds(date, "12:00", tz)
    hi = lo + 12 * 3600.0
    if sun_elevation_azimuth(hi, lat, lon)[0] > elev_deg:
        raise ValueError(f"sun never sinks to {elev_deg} deg on {date} at {lat:.2f},{lon:.2f}: pick another date")
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if sun_elevation_azimuth(mid, lat, lon)[0] > elev_deg:
            lo = mid
        else:
            hi = mid
    return round(0.5 * (lo + hi))


def iso_local(utc_seconds: float, tz: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(utc_seconds, tz).isoformat(timespec="seconds")
