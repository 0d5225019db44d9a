"""The calibration a map carries: `calibration.json`, listed in the manifest with its sha256 like every file.

Why in the map: a calibrated confidence is a property of (map, models, tracker settings); kept beside the
map it travels with it, is checked with it, and disappears when the map is rebuilt (a new map needs a new
calibration). It holds, per tracker mode, the isotonic fit of "answer within tolerance" against that mode's
raw confidence feature, the `min_confidence` chosen on the calibration drives (the lowest threshold whose
published set reached the precision target there), the observation model estimated from the map, and
what it was fitted on and with which settings.

Written by `disam-calibrate` in three atomic steps, each leaving a valid map (crash-safe): drop the old
entry from the manifest, write calibration.json, list it with its sha256. A file the manifest does not list
is ignored; a listed one that is corrupt, of another version or inconsistent refuses the whole map (one
line naming the file and the fix), like any other corrupt map file.

Also here, as the pure helpers around it: the observation model's estimate from a map (bounded cost, for
maps without a stored one), a calibration's probability for a raw feature, and the publishing threshold
the node and disam-eval share.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.fsutil import atomic_write_text, remove
from disam_ros.maps.confidence_fit import FEATURE_KEYS, SEQUENCE_MODES, Calibration
from disam_ros.maps.map_format import CALIBRATION_JSON, MANIFEST, file_record, map_error, read_manifest
from disam_ros.maps.observation import ObservationModel
from disam_ros.maps.verified_confidence import check_record

log = logging.getLogger(__name__)

MAP_CALIBRATION_VERSION = 1
OBSERVATION_CELL_BUDGET = 4_000_000  # rows x places of the map-against-map scores estimated at load
OBSERVATION_MAX_ROWS = 512
COVARIANCE_SCALE_RANGE = (1e-3, 1e3)  # a fit's position covariance factor (see MapCalibration.from_dict)
_FIX = "re-run disam-calibrate on the map (or disam-calibrate --remove to drop the calibration)"


@dataclass(frozen=True, eq=False)
class MapCalibration:
    """Per mode: a Calibration and the threshold chosen on the calibration drives (None: none reached the
    precision target there). `config`: the tracker settings it was fitted with; `stats`: what the fit saw."""

    modes: dict[str, Calibration]
    min_confidence: dict[str, float | None]
    tolerance: tuple[float, float] = (5.0, 10.0)
    observation: ObservationModel | None = None
    precision_target: float = 0.99
    fitted: str = ""  # UTC ISO time
    source: str = ""  # the calibration drives
    config: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    version: int = MAP_CALIBRATION_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "fitted": self.fitted, "source": self.source,
                "tolerance": list(self.tolerance), "precision_target": self.precision_target,
                "modes": {m: c.to_dict() for m, c in self.modes.items()},
                "min_confidence": {m: finite_or_none(t) for m, t in self.min_confidence.items()},
                "observation": None if self.observation is None else self.observation.to_dict(),
                "config": self.config, "stats": self.stats}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, d: Any) -> MapCalibration:
        """THE check of calibration.json's content (the loader, `disam-map-info --verify` through the loader,
        and `write_calibration` before writing all run it): every field is typed, finite and within what
        `disam-calibrate` can produce, else a ValueError naming the field and what it must be (the loader
        makes it one line naming the file and the fix). Bounds, and why:

        * modes.<m>: an isotonic fit is strictly increasing block starts `x` (finite) with non-decreasing
          probabilities `y` in [0, 1] (PAV makes a non-decreasing step function); a logistic one has finite
          `a` >= 0 (non-decreasing, like every fit of a score monotone in correctness) and finite `b`;
          `samples` >= 0; `tolerance` two positive numbers;
        * modes.<m>.extra.covariance_scale (absent: 1): in [1e-3, 1e3]. `disam-calibrate` sets it to the right
          answers' mean NEES / 3, which rescales the filter's own spread (never tighter than 5 cm a side);
          a factor beyond 1000 either way (about 32 in sigma) is no filter's error, and 1e-12 published
          variances of 7.5e-12 m^2 on poses 5 m wrong;
        * modes.<m>.extra.feature_key (absent: the mode's default): one of the tracker's features for the mode;
        * modes.<m>.extra.verified (absent: verified frames keep the retrieval's confidence): inlier bins from 0
          with one non-decreasing probability each (`verified_confidence.check_record`);
        * min_confidence.<m>: a probability in [0, 1] or null, for a mode listed in modes;
        * tolerance: [metres, degrees], both positive; precision_target in (0, 1);
        * observation: see `ObservationModel.from_dict` (gain in [1e-4, 10], wrong_scale in [1e-6, 3], ...);
        * fitted, source: strings; config, stats: objects."""
        if not isinstance(d, dict):
            raise ValueError(f"holds {type(d).__name__}, not an object")
        if type(d.get("version")) is not int or d["version"] != MAP_CALIBRATION_VERSION:
            raise ValueError(f"has version {d.get('version')!r}, this software reads {MAP_CALIBRATION_VERSION}")
        modes = d.get("modes")
        if not isinstance(modes, dict) or not modes or not set(modes) <= set(SEQUENCE_MODES):
            raise ValueError(f"field modes must map some of {list(SEQUENCE_MODES)} to fits")
        cals = {m: _check_fit(m, Calibration.from_dict(c, f"modes.{m}.")) for m, c in modes.items()}
        thr = d.get("min_confidence", {})
        if not (isinstance(thr, dict) and set(thr) <= set(modes) and all(t is None or _prob(t) for t in thr.values())):
            raise ValueError("field min_confidence must map modes of the fit to probabilities in [0, 1] or null")
        tol = d.get("tolerance")
        if not (isinstance(tol, list) and len(tol) == 2 and all(_num(x) and x > 0 for x in tol)):
            raise ValueError(f"field tolerance is {tol!r}, expected [metres, degrees]")
        target = d.get("precision_target", 0.99)
        if not (_num(target) and 0.0 < target < 1.0):
            raise ValueError(f"field precision_target is {target!r}: must be a number in (0, 1)")
        for name in ("fitted", "source"):
            if not isinstance(d.get(name, ""), str):
                raise ValueError(f"field {name} is {d[name]!r}: must be a string")
        for name in ("config", "stats"):
            if not isinstance(d.get(name) or {}, dict):
                raise ValueError(f"field {name} holds {type(d[name]).__name__}, not an object")
        obs = d.get("observation")
        return cls(modes=cals, min_confidence={m: (None if t is None else float(t)) for m, t in thr.items()},
                   tolerance=(float(tol[0]), float(tol[1])),
                   observation=None if obs is None else ObservationModel.from_dict(obs, "observation."),
                   precision_target=float(target), fitted=d.get("fitted", ""), source=d.get("source", ""),
                   config=dict(d.get("config") or {}), stats=dict(d.get("stats") or {}))

    def describe(self, mode: str) -> str:
        """One line for diagnostics: what calibrates `mode`, or that nothing does."""
        if mode not in self.modes:
            return f"none for mode {mode}: heuristic confidence (map calibrated for {', '.join(sorted(self.modes))})"
        c = self.modes[mode]
        feature = c.feature_key("distinctiveness" if mode == "single" else "support")
        return (f"isotonic on {feature}, {c.samples} frames within ({self.tolerance[0]:g} m, "
                f"{self.tolerance[1]:g} deg), fitted {self.fitted or '?'} on {self.source or '?'}")


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _prob(x: Any) -> bool:
    return _num(x) and 0.0 <= x <= 1.0


def finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _check_fit(mode: str, c: Calibration) -> Calibration:
    """The values of one mode's fit (types were checked by `Calibration.from_dict`); see `from_dict`."""
    where = f"field modes.{mode}"
    if c.kind == "isotonic":
        xs, ys = c.x, c.y
        step = "is not an increasing step function with values in [0, 1]"
        if not xs or any(b <= a for a, b in zip(xs, xs[1:])):
            raise ValueError(f"{where}.x is {list(xs)[:6]}: {step} (x: strictly increasing block starts)")
        if len(xs) != len(ys):
            raise ValueError(f"{where}.y has {len(ys)} values for {len(xs)} block starts: {step}")
        bad = next((y for y in ys if not _prob(y)), None)
        if bad is not None:
            raise ValueError(f"{where}.y holds {bad!r}: {step}")
        if any(b < a for a, b in zip(ys, ys[1:])):
            raise ValueError(f"{where}.y decreases: {step} (a fit of a score monotone in correctness never does)")
    elif not c.a >= 0.0:
        raise ValueError(f"{where}.a is {c.a!r}: a logistic fit must not decrease (a >= 0)")
    if not all(t > 0 for t in c.tolerance):
        raise ValueError(f"{where}.tolerance is {list(c.tolerance)!r}: expected [metres, degrees], both positive")
    scale = c.extra.get("covariance_scale", 1.0)
    if not (_num(scale) and COVARIANCE_SCALE_RANGE[0] <= scale <= COVARIANCE_SCALE_RANGE[1]):
        raise ValueError(f"{where}.extra.covariance_scale is {scale!r}: must be a number in "
                         f"[{COVARIANCE_SCALE_RANGE[0]:g}, {COVARIANCE_SCALE_RANGE[1]:g}]")
    key = c.extra.get("feature_key")
    if key is not None and key not in FEATURE_KEYS[mode]:
        raise ValueError(f"{where}.extra.feature_key is {key!r}: must be one of {list(FEATURE_KEYS[mode])}")
    if "verified" in c.extra:
        check_record(c.extra["verified"], f"{where}.extra.verified")
    return c


def observation_rows(n: int, dim: int, budget: int = OBSERVATION_CELL_BUDGET,
                     max_rows: int = OBSERVATION_MAX_ROWS) -> np.ndarray:
    """Evenly spread map rows for the self-score estimate: at most `budget` (rows x places) cells, so its
    memory (a few R x N float64 arrays) and time (R x N x dim) stay bounded on any map size."""
    del dim  # the cell budget bounds both: R x N x dim flops is R x N cells of one matvec row each
    r = int(min(n, max_rows, max(16, budget // max(n, 1))))
    return np.unique(np.linspace(0, n - 1, r).round().astype(np.int64))


def row_scores(x: np.ndarray, rows: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """(R, N) float32 inner products of map rows `rows` with every map vector, `chunk` vectors at a time.

    Why chunked: `x` may be a memory-mapped float16 matrix (ivfpq maps' refine vectors); converting all of it to
    float32 at once would cost 2 GB at a million 512-dim images, while a chunk costs `chunk` x dim x 4 bytes."""
    q = np.asarray(x[rows], dtype=np.float32)
    out = np.empty((len(q), len(x)), dtype=np.float32)
    for s in range(0, len(x), chunk):
        out[:, s:s + chunk] = q @ np.asarray(x[s:s + chunk], dtype=np.float32).T
    return out


def estimate_observation(coarse: np.ndarray, positions: np.ndarray, exclusion_m: float) -> ObservationModel:
    """ObservationModel.estimate on a bounded subsample of the map's rows scored against the whole map."""
    rows = observation_rows(len(coarse), coarse.shape[1])
    return ObservationModel.estimate(row_scores(coarse, rows), rows, positions, exclusion_m)


def calibrated_probability(cal: Calibration, feature: float) -> float:
    """The calibration's probability for a raw feature; 0 below the lowest feature an isotonic fit saw
    (nothing there was observed, and extending its lowest block upwards could promise a sure answer)."""
    if cal.kind == "isotonic" and (not math.isfinite(feature) or feature < cal.x[0]):
        return 0.0
    return float(cal.apply(feature))


def publish_threshold(calibrated: bool, suggested: float | None, min_confidence: float | None,
                      min_heuristic_confidence: float = 0.0) -> float:
    """The confidence an answer must reach to be published (node and disam-eval alike).

    A calibrated probability meets `min_confidence`, or when that is None/NaN the threshold the map's
    calibration chose on its calibration drives (inf where none reached the precision target: publish
    nothing). A heuristic confidence is no probability, so it meets its own `min_heuristic_confidence`."""
    if not calibrated:
        return float(min_heuristic_confidence)
    if min_confidence is not None and not math.isnan(min_confidence):
        return float(min_confidence)
    return math.inf if suggested is None else float(suggested)


def read_calibration(map_dir: str | Path, manifest: dict[str, Any]) -> MapCalibration | None:
    """The map's calibration when its manifest lists one (its size and sha256 were checked with the other
    files), else None. A listed file that does not parse is a MapError, one line."""
    if CALIBRATION_JSON not in manifest.get("files", {}):
        return None
    path = Path(map_dir) / CALIBRATION_JSON
    try:
        return MapCalibration.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise map_error(path, f"unreadable ({exc.strerror or type(exc).__name__})", _FIX) from None
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # JSON, UTF-8, fields
        text = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        raise map_error(path, f"is not a valid calibration ({text})", _FIX) from None


def _write_manifest(map_dir: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(map_dir / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def write_calibration(map_dir: str | Path, cal: MapCalibration) -> Path:
    """Store `cal` in the map (see the module docstring for why three steps); returns the file's path."""
    map_dir = Path(map_dir)
    manifest = read_manifest(map_dir, "map")
    text = cal.to_json()
    MapCalibration.from_dict(json.loads(text))  # never write what the loader would refuse
    if manifest["files"].pop(CALIBRATION_JSON, None) is not None:
        _write_manifest(map_dir, manifest)
    path = atomic_write_text(map_dir / CALIBRATION_JSON, text)
    manifest["files"][CALIBRATION_JSON] = file_record(path)
    _write_manifest(map_dir, manifest)
    log.info("%s: calibration for %s written", path, ", ".join(sorted(cal.modes)))
    return path


def remove_calibration(map_dir: str | Path) -> bool:
    """Drop the map's calibration (manifest entry first, so every intermediate state is a valid map)."""
    map_dir = Path(map_dir)
    manifest = read_manifest(map_dir, "map")
    listed = manifest["files"].pop(CALIBRATION_JSON, None) is not None
    if listed:
        _write_manifest(map_dir, manifest)
    if (map_dir / CALIBRATION_JSON).exists():
        remove(map_dir / CALIBRATION_JSON)
    return listed


__all__ = ["MAP_CALIBRATION_VERSION", "MapCalibration", "calibrated_probability", "estimate_observation",
           "finite_or_none", "observation_rows", "publish_threshold", "read_calibration", "remove_calibration",
           "row_scores", "write_calibration"]
