"""One displacement band of the place graph's motion step, as flat arrays reused every frame (no ROS).

Why its own module: `PlaceGraph.band_ranges` decides where each place's belief goes; this is the prepared
form the dense filter (`PlaceGraph.shift`, prefix sums) and the sparse belief (`belief.SparseBelief`, one
row gather per source) both consume, built once per band and cached by the filter.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class MotionPlan:
    """One displacement band, prepared once and reused every frame with that band (the filter caches it).

    Sources move to [a, b) on their drive and [a2, b2) past its end, each target getting the source's
    weight over the number of targets (`inv_count`; 0 for a source with weight 0 or no target), and
    along `second` (the other half of a linear split, or None). `shift` needs, per target j, the number
    of sources with a_i <= j (`a_rank`, with `a_perm` sorting a when it is not already sorted, which it
    is along a chain) and the same for b; continuation targets are listed pair by pair.
    """

    a: np.ndarray
    b: np.ndarray
    a2: np.ndarray
    b2: np.ndarray
    inv_count: np.ndarray
    a_perm: np.ndarray | None
    a_rank: np.ndarray
    b_perm: np.ndarray | None
    b_rank: np.ndarray
    cont_src: np.ndarray
    cont_dst: np.ndarray
    second: MotionPlan | None = None

    @classmethod
    def of(cls, a: np.ndarray, b: np.ndarray, a2: np.ndarray, b2: np.ndarray, weight: np.ndarray | None = None,
           second: MotionPlan | None = None) -> MotionPlan:
        n = len(a)
        extra = b2 - a2
        src = np.flatnonzero(extra > 0)
        counts = extra[src]
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        dst = np.repeat(a2[src], counts) + within
        total = (b - a) + extra
        w = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)
        inv = np.divide(w, total, out=np.zeros(n), where=total > 0)
        return cls(a, b, a2, b2, inv, *cls._rank(a, n), *cls._rank(b, n), np.repeat(src, counts), dst, second)

    @staticmethod
    def _rank(x: np.ndarray, n: int) -> tuple[np.ndarray | None, np.ndarray]:
        perm = None if bool(np.all(x[1:] >= x[:-1])) else np.argsort(x, kind="stable")
        xs = x if perm is None else x[perm]
        return perm, np.searchsorted(xs, np.arange(n), "right")

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """(N, 5) per source: a, a2, b - a, number of targets, 1 / that, as float64 (indices are exact far
        beyond any map): one row gather per source for the sparse belief, built once per plan."""
        n1 = self.b - self.a
        cnt = np.where(self.inv_count > 0, n1 + self.b2 - self.a2, 0)  # a source of weight 0 sends nothing
        return np.stack([self.a, self.a2, n1, cnt, self.inv_count], axis=1).astype(np.float64)

    @staticmethod
    def prefix(x: np.ndarray) -> np.ndarray:
        """(len + 1,) prefix sums starting at 0: c[k] = sum of x[:k]."""
        c = np.empty(len(x) + 1)
        c[0] = 0.0
        np.cumsum(x, out=c[1:])
        return c

    @staticmethod
    def below(share: np.ndarray, perm: np.ndarray | None, rank: np.ndarray) -> np.ndarray:
        """Per target j: the sum of share over sources whose bound is <= j."""
        return MotionPlan.prefix(share if perm is None else share[perm])[rank]


__all__ = ["MotionPlan"]
