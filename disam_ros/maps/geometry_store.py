"""Map geometry on disk (map format version 2): per map image its local keypoints, their SIFT descriptors and their
3D points in the map frame, which the relocalizer's absolute pose solver matches a query against.

```
geometry_keypoints.npy    (K, 2) float32  pixels (OpenCV centres) in the ORIGINAL map image, the one the
                                          intrinsics describe (the encoder's resizing never touches them)
geometry_descriptors.npy  (K, 128) uint8  SIFT descriptors (OpenCV's float SIFT values are 0..255: rounding
                                          them costs nothing measurable and a quarter of float32's bytes)
geometry_points3d.npy     (K, 3) float32  map-frame points; NaN rows: keypoints without a valid 3D point
geometry_offsets.npy      (M + 1,) int64  map image i owns rows offsets[i]:offsets[i + 1]
geometry_gradients.npy    (K, 128) uint8  optional: each keypoint's dense gradient-histogram descriptor
                                          (pose/gradients.py, x1000), which the verifier looks for in a query
                                          without detecting keypoints there (rain, snow, fog); the record's
                                          `gradients` {"cell": c} says it is there and at which cell size
```
The manifest's "geometry" object records how (method "depth" or "triangulate"), the intrinsics of the map images
(`intrinsics`: fx fy cx cy width height + plumb_bob k1 k2 p1 p2 k3), the SIFT recipe (`features`:
pose.features.SiftConfig.to_record(); "sift" in maps written before it was recorded = Lowe's defaults),
counts and, for "triangulate", how each image's partner views were chosen (`partners` k, `partner_max_angle_deg`,
`partner_rule` "pose": maps/covisibility.py; older maps record `neighbours` k, images i-k..i+k). The four files
are listed in `files` with sha256 like every other map file; keypoints are scanned for NaN/inf at load
(maps/integrity.py), points3d only for inf (NaN is its "no point" mark). A version-1 map, or one built with
`--geometry none`, has no "geometry": it loads and localizes retrieval-only, and `geometry_note` says why in one
line.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.maps.map_format import (
    GEOM_DESCRIPTORS,
    GEOM_GRADIENTS,
    GEOM_KEYPOINTS,
    GEOM_OFFSETS,
    GEOM_POINTS,
    load_npy,
    map_error,
)
from disam_ros.maps.npy_stream import NpyAppender
from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.features import SiftConfig

METHODS = ("depth", "triangulate")
DESCRIPTOR_DIM = 128
INTRINSIC_KEYS = ("fx", "fy", "cx", "cy", "width", "height", "k1", "k2", "p1", "p2", "k3")
NOTE_OLD = "built before map geometry: rebuild with disam-build-map to get metric poses"
NOTE_NONE = "built without map geometry (--geometry none or no intrinsics): rebuild with disam-build-map " \
            "--geometry auto and camera intrinsics to get metric poses"
# how triangulate chose each image's views ("neighbours": maps built before pose partners)
TRIANGULATION_KEYS = ("partners", "partner_max_angle_deg", "partner_rule", "neighbours")
_FIX = "the map is inconsistent; rebuild it with disam-build-map"


def intrinsics_record(cam: Intrinsics) -> dict[str, Any]:
    return {k: (int(getattr(cam, k)) if k in ("width", "height") else float(getattr(cam, k))) for k in INTRINSIC_KEYS}


def geometry_note(manifest: dict[str, Any]) -> str | None:
    """None when the map has geometry, else one line saying why not and how to get it."""
    if manifest.get("geometry") is not None:
        return None
    return NOTE_OLD if manifest.get("version", 1) < 2 else NOTE_NONE


def geometry_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with the manifest's "geometry" object (None: absent or fine)."""
    g = manifest.get("geometry")
    if g is None:
        return None
    if not isinstance(g, dict) or g.get("method") not in METHODS:
        return f"field geometry.method is {str(g.get('method') if isinstance(g, dict) else g)[:40]!r}, expected " \
               f"one of {list(METHODS)}"
    if manifest.get("version", 1) < 2:
        return "field geometry is present in a version 1 manifest"
    cam = g.get("intrinsics")
    if not isinstance(cam, dict) or set(cam) != set(INTRINSIC_KEYS) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in cam.values()):
        return f"field geometry.intrinsics is not {{{', '.join(INTRINSIC_KEYS)}}} of finite numbers"
    try:
        Intrinsics(**cam)
    except ValueError as exc:
        return f"field geometry.intrinsics is invalid ({str(exc)[:120]})"
    try:
        SiftConfig.from_record(g.get("features", "sift"))
    except ValueError as exc:
        return f"field geometry.features: {str(exc)[:160]}"
    n = g.get("keypoints")
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
        return "field geometry.keypoints is not a count >= 0"
    grads = g.get("gradients")
    if grads is not None and not (isinstance(grads, dict) and isinstance(grads.get("cell"), int)
                                  and not isinstance(grads.get("cell"), bool) and 2 <= grads["cell"] <= 64):
        return f"field geometry.gradients is {str(grads)[:40]!r}, expected {{\"cell\": an integer in 2..64}}"
    return None


class MapGeometry:
    """Read-only, memory-mapped geometry of a map; `image(i)` -> (keypoints, descriptors, points3d) of map image i."""

    def __init__(self, record: dict[str, Any], keypoints: np.ndarray, descriptors: np.ndarray, points: np.ndarray,
                 offsets: np.ndarray, gradients: np.ndarray | None = None) -> None:
        self.record = record
        self.method: str = record["method"]
        self.intrinsics = Intrinsics(**record["intrinsics"])
        self.sift = SiftConfig.from_record(record.get("features", "sift"))  # how the keypoints were found
        self.keypoints, self.descriptors, self.points, self.offsets = keypoints, descriptors, points, offsets
        self.gradients = gradients  # (K, 128) uint8, or None: a map built before them (no dense search)
        self.gradient_cell: int | None = int(record["gradients"]["cell"]) if gradients is not None else None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def image(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"map image {i} out of range 0..{len(self) - 1}")
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.keypoints[lo:hi], self.descriptors[lo:hi], self.points[lo:hi]

    def image_gradients(self, i: int) -> np.ndarray | None:
        """Map image i's keypoints' gradient descriptors (uint8, rows as `image(i)`), None without them."""
        if self.gradients is None:
            return None
        self.image(i)  # the range check
        return self.gradients[int(self.offsets[i]):int(self.offsets[i + 1])]

    def counts(self) -> np.ndarray:
        """Keypoints per map image."""
        return np.diff(np.asarray(self.offsets))


def load_geometry(root: Path, manifest: dict[str, Any], mmap: bool = True) -> MapGeometry | None:
    """The map's geometry checked against its manifest (None when it has none); MapError naming the file."""
    record = manifest.get("geometry")
    if (problem := geometry_problem(manifest)) is not None:
        raise map_error(Path(root) / "manifest.json", problem, "the manifest is damaged or was edited; rebuild it")
    if record is None:
        return None
    root, n, k = Path(root), int(manifest["count"]), int(record["keypoints"])
    offsets = load_npy(root / GEOM_OFFSETS, False, (n + 1,), "int64")
    if offsets[0] != 0 or offsets[-1] != k or np.any(np.diff(offsets) < 0):
        raise map_error(root / GEOM_OFFSETS, f"is not a non-decreasing 0..{k} row index", _FIX)
    kp = load_npy(root / GEOM_KEYPOINTS, mmap, (k, 2), "float32")
    desc = load_npy(root / GEOM_DESCRIPTORS, mmap, (k, DESCRIPTOR_DIM), "uint8")
    pts = load_npy(root / GEOM_POINTS, mmap, (k, 3), "float32")
    if k and (problem := points_problem(pts, record.get("with_point"))) is not None:
        raise map_error(root / GEOM_POINTS, problem, _FIX)
    grads = load_npy(root / GEOM_GRADIENTS, mmap, (k, DESCRIPTOR_DIM), "uint8") if record.get("gradients") else None
    return MapGeometry(record, kp, desc, pts, offsets, grads)


def points_problem(points: np.ndarray, with_point: Any) -> str | None:
    """What is wrong with a map's (K, 3) 3D points, None when nothing: a row is a point (3 finite numbers) or,
    in maps written before rows without a point were dropped, the 'no point' mark (3 NaN); inf never; and the
    rows that are points are as many as the manifest's geometry.with_point (a map whose points were all turned
    to NaN, hashes rewritten, passed every check and verified no frame). ~12 B per keypoint: cheap at load."""
    finite = np.isfinite(points)
    if bool(np.isinf(points).any()):
        return "holds inf values"
    rows = finite.all(axis=1)
    if bool((finite.any(axis=1) & ~rows).any()):
        return f"row {int(np.flatnonzero(finite.any(axis=1) & ~rows)[0])} is partly NaN (a point has 3 coordinates)"
    n = int(rows.sum())
    if isinstance(with_point, int) and not isinstance(with_point, bool) and n != with_point:
        return f"holds {n} finite 3D points, the manifest's geometry.with_point says {with_point}"
    return None


def descriptors_u8(descriptors: np.ndarray) -> np.ndarray:
    """(N,128) SIFT descriptors as the map stores them: rounded to uint8 (OpenCV's float values are 0..255)."""
    d = np.asarray(descriptors, np.float32).reshape(-1, DESCRIPTOR_DIM)
    return np.clip(np.rint(d), 0, 255).astype(np.uint8)


# A map image with fewer 3D points than this cannot verify a frame on its own (the verifier's default
# min_inliers): the record counts such images so that a map built from photographs that barely overlap says so.
SPARSE_IMAGE_POINTS = 15


class GeometryWriter:
    """Streams one map image's (keypoints, descriptors, points3d) at a time into the four files."""

    def __init__(self, directory: Path, gradient_cell: int | None = None) -> None:
        d = Path(directory)
        self._kp = NpyAppender(d / GEOM_KEYPOINTS, (2,), "float32")
        self._desc = NpyAppender(d / GEOM_DESCRIPTORS, (DESCRIPTOR_DIM,), "uint8")
        self._pts = NpyAppender(d / GEOM_POINTS, (3,), "float32", allow_nan=True)
        self.gradient_cell = gradient_cell  # None: no gradient descriptors (`add` then takes none)
        self._grad = None if gradient_cell is None else NpyAppender(d / GEOM_GRADIENTS, (DESCRIPTOR_DIM,), "uint8")
        self._offsets_path = d / GEOM_OFFSETS
        self.offsets = [0]
        self.with_point = 0
        self.detected = 0  # keypoints given, those without a 3D point included (they are not stored)
        self.sparse_images = 0  # images with fewer than SPARSE_IMAGE_POINTS 3D points

    def add(self, keypoints: np.ndarray, descriptors: np.ndarray, points: np.ndarray,
            gradients: np.ndarray | None = None) -> None:
        """One map image's rows, in the order given (strongest first), keeping only keypoints with a 3D point:
        localization reads nothing else, and a map triangulated from photographs gives a point to ~12 % of its
        keypoints (a depth map ~70 %), so the rest would be most of the geometry's size for nothing."""
        kp = np.asarray(keypoints, np.float32).reshape(-1, 2)
        desc = descriptors_u8(descriptors)
        pts = np.asarray(points, np.float32).reshape(-1, 3)
        if not len(kp) == len(desc) == len(pts):
            raise ValueError(f"map geometry rows disagree: {len(kp)} keypoints, {len(desc)} descriptors, "
                             f"{len(pts)} points")
        if (gradients is None) != (self._grad is None):
            raise ValueError("map geometry: gradient descriptors given to a writer without them, or missing")
        if self._grad is not None:
            grads = np.asarray(gradients, np.uint8).reshape(-1, DESCRIPTOR_DIM)
            if len(grads) != len(kp):
                raise ValueError(f"map geometry rows disagree: {len(kp)} keypoints, {len(grads)} gradient descriptors")
        keep = np.isfinite(pts).all(axis=1)
        if self._grad is not None:
            self._grad.append(grads[keep])
        self._kp.append(kp[keep])
        self._desc.append(desc[keep])
        self._pts.append(pts[keep])
        found = int(keep.sum())
        self.offsets.append(self.offsets[-1] + found)
        self.detected += len(kp)
        self.with_point += found
        self.sparse_images += found < SPARSE_IMAGE_POINTS

    def close(self) -> None:
        for a in (self._kp, self._desc, self._pts, self._grad):
            if a is not None:
                a.close()
        np.save(self._offsets_path, np.asarray(self.offsets, np.int64), allow_pickle=False)

    def record(self, method: str, cam: Intrinsics, features: Any = "sift", **extra: Any) -> dict[str, Any]:
        """The manifest's "geometry" object for what was written (`features`: SiftConfig.to_record())."""
        grads = {} if self.gradient_cell is None else {"gradients": {"cell": int(self.gradient_cell)}}
        return {"method": method, "intrinsics": intrinsics_record(cam), "features": features,
                "keypoints": self.offsets[-1], "with_point": self.with_point, "detected": self.detected,
                "sparse_images": self.sparse_images,
                **grads, **extra}


def merge_geometry(shards: list[Any], directory: Path) -> dict[str, Any] | None:
    """Concatenate the shards' geometry (MapContents in shard order) into `directory`; None (no geometry) unless
    every shard has it with the same method and intrinsics."""
    records = [c.manifest.get("geometry") for c in shards]
    first = records[0]
    if first is None or any(r is None or any(r.get(k) != first.get(k) for k in ("method", "intrinsics", "features"))
                            for r in records):
        return None
    cells = {str(r.get("gradients")) for r in records}
    cell = first["gradients"]["cell"] if len(cells) == 1 and first.get("gradients") else None  # all or none
    out = GeometryWriter(directory, cell)
    try:
        for c in shards:
            g = load_geometry(c.root, c.manifest, mmap=True)
            for i in range(len(g)):
                out.add(*g.image(i), g.image_gradients(i) if cell is not None else None)
    finally:
        out.close()
    out.detected = sum(int(r.get("detected", r["keypoints"])) for r in records)  # the shards' own counts
    seconds = round(sum(float(r.get("seconds", 0.0)) for r in records), 3)
    how = {k: first[k] for k in TRIANGULATION_KEYS if k in first and all(r.get(k) == first[k] for r in records)}
    return out.record(first["method"], Intrinsics(**first["intrinsics"]), features=first.get("features", "sift"),
                      seconds=seconds, **how)
