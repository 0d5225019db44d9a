"""What a verified frame hands to the next for map-point tracking: which (query keypoint, map point) pairs."""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree  # at import: a first call that imports scipy costs 0.35 s


def support_pairs(inliers: np.ndarray, keypoints: np.ndarray, predicted: np.ndarray, radius_px: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(query keypoint, map point) index pairs a verified frame hands on: its RANSAC inliers, plus every other map
    point whose projection under the SOLVED pose falls within `radius_px` of a query keypoint no other point
    claims (nearest first). Why more than the inliers: they were the few points whose descriptors matched
    across conditions; the next frame matches this frame's own descriptors (same condition), so any point the
    accurate pose places on a keypoint is worth carrying, and 50 inliers alone thin out within a frame or two."""
    taken_q, taken_m = set(inliers[:, 0].tolist()), set(inliers[:, 1].tolist())
    extra_q, extra_m = [], []
    ok = np.flatnonzero(np.isfinite(predicted).all(axis=1))
    if len(ok) and len(keypoints):
        dist, nearest = cKDTree(np.asarray(keypoints, np.float64)).query(predicted[ok], k=1)
        close = dist <= radius_px
        d, m, q = dist[close], ok[close], np.asarray(nearest)[close]
        order = np.lexsort((q, m, d))  # closest claims first; ties by map point, then keypoint
        for m_i, q_i in zip(m[order].tolist(), q[order].tolist(), strict=True):
            if q_i in taken_q or m_i in taken_m:
                continue
            taken_q.add(q_i)
            taken_m.add(m_i)
            extra_q.append(q_i)
            extra_m.append(m_i)
    return (np.r_[inliers[:, 0], extra_q].astype(np.int64), np.r_[inliers[:, 1], extra_m].astype(np.int64))
