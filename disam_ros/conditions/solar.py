"""Solar ephemeris (NOAA algorithm) and the daylight classes of the selector (see the package docstring).

The one ephemeris of the package: the node's daylight classes and the synthetic world's light both use it."""
from __future__ import annotations

import math
from collections.abc import Mapping

SUNRISE_ELEVATION_DEG = -0.833  # almanac horizon: 34' refraction + 16' solar semidiameter
DEFAULT_THRESHOLDS_DEG = {"day": 10.0, "low_sun": SUNRISE_ELEVATION_DEG, "twilight": -12.0}


def _julian_century(stamp: float) -> float:
    return (stamp / 86400.0 + 2440587.5 - 2451545.0) / 36525.0


def _sun_terms(T: float) -> tuple[float, float]:
    """Declination (deg) and equation of time (minutes) at Julian century T (NOAA spreadsheet terms)."""
    L0 = (280.46646 + T * (36000.76983 + T * 0.0003032)) % 360.0
    M = 357.52911 + T * (35999.05029 - 0.0001537 * T)
    e = 0.016708634 - T * (0.000042037 + 0.0000001267 * T)
    Mr = math.radians(M)
    C = (math.sin(Mr) * (1.914602 - T * (0.004817 + 0.000014 * T))
         + math.sin(2 * Mr) * (0.019993 - 0.000101 * T) + math.sin(3 * Mr) * 0.000289)
    omega = math.radians(125.04 - 1934.136 * T)
    lam = math.radians(L0 + C - 0.00569 - 0.00478 * math.sin(omega))
    eps0 = 23.0 + (26.0 + (21.448 - T * (46.815 + T * (0.00059 - T * 0.001813))) / 60.0) / 60.0
    eps = math.radians(eps0 + 0.00256 * math.cos(omega))
    decl = math.degrees(math.asin(math.sin(eps) * math.sin(lam)))
    y = math.tan(eps / 2) ** 2
    L0r = math.radians(L0)
    eot = 4.0 * math.degrees(
        y * math.sin(2 * L0r) - 2 * e * math.sin(Mr) + 4 * e * y * math.sin(Mr) * math.cos(2 * L0r)
        - 0.5 * y * y * math.sin(4 * L0r) - 1.25 * e * e * math.sin(2 * Mr)
    )
    return decl, eot


def _check_latlon(latitude: float, longitude: float) -> None:
    if not (math.isfinite(latitude) and -90.0 <= latitude <= 90.0):
        raise ValueError(f"latitude {latitude} is out of range: give degrees north in [-90, 90]")
    if not (math.isfinite(longitude) and -180.0 <= longitude <= 180.0):
        raise ValueError(f"longitude {longitude} is out of range: give degrees east in [-180, 180]")


def solar_elevation(stamp: float, latitude: float, longitude: float, refraction: bool = False) -> float:
    """Solar elevation in degrees at UTC `stamp` (s) seen from (latitude N, longitude E) in degrees.

    NOAA solar position algorithm (Meeus-based, ~0.01 deg for years 1800-2100). Geometric by default, since
    the daylight thresholds (sunrise at -0.833 deg) already include refraction; `refraction=True` adds
    NOAA's atmospheric refraction model (apparent elevation).
    """
    elev = solar_position(stamp, latitude, longitude)[0]
    if refraction:
        elev += _refraction_deg(elev)
    return elev


def solar_position(stamp: float, latitude: float, longitude: float) -> tuple[float, float]:
    """(geometric elevation, azimuth) of the sun in degrees; azimuth clockwise from north (east = 90).

    The one ephemeris of the package: the node's daylight classes and the synthetic world's light and
    capture times both come from here, so a rendered night is a night to the condition selector too.
    """
    _check_latlon(latitude, longitude)
    decl, eot = _sun_terms(_julian_century(stamp))
    minutes = (stamp % 86400.0) / 60.0
    tst = (minutes + eot + 4.0 * longitude) % 1440.0
    ha = math.radians(tst / 4.0 - 180.0)
    lat, dec = math.radians(latitude), math.radians(decl)
    cos_zen = math.sin(lat) * math.sin(dec) + math.cos(lat) * math.cos(dec) * math.cos(ha)
    elev = 90.0 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zen))))
    az = math.degrees(math.atan2(-math.sin(ha), math.tan(dec) * math.cos(lat) - math.sin(lat) * math.cos(ha)))
    return elev, az % 360.0


def _refraction_deg(e: float) -> float:
    if e > 85.0:
        return 0.0
    t = math.tan(math.radians(e))
    if e > 5.0:
        arcsec = 58.1 / t - 0.07 / t**3 + 0.000086 / t**5
    elif e > -0.575:
        arcsec = 1735.0 + e * (-518.2 + e * (103.4 + e * (-12.79 + e * 0.711)))
    else:
        arcsec = -20.774 / t
    return arcsec / 3600.0


def sun_times(stamp: float, latitude: float, longitude: float,
              elevation_deg: float = SUNRISE_ELEVATION_DEG) -> tuple[float | None, float | None]:
    """UTC stamps of the sun crossing `elevation_deg` upward (sunrise) and downward (sunset).

    The day is the UTC calendar day of `stamp` shifted by the longitude (so it is the local solar day).
    Iterates the NOAA hour-angle formula twice, re-evaluating declination at the event (within ~1 min of
    almanac values outside the polar circles). Returns (None, None) in polar day or night.
    """
    _check_latlon(latitude, longitude)
    # Local solar midnight that starts the day containing the local solar time of `stamp`.
    local_day = math.floor((stamp + longitude * 240.0) / 86400.0)
    day_start = local_day * 86400.0 - longitude * 240.0
    out: list[float | None] = []
    for sign in (-1.0, 1.0):
        t = day_start + 43200.0
        ok = True
        for _ in range(3):
            decl, eot = _sun_terms(_julian_century(t))
            lat, dec = math.radians(latitude), math.radians(decl)
            cos_ha = ((math.sin(math.radians(elevation_deg)) - math.sin(lat) * math.sin(dec))
                      / (math.cos(lat) * math.cos(dec)))
            if not -1.0 <= cos_ha <= 1.0:
                ok = False
                break
            ha = math.degrees(math.acos(cos_ha))
            noon_min = 720.0 - 4.0 * longitude - eot  # UTC minutes after the UTC midnight of this day
            utc_midnight = math.floor((day_start + 43200.0) / 86400.0) * 86400.0
            t = utc_midnight + 60.0 * (noon_min + sign * 4.0 * ha)
        out.append(t if ok else None)
    return out[0], out[1]


def daylight_class(elevation_deg: float, thresholds: Mapping[str, float] | None = None) -> str:
    """Map a geometric solar elevation (deg) to day / low_sun / twilight / night (see module table)."""
    th = {**DEFAULT_THRESHOLDS_DEG, **(thresholds or {})}
    if elevation_deg >= th["day"]:
        return "day"
    if elevation_deg >= th["low_sun"]:
        return "low_sun"
    if elevation_deg >= th["twilight"]:
        return "twilight"
    return "night"

