"""`LocalizationMap`: a loaded map directory (poses, names, coarse vectors, memory-mapped fine features).

Loading checks the map against its manifest: the manifest's fields, every file's size, the sha256 of files up
to 64 MiB, array shapes and dtypes, and that the stored floats of those files hold no NaN/inf. Larger files
are hashed and scanned chunk by chunk in a background thread (maps/integrity.py `MapVerification`), so the
node starts fast and still notices a corrupt chunk a moment later; `verification_state()` says how far it got.
An optional calibration.json (maps/map_calibration.py) is checked like the rest and parsed at load: `calibration`.
Map geometry (format version 2, maps/geometry_store.py): `has_geometry`, `geometry(i)` -> (keypoints, descriptors,
points3d) of map image i, memory-mapped; a map without it (version 1, or --geometry none) works retrieval-only and
says why in `geometry_note` (logged once at load). A map built with --verify-features learned/both also holds
learned keypoints: `learned_geometry(i)`, and `map_geometry.learned` (network, recipe, the builder's choice).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any
from zipfile import BadZipFile

import numpy as np

from disam_ros.data.tum import Trajectory, read_tum
from disam_ros.maps.depth_record import extra_dim
from disam_ros.maps.descriptors import DescriptorSettings, PcaProjection
from disam_ros.maps.geometry_store import MapGeometry, geometry_note, load_geometry
from disam_ros.maps.integrity import MapVerification, array_problem, check_finite_now
from disam_ros.maps.map_calibration import MapCalibration, read_calibration
from disam_ros.maps.map_format import (
    COARSE_FAISS,
    COARSE_FULL,
    COARSE_NPY,
    FINE_NPY,
    NAMES,
    PCA_NPZ,
    POSES,
    MapContents,
    MapError,
    check_files,
    load_npy,
    map_error,
    read_manifest,
)
from disam_ros.maps.npy_rows import RowFile, open_rows

log = logging.getLogger(__name__)


def read_names(path: Path, count: int) -> list[str]:
    try:
        names = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise map_error(path, f"unreadable ({type(exc).__name__})", "copy the map again or rebuild it") from None
    if names and names[-1] == "":
        names.pop()
    if len(names) != count:
        raise map_error(path, f"lists {len(names)} names for {count} map images", "rebuild the map")
    if not all(names):
        raise map_error(path, f"has an empty name on line {names.index('') + 1}", "rebuild the map")
    return names


def read_poses(path: Path, count: int) -> Trajectory:
    try:
        traj = read_tum(path)
    except (OSError, ValueError) as exc:
        raise map_error(path, f"unreadable poses ({(str(exc).splitlines() or [''])[0][:160]})",
                        "rebuild the map") from None
    if len(traj) != count:
        raise map_error(path, f"holds {len(traj)} poses for {count} map images", "rebuild the map")
    return traj


def load_contents(directory: Path, kind: str, mmap: bool, verify: bool | None) -> MapContents:
    """Manifest (validated), file sizes and hashes (see `check_files`), names, poses and fine features."""
    directory = Path(directory)
    manifest = read_manifest(directory, kind)
    deferred = check_files(directory, manifest, verify)
    check_finite_now(directory, manifest, deferred, verify)  # NaN/inf rows with matching hashes: rebuild
    n = manifest["count"]
    settings = DescriptorSettings.from_dict(manifest["descriptors"]["settings"])  # validated by read_manifest
    fine_shape = manifest["descriptors"].get("fine_shape")
    names = read_names(directory / NAMES, n)
    traj = read_poses(directory / POSES, n)
    fine = None
    if fine_shape is not None:
        fine = open_rows(directory / FINE_NPY, mmap, (n, *fine_shape), settings.fine_dtype)
    return MapContents(directory, manifest, names, traj, settings, fine, deferred)


def load_pca(directory: Path) -> PcaProjection:
    path = Path(directory) / PCA_NPZ
    try:
        pca = PcaProjection.load(path)
    except (OSError, KeyError, ValueError, EOFError, BadZipFile) as exc:
        raise map_error(path, f"unreadable PCA ({type(exc).__name__})", "copy the map again or rebuild it") from None
    if pca.components.ndim != 2 or pca.mean.shape != (pca.components.shape[1],):
        raise map_error(path, f"holds a {pca.components.shape} projection with a {pca.mean.shape} mean",
                        "rebuild the map")
    for name, values in (("mean", pca.mean), ("components", pca.components)):  # in RAM already: cheap
        if (problem := array_problem(path, values, name)) is not None:
            raise MapError(problem)
    return pca


def load_faiss(path: Path) -> Any:
    import faiss  # local: only ivf/hnsw maps need it at load time

    if not path.is_file():
        raise map_error(path, "missing", "the map is incomplete; copy it again or rebuild it")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise map_error(path, f"unreadable faiss index ({(str(exc).splitlines() or [''])[0][:120]})",
                        "the file is truncated or corrupt; rebuild the map") from None


class LocalizationMap:
    """Read-only view of a map built by `build_map`; `load` checks it against its manifest."""

    calibration: MapCalibration | None = None  # calibrated confidence stored by disam-calibrate, if any
    map_geometry: MapGeometry | None = None  # keypoints + 3D points per map image (maps/geometry_store.py)
    coarse_full: RowFile | None = None  # pca-full: full-grid coarse rows, read by offset, to re-score with

    def __init__(self, contents: MapContents, coarse: np.ndarray | None, coarse_faiss: Any,
                 pca: PcaProjection | None, verification: MapVerification | None = None) -> None:
        self._c = contents
        self.coarse = coarse  # (N, D) for flat maps (memory-mapped when loaded with mmap=True)
        self.coarse_faiss = coarse_faiss  # faiss index for ivf/hnsw maps
        self.pca = pca
        self.verification = verification or MapVerification()

    @classmethod
    def load(cls, map_dir: str | Path, mmap: bool = True, verify: bool | None = None) -> LocalizationMap:
        """verify: None hashes files up to 64 MiB now and larger ones in the background (`verification`),
        True hashes every file now (what `disam-map-info --verify` does), False only checks sizes."""
        contents = load_contents(Path(map_dir), "map", mmap, verify)
        desc, root = contents.manifest["descriptors"], contents.root
        n, dim = len(contents.names), desc["coarse_dim"]
        coarse = faiss_index = pca = None
        if contents.settings.index == "flat":
            coarse = load_npy(root / COARSE_NPY, mmap, (n, dim), contents.settings.coarse_dtype)
        else:
            faiss_index = load_faiss(root / COARSE_FAISS)
            if faiss_index.ntotal != n or faiss_index.d != dim:
                raise map_error(root / COARSE_FAISS, f"holds {faiss_index.ntotal}x{faiss_index.d} vectors, "
                                f"the manifest says {n}x{dim}", "rebuild the map")
        if contents.settings.pca_dim is not None:
            pca = load_pca(root)
            raw = math.prod(desc["coarse_shape"]) + extra_dim(contents.manifest["models"]["coarse"])  # seed 002
            if pca.dim != dim or pca.mean.shape[0] != raw:
                raise map_error(root / PCA_NPZ, f"projects {pca.mean.shape[0]} to {pca.dim} dims, the map holds "
                                f"{raw} -> {dim}", "rebuild the map")
        calibration = read_calibration(root, contents.manifest)  # small: hashed above unless verify=False
        m = cls(contents, coarse, faiss_index, pca, _verification(contents, verify))
        m.calibration = calibration
        m.map_geometry = load_geometry(root, contents.manifest, mmap)
        if contents.settings.coarse_refine:  # disk, not RAM: only the shortlist's rows are read (npy_rows.py)
            full = math.prod(contents.manifest["models"]["coarse"]["content_shape"]) + extra_dim(
                contents.manifest["models"]["coarse"])
            m.coarse_full = RowFile(root / COARSE_FULL, (n, full), "float16")
        if m.geometry_note is not None:
            log.info("%s: %s", root, m.geometry_note)
        return m

    @property
    def has_geometry(self) -> bool:
        """Whether the map stores keypoints and 3D points per image (what metric, verified poses need)."""
        return self.map_geometry is not None

    @property
    def geometry_note(self) -> str | None:
        """One line saying why the map has no geometry and how to get it; None when it has geometry."""
        return geometry_note(self.manifest)

    def geometry(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keypoints (K,2) float32 original-image pixels, descriptors (K,128) uint8 SIFT, points3d (K,3) float32
        map frame with NaN rows where no 3D point) of map image i, memory-mapped; intrinsics:
        `map_geometry.intrinsics`."""
        if self.map_geometry is None:
            raise map_error(self.root, f"has no map geometry ({self.geometry_note})", "localize retrieval-only")
        return self.map_geometry.image(i)

    def learned_geometry(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keypoints (n,2) float32 pixels, descriptors (n,64) float32 unit vectors, points3d (n,3) float32 map
        frame) of map image i's learned keypoints; their network and recipe: `map_geometry.learned`."""
        learned = None if self.map_geometry is None else self.map_geometry.learned
        if learned is None:
            raise map_error(self.root, "holds no learned features", "rebuild it with disam-build-map "
                            "--verify-features both, or verify with sift")
        return learned.image(i)

    def close(self) -> None:
        """Stop the background integrity check (the arrays stay usable)."""
        self.verification.stop()

    def verification_state(self) -> str:
        """The integrity check in words, cheap enough for every diagnostics tick: 'verified', 'verifying 3/12
        chunks' (poses are served meanwhile from chunks not checked yet), 'failed: <problem>' (no pose is
        computed from this map), 'unverified (...)' (loaded with verify=False) or 'stopped'."""
        return self.verification.describe()

    @property
    def integrity_problem(self) -> str | None:
        """The one-line problem the background check found, None while it finds none."""
        return self.verification.problem

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
        if self.settings.refine and (self.root / COARSE_NPY).is_file():  # ivfpq: exact rows, memory-mapped
            return load_npy(self.root / COARSE_NPY, True, (len(self), self.coarse_dim), self.settings.coarse_dtype)
        try:
            return self.coarse_faiss.reconstruct_n(0, self.coarse_faiss.ntotal)
        except RuntimeError:
            import faiss

            faiss.extract_index_ivf(self.coarse_faiss).make_direct_map()
            return self.coarse_faiss.reconstruct_n(0, self.coarse_faiss.ntotal)

    def disk_bytes(self) -> dict[str, int]:
        return {name: int(info["bytes"]) for name, info in self.manifest.get("files", {}).items()}


__all__ = ["LocalizationMap", "MapError"]


def _verification(contents: MapContents, verify: bool | None) -> MapVerification:
    """Start the background check of the large files; maps without chunk hashes still get it, file by file."""
    if verify is False:
        return MapVerification(state="unverified")
    old = [p.name for p, info in contents.deferred if "chunks" not in info]
    if old:
        log.warning("%s: written before per-chunk hashes, so %s %s checked whole in the background; rebuild it "
                    "with this disam-build-map for chunked checks", contents.root, ", ".join(old),
                    "is" if len(old) == 1 else "are")
    return MapVerification(contents.deferred, contents.manifest.get("integrity", {}).get("chunk_bytes"))
