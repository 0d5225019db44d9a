"""`LocalizationMap`: a loaded map directory (poses, names, coarse vectors, memory-mapped fine features)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.retrieval.descriptors import DescriptorSettings, PcaProjection
from disam_ros.retrieval.map_format import (
    COARSE_FAISS,
    COARSE_NPY,
    MapContents,
    MapError,
    load_contents,
    load_faiss,
    load_npy,
    load_pca,
    map_error,
)


class LocalizationMap:
    """Read-only view of a map built by `build_map`; `load` checks it against its manifest."""

    def __init__(self, contents: MapContents, coarse: np.ndarray | None, coarse_faiss: Any,
                 pca: PcaProjection | None) -> None:
        self._c = contents
        self.coarse = coarse  # (N, D) for flat maps (memory-mapped when loaded with mmap=True)
        self.coarse_faiss = coarse_faiss  # faiss index for ivf/hnsw maps
        self.pca = pca

    @classmethod
    def load(cls, map_dir: str | Path, mmap: bool = True, verify: bool | None = None) -> LocalizationMap:
        """verify: None hashes files up to 64 MiB (fast), True hashes every file, False only checks sizes."""
        contents = load_contents(Path(map_dir), "map", mmap, verify)
        desc = contents.manifest["descriptors"]
        n, dim = len(contents.names), int(desc["coarse_dim"])
        coarse = faiss_index = pca = None
        if contents.settings.index == "flat":
            coarse = load_npy(contents.root / COARSE_NPY, mmap, (n, dim))
        else:
            faiss_index = load_faiss(contents.root / COARSE_FAISS)
            if faiss_index.ntotal != n or faiss_index.d != dim:
                raise map_error(contents.root / COARSE_FAISS, f"holds {faiss_index.ntotal}x{faiss_index.d} vectors, "
                                f"the manifest says {n}x{dim}", "rebuild the map")
        if contents.settings.pca_dim is not None:
            pca = load_pca(contents.root)
            if pca.dim != dim:
                raise map_error(contents.root / "pca.npz", f"projects to {pca.dim} dims, the map holds {dim}",
                                "rebuild the map")
        return cls(contents, coarse, faiss_index, pca)

    def __len__(self) -> int:
        return len(self._c.names)

    def __repr__(self) -> str:
        return (f"LocalizationMap({str(self.root)!r}, images={len(self)}, mode={self.settings.mode!r}, "
                f"coarse_dim={self.coarse_dim}, fine_shape={self.fine_shape}, frame_id={self.frame_id!r})")

    @property
    def root(self) -> Path:
        return self._c.root

    @property
    def manifest(self) -> dict[str, Any]:
        return self._c.manifest

    @property
    def names(self) -> list[str]:
        return self._c.names

    @property
    def stamps(self) -> np.ndarray:
        return self._c.trajectory.stamps

    @property
    def positions(self) -> np.ndarray:
        return self._c.trajectory.positions

    @property
    def quats(self) -> np.ndarray:
        return self._c.trajectory.quats

    @property
    def frame_id(self) -> str:
        return str(self.manifest.get("frame_id", "map"))

    @property
    def domain(self) -> str:
        """The reference domain: the condition the map images were encoded under."""
        return str(self.manifest["reference_domain"])

    @property
    def settings(self) -> DescriptorSettings:
        return self._c.settings

    @property
    def coarse_dim(self) -> int:
        return int(self.manifest["descriptors"]["coarse_dim"])

    @property
    def coarse_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the pooled coarse maps, before any PCA."""
        return tuple(self.manifest["descriptors"]["coarse_shape"])

    @property
    def fine_shape(self) -> tuple[int, int, int] | None:
        shape = self.manifest["descriptors"].get("fine_shape")
        return None if shape is None else tuple(shape)

    @property
    def has_fine(self) -> bool:
        return self._c.fine is not None

    @property
    def spacing_m(self) -> float:
        return float(self.manifest.get("stats", {}).get("spacing_m", 0.0))

    @property
    def spacing_rad(self) -> float:
        return math.radians(float(self.manifest.get("stats", {}).get("spacing_deg", 0.0)))

    def model_info(self, role: str) -> dict[str, Any] | None:
        """Manifest record of the 'coarse' or 'fine' model: sha256, path, domains, content_shape."""
        return self.manifest.get("models", {}).get(role)

    def fine_feature(self, i: int) -> np.ndarray:
        """(C, h, w) float32 fine feature of map image i (unit norm when flattened), e.g. for Grad-SAM."""
        if self._c.fine is None:
            raise map_error(self.root, "was built without a fine model, so it holds no fine features",
                            "rebuild it with --fine")
        return np.asarray(self._c.fine[int(i)], dtype=np.float32)

    def fine_rows(self, ids: np.ndarray) -> np.ndarray:
        """(k, D) float32 flattened fine features of the given map images (reads only those rows)."""
        if self._c.fine is None:
            raise map_error(self.root, "holds no fine features", "rebuild it with --fine")
        ids = np.asarray(ids, dtype=np.int64)
        return np.asarray(self._c.fine[ids], dtype=np.float32).reshape(len(ids), -1)

    def coarse_matrix(self) -> np.ndarray:
        """(N, D) coarse vectors: the stored array, or reconstructed from the faiss index."""
        if self.coarse is not None:
            return self.coarse
        try:
            return self.coarse_faiss.reconstruct_n(0, self.coarse_faiss.ntotal)
        except RuntimeError:
            import faiss

            faiss.extract_index_ivf(self.coarse_faiss).make_direct_map()
            return self.coarse_faiss.reconstruct_n(0, self.coarse_faiss.ntotal)

    def disk_bytes(self) -> dict[str, int]:
        return {name: int(info["bytes"]) for name, info in self.manifest.get("files", {}).items()}


__all__ = ["LocalizationMap", "MapError"]
