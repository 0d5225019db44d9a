"""Capture conditions of the synthetic world and the light/weather parameters each one renders with.

A condition is what a dataset would label a traversal with (CMU-Seasons style: weather, daylight,
foliage, date). Its `Look` is derived from those labels plus the real sun position at the capture
time, so shadows, sky and stamps never contradict each other.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from disam_ros.data.synthetic.sun import (
    evening_time_at_elevation,
    local_to_utc_seconds,
    sun_elevation_azimuth,
    sun_vector_enu,
)

WEATHERS = ("sunny", "overcast", "cloudy", "rain", "snow", "fog")
DAYLIGHTS = ("day", "low_sun", "twilight", "night")
FOLIAGES = ("none", "mixed", "full")


@dataclass(frozen=True)
class Condition:
    """Labels and capture date of one traversal; `local_time` None means 'when the sun is at sun_elev_deg'."""

    name: str
    weather: str
    daylight: str
    foliage: str
    date: str
    local_time: str | None = None
    sun_elev_deg: float | None = None

    def start_utc(self, lat: float, lon: float, tz: dt.tzinfo) -> float:
        if self.local_time is not None:
            return local_to_utc_seconds(self.date, self.local_time, tz)
        return evening_time_at_elevation(self.date, float(self.sun_elev_deg), lat, lon, tz)


# Reference = "sunny + no foliage" as in CMU-Seasons; the others change light, weather and season.
CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in (
        Condition("sunny", "sunny", "day", "none", "2011-04-04", "11:40"),
        Condition("sunny_repeat", "sunny", "day", "none", "2011-04-05", "11:50"),
        Condition("overcast", "overcast", "day", "full", "2011-09-01", "14:10"),
        Condition("dusk", "sunny", "low_sun", "none", "2011-04-12", sun_elev_deg=4.0),
        Condition("night", "cloudy", "night", "none", "2011-11-15", "23:00"),
        Condition("snow", "snow", "day", "none", "2011-01-18", "13:10"),
        Condition("fog", "fog", "day", "mixed", "2011-10-12", "08:40"),
        Condition("rain", "rain", "day", "full", "2011-06-16", "16:30"),
        Condition("summer", "sunny", "day", "full", "2011-07-20", "13:15"),
        Condition("autumn", "cloudy", "day", "mixed", "2011-10-21", "11:50"),
    )
}
REFERENCE = "sunny"


def get_condition(name: str) -> Condition:
    try:
        return CONDITIONS[name]
    except KeyError:
        raise ValueError(f"unknown condition '{name}'; valid: {', '.join(CONDITIONS)}") from None


def _rgb(*v: float) -> np.ndarray:
    return np.array(v, dtype=np.float32)


@dataclass(frozen=True)
class Look:
    """Linear-light rendering parameters; colours are linear RGB, strengths are multipliers."""

    sun_dir: np.ndarray
    sun_rgb: np.ndarray
    ambient_rgb: np.ndarray
    zenith_rgb: np.ndarray
    horizon_rgb: np.ndarray
    cloud_cover: float
    cloud_rgb: np.ndarray
    haze_beta: float
    haze_rgb: np.ndarray
    exposure: float
    shadow: float
    lamps: float = 0.0
    lit_windows: float = 0.0
    headlights: float = 0.0
    noise: float = 1.0
    wet: float = 0.0
    snow: float = 0.0
    rain_streaks: int = 0
    flakes: int = 0


def make_look(cond: Condition, utc: float, lat: float, lon: float) -> Look:
    """Map labels + true sun position to light; values tuned by eye on the contact sheet."""
    elev, az = sun_elevation_azimuth(utc, lat, lon)
    sun_dir = sun_vector_enu(max(elev, 1.0), az).astype(np.float32)
    low = float(np.clip((12.0 - elev) / 10.0, 0.0, 1.0))  # 1 for a sun near the horizon
    sun_col = (1 - low) * _rgb(1.0, 0.93, 0.82) + low * _rgb(1.0, 0.5, 0.2)
    zen = (1 - low) * _rgb(0.10, 0.24, 0.62) + low * _rgb(0.10, 0.13, 0.34)
    hor = (1 - low) * _rgb(0.55, 0.68, 0.85) + low * _rgb(1.0, 0.50, 0.24)
    w, d = cond.weather, cond.daylight
    base = dict(sun_dir=sun_dir, zenith_rgb=zen, horizon_rgb=hor, cloud_rgb=_rgb(0.9, 0.9, 0.92))
    if d == "night" or elev < -6.0:
        return Look(**{**base, "zenith_rgb": _rgb(0.003, 0.004, 0.009), "horizon_rgb": _rgb(0.035, 0.025, 0.02),
                       "cloud_rgb": _rgb(0.025, 0.018, 0.015)},
                    sun_rgb=_rgb(0, 0, 0), ambient_rgb=_rgb(0.008, 0.009, 0.014), cloud_cover=0.6,
                    haze_beta=0.012, haze_rgb=_rgb(0.012, 0.01, 0.009), exposure=0.6, shadow=0.0, lamps=1.0,
                    lit_windows=0.45, headlights=1.0, noise=7.0)
    if w in ("sunny", "cloudy"):
        cloudy = w == "cloudy"
        sun = sun_col * ((1.1 if cloudy else 1.5) * (1 - 0.45 * low))
        amb = (1 - low) * _rgb(0.28, 0.34, 0.45) + low * _rgb(0.24, 0.2, 0.28)
        return Look(**base, sun_rgb=sun, ambient_rgb=amb * (1.4 if cloudy else 1.0),
                    cloud_cover=0.55 if cloudy else 0.12, haze_beta=0.004, haze_rgb=hor * 0.9,
                    exposure=1.0 + 0.5 * low, shadow=0.55 if cloudy else 0.9, lamps=0.6 * low,
                    lit_windows=0.15 * low, noise=1.0 + 1.5 * low)
    grey = {"overcast": _rgb(0.62, 0.64, 0.68), "rain": _rgb(0.36, 0.38, 0.42),
            "snow": _rgb(0.78, 0.80, 0.84), "fog": _rgb(0.70, 0.71, 0.72)}[w]
    return Look(**{**base, "zenith_rgb": grey * 0.92, "horizon_rgb": grey * 1.05, "cloud_rgb": grey},
                sun_rgb=_rgb(0, 0, 0), ambient_rgb=grey * (1.45 if w != "rain" else 1.35), cloud_cover=1.0,
                haze_beta={"overcast": 0.007, "rain": 0.02, "snow": 0.022, "fog": 0.07}[w], haze_rgb=grey,
                exposure={"overcast": 1.0, "rain": 1.05, "snow": 0.85, "fog": 1.0}[w], shadow=0.0,
                lamps=0.3 if w == "rain" else 0.0, headlights=0.4 if w == "rain" else 0.0,
                noise=2.0 if w == "rain" else 1.0, wet=1.0 if w == "rain" else 0.0,
                snow=1.0 if w == "snow" else 0.0, rain_streaks=260 if w == "rain" else 0,
                flakes=420 if w == "snow" else 0)
