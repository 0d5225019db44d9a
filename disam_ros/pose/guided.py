"""Guided matching: match a query keypoint only to the map keypoints that a rough pose predicts near it.

Why: under a condition change (night, fog, dusk) the true match is rarely a query descriptor's nearest
neighbour in the whole map image, but it often is among the few map keypoints that a rough pose (the retrieved
map image's own pose, or a coarse solve) projects within a few dozen pixels. Restricting the candidates makes
the ratio test meaningful again. Measured in docs/pose.md: night 0 -> 50 % within (0.25 m, 2 deg) at 640x480.
"""
from __future__ import annotations

import numpy as np

from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.frames import project

FAR_PX = 1e7  # where a map point predicted nowhere is placed for the distance test


def predicted_pixels(points3d: np.ndarray, R: np.ndarray, t: np.ndarray, cam: Intrinsics) -> np.ndarray:
    """Where camera-from-map (R, t) puts each map point: (N,2) pixels, inf for points behind the camera or
    projecting far outside the image (more than one image size beyond its border: no keypoint can be near)."""
    uv, z = project(points3d, R, t, cam)
    if len(uv) == 0:
        return uv
    w, h = cam.width, cam.height
    inside = (z > 0) & (uv[:, 0] > -w) & (uv[:, 0] < 2 * w) & (uv[:, 1] > -h) & (uv[:, 1] < 2 * h)
    return np.where(inside[:, None], uv, np.inf)


def guided_match(query_uv: np.ndarray, query_desc: np.ndarray, map_desc: np.ndarray, predicted_uv: np.ndarray,
                 radius: float, ratio: float) -> np.ndarray:
    """(M,2) int64 index pairs (query, map): each query keypoint's nearest map descriptor among the map keypoints
    predicted within `radius` px of it (predicted_uv inf: nowhere), if better than `ratio` x the second nearest
    of those candidates (a lone candidate passes) and mutual (the map keypoint's nearest query keypoint among
    those near it is this one). Descriptors are unit vectors (RootSIFT), compared by Euclidean distance.

    Cost: it runs for every candidate place of every frame, so it works on similarities (a.b; for unit vectors
    |a - b|^2 = 2 - 2 a.b, the same order) in float32, drops map keypoints no query keypoint can reach before the
    (N, M) arrays exist, and finds the runner-up by masking the best rather than a partition. Same pairs as the
    plain definition (test_pose_dense checks it against a loop)."""
    q = np.asarray(query_uv, np.float64).reshape(-1, 2)
    p = np.asarray(predicted_uv, np.float64).reshape(-1, 2)
    if len(q) == 0 or len(p) == 0:
        return np.zeros((0, 2), np.int64)
    reach = np.isfinite(p).all(axis=1) & (p >= q.min(0) - radius).all(axis=1) & (p <= q.max(0) + radius).all(axis=1)
    cols = np.flatnonzero(reach)
    if len(cols) == 0:
        return np.zeros((0, 2), np.int64)
    # centred on the query keypoints so float32 keeps sub-pixel resolution for any image size
    origin = q.mean(axis=0)
    qf, pf = (q - origin).astype(np.float32), (p[cols] - origin).astype(np.float32)
    d2 = (qf * qf).sum(1)[:, None] + (pf * pf).sum(1)[None] - 2.0 * (qf @ pf.T)
    sim = np.asarray(query_desc, np.float32) @ np.asarray(map_desc, np.float32)[cols].T
    np.copyto(sim, -np.inf, where=d2 > np.float32(radius * radius))
    rows, j = np.arange(len(sim)), np.argmax(sim, axis=1)
    best = sim[rows, j].copy()
    sim[rows, j] = -np.inf
    second = sim.max(axis=1) if sim.shape[1] > 1 else np.full(len(sim), -np.inf, np.float32)
    sim[rows, j] = best
    mutual = np.argmax(sim, axis=0)[j] == rows
    d_best, d_second = np.maximum(2.0 - 2.0 * best, 0.0), np.maximum(2.0 - 2.0 * second, 0.0)
    keep = np.isfinite(best) & (d_best < ratio * ratio * d_second) & mutual
    return np.stack([rows[keep], cols[j[keep]]], 1).astype(np.int64)
