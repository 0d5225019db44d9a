"""Coarse search backends: exhaustive or approximate top-k by inner product over the map's coarse vectors.

All backends score the same quantity (stored vector, as stored, dot float32 query) and order ties by map
index, so they return the same top-k. None loops over map images in Python.

* numpy: float32 copy in RAM (float16 maps are upcast once), BLAS sgemv on all cores. The fastest CPU
  path measured here: float32 sgemv streams at memory bandwidth, float16 kernels do not.
* faiss: IndexFlatIP / IndexScalarQuantizer(fp16) for flat maps (no upcast), the stored IVF / HNSW index
  otherwise (approximate; `nprobe` / `ef_search` trade speed for recall). An ivfpq map with `refine`
  re-scores the index's best `refine` codes exactly on its float16 vectors, memory-mapped from disk.
* torch: the vectors resident on the device in their stored dtype, one matmul + topk (the CUDA path).
  Half-precision scores pick a widened shortlist which is rescored in float32, so the order matches.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from disam_ros.maps.ivfpq import IVFPQ_NPROBE
from disam_ros.maps.localization_map import LocalizationMap
from disam_ros.maps.map_format import COARSE_NPY
from disam_ros.maps.npy_rows import RowFile

if TYPE_CHECKING:  # torch is imported where it runs, so tools that never search (--help, map-info) start light
    import torch

BACKENDS = ("auto", "numpy", "faiss", "torch")
_SUBSET_GATHER_FRACTION = 0.25  # below this share of the map, score only the gated rows
_CHUNK_ROWS = 8192
NUMPY_UPCAST_LIMIT = 2 << 30


class CoarseIndex(Protocol):
    backend: str
    size: int

    def search(self, q: torch.Tensor, k: int, subset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the k best map images, best first; `subset` restricts the candidates."""
        ...

    def resident_bytes(self) -> int:
        ...


def rank(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k by score, ties broken by smaller map index so every backend agrees."""
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    keep = ids >= 0  # faiss pads missing results with -1
    ids, scores = ids[keep], scores[keep]
    if len(ids) > 4 * k:
        part = np.argpartition(-scores, k - 1)[:k]
        ids, scores = ids[part], scores[part]
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order]


class NumpyFlatIndex:
    backend = "numpy"

    def __init__(self, vectors: np.ndarray) -> None:
        if vectors.dtype == np.float32:
            self.x = vectors  # a memmap stays zero-copy: the page cache is the resident copy
        else:
            self.x = np.empty(vectors.shape, np.float32)
            for i in range(0, len(vectors), _CHUNK_ROWS):
                self.x[i:i + _CHUNK_ROWS] = vectors[i:i + _CHUNK_ROWS]
        self.size = len(vectors)

    def search(self, q: torch.Tensor, k: int, subset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        qn = q.detach().float().cpu().numpy()
        if subset is None:
            return rank(np.arange(self.size), self.x @ qn, k)
        if len(subset) <= _SUBSET_GATHER_FRACTION * self.size:
            return rank(subset, self.x[subset] @ qn, k)
        scores = self.x @ qn
        return rank(subset, scores[subset], k)

    def resident_bytes(self) -> int:
        return int(self.x.nbytes)


class TorchFlatIndex:
    backend = "torch"

    def __init__(self, vectors: np.ndarray, device: torch.device) -> None:
        import torch

        self.device = device
        self.size = len(vectors)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only memmap: we never write through it
            if device.type == "cpu":
                self.x = torch.from_numpy(vectors)
            else:
                self.x = torch.empty(vectors.shape, dtype=getattr(torch, vectors.dtype.name), device=device)
                for i in range(0, len(vectors), _CHUNK_ROWS):
                    self.x[i:i + _CHUNK_ROWS].copy_(torch.from_numpy(np.ascontiguousarray(vectors[i:i + _CHUNK_ROWS])))

    def search(self, q: torch.Tensor, k: int, subset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        import torch

        q32 = q.detach().to(self.device, torch.float32)
        rows = self.x if subset is None else self.x.index_select(0, torch.as_tensor(subset, device=self.device))
        scores = rows @ q32.to(rows.dtype)
        if rows.dtype != torch.float32:  # half scores only shortlist; rescore exactly in float32
            short = torch.topk(scores.float(), min(len(scores), 2 * k + 32)).indices
            scores = rows.index_select(0, short).float() @ q32
        else:
            short = torch.topk(scores, min(len(scores), 2 * k + 32)).indices
            scores = scores.index_select(0, short)
        local = short.cpu().numpy()
        ids = local if subset is None else np.asarray(subset)[local]
        return rank(ids, scores.cpu().numpy(), k)

    def resident_bytes(self) -> int:
        return int(self.x.numel() * self.x.element_size())


class FaissIndex:
    backend = "faiss"

    def __init__(self, index: Any, nprobe: int = 16, ef_search: int = 64, direct_map: bool = True) -> None:
        import faiss

        self.index = index
        self.size = int(index.ntotal)
        self._params = None
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            if direct_map:
                ivf.make_direct_map()  # gated search reconstructs rows by id (8 B of RAM per image)
            self._params = faiss.SearchParametersIVF(nprobe=nprobe)
        elif isinstance(index, faiss.IndexHNSW):
            self._params = faiss.SearchParametersHNSW(efSearch=max(ef_search, 1))

    @classmethod
    def from_vectors(cls, vectors: np.ndarray) -> FaissIndex:
        import faiss

        d = vectors.shape[1]
        if vectors.dtype == np.float16:
            index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexFlatIP(d)
        for i in range(0, len(vectors), _CHUNK_ROWS):
            index.add(np.ascontiguousarray(vectors[i:i + _CHUNK_ROWS], dtype=np.float32))
        return cls(index)

    def search(self, q: torch.Tensor, k: int, subset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        qn = np.ascontiguousarray(q.detach().float().cpu().numpy().reshape(1, -1))
        if subset is not None:
            rows = self.index.reconstruct_batch(np.asarray(subset, dtype=np.int64))
            return rank(subset, rows @ qn[0], k)
        kk = min(self.size, 2 * k + 32)  # widened so ties at the k-th place resolve by index like elsewhere
        scores, ids = self.index.search(qn, kk, params=self._params)
        return rank(ids[0], scores[0], k)

    def resident_bytes(self) -> int:
        import faiss

        return len(faiss.serialize_index(self.index)) if self.size <= 200_000 else -1


class RefinedFaissIndex(FaissIndex):
    """faiss shortlists `refine` candidates, then they are scored exactly on `vectors` (the map's float16 coarse
    vectors on disk, `npy_rows.RowFile`: only the shortlist's rows are read, so RAM stays the index's ~75 B per
    image and no read page stays in the process's RSS).

    This is faiss' IndexRefine idea without its RAM copy of the vectors: PQ codes cost ~4 points of coarse
    R@1 on Nordland, re-scoring 128 of them costs 128 random 1 KiB reads per query. Gated searches score
    the gated rows exactly, so no direct map is needed."""

    def __init__(self, index: Any, vectors: np.ndarray | RowFile, refine: int, nprobe: int = 16, ef_search: int = 64
                 ) -> None:
        super().__init__(index, nprobe, ef_search, direct_map=False)
        self.vectors, self.refine = vectors, int(refine)

    def exact_scores(self, ids: np.ndarray, qn: np.ndarray) -> np.ndarray:
        """Inner products of the stored (float16) vectors `ids` (sorted, unique) with the float32 query."""
        return np.asarray(self.vectors[ids], dtype=np.float32) @ qn

    def search(self, q: torch.Tensor, k: int, subset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        qn = np.ascontiguousarray(q.detach().float().cpu().numpy().reshape(1, -1))
        if subset is not None:
            ids = np.unique(np.asarray(subset, dtype=np.int64))
        else:
            _, found = self.index.search(qn, min(self.size, max(self.refine, 2 * k + 32)), params=self._params)
            ids = np.unique(found[0][found[0] >= 0])  # sorted: the reads ascend through the file
        return rank(ids, self.exact_scores(ids, qn[0]), k)


def resolve_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available: use 'cpu' or 'auto'")
    return dev


def auto_backend(m: LocalizationMap, dev: torch.device) -> str:
    """torch on CUDA; faiss for ivf/hnsw maps; numpy for flat maps unless a float16 map's float32 copy would
    exceed NUMPY_UPCAST_LIMIT bytes, then torch (float16 in place, memory-mapped, about 3x slower per row)."""
    if dev.type == "cuda":
        return "torch"
    if m.coarse_faiss is not None:
        return "faiss"
    if m.coarse.dtype != np.float32 and m.coarse.size * 4 > NUMPY_UPCAST_LIMIT:
        return "torch"
    return "numpy"


def make_index(m: LocalizationMap, backend: str = "auto", device: str = "auto", nprobe: int | None = None,
               ef_search: int = 64) -> CoarseIndex:
    """The coarse search backend for this map and device (see `auto_backend` for "auto"); `nprobe` None visits
    16 IVF lists, or IVFPQ_NPROBE on ivfpq maps (whose ADC scan is cheap next to the query's PCA projection)."""
    if nprobe is None:
        nprobe = IVFPQ_NPROBE if m.settings.index == "ivfpq" else 16
    if backend not in BACKENDS:
        raise ValueError(f"unknown search backend {backend!r}: use one of {list(BACKENDS)}")
    dev = resolve_device(device)
    if backend == "auto":
        backend = auto_backend(m, dev)
    if backend == "faiss":
        if m.coarse_faiss is not None and m.settings.refine and m.settings.index != "flat":
            return RefinedFaissIndex(m.coarse_faiss, refine_vectors(m), m.settings.refine, nprobe, ef_search)
        if m.coarse_faiss is not None:
            return FaissIndex(m.coarse_faiss, nprobe, ef_search)
        return FaissIndex.from_vectors(m.coarse)
    vectors = m.coarse_matrix()
    if backend == "torch":
        return TorchFlatIndex(vectors, dev)
    return NumpyFlatIndex(vectors)


def refine_vectors(m: LocalizationMap) -> RowFile:
    """The refine rows of an ivfpq map (coarse.npy beside the index), always on disk, read by row (`npy_rows`)."""
    return RowFile(m.root / COARSE_NPY, (len(m), m.coarse_dim), m.settings.coarse_dtype)
