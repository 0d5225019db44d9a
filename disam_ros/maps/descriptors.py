"""Descriptors for the two retrieval stages, as inner products so a whole map is scored by one matmul.

Coarse (paper eq. 16): Y(z_i, z_j) = 1/C * sum_k cos(z_i^k, z_j^k), the mean over channels of the cosine
between the spatial maps of channel k. L2-normalising each channel's map, flattening, and scaling by
1/sqrt(C) makes Y exactly the dot product of two such vectors. A channel whose map is all zero contributes
0 (eq. 16 is 0/0 there; ReLU-like features do produce dead channels).

Fine (Sec. IV-C): plain cosine of the flattened fine features, i.e. the dot product of L2-normalised vectors.

Compact modes trade accuracy for memory and speed, and `docs/retrieval_accuracy.md` measures the cost:
spatial average pooling to a g x g grid before the normalisation (eq. 16 on the pooled maps), PCA fitted on
the map (stored with it), float16 storage, and faiss IVF/HNSW indexes for large maps.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

DTYPES = ("float32", "float16")
INDEXES = ("flat", "ivf", "hnsw", "ivfpq")


@dataclass(frozen=True)
class DescriptorSettings:
    """How map images are described and indexed; recorded in the map manifest so queries match exactly.

    `coarse_grid`/`fine_grid` None keeps the full content-code resolution (paper-exact); `pca_dim` None
    skips PCA; `index` "flat" is exhaustive, "ivf"/"hnsw" are faiss approximate indexes for large maps,
    "ivfpq" an IVF index of `pq_m`-byte product-quantised codes (a million-image map in a few hundred MB).
    """

    mode: str = "exact"
    coarse_grid: int | None = None
    pca_dim: int | None = None
    coarse_dtype: str = "float32"
    index: str = "flat"
    ivf_nlist: int | None = None  # None: about 4*sqrt(N), at least 39 training points per list
    hnsw_m: int = 32
    pq_m: int = 64  # ivfpq: sub-quantisers, one byte each (fewer bits when the map is too small to train 256)
    refine: int | None = None  # ivfpq: PQ shortlist re-scored on the float16 vectors kept on disk (coarse.npy)
    coarse_refine: int | None = None  # this many of the shortlist re-scored on full-grid vectors (coarse_full.npy)
    fine_grid: int | None = None
    fine_dtype: str = "float16"

    def __post_init__(self) -> None:
        for name in ("coarse_grid", "pca_dim", "ivf_nlist", "fine_grid", "pq_m", "refine", "coarse_refine"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"descriptor setting {name}={v!r} must be a positive integer or None")
        if self.coarse_dtype not in DTYPES or self.fine_dtype not in DTYPES:
            raise ValueError(f"descriptor dtypes must be one of {list(DTYPES)}, got "
                             f"coarse={self.coarse_dtype!r} fine={self.fine_dtype!r}")
        if self.index not in INDEXES:
            raise ValueError(f"descriptor index {self.index!r} is unknown: use one of {list(INDEXES)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DescriptorSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown descriptor settings {unknown}: valid keys are {sorted(known)}")
        return cls(**data)


# Named presets for `--mode`. At the paper's 256x64x64 content code the compact ones stay within 64 KiB
# of coarse + fine per image: pooled = 8x8 coarse (32 KiB fp16) + 8x8 fine (32 KiB fp16); pca = 16x16 coarse
# projected to 512 dims (1 KiB fp16) + 8x8 fine. Pooling is what costs accuracy, PCA from the finer grid
# barely does (docs/retrieval_accuracy.md), hence the different grids.
MODES: dict[str, DescriptorSettings] = {
    "exact": DescriptorSettings("exact"),
    "exact16": DescriptorSettings("exact16", coarse_dtype="float16"),
    "pooled": DescriptorSettings("pooled", coarse_grid=8, coarse_dtype="float16", fine_grid=8),
    "pca": DescriptorSettings("pca", coarse_grid=16, pca_dim=512, coarse_dtype="float16", fine_grid=8),
    "ivf": DescriptorSettings("ivf", coarse_grid=16, pca_dim=512, coarse_dtype="float16", index="ivf", fine_grid=8),
    "hnsw": DescriptorSettings("hnsw", coarse_grid=16, pca_dim=512, coarse_dtype="float16", index="hnsw",
                               fine_grid=8),
}
# Compact in RAM, exact in the re-rank: the same PCA'd coarse vectors (1 KiB per image resident),
# but the fine features at full resolution in float16 on disk. Only the N shortlisted rows are read per
# query (maps/npy_rows.py), so they cost disk (2 MiB per image at the paper size), not RAM; the
# 8x8 pooling of the fine stage is what costs the plain compact modes their accuracy.
for _name in ("pca", "ivf", "hnsw"):
    MODES[f"{_name}-full"] = replace(MODES[_name], mode=f"{_name}-full", fine_grid=None)
del _name
# pca-full also keeps the coarse vectors at the content code's full grid (float16, on disk): its best
# COARSE_REFINE by the pooled PCA vectors are re-scored on them, so it ranks as `exact` does. The 16x16 pooling,
# not the PCA, is what cost the small preset's 32x32 code 1-4 points of Nordland R@1; 64 rows gave exact's top-1
# on every query of the route's training part (docs/retrieval_accuracy.md). Only pca-full by default: the
# million-image modes would need hundreds of GB for them (`disam-build-map --coarse-refine N` asks for them).
COARSE_REFINE = 64
MODES["pca-full"] = replace(MODES["pca-full"], coarse_refine=COARSE_REFINE)
# Million-image maps: 512 PCA dims product-quantised to 128 bytes + 8-byte ids ~ 140 B of RAM per image (64-byte
# codes lost 8 points of shortlist recall@3 at 100k); the fine re-rank on full features makes the answer.
# The PQ codes cost ~4 points of coarse R@1, so their best `refine` are re-scored on the float16 PCA vectors,
# read by row from disk (1 KiB/img of disk, 256 random 1 KiB reads per query, no RAM).
MODES["ivfpq"] = replace(MODES["ivf-full"], mode="ivfpq", index="ivfpq", pq_m=128, refine=256)


def settings_for_mode(mode: str, **overrides: Any) -> DescriptorSettings:
    """A preset with some fields replaced (None values in `overrides` leave the preset's value)."""
    if mode not in MODES:
        raise ValueError(f"unknown map mode {mode!r}: use one of {list(MODES)}")
    return replace(MODES[mode], **{k: v for k, v in overrides.items() if v is not None})


def pooled_shape(content_shape: tuple[int, int, int], grid: int | None) -> tuple[int, int, int]:
    """(C, h', w') after pooling; a grid at least the map size keeps the full resolution."""
    c, h, w = content_shape
    if grid is None:
        return (c, h, w)
    return (c, min(grid, h), min(grid, w))


def pool(feats: Tensor, grid: int | None) -> Tensor:
    """Average-pool (B, C, h, w) to at most grid x grid; identity when no pooling is asked for."""
    if grid is None or (feats.shape[-2] <= grid and feats.shape[-1] <= grid):
        return feats
    import torch.nn.functional as F  # torch only where vectors are made: map-info and --help stay light

    return F.adaptive_avg_pool2d(feats, (min(grid, feats.shape[-2]), min(grid, feats.shape[-1])))


def _as_batch(feats: Tensor | np.ndarray) -> Tensor:
    import torch

    t = torch.as_tensor(feats)
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4:
        raise ValueError(f"feature maps have shape {tuple(t.shape)}: expected (C,h,w) or (B,C,h,w)")
    return t.float()


def coarse_vectors(feats: Tensor | np.ndarray, grid: int | None = None) -> Tensor:
    """(B, C*h'*w') float32 with <a, b> = eq. 16 of the (pooled) maps a and b."""
    import torch.nn.functional as F

    x = pool(_as_batch(feats), grid)
    b, c = x.shape[:2]
    x = F.normalize(x.reshape(b, c, -1), dim=-1, eps=1e-12)
    return x.reshape(b, -1) / math.sqrt(c)


def fine_vectors(feats: Tensor | np.ndarray, grid: int | None = None) -> Tensor:
    """(B, C*h'*w') float32 unit vectors: <a, b> is the cosine of the flattened (pooled) features."""
    import torch.nn.functional as F

    x = pool(_as_batch(feats), grid)
    return F.normalize(x.reshape(x.shape[0], -1), dim=-1, eps=1e-12)


@dataclass(frozen=True, eq=False)
class PcaProjection:
    """Rows of `components` (d, D) are orthonormal principal directions of the map's coarse vectors.

    The map stores P(x - mean) and a query is projected without centring: P q . P(x - mean) + q . mean
    approximates q . x, and the second term is the same for every map image, so rankings follow eq. 16
    and the reported score stays on its scale.
    """

    mean: np.ndarray
    components: np.ndarray
    _on_device: dict = field(default_factory=dict, repr=False)

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    def project_map(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) - self.mean) @ self.components.T

    def project_query(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """(projected query, score offset q . mean) on q's device (the matrices are copied there once)."""
        if q.device not in self._on_device:
            import torch

            self._on_device[q.device] = (torch.as_tensor(self.components, device=q.device),
                                         torch.as_tensor(self.mean, device=q.device))
        comp, mean = self._on_device[q.device]
        return q @ comp.T, q @ mean

    def save(self, path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, mean=self.mean, components=self.components)

    @classmethod
    def load(cls, path: Path) -> PcaProjection:
        with np.load(path) as z:
            return cls(np.asarray(z["mean"], np.float32), np.asarray(z["components"], np.float32))


def fit_pca(x: np.ndarray, dim: int, max_samples: int = 20000, seed: int = 0, chunk: int = 4096,
            max_sample_bytes: int = 1 << 30) -> PcaProjection:
    """Deterministic PCA of the rows of x (a memmap is fine: only a subsample is read into memory).

    The sample is capped at `max_samples` rows and `max_sample_bytes` of float32, so fitting 8x8-pooled
    paper features (16384 dims) stays around a GiB. Signs are fixed (largest-magnitude loading positive) so
    two builds of the same data agree bit for bit.
    """
    n, d_in = x.shape
    cap = max(1, min(max_samples, max_sample_bytes // (4 * d_in)))
    rows = np.arange(n) if n <= cap else np.sort(np.random.default_rng(seed).choice(n, cap, False))
    sample = np.concatenate([np.asarray(x[rows[i:i + chunk]], np.float32) for i in range(0, len(rows), chunk)])
    mean = sample.mean(axis=0, dtype=np.float64)
    centred = sample - mean.astype(np.float32)
    del sample
    dim = max(1, min(dim, d_in, len(rows)))
    small = min(len(rows), d_in)
    if small > 4096 and dim < small // 4:
        comps = _randomized_components(centred, dim, seed)
    elif len(rows) >= d_in:
        c64 = centred.astype(np.float64)
        evecs = np.linalg.eigh(c64.T @ c64)[1]
        comps = evecs[:, ::-1][:, :dim].T
    else:
        comps = np.linalg.svd(centred.astype(np.float64), full_matrices=False)[2][:dim]
    signs = np.sign(comps[np.arange(dim), np.argmax(np.abs(comps), axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    return PcaProjection(mean.astype(np.float32), np.ascontiguousarray(comps, dtype=np.float32))


def _randomized_components(centred: np.ndarray, dim: int, seed: int, oversample: int = 32,
                           power_iters: int = 3) -> np.ndarray:
    """Top `dim` right singular vectors by a seeded randomized range finder (Halko et al. 2011).

    Exact SVD of a 20k x 16k sample (8x8-pooled paper features) costs minutes; this costs seconds and is
    as deterministic as the seed.
    """
    rng = np.random.default_rng(seed)
    omega = rng.standard_normal((centred.shape[1], dim + oversample))
    q = np.linalg.qr(centred @ omega)[0]
    for _ in range(power_iters):
        q = np.linalg.qr(centred @ (centred.T @ q))[0]
    return np.linalg.svd(q.T @ centred, full_matrices=False)[2][:dim]


_NPY_HEADER = 128  # what NpyAppender writes
_POSE_LINE = 100  # a TUM line as write_tum formats it (stamp, 3 x %.6f, 4 x %.9f)


@dataclass(frozen=True)
class MapSizeEstimate:
    """What a map will cost, known before encoding a single image (from shapes, settings and image count).

    files: bytes per file on disk; peak_disk: during the build (pre-PCA vectors beside the final ones);
    ram: what the localizer keeps resident for the coarse search (fine features are read by row: only the
    top-N rows of a query are read, so they cost disk and page cache, not process memory)."""

    files: dict[str, int]
    peak_disk: int
    ram: int

    @property
    def disk(self) -> int:
        return sum(self.files.values())


GEOMETRY_ROW_BYTES = {"geometry_keypoints.npy": 8, "geometry_descriptors.npy": 128, "geometry_points3d.npy": 12,
                      "geometry_gradients.npy": 128}  # the last: dense-search descriptors (built by default)
TRIANGULATE_TEMP_ROW_BYTES = 8 + 128 + 128  # keypoints, descriptors, gradients on disk between the two passes
LEARNED_ROW_BYTES = {"geometry_learned_keypoints.npy": 8, "geometry_learned_descriptors.npy": 128,
                     "geometry_learned_points3d.npy": 12}  # 64 float16 descriptors (maps/feature_kind.py)
LEARNED_TEMP_ROW_BYTES = 8 + 128


def geometry_size(n: int, keypoints: int, triangulate: bool, learned: int = 0, net_bytes: int = 0
                  ) -> tuple[dict[str, int], int]:
    """Map geometry files for n images of at most `keypoints` SIFT and `learned` learned keypoints each (an upper
    bound: images with fewer cost less; `net_bytes`: the network file the learned block copies), and the
    temporary bytes a triangulating build holds beside them until it ends."""
    files = {k: _NPY_HEADER + n * keypoints * b for k, b in GEOMETRY_ROW_BYTES.items()}
    files["geometry_offsets.npy"] = _NPY_HEADER + 8 * (n + 1)
    if learned:
        files.update({k: _NPY_HEADER + n * learned * b for k, b in LEARNED_ROW_BYTES.items()})
        files["geometry_learned_offsets.npy"] = _NPY_HEADER + 8 * (n + 1)
        files["geometry_learned_net.pt"] = net_bytes
    temp = n * (keypoints * TRIANGULATE_TEMP_ROW_BYTES + learned * LEARNED_TEMP_ROW_BYTES)
    return files, (temp if triangulate else 0)


def estimate_map_size(n: int, coarse_content: tuple[int, int, int], fine_content: tuple[int, int, int] | None,
                      s: DescriptorSettings, name_bytes: int = 12,
                      geometry: tuple[int, bool] | tuple[int, bool, int, int] | None = None) -> MapSizeEstimate:
    """Bytes of the map `build_map` writes for n images (within a few % for flat maps; faiss files roughly).
    `geometry`: (keypoints per image at most, triangulated?[, learned keypoints at most, network bytes]) when the
    map gets geometry (an upper bound)."""
    d_raw = math.prod(pooled_shape(coarse_content, s.coarse_grid))
    item = {"float32": 4, "float16": 2}
    raw_bytes = _NPY_HEADER + n * d_raw * (2 if s.pca_dim is not None else item[s.coarse_dtype])
    dim = d_raw
    files = {"poses.txt": 29 + n * _POSE_LINE, "names.txt": n * (name_bytes + 1), "manifest.json": 2100}
    if s.pca_dim is not None:  # as fit_pca caps it: no more components than samples or input dims
        dim = max(1, min(s.pca_dim, d_raw, n, 20000, (1 << 30) // (4 * d_raw)))
        files["pca.npz"] = 4 * d_raw * (dim + 1) + 600
    vectors = n * dim * item[s.coarse_dtype]
    if s.index == "flat":
        files["coarse.npy"] = _NPY_HEADER + vectors
        ram = n * dim * 4 if n * dim * 4 <= 2 << 30 or s.coarse_dtype == "float32" else vectors  # numpy vs torch
    elif s.index == "ivf":
        nlist = min(s.ivf_nlist or max(1, min(int(4 * math.sqrt(n)), n // 39)), n)
        files["coarse.faiss"] = ram = vectors + 8 * n + 4 * nlist * dim + 1024
    elif s.index == "ivfpq":  # codes + ids + direct map, coarse centroids, PQ codebooks (256 x dim floats)
        nlist = min(s.ivf_nlist or max(1, min(int(4 * math.sqrt(n)), n // 39)), n)
        files["coarse.faiss"] = n * (min(s.pq_m, dim) + 8) + 4 * nlist * dim + 4 * 256 * dim + 1024
        ram = files["coarse.faiss"] + (0 if s.refine else 8 * n)  # the direct map only gated PQ search needs
        if s.refine:
            files["coarse.npy"] = _NPY_HEADER + vectors
    else:  # HNSW: the vectors plus ~2M neighbour ids per node on level 0 and a few above
        files["coarse.faiss"] = ram = vectors + int(n * s.hnsw_m * 2 * 4 * 1.1) + 1024
    if s.coarse_refine:
        files["coarse_full.npy"] = _NPY_HEADER + n * math.prod(coarse_content) * 2
    if fine_content is not None:
        files["fine.npy"] = _NPY_HEADER + n * math.prod(pooled_shape(fine_content, s.fine_grid)) * item[s.fine_dtype]
    temporary = 0
    if geometry is not None:
        geo_files, temporary = geometry_size(n, *geometry)
        files.update(geo_files)
    files["manifest.json"] += 70 * sum(b // (32 << 20) for b in files.values())  # chunk hashes
    peak = sum(files.values()) + temporary + (raw_bytes if s.pca_dim is not None or s.index != "flat" else 0)
    return MapSizeEstimate(files, peak, ram + n * 200)  # + names and poses in Python objects
