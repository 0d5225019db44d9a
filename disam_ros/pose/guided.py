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
    those near it is this one). Descriptors are unit vectors (RootSIFT), compared by Euclidean distance."""
    q = np.asarray(query_uv, np.float64).reshape(-1, 2)
    p = np.asarray(predicted_uv, np.float64).reshape(-1, 2)
    if len(q) == 0 or len(p) == 0:
        return np.zeros((0, 2), np.int64)
    p = np.where(np.isfinite(p).all(axis=1, keepdims=True), p, FAR_PX)  # 'nowhere' without inf arithmetic
    # squared pixel distances and squared descriptor distances (|a - b|^2 = 2 - 2 a.b for unit vectors) as
    # matrix products: the (N, M, 2) difference array costs more than everything else together
    near = ((q * q).sum(1)[:, None] + (p * p).sum(1)[None] - 2.0 * q @ p.T) <= radius * radius
    d2 = 2.0 - 2.0 * (np.asarray(query_desc, np.float32) @ np.asarray(map_desc, np.float32).T)
    dist = np.where(near, np.maximum(d2, 0.0), np.inf)
    if not near.any():
        return np.zeros((0, 2), np.int64)
    rows, j = np.arange(len(dist)), np.argmin(dist, axis=1)
    best = dist[rows, j]
    second = np.partition(dist, 1, axis=1)[:, 1] if dist.shape[1] > 1 else np.full(len(dist), np.inf)
    keep = np.isfinite(best) & (best < ratio * ratio * second) & (np.argmin(dist, axis=0)[j] == rows)
    return np.stack([rows[keep], j[keep]], 1).astype(np.int64)
