"""Guided matching: match a query keypoint only to the map keypoints that a rough pose predicts near it.

Why: under a condition change (night, fog, dusk) the true match is rarely a query descriptor's nearest
neighbour in the whole map image, but it often is among the few map keypoints that a rough pose (the retrieved
map image's own pose, or a coarse solve) projects within a few dozen pixels. Restricting the candidates makes
the ratio test meaningful again. Measured in docs/pose.md: night 0 -> 50 % within (0.25 m, 2 deg) at 640x480.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree  # at import: a first call that imports scipy costs 0.35 s

from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.frames import project

FAR_PX = 1e7  # where a map point predicted nowhere is placed for the distance test
OUT_BELOW = -2.0  # cell-path similarities below this are pairs beyond the radius
SPARSE_BELOW_PX = 48.0  # radii under this are matched pair by pair (_sparse_match), wider ones cell by cell


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

    Cost: it runs for every candidate place of every frame. The image is cut into square cells one radius wide,
    so that every keypoint's candidates lie in the 3 x 3 cells around its own; each cell's query keypoints are
    compared with those map keypoints only (about a third of all pairs at 640x480 and a radius of 0.2 x the
    width), by similarities (a.b; for unit vectors |a - b|^2 = 2 - 2 a.b, the same order) in float32. Ties go
    to the lowest index, as one argmax over all pairs would: the same pairs as the definition (test_pose_dense
    checks it against a loop). Narrow radii (a pose centimetres off, verify/polish.py) would cut the image into
    thousands of tiny cells; there the pairs within the radius are listed by a k-d tree instead and compared
    in one go (_sparse_match: the same pairs up to float32 rounding at the border; at 2000 x 2000 keypoints
    one thread, 3.7 against 35 ms at 20 px, 11 against 14 ms at 50 px, slower from ~60 px on)."""
    q = np.asarray(query_uv, np.float64).reshape(-1, 2)
    p = np.asarray(predicted_uv, np.float64).reshape(-1, 2)
    if len(q) == 0 or len(p) == 0 or not radius > 0:
        return np.zeros((0, 2), np.int64)
    if radius < SPARSE_BELOW_PX:
        return _sparse_match(q, p, query_desc, map_desc, radius, ratio)
    reach = np.isfinite(p).all(axis=1) & (p >= q.min(0) - radius).all(axis=1) & (p <= q.max(0) + radius).all(axis=1)
    cols = np.flatnonzero(reach)
    if len(cols) == 0:
        return np.zeros((0, 2), np.int64)
    origin = q.mean(axis=0)  # centred so that float32 keeps sub-pixel resolution for any image size
    best = _Best(len(q), len(cols))
    pairs = _Pairs((q - origin).astype(np.float32), (p[cols] - origin).astype(np.float32),
                   np.asarray(query_desc, np.float32), np.asarray(map_desc, np.float32)[cols],
                   np.float32(radius * radius))
    for rows, idx in _cell_blocks(q, p[cols], radius):
        best.update(rows, idx, pairs.similarities(rows, idx))
    rows = np.flatnonzero(best.col >= 0)
    j = best.col[rows]
    mutual = best.row_of_col[j] == rows
    d_best = np.maximum(2.0 - 2.0 * best.sim[rows], 0.0)
    d_second = np.maximum(2.0 - 2.0 * best.second[rows], 0.0)
    keep = np.isfinite(best.sim[rows]) & (d_best < ratio * ratio * d_second) & mutual
    return np.stack([rows[keep], cols[j[keep]]], 1).astype(np.int64)


def _sparse_match(q: np.ndarray, p: np.ndarray, query_desc: np.ndarray, map_desc: np.ndarray, radius: float,
                  ratio: float) -> np.ndarray:
    """guided_match's pairs for a narrow radius: every (query, map) pair within `radius` px listed by a k-d tree,
    its similarity taken, then best / runner-up per query keypoint and best query keypoint per map keypoint by
    scattered maxima (np.maximum.at; ties to the lowest index, as in the cell path). Neither step sorts: the
    pairs of one polish run to tens of thousands, and sorting them cost more than finding them."""
    ok = np.flatnonzero(np.isfinite(p).all(axis=1))
    if len(ok) == 0:
        return np.zeros((0, 2), np.int64)
    near = cKDTree(q).sparse_distance_matrix(cKDTree(p[ok]), radius, output_type="ndarray")
    rows, cols = near["i"].astype(np.int64), ok[near["j"]]
    if len(rows) == 0:
        return np.zeros((0, 2), np.int64)
    sim = _pair_similarities(np.asarray(query_desc, np.float32), np.asarray(map_desc, np.float32), rows, cols)
    r_best, c_best, top = _top_per(rows, cols, sim, len(q), len(p))
    best_of_row = np.full(len(q), -1, np.int64)
    best_of_row[r_best] = c_best
    second = np.full(len(q), -np.inf, np.float32)
    others = cols != best_of_row[rows]  # (row, col) pairs are unique: this drops each row's best pair only
    np.maximum.at(second, rows[others], sim[others])
    c_has, c_row, _ = _top_per(cols, rows, sim, len(p), len(q))
    row_of_col = np.full(len(p), -1, np.int64)
    row_of_col[c_has] = c_row
    mutual = row_of_col[c_best] == r_best
    d_best = np.maximum(2.0 - 2.0 * top, 0.0)
    d_second = np.maximum(2.0 - 2.0 * second[r_best], 0.0)
    keep = (d_best < ratio * ratio * d_second) & mutual
    return np.stack([r_best[keep], c_best[keep]], 1).astype(np.int64)


def _pair_similarities(qd: np.ndarray, md: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                       chunk: int = 1024) -> np.ndarray:
    """qd[rows[k]] . md[cols[k]] for every k, a chunk at a time: the gathered descriptors stay in cache (3x faster
    than gathering all pairs at once for a polish's ~16,000 pairs)."""
    out = np.empty(len(rows), np.float32)
    for s in range(0, len(rows), chunk):
        out[s:s + chunk] = np.einsum("ij,ij->i", qd[rows[s:s + chunk]], md[cols[s:s + chunk]])
    return out


def _top_per(keys: np.ndarray, others: np.ndarray, sim: np.ndarray, n_keys: int,
             n_others: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each key that has pairs (ascending): the other index of its most similar pair, ties to the lowest, and
    that similarity."""
    top = np.full(n_keys, -np.inf, np.float32)
    np.maximum.at(top, keys, sim)
    at_top = sim == top[keys]
    pick = np.full(n_keys, n_others, np.int64)
    np.minimum.at(pick, keys[at_top], others[at_top])
    has = np.flatnonzero(pick < n_others)
    return has, pick[has], top[has]


def _cell_blocks(q: np.ndarray, p: np.ndarray, radius: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(query rows, map columns) per occupied cell of query keypoints: the cell's rows and every map keypoint in
    the 3 x 3 cells around it, both ascending (so argmax keeps the lowest index among ties)."""
    lo = np.minimum(q.min(0), p.min(0))
    qc, pc = np.floor((q - lo) / radius).astype(np.int64) + 1, np.floor((p - lo) / radius).astype(np.int64) + 1
    stride = int(max(qc[:, 1].max(), pc[:, 1].max())) + 2
    q_key, p_key = qc[:, 0] * stride + qc[:, 1], pc[:, 0] * stride + pc[:, 1]
    around = np.array([dx * stride + dy for dx in (-1, 0, 1) for dy in (-1, 0, 1)])
    q_order, p_order = np.argsort(q_key, kind="stable"), np.argsort(p_key, kind="stable")
    q_sorted, p_sorted = q_key[q_order], p_key[p_order]
    bounds = np.flatnonzero(np.r_[True, q_sorted[1:] != q_sorted[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        cells = q_sorted[a] + around
        first, last = np.searchsorted(p_sorted, cells, "left"), np.searchsorted(p_sorted, cells, "right")
        idx = np.sort(np.concatenate([p_order[s:e] for s, e in zip(first, last)]))
        if len(idx):
            yield q_order[a:b], idx


@dataclass
class _Pairs:
    """Pixel positions (centred) and descriptors of both sides, for the similarities of one cell block."""

    qf: np.ndarray
    pf: np.ndarray
    qd: np.ndarray
    md: np.ndarray
    radius2: np.float32

    def similarities(self, rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """(len(rows), len(idx)) descriptor similarities, pushed below OUT_BELOW where the map keypoint is predicted
        beyond the radius of the query keypoint (unit vectors are within [-1, 1]: the two never meet). A subtraction
        rather than a masked copy of -inf, which cost a third of a wide guided match."""
        qf, pf = self.qf[rows], self.pf[idx]
        d2 = (qf * qf).sum(1)[:, None] + (pf * pf).sum(1)[None] - 2.0 * (qf @ pf.T)
        sim = self.qd[rows] @ self.md[idx].T
        sim -= np.float32(2.0 - 2.0 * OUT_BELOW) * (d2 > self.radius2)
        return sim


def _inside(sim: np.ndarray) -> np.ndarray:
    """Similarities of pairs beyond the radius (_Pairs.similarities) as -inf: no candidate."""
    return np.where(sim < OUT_BELOW, np.float32(-np.inf), sim)


class _Best:
    """Running best and runner-up per query keypoint, and best query keypoint per map keypoint, over blocks."""

    def __init__(self, n: int, m: int) -> None:
        self.col = np.full(n, -1, np.int64)  # best map column per query row (-1: no candidate seen)
        self.sim = np.full(n, -np.inf, np.float32)
        self.second = np.full(n, -np.inf, np.float32)
        self.col_sim = np.full(m, -np.inf, np.float32)  # best similarity per map column ...
        self.row_of_col = np.full(m, n, np.int64)  # ... and its query row (n: none)

    def update(self, rows: np.ndarray, idx: np.ndarray, sim: np.ndarray) -> None:
        """Each query row meets all its candidates in one block; a map column appears in several blocks."""
        r, j = np.arange(len(rows)), np.argmax(sim, axis=1)
        top = sim[r, j].copy()
        sim[r, j] = -np.inf
        self.second[rows] = _inside(sim.max(axis=1)) if sim.shape[1] > 1 else -np.inf
        sim[r, j] = top
        self.col[rows], self.sim[rows] = idx[j], _inside(top)
        i = np.argmax(sim, axis=0)
        col_top, row = _inside(sim[i, np.arange(len(idx))]), rows[i]
        old, old_row = self.col_sim[idx], self.row_of_col[idx]
        better = (col_top > old) | ((col_top == old) & (row < old_row) & np.isfinite(col_top))
        self.col_sim[idx[better]], self.row_of_col[idx[better]] = col_top[better], row[better]
