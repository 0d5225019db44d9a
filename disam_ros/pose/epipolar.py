"""Matching two images of known relative pose: descriptor matches allowed only near each other's epipolar line.

Why: map geometry without depth triangulates each map image's keypoints with partner images whose poses are
known. Plain matching (ratio test over every keypoint) across a viewpoint change lets mismatches through, and one
mismatched partner fails the whole multi-view track's reprojection check; it also loses right matches whose
descriptor has a look-alike elsewhere in the image. With the poses known, a keypoint's match must lie on its
epipolar line, so the ratio test runs among the few keypoints near that line (COLMAP's and hloc's triangulation
use the poses the same way). Pure functions; the caller passes undistorted normalised coordinates.
"""
from __future__ import annotations

import numpy as np

from disam_ros.pose.covariance import skew

BLOCK = 1024  # rows of image 1 matched at a time


def essential(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """E with x2^T E x1 = 0 for normalised points of a camera 2 whose coordinates are x2 = R x1 + t."""
    return skew(np.asarray(t, np.float64).reshape(3))[0] @ np.asarray(R, np.float64)


def _lines(x1: np.ndarray, x2: np.ndarray, E: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Homogeneous points h1 (N1,3), h2 (N2,3) and their epipolar lines in the other image: E x1 (N1,3) in image
    2, E^T x2 (N2,3) in image 1."""
    h1 = np.c_[np.asarray(x1, np.float64), np.ones(len(x1))]
    h2 = np.c_[np.asarray(x2, np.float64), np.ones(len(x2))]
    return h1, h2, h1 @ E.T, h2 @ E


def _line_norm(lines: np.ndarray) -> np.ndarray:
    return np.maximum(np.linalg.norm(lines[:, :2], axis=1), 1e-12)


def epipolar_distances(x1: np.ndarray, x2: np.ndarray, E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N1,N2) distances, in normalised units, of each x2 from the epipolar line of each x1 in image 2, and of
    each x1 from the line of each x2 in image 1."""
    _, h2, lines2, lines1 = _lines(x1, x2, E)
    num = np.abs(lines2 @ h2.T)  # |x2^T E x1|, the same for both images
    return num / _line_norm(lines2)[:, None], num / _line_norm(lines1)[None, :]


def epipolar_match(x1: np.ndarray, d1: np.ndarray, x2: np.ndarray, d2: np.ndarray, R: np.ndarray, t: np.ndarray,
                   max_dist: tuple[float, float], ratio: float = 0.8) -> np.ndarray:
    """(M,2) index pairs (i in 1, j in 2), sorted by i: j is i's nearest descriptor (L2) among image 2's
    keypoints within max_dist[1] of i's epipolar line (and i within max_dist[0] of j's), closer than `ratio`
    times the runner-up there (a lone candidate does not match), and i is j's nearest the same way (mutual).
    `ratio` 1.0 is no ratio test, mutual nearest neighbours alone (learned descriptors: pose/learned.py), so a
    lone candidate in the band does match: sparse keypoints often have one there, and it is the nearest.
    x1, x2: normalised coordinates; max_dist: the line distance allowed in each image, normalised (pixels /
    focal length)."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio={ratio!r} must be in (0, 1] (Lowe's ratio test)")
    a, b = np.asarray(d1, np.float32), np.asarray(d2, np.float32)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 2), np.int64)
    E = essential(R, t)
    x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    bb = (b * b).sum(1)
    j = np.zeros(len(a), np.int64)
    ok = np.zeros(len(a), bool)
    col_best = np.full(len(b), np.inf, np.float32)  # each partner keypoint's nearest row, over all blocks
    col_row = np.full(len(b), -1, np.int64)
    for lo in range(0, len(a), BLOCK):  # (BLOCK, N2) at a time: bounded memory for 8000-keypoint photographs
        rows = np.arange(lo, min(lo + BLOCK, len(a)))
        in2, in1 = epipolar_distances(x1[rows], x2, E)
        dist = (a[rows] * a[rows]).sum(1)[:, None] + bb[None, :] - 2.0 * (a[rows] @ b.T)
        dist = np.where((in2 <= max_dist[1]) & (in1 <= max_dist[0]), np.sqrt(np.maximum(dist, 0.0)), np.inf)
        local = np.arange(len(rows))
        jb = np.argmin(dist, axis=1)
        best = dist[local, jb]
        dist[local, jb] = np.inf
        second = dist.min(axis=1)
        dist[local, jb] = best
        j[rows] = jb  # a lone candidate has nothing to beat, unless no ratio test is asked for
        ok[rows] = np.isfinite(best) if ratio >= 1.0 else np.isfinite(second) & (best < ratio * second)
        top = np.argmin(dist, axis=0)
        better = dist[top, np.arange(len(b))] < col_best
        col_best[better] = dist[top, np.arange(len(b))][better]
        col_row[better] = rows[top[better]]
    rows = np.arange(len(a))
    ok &= col_row[j] == rows  # mutual
    return np.stack([rows[ok], j[ok]], 1).astype(np.int64)


def line_distances_px(x1: np.ndarray, x2: np.ndarray, R: np.ndarray, t: np.ndarray, focal_px: float) -> np.ndarray:
    """Per matched pair (rows of x1 and x2, normalised), the larger of its two point-to-epipolar-line distances,
    in pixels. For right matches between images of exact poses this is keypoint noise (a fraction of a pixel);
    errors in the poses add to it, which is how a map's own matches tell how good its poses are."""
    _, h2, lines2, lines1 = _lines(x1, x2, essential(R, t))
    num = np.abs(np.sum(lines2 * h2, axis=1))  # pair by pair: |x2^T E x1|
    return focal_px * np.maximum(num / _line_norm(lines1), num / _line_norm(lines2))
