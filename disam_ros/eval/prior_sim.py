"""Simulated position priors for `disam-eval --prior-sigma-m`: what a GNSS fix gives each single frame.

Why: one frame cannot tell two look-alike places apart, so single mode keeps its riskiest step (the dense
search) for frames whose place is known from outside the frame. A vehicle often knows roughly where it is (GNSS,
a fleet's last known position) and hands that to the node as `prior` (docs/localizer.md); this measures what
such a prior is worth. Each query gets its true position plus Gaussian noise of `sigma_m` on every axis, with
that covariance, so retrieval keeps the map images within 3 sigma (Mahalanobis) of the noisy fix.

The noise is drawn per frame from a generator seeded by the frame's condition and name: a run is repeatable,
independent of the order frames are read in. Only single mode gets priors: in sequence and window modes a new
prior restarts the belief (its use there is a relocalization request, not a stream of fixes).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from disam_ros.retrieval import SpatialPrior


@dataclass(frozen=True)
class PriorNoise:
    """Noisy fixes around the ground truth: `sigma_m` metres per axis, reproducible by `seed`."""

    sigma_m: float
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma_m) and self.sigma_m > 0):
            raise ValueError(f"prior sigma {self.sigma_m!r} must be a positive number of metres (e.g. 5 for GNSS)")

    def prior_for(self, condition: str, name: str, position: np.ndarray) -> SpatialPrior:
        """The fix a frame at true `position` gets: the same one on every call for the same frame."""
        rng = np.random.default_rng([self.seed, zlib.crc32(f"{condition}/{name}".encode())])
        noisy = np.asarray(position, np.float64).reshape(3) + rng.normal(scale=self.sigma_m, size=3)
        return SpatialPrior(noisy, covariance=np.eye(3) * self.sigma_m**2)
