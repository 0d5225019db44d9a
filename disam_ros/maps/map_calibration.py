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
from disam_ros.maps.confidence_fit import SEQUENCE_MODES, Calibration
from disam_ros.maps.map_format import CALIBRATION_JSON, MANIFEST, file_record, map_error, read_manifest
from disam_ros.maps.observation import ObservationModel

log = logging.getLogger(__name__)

MAP_CALIBRATION_VERSION = 1
OBSERVATION_CELL_BUDGET = 4_000_000  # rows x places of the map-against-map scores estimated at load
OBSERVATION_MAX_ROWS = 512
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
        """Strict: every problem is a ValueError naming the field (the loader turns it into a MapError)."""
        if not isinstance(d, dict):
            raise ValueError(f"holds {type(d).__name__}, not an object")
        if type(d.get("version")) is not int or d["version"] != MAP_CALIBRATION_VERSION:
            raise ValueError(f"has version {d.get('version')!r}, this software reads {MAP_CALIBRATION_VERSION}")
        modes = d.get("modes")
        if not isinstance(modes, dict) or not modes or not set(modes) <= set(SEQUENCE_MODES):
            raise ValueError(f"field modes must map some of {list(SEQUENCE_MODES)} to fits")
        cals = {m: _check_fit(m, Calibration.from_dict(c)) for m, c in modes.items()}
        thr = d.get("min_confidence", {})
        if not isinstance(thr, dict) or not all(t is None or _prob(t) for t in thr.values()):
            raise ValueError("field min_confidence must map modes to probabilities in [0, 1] or null")
        tol = d.get("tolerance")
        if not (isinstance(tol, list) and len(tol) == 2 and all(_num(x) and x > 0 for x in tol)):
            raise ValueError(f"field tolerance is {tol!r}, expected [metres, degrees]")
        obs = d.get("observation")
        return cls(modes=cals, min_confidence={m: (None if t is None else float(t)) for m, t in thr.items()},
                   tolerance=(float(tol[0]), float(tol[1])),
                   observation=None if obs is None else ObservationModel.from_dict(obs),
                   precision_target=float(d.get("precision_target", 0.99)), fitted=str(d.get("fitted", "")),
                   source=str(d.get("source", "")), config=dict(d.get("config") or {}),
                   stats=dict(d.get("stats") or {}))

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
    if c.kind == "isotonic":
        xs, ys = list(c.x), list(c.y)
        if not xs or len(xs) != len(ys) or any(b <= a for a, b in zip(xs, xs[1:])) or not all(map(_prob, ys)) \
                or not all(map(_num, xs)):
            raise ValueError(f"field modes.{mode} is not an increasing step function with values in [0, 1]")
    elif not (_num(c.a) and _num(c.b)):
        raise ValueError(f"field modes.{mode} has non-finite logistic parameters")
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
        text = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
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
