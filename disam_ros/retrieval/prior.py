"""Spatial prior (seed 004): when the vehicle roughly knows where it is (GNSS, odometry, a filter), only
map images near that estimate are candidates, so retrieval only has to be discriminative locally.

The gate is a ball (`radius`, metres) or a Mahalanobis ellipsoid (`covariance`, 3x3 m^2, at `n_sigma`);
with both, a map image must pass both. The localizer falls back to global search when the gate is empty.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class SpatialPrior:
    position: np.ndarray
    radius: float | None = None
    covariance: np.ndarray | None = None
    n_sigma: float = 3.0

    def __post_init__(self) -> None:
        pos = np.asarray(self.position, dtype=np.float64).reshape(-1)
        if pos.shape != (3,) or not np.all(np.isfinite(pos)):
            raise ValueError(f"prior position {self.position!r} must be 3 finite numbers (x, y, z in the map frame)")
        object.__setattr__(self, "position", pos)
        if self.radius is None and self.covariance is None:
            raise ValueError("spatial prior needs a radius or a 3x3 covariance: pass one of them")
        if self.radius is not None and not (np.isfinite(self.radius) and self.radius > 0):
            raise ValueError(f"prior radius {self.radius!r} must be a positive number of metres")
        if not (np.isfinite(self.n_sigma) and self.n_sigma > 0):
            raise ValueError(f"prior n_sigma {self.n_sigma!r} must be positive (3 keeps ~97% of a 3-D Gaussian)")
        if self.covariance is not None:
            cov = np.asarray(self.covariance, dtype=np.float64)
            if cov.shape != (3, 3) or not np.all(np.isfinite(cov)) or not np.allclose(cov, cov.T, atol=1e-9):
                raise ValueError("prior covariance must be a finite symmetric 3x3 matrix (m^2)")
            try:
                np.linalg.cholesky(cov)
            except np.linalg.LinAlgError:
                raise ValueError("prior covariance is not positive definite: give every axis a positive "
                                 "variance (a large one for an unknown axis, e.g. 1e4 m^2 for z)") from None
            object.__setattr__(self, "covariance", cov)
            object.__setattr__(self, "_inv", np.linalg.inv(cov))

    def gate(self, positions: np.ndarray) -> np.ndarray:
        """Boolean mask over map positions (N, 3): True inside the gate."""
        diff = np.asarray(positions, dtype=np.float64) - self.position
        inside = np.ones(len(diff), dtype=bool)
        if self.radius is not None:
            inside &= np.einsum("ij,ij->i", diff, diff) <= self.radius**2
        if self.covariance is not None:
            inside &= np.einsum("ij,jk,ik->i", diff, self._inv, diff) <= self.n_sigma**2
        return inside

    def candidates(self, positions: np.ndarray) -> np.ndarray:
        """Indices of the map images inside the gate (possibly empty)."""
        return np.flatnonzero(self.gate(positions))
