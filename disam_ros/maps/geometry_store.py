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
geometry_learned_{keypoints,descriptors,points3d,offsets}.npy   optional learned block, the same four arrays
                                          for the learned keypoints (descriptors (K, 64) float16 unit vectors),
geometry_learned_net.pt                   with a byte copy of the network they were made with (maps/feature_kind.py)
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

The learned block (`disam-build-map --verify-features learned|both`) is recorded as geometry.learned: the recipe
(pose.learned.LearnedConfig.to_record: limit, radius, threshold and the network's sha256, which must equal the
listed sha256 of geometry_learned_net.pt), its counts and `verify_features`, the builder's choice that the node
defaults to. `MapGeometry.learned` reads it (None without it: such a map loads exactly as before).
"""
from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.maps.feature_kind import LEARNED_KIND, SIFT_KIND, VERIFY_FEATURES, FeatureKind
from disam_ros.maps.map_format import GEOM_GRADIENTS, GEOM_LEARNED_NET, load_npy, map_error
from disam_ros.maps.npy_rows import RowFile, open_rows
from disam_ros.maps.npy_stream import NpyAppender
from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.features import SiftConfig
from disam_ros.pose.learned import LearnedConfig

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
    return None if g.get("learned") is None else learned_problem(g["learned"], manifest.get("files"))


def learned_problem(learned: Any, files: Any) -> str | None:
    """What is wrong with geometry.learned (None: fine); `files` the manifest's, whose sha256 of the network copy
    must be the one the recipe names (else the keypoints were made with other weights than the map holds)."""
    if not isinstance(learned, dict):
        return f"field geometry.learned is {str(learned)[:40]!r}, expected an object"
    try:
        LearnedConfig.from_record(learned)
    except (TypeError, ValueError) as exc:
        return f"field geometry.learned: {str(exc)[:160]}"
    if not (isinstance(learned.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", learned["sha256"])):
        return "field geometry.learned.sha256 is not the sha256 of the map's keypoint network"
    net = files.get(GEOM_LEARNED_NET) if isinstance(files, dict) else None
    if isinstance(net, dict) and net.get("sha256") != learned["sha256"]:
        return f"field geometry.learned.sha256 differs from the sha256 of {GEOM_LEARNED_NET} in files"
    if learned.get("verify_features") not in VERIFY_FEATURES[1:]:
        return f"field geometry.learned.verify_features is {str(learned.get('verify_features'))[:20]!r}, expected " \
               f"one of {list(VERIFY_FEATURES[1:])}"
    for key in ("keypoints", "with_point"):  # with_point: optional, as in geometry
        n = learned.get(key, 0 if key == "with_point" else None)
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
            return f"field geometry.learned.{key} is not a count >= 0"
    return None


def _image_rows(offsets: np.ndarray, i: int) -> tuple[int, int]:
    """Rows offsets[i]:offsets[i + 1] of map image i; IndexError outside the map."""
    i = int(i)
    if not 0 <= i < len(offsets) - 1:
        raise IndexError(f"map image {i} out of range 0..{len(offsets) - 2}")
    return int(offsets[i]), int(offsets[i + 1])


class LearnedGeometry:
    """The learned block of a map: `image(i)` -> (keypoints (n,2) float32, descriptors (n,64) float32 unit
    vectors, points (n,3) float32 map frame; NaN rows would be keypoints without a point, which builders do not
    store); `config` and `net_path` find a query's keypoints as the map's were found; `verify_features`."""

    def __init__(self, record: dict[str, Any], keypoints: np.ndarray, descriptors: np.ndarray, points: np.ndarray,
                 offsets: np.ndarray, net_path: Path) -> None:
        self.record = record
        self.config = LearnedConfig.from_record(record)
        self.net_path = Path(net_path)
        self.verify_features: str = record["verify_features"]
        self.keypoints, self.descriptors, self.points, self.offsets = keypoints, descriptors, points, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def image(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hi = _image_rows(self.offsets, i)
        return self.keypoints[lo:hi], np.asarray(self.descriptors[lo:hi], np.float32), self.points[lo:hi]

    def counts(self) -> np.ndarray:
        """Learned keypoints per map image."""
        return np.diff(np.asarray(self.offsets))


class MapGeometry:
    """Read-only geometry of a map, its rows read from disk on demand (`npy_rows`) or held in RAM;
    `image(i)` -> (keypoints, descriptors, points3d) of map image i."""

    def __init__(self, record: dict[str, Any], keypoints: np.ndarray, descriptors: np.ndarray, points: np.ndarray,
                 offsets: np.ndarray, gradients: np.ndarray | None = None, learned: LearnedGeometry | None = None
                 ) -> None:
        self.record = record
        self.learned = learned  # the learned block, None: a map built with --verify-features sift
        self.method: str = record["method"]
        self.intrinsics = Intrinsics(**record["intrinsics"])
        self.sift = SiftConfig.from_record(record.get("features", "sift"))  # how the keypoints were found
        self.keypoints, self.descriptors, self.points, self.offsets = keypoints, descriptors, points, offsets
        self.gradients = gradients  # (K, 128) uint8, or None: a map built before them (no dense search)
        self.gradient_cell: int | None = int(record["gradients"]["cell"]) if gradients is not None else None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def image(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hi = _image_rows(self.offsets, i)
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
    kp, desc, pts, offsets = _load_block(root, SIFT_KIND, n, record, mmap)
    grads = open_rows(root / GEOM_GRADIENTS, mmap, (k, DESCRIPTOR_DIM), "uint8") if record.get("gradients") else None
    learned = None
    if (rec := record.get("learned")) is not None:
        learned = LearnedGeometry(rec, *_load_block(root, LEARNED_KIND, n, rec, mmap), root / GEOM_LEARNED_NET)
    return MapGeometry(record, kp, desc, pts, offsets, grads, learned)


def _load_block(root: Path, kind: FeatureKind, n: int, record: dict[str, Any], mmap: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(keypoints, descriptors, points, offsets) of one kind's block, checked against its record."""
    k = int(record["keypoints"])
    kp_file, desc_file, pts_file, off_file = (root / f for f in kind.files)
    offsets = load_npy(off_file, False, (n + 1,), "int64")
    if offsets[0] != 0 or offsets[-1] != k or np.any(np.diff(offsets) < 0):
        raise map_error(off_file, f"is not a non-decreasing 0..{k} row index", _FIX)
    kp = open_rows(kp_file, mmap, (k, 2), "float32")
    desc = open_rows(desc_file, mmap, (k, kind.dim), kind.dtype)
    pts = open_rows(pts_file, mmap, (k, 3), "float32")
    if k and (problem := points_problem(pts, record.get("with_point"))) is not None:
        raise map_error(pts_file, problem, _FIX)
    return kp, desc, pts, offsets


def points_problem(points: np.ndarray | RowFile, with_point: Any) -> str | None:
    """What is wrong with a map's (K, 3) 3D points, None when nothing: a row is a point (3 finite numbers) or,
    in maps written before rows without a point were dropped, the 'no point' mark (3 NaN); inf never; and the
    rows that are points are as many as the manifest's geometry.with_point (a map whose points were all turned
    to NaN, hashes rewritten, passed every check and verified no frame). ~12 B per keypoint, read a chunk at a
    time (a file on disk stays out of RAM)."""
    n = 0
    for lo in range(0, len(points), _POINTS_CHUNK):
        chunk = np.asarray(points[lo:lo + _POINTS_CHUNK])
        finite = np.isfinite(chunk)
        if bool(np.isinf(chunk).any()):
            return "holds inf values"
        rows = finite.all(axis=1)
        if bool((partly := finite.any(axis=1) & ~rows).any()):
            return f"row {lo + int(np.flatnonzero(partly)[0])} is partly NaN (a point has 3 coordinates)"
        n += int(rows.sum())
    if isinstance(with_point, int) and not isinstance(with_point, bool) and n != with_point:
        return f"holds {n} finite 3D points, the manifest's geometry.with_point says {with_point}"
    return None


_POINTS_CHUNK = 1 << 20  # rows (12 MiB) per read of the load-time check


def descriptors_u8(descriptors: np.ndarray) -> np.ndarray:
    """(N,128) SIFT descriptors as the map stores them: rounded to uint8 (OpenCV's float values are 0..255)."""
    return SIFT_KIND.stored(descriptors)


# A map image with fewer 3D points than this cannot verify a frame on its own (the verifier's default
# min_inliers): the record counts such images so that a map built from photographs that barely overlap says so.
SPARSE_IMAGE_POINTS = 15


class GeometryWriter:
    """Streams one map image's (keypoints, descriptors, points3d) at a time into the four files of `kind`'s block
    (gradient descriptors: SIFT only)."""

    def __init__(self, directory: Path, gradient_cell: int | None = None, kind: FeatureKind = SIFT_KIND) -> None:
        d, self.kind = Path(directory), kind
        if gradient_cell is not None and not kind.is_sift:
            raise ValueError(f"map geometry: gradient descriptors belong to SIFT keypoints, not {kind.name} ones")
        kp_file, desc_file, pts_file, self._offsets_path = (d / f for f in kind.files)
        self._kp = NpyAppender(kp_file, (2,), "float32")
        self._desc = NpyAppender(desc_file, (kind.dim,), kind.dtype)
        self._pts = NpyAppender(pts_file, (3,), "float32", allow_nan=True)
        self.gradient_cell = gradient_cell  # None: no gradient descriptors (`add` then takes none)
        self._grad = None if gradient_cell is None else NpyAppender(d / GEOM_GRADIENTS, (DESCRIPTOR_DIM,), "uint8")
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
        desc = self.kind.stored(descriptors)
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

    def counts(self) -> dict[str, int]:
        """What was written, in the manifest's words."""
        return {"keypoints": self.offsets[-1], "with_point": self.with_point, "detected": self.detected,
                "sparse_images": self.sparse_images}

    def record(self, method: str, cam: Intrinsics, features: Any = "sift", **extra: Any) -> dict[str, Any]:
        """The manifest's "geometry" object for what was written (`features`: SiftConfig.to_record())."""
        grads = {} if self.gradient_cell is None else {"gradients": {"cell": int(self.gradient_cell)}}
        return {"method": method, "intrinsics": intrinsics_record(cam), "features": features, **self.counts(),
                **grads, **extra}


def merge_geometry(shards: list[Any], directory: Path) -> dict[str, Any] | None:
    """Concatenate the shards' geometry (MapContents in shard order) into `directory`; None (no geometry) unless
    every shard has it with the same method and intrinsics. The learned block is carried too (the network copied
    from shard 0) when every shard has one of the same recipe; shards that disagree on it are a MapError."""
    records = [c.manifest.get("geometry") for c in shards]
    first = records[0]
    if first is None or any(r is None or any(r.get(k) != first.get(k) for k in ("method", "intrinsics", "features"))
                            for r in records):
        return None
    cells = {str(r.get("gradients")) for r in records}
    cell = first["gradients"]["cell"] if len(cells) == 1 and first.get("gradients") else None  # all or none
    learned = [r.get("learned") for r in records]
    recipe = [None if r is None else {k: v for k, v in r.items() if k not in _LEARNED_COUNTS} for r in learned]
    if any(r != recipe[0] for r in recipe):
        bad = next(c for c, r in zip(shards, recipe) if r != recipe[0])
        raise map_error(bad.root, f"has learned features unlike shard {shards[0].root}'s (another --verify-features, "
                        "--keypoint-net or recipe)", "build every shard with the same options")
    out = GeometryWriter(directory, cell)
    out_learned = None if recipe[0] is None else GeometryWriter(directory, None, LEARNED_KIND)
    try:
        for c in shards:
            g = load_geometry(c.root, c.manifest, mmap=True)
            for i in range(len(g)):
                out.add(*g.image(i), g.image_gradients(i) if cell is not None else None)
                if out_learned is not None:
                    out_learned.add(*g.learned.image(i))
    finally:
        out.close()
        if out_learned is not None:
            out_learned.close()
    out.detected = sum(int(r.get("detected", r["keypoints"])) for r in records)  # the shards' own counts
    seconds = round(sum(float(r.get("seconds", 0.0)) for r in records), 3)
    how = {k: first[k] for k in TRIANGULATION_KEYS if k in first and all(r.get(k) == first[k] for r in records)}
    record = out.record(first["method"], Intrinsics(**first["intrinsics"]), features=first.get("features", "sift"),
                        seconds=seconds, **how)
    if out_learned is not None:
        shutil.copyfile(shards[0].root / GEOM_LEARNED_NET, Path(directory) / GEOM_LEARNED_NET)
        out_learned.detected = sum(int(r.get("detected", r["keypoints"])) for r in learned)
        record["learned"] = {**recipe[0], **out_learned.counts(),
                             "seconds": round(sum(float(r.get("seconds", 0.0)) for r in learned), 3)}
    return record


_LEARNED_COUNTS = ("keypoints", "with_point", "detected", "sparse_images", "seconds", "widened")  # per shard
