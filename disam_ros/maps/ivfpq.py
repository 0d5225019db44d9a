"""faiss coarse indexes of a map (ivf / hnsw / ivfpq), built from the final coarse vectors.

IVF-PQ is the million-image index: a 512-dim float16 coarse vector is 1 KiB, its 128 one-byte PQ
codes plus an 8-byte id keep a map at ~140 B of RAM per image, so 10^6 images fit in ~150 MB. Both quantisers
(the IVF lists and the PQ codebooks) are trained on a sample of at most MAX_TRAIN rows, so a build costs about
a minute per million images on one core, not the hours a k-means over every row would. The PQ codes only
shortlist: `DescriptorSettings.refine` re-scores the best codes on the float16 vectors kept on disk, then the
fine re-rank on full-resolution, memory-mapped features makes the answer.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from disam_ros.maps.descriptors import DescriptorSettings

MAX_TRAIN = 65536  # 256 rows per PQ centroid x 256 centroids: enough for the sub-quantisers and the lists
MAX_IVFPQ_NLIST = 1024  # ~1k codes per list at 1M; the list k-means on a 64k sample takes ~30 s
# Lists an ivfpq search visits unless SearchConfig.nprobe says otherwise: at nprobe 16 of 1024 lists the IVF step
# alone lost a third of the exact top-3 on `disam-bench retrieval scale` (100k, a probe seed), at 128 4 %.
IVFPQ_NPROBE = 128
_CHUNK = 8192


def auto_nlist(n: int) -> int:
    """IVF lists for n vectors: about 4 sqrt(n), and at least 39 training rows per list (faiss' minimum)."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def ivfpq_nlist(n: int, s: DescriptorSettings) -> int:
    """IVF-PQ lists: as `auto_nlist` but at most MAX_IVFPQ_NLIST, since the list k-means is what dominates a
    million-image build (4000 lists over a 256k sample took ~10 min on one core; 1024 over 64k ~30 s)."""
    return min(s.ivf_nlist or min(auto_nlist(n), MAX_IVFPQ_NLIST), n)


def pq_subquantizers(d: int, pq_m: int) -> int:
    """The largest divisor of d not above pq_m: faiss needs d % M == 0."""
    return max(k for k in range(1, min(pq_m, d) + 1) if d % k == 0)


def ivfpq_index(n: int, d: int, s: DescriptorSettings) -> tuple[Any, int]:
    """(untrained faiss IndexIVFPQ over inner products, training sample size) for n vectors of d dims.

    Maps whose sample has fewer than 256 rows get fewer bits per code, since k-means needs k <= rows; the
    manifest's settings still say pq_m, the index itself records M and nbits."""
    import faiss

    nlist = ivfpq_nlist(n, s)
    n_train = min(n, max(64 * nlist, MAX_TRAIN))
    nbits = max(1, min(8, int(math.log2(n_train))))
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, pq_subquantizers(d, s.pq_m), nbits,
                             faiss.METRIC_INNER_PRODUCT)
    index.cp.min_points_per_centroid = 1  # small maps: the sample is what it is, no warning per build
    index.pq.cp.min_points_per_centroid = 1
    return index, n_train


def build_faiss(vectors: np.ndarray, s: DescriptorSettings, progress: Any = None) -> Any:
    """IVF, IVF-PQ or HNSW over the final coarse vectors (float16 storage via faiss' fp16 scalar quantizer).

    Training reads an evenly spaced sample (a memmap is fine); rows are added in chunks, so a million-image
    map never needs its float32 copy in RAM. `progress(done, total)` is called after each chunk."""
    import faiss

    n, d = vectors.shape
    fp16 = s.coarse_dtype == "float16"
    ip, qt = faiss.METRIC_INNER_PRODUCT, faiss.ScalarQuantizer.QT_fp16
    if s.index == "ivf":
        nlist = min(s.ivf_nlist or auto_nlist(n), n)
        quantizer = faiss.IndexFlatIP(d)
        index = (faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, qt, ip) if fp16
                 else faiss.IndexIVFFlat(quantizer, d, nlist, ip))
        n_train = min(n, 256 * nlist)
    elif s.index == "ivfpq":
        index, n_train = ivfpq_index(n, d, s)
    elif s.index == "hnsw":
        index = faiss.IndexHNSWSQ(d, qt, s.hnsw_m, ip) if fp16 else faiss.IndexHNSWFlat(d, s.hnsw_m, ip)
        index.hnsw.efConstruction = 80
        n_train = min(n, 4096)
    else:
        raise ValueError(f"index {s.index!r} is not a faiss index: use one of ivf, hnsw, ivfpq")
    rows = np.linspace(0, n - 1, n_train).astype(np.int64)
    index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
    for i in range(0, n, _CHUNK):
        index.add(np.ascontiguousarray(vectors[i:i + _CHUNK], dtype=np.float32))
        if progress is not None:
            progress(min(i + _CHUNK, n), n)
    return index


def shortlist_recall(ann_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of |ANN top-K ∩ exact top-K| / K for (Q, K) id arrays (faiss' -1 padding never
    matches): how much of the exact shortlist the approximate index finds."""
    ann, exact = np.asarray(ann_ids), np.asarray(exact_ids)
    if ann.shape != exact.shape or ann.ndim != 2 or ann.shape[1] == 0:
        raise ValueError(f"shortlists of shape {ann.shape} and {exact.shape}: need two (Q, K) arrays, K >= 1")
    hits = [len(np.intersect1d(a[a >= 0], e)) for a, e in zip(ann, exact)]
    return float(np.mean(hits) / ann.shape[1])
