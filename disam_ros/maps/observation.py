"""The observation model of the sequence filter: how a frame's scores over the map become log-likelihoods.

Why estimated from the map: the scale of scores differs by encoder, map mode and scene, and a hand-set
gain per map is what users cannot tune. Scoring map images against the map itself (outside their own
neighbourhood) gives the spread of wrong places and how far a right place stands out; the gain follows.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

OBSERVATION_VERSION = 1
# Evidence one frame may add for its best place, in nats (log-likelihood ratio of a typical right place).
# The Gaussian likelihood ratio would add d'^2/2 per frame, but consecutive frames share their appearance
# errors, so that counts the same evidence many times and a few bad frames look decisive. Tempering to
# about one nat per frame was best for both the untrained encoder (d' 2.8) and raw pixels (d' 1.5) on the
# first half of the Nordland dev route (sequence_eval); the gain then follows from the map alone.
EVIDENCE_NATS_PER_FRAME = 1.0
# What a STORED model (calibration.json) may hold, from how `estimate` makes each value; `from_dict` refuses
# anything else, because a tampered or broken value turns every frame into a confident wrong answer (a gain of
# 1e9 published poses 5+ m off at confidence 1.0) or into an error on every frame (a string gain):
MIN_SEPARATION = 0.1  # `estimate` floors d' here, so gain <= EVIDENCE_NATS_PER_FRAME / 0.1 = 10
MAX_SEPARATION = 1e4  # standardised scores over N places stay below sqrt(N): d' 1e4 needs 1e8 places
GAIN_RANGE = (EVIDENCE_NATS_PER_FRAME / MAX_SEPARATION, EVIDENCE_NATS_PER_FRAME / MIN_SEPARATION)  # [1e-4, 10]
MAX_ABS_SCORE = 3.0  # scores are inner products of unit vectors (|s| <= 1); PCA maps approximate them (|s| <= 3)
WRONG_SCALE_RANGE = (1e-6, MAX_ABS_SCORE)  # float32 scores resolve ~1e-7: a smaller spread is rounding noise


@dataclass(frozen=True)
class ObservationModel:
    """Score -> log-likelihood scale, estimated from the map; JSON-able so a map can store it."""

    gain: float = 0.5  # log-likelihood per unit of standardised score
    wrong_mean: float = 0.0  # map-against-map scores outside the own neighbourhood (shortlist mode)
    wrong_scale: float = 1.0
    self_separation: float = 4.0  # median standardised score of the nearest other image of the same place
    exclusion_m: float = 0.0
    rows: int = 0
    version: int = OBSERVATION_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> ObservationModel:
        """Strict: every field of the right type, finite and within the bounds above (unknown keys are
        ignored); a ValueError names the field (prefixed by `where`, e.g. 'observation.') and what it must be."""
        if not isinstance(data, dict):
            raise ValueError(f"field {where.rstrip('.') or 'observation'} holds {type(data).__name__}, not an object")
        version = data.get("version")
        if type(version) is not int or version != OBSERVATION_VERSION:
            raise ValueError(f"observation model version {version!r} is not {OBSERVATION_VERSION}: "
                             "re-estimate it with ObservationModel.estimate")
        bounds = {"gain": GAIN_RANGE, "wrong_mean": (-MAX_ABS_SCORE, MAX_ABS_SCORE), "wrong_scale": WRONG_SCALE_RANGE,
                  "self_separation": (-MAX_SEPARATION, MAX_SEPARATION), "exclusion_m": (0.0, math.inf)}
        values: dict[str, Any] = {}
        for name, (lo, hi) in bounds.items():
            if name in data:
                values[name] = _number(data[name], f"{where}{name}", lo, hi)
        if "rows" in data:
            rows = data["rows"]
            if type(rows) is not int or rows < 0:
                raise ValueError(f"field {where}rows is {rows!r}: must be a whole number >= 0 (map rows estimated on)")
            values["rows"] = rows
        known = {f.name for f in fields(cls)} - {"version"}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def estimate(cls, self_scores: np.ndarray, rows: np.ndarray, positions: np.ndarray, exclusion_m: float,
                 evidence_nats: float = EVIDENCE_NATS_PER_FRAME) -> ObservationModel:
        """From map rows scored against the whole map: (R, N) scores, the map index of each row, positions.

        Places farther than `exclusion_m` from a row's image are its wrong places; the best score within
        (0, exclusion_m] is a right place seen by another image; their standardised separation is d'. The
        gain makes a typical right place (z = d') worth `evidence_nats` of log-likelihood: gain = nats / d'.
        """
        s = np.asarray(self_scores, dtype=np.float64)
        pos = np.asarray(positions, dtype=np.float64)
        rows = np.asarray(rows, dtype=np.int64)
        sq = np.einsum("ij,ij->i", pos, pos)
        dist = np.sqrt(np.maximum(sq[rows][:, None] + sq[None, :] - 2.0 * pos[rows] @ pos.T, 0.0))
        wrong = dist > exclusion_m
        near = (dist <= exclusion_m) & (np.arange(s.shape[1])[None, :] != rows[:, None])
        usable = (wrong.sum(1) >= 2) & near.any(1)
        if not usable.any():
            raise ValueError(f"no map image has both a neighbour within {exclusion_m} m and two places beyond it: "
                             "pass an exclusion radius between the map spacing and the map's extent")
        s, wrong, near = s[usable], wrong[usable], near[usable]
        w = np.where(wrong, s, np.nan)
        mean, std = np.nanmean(w, axis=1), np.nanstd(w, axis=1)
        right = np.where(near, s, -np.inf).max(axis=1)
        sep = float(np.median((right - mean) / np.maximum(std, 1e-12)))
        return cls(gain=float(evidence_nats) / max(sep, 0.1), wrong_mean=float(np.median(mean)),
                   wrong_scale=float(np.median(std)), self_separation=sep, exclusion_m=float(exclusion_m),
                   rows=int(usable.sum()))

    def frame_z(self, scores: np.ndarray) -> np.ndarray:
        """Full-map scores -> z >= 0: standardised by the frame's mean and spread, floored at the mean."""
        s = np.asarray(scores, dtype=np.float64)
        mean, std = s.mean(), s.std()
        return np.maximum(s - mean, 0.0) / max(std, 1e-12)

    def shortlist_z(self, ids: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
        """Shortlist -> z over all n places: unscored places sit at the floor (the shortlist's lowest score)."""
        s = np.asarray(scores, dtype=np.float64)
        z = np.zeros(n)
        if len(s):
            z[np.asarray(ids, dtype=np.int64)] = (s - s.min()) / max(self.wrong_scale, 1e-12)
        return z


def _number(value: Any, name: str, lo: float, hi: float) -> float:
    """`value` as a float when it is a finite number (not a bool, not a string) in [lo, hi], else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not lo <= value <= hi:
        raise ValueError(f"field {name} is {value!r}: must be a finite number in [{lo:g}, {hi:g}]")
    return float(value)
