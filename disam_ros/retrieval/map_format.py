"""The map directory: what is in it, how it is written atomically, and how it is loaded and checked.

```
MAP/
  manifest.json   format tag + version, counts, models (sha256, path, domains, content shape), reference
                  domain, descriptor settings, pose statistics, per-file size + sha256
  poses.txt       TUM `stamp tx ty tz qx qy qz qw`, one line per map image, in map order
  names.txt       one image name per line, same order
  coarse.npy      (N, D) coarse vectors (flat index)      | coarse.faiss (ivf / hnsw index)
  fine.npy        (N, C, h, w) float16 unit-norm fine features (memory-mapped on load; absent without a
                  fine model)
  pca.npz         mean + components when the mode uses PCA
```
A shard (`--shard i/n`) has the same layout with kind "shard" and `coarse_raw.npy` (pre-PCA, pre-index
vectors) instead of the final coarse file; merging shards runs the same finalisation as a single build.

Every load failure is a `MapError` whose message is one line naming the file and the fix.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.data.tum import Trajectory, read_tum
from disam_ros.geometry import quat_angle_deg
from disam_ros.retrieval.descriptors import DescriptorSettings, PcaProjection

FORMAT_TAG = "disam_ros.map"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
POSES, NAMES = "poses.txt", "names.txt"
COARSE_NPY, COARSE_RAW, COARSE_FAISS = "coarse.npy", "coarse_raw.npy", "coarse.faiss"
FINE_NPY, PCA_NPZ = "fine.npy", "pca.npz"
AUTO_VERIFY_BYTES = 64 << 20  # files up to this size are hashed on every load; larger ones with verify=True


class MapError(ValueError):
    """A map that cannot be used as asked; the message is one line naming the file and the fix."""


def map_error(path: Path | str, problem: str, fix: str) -> MapError:
    return MapError(f"{path}: {problem}; {fix}".replace("\n", " "))


def sha256_file(path: Path, chunk: int = 4 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


class MapStage:
    """A temporary directory beside the target that becomes the map only on `commit()`.

    Used as a context manager: an exception before commit removes the temporary directory, so a failed
    build never leaves half a map, and an existing map is replaced only after the new one is complete.
    """

    def __init__(self, target: Path, overwrite: bool = False) -> None:
        self.target = Path(target).absolute()
        occupied = self.target.exists() and (not self.target.is_dir() or any(self.target.iterdir()))
        if occupied and not (self.target / MANIFEST).is_file():
            raise map_error(self.target, "exists and is not a map", "refusing to replace it; choose another --out")
        if occupied and not overwrite:
            raise map_error(self.target, "already exists", "choose another --out or pass --overwrite")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        self.committed = False

    def commit(self) -> Path:
        old = None
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, old)
        os.replace(self.dir, self.target)
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target

    def __enter__(self) -> MapStage:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            shutil.rmtree(self.dir, ignore_errors=True)


def write_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Record size and sha256 of every other file, then write manifest.json last (atomically)."""
    files = {}
    for p in sorted(directory.iterdir()):
        if p.is_file() and p.name != MANIFEST:
            files[p.name] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    manifest = {**manifest, "files": files}
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, directory / MANIFEST)
    return manifest


def read_manifest(directory: Path, kind: str = "map") -> dict[str, Any]:
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise map_error(directory, "map directory not found", "check the path or build it with disam-build-map")
    if not path.is_file():
        raise map_error(path, "missing, so this is not a map", "build the map with disam-build-map")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise map_error(path, f"unreadable ({type(exc).__name__})", "the map is damaged; rebuild it") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_TAG:
        raise map_error(path, "is not a disam_ros map manifest", "build the map with disam-build-map")
    if manifest.get("version") != FORMAT_VERSION:
        raise map_error(path, f"has map format version {manifest.get('version')!r}, this software reads "
                        f"{FORMAT_VERSION}", "rebuild the map with this version of disam-build-map")
    if manifest.get("kind") != kind:
        fix = "merge the shards with disam-build-map --merge" if manifest.get("kind") == "shard" else \
            "pass a directory written by disam-build-map --shard"
        raise map_error(path, f"describes a {manifest.get('kind')!r}, not a {kind!r}", fix)
    return manifest


def check_files(directory: Path, manifest: dict[str, Any], verify: bool | None = None) -> None:
    """Sizes always; sha256 of small files by default, of every file with verify=True, none with False."""
    for name, info in manifest.get("files", {}).items():
        path = Path(directory) / name
        if not path.is_file():
            raise map_error(path, "missing", "the map is incomplete; copy it again or rebuild it")
        size = path.stat().st_size
        if size != info.get("bytes"):
            raise map_error(path, f"has {size} bytes, the manifest says {info.get('bytes')} (truncated or "
                            "modified)", "copy the map again or rebuild it")
        hash_it = verify or (verify is None and size <= AUTO_VERIFY_BYTES)
        if hash_it and sha256_file(path) != info.get("sha256"):
            raise map_error(path, "checksum mismatch (sha256 differs from the manifest)",
                            "the file is corrupt; copy the map again or rebuild it")


def pose_stats(traj: Trajectory) -> dict[str, Any]:
    """Extent and median spacing between consecutive map images (the floor of retrieval's precision)."""
    pos = traj.positions
    if len(pos) == 0:
        return {"extent_min": [0.0] * 3, "extent_max": [0.0] * 3, "spacing_m": 0.0, "spacing_deg": 0.0}
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    turns = quat_angle_deg(traj.quats[1:], traj.quats[:-1]) if len(pos) > 1 else np.zeros(0)
    moving = steps > 1e-9
    return {
        "extent_min": pos.min(axis=0).tolist(),
        "extent_max": pos.max(axis=0).tolist(),
        "spacing_m": float(np.median(steps[moving])) if moving.any() else 0.0,
        "spacing_deg": float(np.median(turns[moving])) if moving.any() else 0.0,
    }


def load_npy(path: Path, mmap: bool, shape: tuple[int, ...] | None = None) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise map_error(path, f"unreadable array ({str(exc).splitlines()[0][:120]})",
                        "the file is truncated or corrupt; copy the map again or rebuild it") from None
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise map_error(path, f"has shape {tuple(arr.shape)}, the manifest says {tuple(shape)}",
                        "the map is inconsistent; rebuild it")
    return arr


def read_names(path: Path, count: int) -> list[str]:
    try:
        names = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise map_error(path, f"unreadable ({type(exc).__name__})", "copy the map again or rebuild it") from None
    if names and names[-1] == "":
        names.pop()
    if len(names) != count:
        raise map_error(path, f"lists {len(names)} names for {count} map images", "rebuild the map")
    return names


def read_poses(path: Path, count: int) -> Trajectory:
    try:
        traj = read_tum(path)
    except (OSError, ValueError) as exc:
        raise map_error(path, f"unreadable poses ({str(exc).splitlines()[0][:160]})", "rebuild the map") from None
    if len(traj) != count:
        raise map_error(path, f"holds {len(traj)} poses for {count} map images", "rebuild the map")
    return traj


@dataclass(eq=False)
class MapContents:
    """What both a map and a shard hold, read and checked against the manifest."""

    root: Path
    manifest: dict[str, Any]
    names: list[str]
    trajectory: Trajectory
    settings: DescriptorSettings
    fine: np.ndarray | None


def load_contents(directory: Path, kind: str, mmap: bool, verify: bool | None) -> MapContents:
    directory = Path(directory)
    manifest = read_manifest(directory, kind)
    check_files(directory, manifest, verify)
    try:
        n = int(manifest["count"])
        settings = DescriptorSettings.from_dict(manifest["descriptors"]["settings"])
        fine_shape = manifest["descriptors"].get("fine_shape")
    except (KeyError, TypeError, ValueError) as exc:
        raise map_error(directory / MANIFEST, f"lacks or mangles a field ({exc})", "rebuild the map") from None
    names = read_names(directory / NAMES, n)
    traj = read_poses(directory / POSES, n)
    fine = None
    if fine_shape is not None:
        fine = load_npy(directory / FINE_NPY, mmap, (n, *fine_shape))
    return MapContents(directory, manifest, names, traj, settings, fine)


def load_pca(directory: Path) -> PcaProjection:
    path = Path(directory) / PCA_NPZ
    try:
        return PcaProjection.load(path)
    except (OSError, KeyError, ValueError, EOFError) as exc:
        raise map_error(path, f"unreadable PCA ({type(exc).__name__})", "copy the map again or rebuild it") from None


def load_faiss(path: Path) -> Any:
    import faiss  # local: only ivf/hnsw maps need it at load time

    if not path.is_file():
        raise map_error(path, "missing", "the map is incomplete; copy it again or rebuild it")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise map_error(path, f"unreadable faiss index ({str(exc).splitlines()[0][:120]})",
                        "the file is truncated or corrupt; rebuild the map") from None
