"""The fitted confidence record a map stores: raw tracker score -> P(answer within tolerance).

Why here and not beside the fitting code (`disam_ros.tracking.calibration`): the record is part of the map
format (`calibration.json`, one per tracker mode), so loading and verifying a map must be able to parse and
check it without the tracker. Only the record, its JSON form and its evaluation live here.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CALIBRATION_VERSION = 1
KINDS = ("isotonic", "logistic")
# The tracker modes a map can hold a fit for (the filter, the window matcher, single frames).
SEQUENCE_MODES = ("sequence", "window", "single")
# The raw features a fit may map, per mode (the Tracker's candidates; `extra.feature_key` names one).
FEATURE_KEYS = {"single": ("distinctiveness",), "sequence": ("support", "mass"), "window": ("support", "mass")}


@dataclass(frozen=True)
class Calibration:
    """score -> probability. isotonic: step function over `x` (block starts) and `y` (block values);
    logistic: `a`, `b`. tolerance: what 'correct' meant when it was fitted (m, deg)."""

    kind: str
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 0.0
    b: float = 0.0
    mode: str = ""
    tolerance: tuple[float, float] = (5.0, 10.0)
    samples: int = 0
    extra: dict = field(default_factory=dict)
    version: int = CALIBRATION_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"calibration kind {self.kind!r} is unknown: use one of {list(KINDS)}")

    def apply(self, scores: np.ndarray | float) -> np.ndarray:
        """Probabilities for raw scores (same shape). An isotonic fit answers 0 below the lowest score it saw
        (and for NaN): nothing was observed there, and extending its lowest block downwards would make a
        one-block fit (every calibration frame right) promise a sure answer for any score at all."""
        s = np.asarray(scores, dtype=np.float64)
        if self.kind == "logistic":
            return 1.0 / (1.0 + np.exp(-(self.a * s + self.b)))
        xs, ys = np.asarray(self.x), np.asarray(self.y)
        i = np.searchsorted(xs, s, side="right") - 1
        return np.where((i >= 0) & ~np.isnan(s), ys[np.clip(i, 0, len(xs) - 1)], 0.0)

    def feature_key(self, default: str) -> str:
        """The raw feature this fit maps (`choose_bounded`); fits made before the choice existed name none and
        mapped the mode's `default`."""
        return str(self.extra.get("feature_key") or default)

    def to_dict(self) -> dict:
        return {"version": self.version, "kind": self.kind, "x": list(self.x), "y": list(self.y), "a": self.a,
                "b": self.b, "mode": self.mode, "tolerance": list(self.tolerance), "samples": self.samples,
                "extra": dict(self.extra)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> Calibration:
        """Strict about types: numbers are finite numbers (no strings, no bools), lists are lists; a ValueError
        names the field (prefixed by `where`, e.g. 'modes.sequence.'). What the values may be for a map to use
        them (a non-decreasing fit, probabilities, the covariance scale) is `map_calibration`'s check."""
        if not isinstance(d, dict) or type(d.get("version", -1)) is not int or d.get("version") != CALIBRATION_VERSION:
            got = d.get("version") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"calibration version {got!r} is not {CALIBRATION_VERSION}: refit it with disam-calibrate")
        kind = d.get("kind")
        if kind not in KINDS:
            raise ValueError(f"field {where}kind is {kind!r}: must be one of {list(KINDS)}")
        samples = d.get("samples", 0)
        if type(samples) is not int or samples < 0:
            raise ValueError(f"field {where}samples is {samples!r}: must be a whole number >= 0")
        extra = d.get("extra", {})
        if not isinstance(extra, dict):
            raise ValueError(f"field {where}extra holds {type(extra).__name__}, not an object")
        mode = d.get("mode", "")
        if not isinstance(mode, str):
            raise ValueError(f"field {where}mode is {mode!r}: must be a string")
        return cls(kind=kind, x=_numbers(d.get("x", []), f"{where}x"), y=_numbers(d.get("y", []), f"{where}y"),
                   a=_numbers([d.get("a", 0.0)], f"{where}a")[0], b=_numbers([d.get("b", 0.0)], f"{where}b")[0],
                   mode=mode, tolerance=_numbers(d.get("tolerance", [5.0, 10.0]), f"{where}tolerance", 2),
                   samples=samples, extra=dict(extra))

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        return cls.from_dict(json.loads(text))


def _numbers(value: Any, name: str, length: int | None = None) -> tuple[float, ...]:
    """A JSON list of finite numbers (not bools, not strings) as floats, else ValueError naming the field."""
    if not isinstance(value, list) or (length is not None and len(value) != length):
        what = f"a list of {length} numbers" if length is not None else "a list of numbers"
        raise ValueError(f"field {name} is {str(value)[:40]!r}: must be {what}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"field {name} holds {v!r}: every value must be a finite number")
    return tuple(float(v) for v in value)


__all__ = ["CALIBRATION_VERSION", "FEATURE_KEYS", "KINDS", "SEQUENCE_MODES", "Calibration"]
