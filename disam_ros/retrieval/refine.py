"""Exact re-scoring of a compact map's shortlist (`pca-full` maps, `DescriptorSettings.coarse_refine`).

Why: a compact map ranks by PCA vectors of coarse codes pooled to 16x16, and for a code finer than that grid
(the small preset's 32x32) the pooling moves the top-1 (Nordland: 1-4 points of R@1 below `exact`). The map
also keeps each image's full-grid vectors on disk, and only the shortlist's rows are read, so the answer is
ranked exactly as an `exact` map would rank it while RAM stays the compact map's. The sequence filter's per-place
scores stay the compact ones: its observation model is estimated from the map's own compact vectors, and a
vector half on one scale and half on another would break that estimate.
"""
from __future__ import annotations

import numpy as np

BLOCK_BYTES = 4 << 20  # float32 rows converted at a time: a block stays in cache (all 64 at once: 8x slower)


def exact_scores(rows: np.ndarray, ids: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Eq. 16 of the stored full-grid vectors `rows[ids]` with the query's full-grid vector `q`, float32.

    Rows are read in ascending order (the file is then read forwards) and widened to float32 by
    torch a cache-sized block at a time: numpy's float16 conversion of the small preset's 64 rows took 26 ms
    on one thread, this ~3 ms."""
    import torch  # here, not at import: see retrieval/index.py

    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    qt = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))
    step = max(1, BLOCK_BYTES // (4 * max(1, len(qt))))
    sorted_ids = ids[order]
    parts = [torch.from_numpy(np.asarray(rows[sorted_ids[j:j + step]])).float() @ qt
             for j in range(0, len(sorted_ids), step)]
    out = np.empty(len(ids), np.float32)
    out[order] = torch.cat(parts).numpy() if parts else np.zeros(0, np.float32)
    return out


def refined_ranking(ids: np.ndarray, scores: np.ndarray, rows: np.ndarray, q: np.ndarray, count: int,
                    k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best k of a compact ranking: its best `count` by exact score first (ties by map index), then, when k
    is larger, the others in their own order with their own scores."""
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    keep = ids >= 0  # faiss pads missing results with -1
    ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))
    head, tail = order[:count], order[count:]
    exact = exact_scores(rows, ids[head], q)
    first = np.lexsort((ids[head], -exact))
    out_ids = np.concatenate([ids[head][first], ids[tail]])[:k]
    return out_ids, np.concatenate([exact[first], scores[tail]])[:k]


__all__ = ["exact_scores", "refined_ranking"]
