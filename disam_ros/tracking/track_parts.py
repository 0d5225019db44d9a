"""Pure parts of the stream tracker (`disam_ros.tracking`): drives from map stamps, the per-place contrast, the
covariance of the posterior's mode, the support feature that calibration maps, and spatial-prior helpers.
They are numpy only and carry no state beyond PlaceContrast's running mean, so each is tested by hand."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from disam_ros.retrieval.prior import SpatialPrior

SUPPORT_FRAMES = 10  # frames the support (the calibrated feature of sequence/window) averages over ...
RECENT_FRAMES = 3  # ... unless the last few frames back the track less


def map_drives(stamps: np.ndarray, max_gap_s: float) -> np.ndarray:
    """Drive id per map image (map order): a new drive starts where the stamp goes back or pauses > max_gap_s."""
    s = np.asarray(stamps, dtype=np.float64).reshape(-1)
    if len(s) == 0:
        return np.zeros(0, np.int64)
    dt = np.diff(s)
    return np.r_[0, np.cumsum((dt <= 0) | (dt > max_gap_s))].astype(np.int64)


class PlaceContrast:
    """Per-place contrast over the recent stream (SeqSLAM's local contrast, made incremental).

    Why: across conditions some map places look like every query frame (a "hub": a blank wall at dusk), so
    they top the scores frame after frame and pull a filter off the road it is on. Each frame's scores are
    standardised over the map, then each place's running mean over the last ~`frames` frames is subtracted:
    a place that is always high is discounted, the place the vehicle is at stands out while it is there.
    The mean starts at 0 with `frames` pseudo-frames of weight (shrinkage), so the first frames pass as they are.
    """

    def __init__(self, n: int, frames: float, prior_frames: float = 3.0) -> None:
        self.frames, self.prior_frames = float(frames), float(prior_frames)
        self.reset(n)

    def reset(self, n: int | None = None) -> None:
        n = len(self._sum) if n is None else n
        self._sum = np.zeros(n)
        self._count = 0.0

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        z = (s - s.mean()) / max(float(s.std()), 1e-12)
        decay = 1.0 - 1.0 / self.frames
        out = z - self._sum / (self._count + self.prior_frames)
        self._sum = decay * self._sum + z
        self._count = decay * self._count + 1.0
        return out


def local_covariance(posterior: np.ndarray, positions: np.ndarray, best: int, radius_m: float,
                     floor_m: float) -> np.ndarray:
    """3x3 spread of the posterior's mode: mass within `radius_m` of place `best`, renormalised, about that
    place, plus floor_m^2 per axis (the map spacing: an answer is a map place, never between two).

    Why not the whole posterior: a small uniform share (the kidnap/teleport probability) spread over a
    kilometre-long map adds hundreds of m^2 to a covariance whose pose is right within a metre; how likely a
    far-away answer is, is the confidence's job, not the covariance's."""
    d = np.asarray(positions, np.float64) - np.asarray(positions, np.float64)[best]
    near = np.einsum("ij,ij->i", d, d) <= radius_m * radius_m
    w = np.asarray(posterior, np.float64)[near]
    w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / max(len(w), 1))
    dn = d[near]
    return (dn * w[:, None]).T @ dn + np.eye(3) * floor_m**2


def support(z_answered: Sequence[float]) -> float:
    """The sequence/window confidence feature from the answered places' standardised scores, oldest first:
    their sum over SUPPORT_FRAMES, or the sum of the last RECENT_FRAMES over RECENT_FRAMES when that is
    lower. Frames not seen yet (just after a start or restart) count as 0: a young track has not earned its
    confidence (on the demo's summer drive a 5-frame track 190 m off had a 5-frame mean above anything
    the calibration drives showed, and was published)."""
    z = np.asarray(z_answered, dtype=np.float64)
    if not len(z):
        return math.nan
    return float(min(z.sum() / max(len(z), SUPPORT_FRAMES), z[-RECENT_FRAMES:].sum() / RECENT_FRAMES))


def prior_sigma(prior: SpatialPrior) -> float:
    """One position sigma (m) for restarting the belief around a prior: the gate radius is ~2 sigma, a
    covariance gives its largest axis."""
    sig = []
    if prior.radius is not None:
        sig.append(float(prior.radius) / 2.0)
    if prior.covariance is not None:
        sig.append(float(np.sqrt(np.linalg.eigvalsh(prior.covariance).max())))
    return min(sig)


def same_prior(a: SpatialPrior | None, b: SpatialPrior | None) -> bool:
    """Equal by value: a node that repeats the latest prior every frame must not restart the belief each time."""
    if a is None or b is None:
        return a is b
    cov = (a.covariance is None) == (b.covariance is None) and (
        a.covariance is None or np.array_equal(a.covariance, b.covariance))
    return bool(np.array_equal(a.position, b.position) and a.radius == b.radius and cov)
