"""IVF-PQ coarse index for million-image maps (issue 16): the PCA'd coarse vectors product-quantised.

A 512-dim float16 coarse vector is 1 KiB; 64 one-byte PQ codes (plus an 8-byte id and the 8-byte direct map
the search builds for gated queries) keep a map at ~80 B of RAM per image, so 10^6 images fit in ~100 MB.
The codes only shortlist: the fine re-rank on full-resolution, memory-mapped features makes the answer.
"""
from __future__ import annotations

import math
from typing import Any

from disam_ros.retrieval.descriptors import DescriptorSettings

MAX_TRAIN = 65536  # 256 rows per PQ centroid x 256 centroids: enough for the sub-quantisers and the lists


def pq_subquantizers(d: int, pq_m: int) -> int:
    """The largest divisor of d not above pq_m: faiss needs d % M == 0."""
    return max(k for k in range(1, min(pq_m, d) + 1) if d % k == 0)


def ivfpq_index(n: int, d: int, s: DescriptorSettings, auto_nlist: int) -> tuple[Any, int]:
    """(untrained faiss IndexIVFPQ over inner products, training sample size) for n vectors of d dims.

    Maps whose sample has fewer than 256 rows get fewer bits per code, since k-means needs k <= rows; the
    manifest's settings still say pq_m, the index itself records M and nbits."""
    import faiss

    nlist = min(s.ivf_nlist or auto_nlist, n)
    n_train = min(n, max(64 * nlist, MAX_TRAIN))
    nbits = max(1, min(8, int(math.log2(n_train))))
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, pq_subquantizers(d, s.pq_m), nbits,
                             faiss.METRIC_INNER_PRODUCT)
    index.cp.min_points_per_centroid = 1  # small maps: the sample is what it is, no warning per build
    index.pq.cp.min_points_per_centroid = 1
    return index, n_train
