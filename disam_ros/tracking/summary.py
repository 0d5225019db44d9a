"""Posterior summaries in O(answer): the mass near the best place and the spread about it (no ROS).

Why: the sequence localizer answers every frame with the mass within `mass_radius_m` of its best place,
the posterior's spread about it and its entropy. Measuring the distance from the best place to all N
places, and an (N, 3) weighted product, cost more than the whole sparse update at 100k places; a grid
hash finds the places near the best one, and first and second moments of the positions, prepared once,
give the spread of any mass that is flat over the map in O(1).
"""
from __future__ import annotations

import numpy as np

SMALL_MAP = 2048  # up to this many places a radius query just measures every distance


def runs(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For counts c: (owner, offset) with owner k repeated c_k times and offset 0..c_k-1 within each run."""
    owner = np.repeat(np.arange(len(counts)), counts)
    offset = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, offset


class NearIndex:
    """Places within a fixed radius of a point, by a grid hash with cells of that radius: O(answer) per query
    instead of a distance to every place."""

    def __init__(self, positions: np.ndarray, radius: float) -> None:
        self.positions = np.asarray(positions, dtype=np.float64)
        self.radius = float(radius)
        cell = np.floor(self.positions / self.radius).astype(np.int64)
        self._lo = cell.min(axis=0) - 1
        cell -= self._lo  # >= 1, so the -1 offsets stay non-negative
        self._dims = cell.max(axis=0) + 2
        # small maps, or coordinates too spread for one int64 key: every place is a candidate
        self.small = len(self.positions) <= SMALL_MAP or bool(np.prod(self._dims.astype(np.float64)) >= 2.0 ** 62)
        if not self.small:
            keys = self._key(cell)
            self._order = np.argsort(keys, kind="stable")
            self._keys = keys[self._order]
        self._offsets = np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij")).reshape(3, -1).T

    def _key(self, c: np.ndarray) -> np.ndarray:
        return (c[..., 0] * self._dims[1] + c[..., 1]) * self._dims[2] + c[..., 2]

    def query(self, x: np.ndarray, diff: np.ndarray | None = None) -> np.ndarray:
        """Sorted indices of the places within the radius of x (x must lie inside the map's extent);
        `diff`: positions - x if the caller has it (a small map then measures nothing again)."""
        x = np.asarray(x, dtype=np.float64).reshape(3)
        if self.small:
            d = self.positions - x if diff is None else diff
            return np.flatnonzero(np.einsum("ij,ij->i", d, d) <= self.radius * self.radius)
        keys = self._key(np.floor(x / self.radius).astype(np.int64) - self._lo + self._offsets)
        lo = np.searchsorted(self._keys, keys, "left")
        cnt = np.searchsorted(self._keys, keys, "right") - lo
        owner, offset = runs(cnt)
        cand = self._order[lo[owner] + offset]
        d = self.positions[cand] - x
        return np.sort(cand[np.einsum("ij,ij->i", d, d) <= self.radius * self.radius])


class PlaceGeometry:
    """What a posterior summary needs of the places (chain order), prepared once per map: a radius index
    for the mass near the best place, and positions about their mean with their first two moments, so the
    spread about the best place is a (3 x 3) sum rather than a pass over an (N, 3) difference array."""

    def __init__(self, positions: np.ndarray, radius: float) -> None:
        self.near = NearIndex(positions, radius)
        self.centred = self.near.positions - self.near.positions.mean(axis=0)
        self.s1 = self.centred.sum(axis=0)
        self.s2 = self.centred.T @ self.centred

    def spread(self, xb: np.ndarray, s0: float, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
        """sum_j p_j (x_j - xb)(x_j - xb)^T from sum p, sum p x and sum p x x^T (centred coordinates)."""
        o = np.outer(s1 - 0.5 * s0 * xb, xb)
        return s2 - o - o.T

    def summary(self, p: np.ndarray) -> tuple[int, float, float, float, np.ndarray, float]:
        """As `sequence.summarise` for a dense chain-order posterior, without the spacing floor."""
        best = int(np.argmax(p))
        d = self.near.positions - self.near.positions[best] if self.near.small else None
        idx = self.near.query(self.near.positions[best], d)
        outside_mask = np.ones(len(p), bool)
        outside_mask[idx] = False
        inside, outside = float(p[idx].sum()), float(p.sum(where=outside_mask))
        log_odds = np.log(max(inside, 1e-300)) - np.log(max(outside, 1e-300))
        if self.near.small:
            cov = (d * p[:, None]).T @ d
        else:  # moments: one (N, 3) product fewer
            c = self.centred
            cov = self.spread(c[best], float(p.sum()), p @ c, c.T @ (c * p[:, None]))
        ent = -float(p @ np.log(np.where(p > 0, p, 1.0)))
        return best, inside, float(log_odds), float(p[best]), cov, ent


__all__ = ["SMALL_MAP", "NearIndex", "PlaceGeometry", "runs"]
