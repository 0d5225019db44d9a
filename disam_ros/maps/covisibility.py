"""Which map images to triangulate a map image's keypoints with, chosen from the poses alone.

Why: map geometry without depth triangulates each map image's SIFT keypoints with a few other map images of
known pose. Picking them by build order (i-2..i+2) assumes a driven sequence; a folder of real photographs is
often unordered by name (a photo collection, sparse captures, a loop that comes back to the same place), so
index neighbours may not see the same scene while images that do are never tried. Images that see the same
scene are near in space and look the same way, which the poses say without looking at a pixel.

Rule (`choose_partners`): for image i, every other image j whose optical axis is within `max_angle_deg` of i's
and whose centre is farther than `min_baseline_m` from i's (identical positions give no parallax), ranked by
centre distance ascending, ties by lower index; the first k. On a straight drive at even spacing with k = 4
that is i-2, i-1, i+1, i+2: driven maps keep the neighbours they had.

Memory: one row of N distances at a time (O(N) for N map images, never N x N); time O(N^2), a few seconds for
10k images (their SIFT takes minutes).
"""
from __future__ import annotations

import numpy as np

PARTNER_RULE = "pose"  # the manifest's geometry.partner_rule


def _check(centres: np.ndarray, axes: np.ndarray, k: int, max_angle_deg: float, min_baseline_m: float
           ) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(centres, np.float64)
    a = np.asarray(axes, np.float64)
    if c.ndim != 2 or c.shape[1:] != (3,) or a.shape != c.shape:
        raise ValueError(f"partners need camera centres (N,3) and optical axes (N,3), got {c.shape} and {a.shape}")
    if not (np.isfinite(c).all() and np.isfinite(a).all()):
        raise ValueError("camera centres or optical axes hold NaN/inf: fix the poses")
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    if len(a) and not (norm > 1e-12).all():
        raise ValueError("an optical axis has zero length: fix the poses (quaternions of unit norm)")
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"partners k={k!r} must be an integer >= 0")
    if not 0.0 <= max_angle_deg <= 180.0:
        raise ValueError(f"max_angle_deg={max_angle_deg!r} must be in [0, 180]")
    if not (np.isfinite(min_baseline_m) and min_baseline_m >= 0.0):
        raise ValueError(f"min_baseline_m={min_baseline_m!r} must be finite and >= 0")
    return c, a / np.where(norm > 0, norm, 1.0)


def choose_partners(centres: np.ndarray, axes: np.ndarray, k: int = 4, max_angle_deg: float = 45.0,
                    min_baseline_m: float = 1e-3) -> list[np.ndarray]:
    """Per image i, up to k partner indices (int64, nearest first) from camera centres (N,3) and optical axes
    (N,3) in the map frame: j != i, angle between the axes <= max_angle_deg, centre distance > min_baseline_m,
    ranked by centre distance ascending with ties broken by the lower index (deterministic)."""
    c, a = _check(centres, axes, k, max_angle_deg, min_baseline_m)
    return [_partners_of(i, c, a, int(k), max_angle_deg, min_baseline_m) for i in range(len(c))]


def wider_partners(i: int, centres: np.ndarray, axes: np.ndarray, k: int, max_angle_deg: float,
                   min_baseline_m: float) -> np.ndarray:
    """Image i's partners by the same rule, all farther than `min_baseline_m`: for an image whose nearest
    partners stand too close for parallax (a map from video, a few cm between frames)."""
    c, a = _check(centres, axes, k, max_angle_deg, min_baseline_m)
    return _partners_of(int(i), c, a, int(k), max_angle_deg, min_baseline_m)


def nearest_alike(centres: np.ndarray, axes: np.ndarray, centre: np.ndarray, axis: np.ndarray, k: int,
                  max_angle_deg: float) -> np.ndarray:
    """The k images (int64, nearest first, ties by the lower index) nearest `centre` whose optical axes lie within
    `max_angle_deg` of `axis`: the map images that see what a camera there sees (verify/polish.py). `axes` and
    `axis` are unit vectors; any distance counts, zero included."""
    return _nearest(np.asarray(centres, np.float64), np.asarray(axes, np.float64), np.asarray(centre, np.float64),
                    np.asarray(axis, np.float64), int(k), max_angle_deg, -np.inf, -1)


def _partners_of(i: int, c: np.ndarray, a: np.ndarray, k: int, max_angle_deg: float, min_baseline_m: float
                 ) -> np.ndarray:
    return _nearest(c, a, c[i], a[i], k, max_angle_deg, min_baseline_m, i)


def _nearest(c: np.ndarray, a: np.ndarray, centre: np.ndarray, axis: np.ndarray, k: int, max_angle_deg: float,
             min_baseline_m: float, exclude: int) -> np.ndarray:
    min_cos = np.cos(np.radians(max_angle_deg)) - 1e-12  # 45 degrees exactly is within 45 degrees
    dist = np.linalg.norm(c - centre, axis=1)
    ok = (a @ axis >= min_cos) & (dist > min_baseline_m)
    if exclude >= 0:
        ok[exclude] = False
    cand = np.flatnonzero(ok)
    if len(cand) > k > 0:  # keep every candidate tied with the k-th nearest, then rank them exactly
        kth = np.partition(dist[cand], k - 1)[k - 1]
        cand = cand[dist[cand] <= kth]
    order = np.lexsort((cand, dist[cand]))  # distance, then index
    return cand[order[:k]].astype(np.int64)
