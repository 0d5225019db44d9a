"""The map directory: what is in it, how it is written atomically, and how it is loaded and checked.

```
MAP/
  manifest.json   format tag + version, counts, models (sha256, path, domains, content shape), reference
                  domain, descriptor settings, pose statistics, poses_source, per-file size + sha256 (+ one
                  sha256 per 32 MiB chunk of larger files, `integrity.chunk_bytes`)
  poses.txt       TUM `stamp tx ty tz qx qy qz qw`, one line per map image, in map order
  names.txt       one image name per line, same order
  coarse.npy      (N, D) coarse vectors (flat; ivfpq: refine rows)   | coarse.faiss (ivf / hnsw / ivfpq index)
  coarse_full.npy (N, D) float16 coarse vectors on the full grid (pca-full: re-scores the pooled shortlist)
  fine.npy        (N, C, h, w) float16 unit-norm fine features (memory-mapped; absent without a fine model)
  pca.npz         mean + components when the mode uses PCA
  geometry_*.npy  v2, with manifest "geometry": SIFT keypoints, descriptors, 3D points per image, optional
                  gradient descriptors, optional learned block + its network (geometry_store.py)
  calibration.json  optional (maps only): calibrated confidence per tracker mode (disam-calibrate,
                  maps/map_calibration.py); listed in `files` with its sha256 when present
  .disam-made     the tool that wrote the folder (disam_ros.fsutil): hidden files are not part of the map
```
A shard (`--shard i/n`) has the same layout with kind "shard" and `coarse_raw.npy` (pre-PCA, pre-index
vectors) instead of the final coarse file; merging shards runs the same finalisation as a single build.
Every load failure is a `MapError` whose message is one line naming the file and the fix. Integrity: the manifest
is validated field by field (`manifest_problems`) before anything trusts it, and lists exactly the files the map
needs, each with its size and sha256; files larger than `CHUNK_BYTES` also carry one sha256 per chunk, so a large
map is verified in the background after a fast start (see `LocalizationMap`).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.data.tum import Trajectory
from disam_ros.fsutil import OutputKind, StagedDir, atomic_write_text, replace_refusal
from disam_ros.maps.depth_record import extra_dim
from disam_ros.maps.descriptors import DescriptorSettings, pooled_shape

FORMAT_TAG = "disam_ros.map"
FORMAT_VERSION, READ_VERSIONS = 2, (1, 2)  # 2 adds map geometry; version 1 maps still load, retrieval-only
MANIFEST, POSES, NAMES = "manifest.json", "poses.txt", "names.txt"
COARSE_NPY, COARSE_RAW, COARSE_FAISS, COARSE_FULL = "coarse.npy", "coarse_raw.npy", "coarse.faiss", "coarse_full.npy"
FINE_NPY, PCA_NPZ = "fine.npy", "pca.npz"
GEOMETRY_FILES = (GEOM_KEYPOINTS, GEOM_DESCRIPTORS, GEOM_POINTS, GEOM_OFFSETS) = tuple(
    f"geometry_{k}.npy" for k in ("keypoints", "descriptors", "points3d", "offsets"))
GEOM_GRADIENTS = "geometry_gradients.npy"  # optional dense-search descriptors (geometry_store.py)
GEOM_LEARNED_FILES = tuple(f"geometry_learned_{k}.npy" for k in ("keypoints", "descriptors", "points3d", "offsets"))
GEOM_LEARNED_NET = "geometry_learned_net.pt"  # the keypoint network the learned block was made with
CALIBRATION_JSON = "calibration.json"  # optional: a map may list it, a shard never does
AUTO_VERIFY_BYTES = 64 << 20  # files up to this size are hashed at load; larger ones in the background
CHUNK_BYTES = 32 << 20  # per-chunk sha256 granularity: a 100 GB map needs ~3200 hashes (~220 KB of manifest)
MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few KB (+70 B per chunk): anything bigger is not one
MAP_ENTRIES = frozenset({MANIFEST, POSES, NAMES, COARSE_NPY, COARSE_RAW, COARSE_FAISS, COARSE_FULL, FINE_NPY,
                         PCA_NPZ, CALIBRATION_JSON, GEOM_GRADIENTS, *GEOMETRY_FILES, *GEOM_LEARNED_FILES,
                         GEOM_LEARNED_NET})
MAP_OUTPUT = OutputKind("disam-build-map", lambda entry: entry.name in MAP_ENTRIES and entry.is_file())
POSES_SOURCES = ("poses.txt", "bag", "given", "index")  # "index": place i at (i, 0, 0) m, no poses existed


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


def file_record(path: Path, chunk_bytes: int = CHUNK_BYTES) -> dict[str, Any]:
    """Size, whole-file sha256 and (files over one chunk) one sha256 per chunk, all in one read."""
    whole, chunks = hashlib.sha256(), []
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_bytes), b""):
            whole.update(block)
            chunks.append(hashlib.sha256(block).hexdigest())
    record: dict[str, Any] = {"bytes": path.stat().st_size, "sha256": whole.hexdigest()}
    if len(chunks) > 1:
        record["chunks"] = chunks
    return record


class MapStage(StagedDir):
    """A temporary directory beside the target that becomes the map only on `commit()` (a failed build leaves no
    half map; an existing one goes only once the new one is complete), with the `.disam-made` marker. An existing
    folder is replaced only with `overwrite`, only as `MAP_OUTPUT` allows (made by us, map files only; a map from
    before markers: its manifest parses), never over the build's `inputs`: `disam_ros.fsutil.replace_refusal`."""

    def __init__(self, target: Path, overwrite: bool = False, made_by: str = MAP_OUTPUT.tool,
                 inputs: tuple[tuple[str, Path], ...] = ()) -> None:
        target = Path(target).absolute()
        if (problem := replace_refusal(target, replace=overwrite, legacy=is_older_map, kind=MAP_OUTPUT,
                                       inputs=inputs)) is not None:
            raise MapError(problem)
        super().__init__(target, marker=made_by)
        self.dir = self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.done:  # only an explicit commit() publishes a map; leaving the block without one aborts
            self.abort()


def is_older_map(directory: Path) -> bool:
    """A map or shard without the marker (written before markers): its manifest parses as ours."""
    try:
        return bool(read_manifest(directory, kind=None))
    except MapError:
        return False


def write_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Record size and sha256 of every other file, then write manifest.json last (atomically)."""
    files = {}
    for p in sorted(directory.iterdir()):
        if p.is_file() and p.name != MANIFEST and not p.name.startswith("."):  # hidden: markers, temporaries
            files[p.name] = file_record(p)
    manifest = {**manifest, "files": files, "integrity": {"chunk_bytes": CHUNK_BYTES}}
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest


def read_manifest(directory: Path, kind: str | None = "map") -> dict[str, Any]:
    """Parse and validate manifest.json (`kind` None: a map or a shard); the first problem is a MapError."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise map_error(directory, "map directory not found", "check the path or build it with disam-build-map")
    if not path.is_file():
        raise map_error(path, "missing, so this is not a map", "build the map with disam-build-map")
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"larger than {MAX_MANIFEST_BYTES >> 20} MiB")
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # JSON and UTF-8 errors are ValueErrors
        raise map_error(path, f"unreadable ({type(exc).__name__}: {str(exc)[:100]})",
                        "the map is damaged; copy it again or rebuild it") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_TAG:
        raise map_error(path, "is not a disam_ros map manifest", "build the map with disam-build-map")
    if type(manifest.get("version")) is not int or manifest["version"] not in READ_VERSIONS:  # True == 1
        raise map_error(path, f"has map format version {_short(manifest.get('version'))}, this software reads "
                        f"{READ_VERSIONS}", "rebuild the map with this version of disam-build-map")
    if manifest.get("kind") not in ("map", "shard") or (kind is not None and manifest.get("kind") != kind):
        fix = "merge the shards with disam-build-map --merge" if manifest.get("kind") == "shard" else \
            "pass a directory written by disam-build-map" + (" --shard" if kind == "shard" else "")
        raise map_error(path, f"describes a {_short(manifest.get('kind'))}, not a {kind or 'map'!r}", fix)
    problems = manifest_problems(manifest)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise map_error(path, problems[0] + more, "the manifest is damaged or was edited; copy the map again or "
                        "rebuild it")
    return manifest


# ------------------------------------------------------------------------------------------ manifest schema
_HEX64 = re.compile(r"[0-9a-f]{64}")
_BIG = 1 << 50


def _int(lo: int = 0, hi: int = _BIG) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _num(lo: float = -math.inf, hi: float = math.inf) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _text(v: Any) -> bool:
    """Non-empty and one printable line: it ends up in ROS headers, log lines and file paths."""
    return isinstance(v, str) and v != "" and v.isprintable()


def _shape(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 3 and all(_int(1, 1 << 20)(x) for x in v)


def _vec3(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 3 and all(_num()(x) for x in v)


def _hash_or_none(v: Any) -> bool:
    """A missing model hash is allowed here; the model check refuses it unless told otherwise. Any one-line
    text: it is compared with the encoder's `checkpoint_sha256`, which test doubles set to what they like."""
    return v is None or (isinstance(v, str) and v.isprintable())


def _names(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_text(x) for x in v)


_OBJ = (lambda v: isinstance(v, dict), "an object")
_POS = (_int(1, 1 << 40), "a positive integer")
# (dotted key, check, what it must be, required when its parent object exists)
_SPEC: tuple[tuple[str, Callable[[Any], bool], str, bool], ...] = (
    ("count", *_POS, True), ("frame_id", _text, "a one-line name", True),
    ("reference_domain", _text, "a one-line name", True),
    ("created", _is_str, "a string", False), ("software", _is_str, "a string", False),
    ("poses_source", lambda v: v in POSES_SOURCES, f"one of {list(POSES_SOURCES)}", False),
    ("models", *_OBJ, True), ("models.coarse", *_OBJ, True),
    ("models.fine", lambda v: v is None or isinstance(v, dict), "an object or null", False),
    *((f"models.{r}.{k}", check, want, req) for r in ("coarse", "fine") for k, check, want, req in (
        ("sha256", _hash_or_none, "a checkpoint sha256 or null", False),
        ("path", lambda v: v is None or _text(v), "a path or null", False),
        ("domains", _names, "a non-empty list of names", True),
        ("content_shape", _shape, "[C, h, w] of positive integers", True),
        ("image_size", _int(1, 1 << 20), "a positive integer", True))),
    ("descriptors", *_OBJ, True), ("descriptors.settings", *_OBJ, True),
    ("descriptors.settings.mode", _text, "a mode name", True),
    ("descriptors.settings.hnsw_m", _int(1, 1 << 12), "a positive integer", False),
    ("descriptors.coarse_shape", _shape, "[C, h, w] of positive integers", True),
    ("descriptors.coarse_dim", *_POS, True),
    ("descriptors.fine_shape", lambda v: v is None or _shape(v), "[C, h, w] or null", False),
    ("stats", *_OBJ, False), ("stats.extent_min", _vec3, "[x, y, z]", False),
    ("stats.extent_max", _vec3, "[x, y, z]", False), ("stats.spacing_m", _num(0), "a number >= 0", False),
    ("stats.spacing_deg", _num(0, 360), "degrees in [0, 360]", False),
    ("build", *_OBJ, False), ("build.source", _is_str, "a string", False),
    ("build.batch_size", *_POS, False), ("build.encode_seconds", _num(0), "a number >= 0", False),
    ("build.device", _is_str, "a string", False), ("build.dataset", *_OBJ, False),
    ("build.dataset.root", _text, "a path", True), ("build.dataset.condition", _text, "a folder name", True),
    ("build.dataset.layout", lambda v: v in ("folders", "flat"), "'folders' or 'flat'", False),
    ("site", *_OBJ, False), ("site.latitude", _num(-90, 90), "degrees in [-90, 90]", True),
    ("site.longitude", _num(-180, 180), "degrees in [-180, 180]", True),
    ("site.timezone", _text, "a time zone name", False),
    ("integrity", *_OBJ, False), ("integrity.chunk_bytes", _int(1 << 16, 1 << 40), "a chunk size in bytes", True),
    ("files", *_OBJ, True),
)
_MISSING = object()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _lookup(manifest: dict[str, Any], key: str) -> tuple[Any, Any]:
    """(parent object or None when it is absent/not an object, value or _MISSING)."""
    *parents, last = key.split(".")
    node: Any = manifest
    for k in parents:
        node = node.get(k) if isinstance(node, dict) else None
    return (node, node.get(last, _MISSING)) if isinstance(node, dict) else (None, _MISSING)


def manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """Every way the manifest's fields are missing, mistyped, out of range or inconsistent, one line each.

    Everything downstream (loader, node, map-info) trusts the manifest after this, so it is strict: a
    value the writer never produces is a problem, whatever the reader would have made of it."""
    problems = []
    for key, check, want, required in _SPEC:
        parent, value = _lookup(manifest, key)
        if parent is None or (value is _MISSING and not required):
            continue
        if value is _MISSING:
            problems.append(f"field {key} is missing (expected {want})")
        elif not check(value):
            problems.append(f"field {key} is {_short(value)}, expected {want}")
    if manifest.get("kind") == "shard":
        sh = manifest.get("shard")
        if not (isinstance(sh, dict) and _int(1, 1 << 20)(sh.get("count")) and _int(0, 1 << 20)(sh.get("index"))
                and sh["index"] < sh["count"]):
            problems.append(f"field shard is {_short(sh)}, expected {{index: i, count: n}} with 0 <= i < n")
    return problems or _consistency_problems(manifest)


def _consistency_problems(man: dict[str, Any]) -> list[str]:
    """Fields that are each valid but disagree (checked once every field has the right type)."""
    desc, models = man["descriptors"], man["models"]
    try:
        s = DescriptorSettings.from_dict(desc["settings"])
    except (TypeError, ValueError) as exc:
        return [f"field descriptors.settings is invalid ({str(exc).splitlines()[0][:160]})"]
    out = []
    fine = models.get("fine")
    for role, enc in (("coarse", models["coarse"]), ("fine", fine)):
        if enc is not None and man["reference_domain"] not in enc["domains"]:
            out.append(f"reference_domain {man['reference_domain']!r} is not among the {role} model's domains")
    coarse_shape = list(pooled_shape(tuple(models["coarse"]["content_shape"]), s.coarse_grid))
    if desc["coarse_shape"] != coarse_shape:
        out.append(f"descriptors.coarse_shape {desc['coarse_shape']} disagrees with the coarse model ({coarse_shape})")
    raw_dim, dim = math.prod(coarse_shape) + extra_dim(models["coarse"]), desc["coarse_dim"]  # + seed 002 depth
    pca = s.pca_dim is not None and man["kind"] == "map"
    if (dim > min(raw_dim, s.pca_dim)) if pca else dim != raw_dim:
        out.append(f"descriptors.coarse_dim {dim} disagrees with the coarse shape and PCA setting")
    fine_shape = desc.get("fine_shape")
    want_fine = None if fine is None else list(pooled_shape(tuple(fine["content_shape"]), s.fine_grid))
    if fine_shape != want_fine:
        out.append(f"descriptors.fine_shape {fine_shape} disagrees with the fine model ({want_fine})")
    return out + _files_problems(man, s)


def expected_files(kind: str, s: DescriptorSettings, has_fine: bool) -> set[str]:
    """The files a map (or shard) with these settings consists of: the manifest must list exactly these."""
    names = {POSES, NAMES}
    if kind == "shard":
        names.add(COARSE_RAW)
    else:
        names |= {COARSE_NPY if s.index == "flat" else COARSE_FAISS} | ({PCA_NPZ} if s.pca_dim is not None else set())
        names |= {COARSE_NPY} if s.refine and s.index != "flat" else set()  # refine vectors, memory-mapped
    return names | ({FINE_NPY} if has_fine else set()) | ({COARSE_FULL} if s.coarse_refine else set())


def _files_problems(man: dict[str, Any], s: DescriptorSettings) -> list[str]:
    files, out = man["files"], []
    want = expected_files(man["kind"], s, man["descriptors"].get("fine_shape") is not None)
    optional = {CALIBRATION_JSON} if man["kind"] == "map" else set()
    geo = man.get("geometry") if isinstance(man.get("geometry"), dict) else {}  # checked in geometry_store.py
    want |= (set(GEOMETRY_FILES) | ({GEOM_GRADIENTS} if geo.get("gradients") else set())
             | ({*GEOM_LEARNED_FILES, GEOM_LEARNED_NET} if geo.get("learned") else set())) if geo else set()
    if not want <= set(files) <= want | optional:
        extra, missing = sorted(set(files) - want), sorted(want - set(files))
        return [f"field files lists {extra or 'no extra files'} and lacks {missing or 'nothing'} "
                f"(a {man['kind']} with these settings is {sorted(want)})"]
    chunk = man.get("integrity", {}).get("chunk_bytes")
    for name, info in files.items():
        ok = (isinstance(info, dict) and _int(0)(info.get("bytes")) and isinstance(info.get("sha256"), str)
              and _HEX64.fullmatch(info["sha256"]) is not None)
        if ok and "chunks" in info:
            c = info["chunks"]
            ok = (chunk is not None and isinstance(c, list) and len(c) == -(-info["bytes"] // chunk)
                  and all(isinstance(h, str) and _HEX64.fullmatch(h) for h in c))
        if not ok:
            out.append(f"field files.{name} is {_short(info)}, expected {{bytes, sha256[, chunks]}} matching "
                       "integrity.chunk_bytes")
    return out


def check_file(path: Path, info: dict[str, Any], hash_now: bool) -> None:
    """Presence and size always (cheap), the whole-file sha256 when `hash_now`."""
    if not path.is_file():
        raise map_error(path, "missing", "the map is incomplete; copy it again or rebuild it")
    size = path.stat().st_size
    if size != info["bytes"]:
        raise map_error(path, f"has {size} bytes, the manifest says {info['bytes']} (truncated or modified)",
                        "copy the map again or rebuild it")
    try:
        digest = sha256_file(path) if hash_now else info["sha256"]
    except OSError as exc:
        raise map_error(path, f"unreadable ({exc.strerror or type(exc).__name__})",
                        "check the file's permissions and the disk, or copy the map again") from None
    if digest != info["sha256"]:
        raise map_error(path, "checksum mismatch (sha256 differs from the manifest)",
                        "the file is corrupt; copy the map again or rebuild it")


def check_files(directory: Path, manifest: dict[str, Any], verify: bool | None = None) -> list[tuple[Path, dict]]:
    """Sizes always; sha256 now of files up to AUTO_VERIFY_BYTES (verify=None), of all (True), of none (False).

    Returns the (path, record) of the larger files that verify=None leaves for the background check."""
    deferred = []
    for name, info in manifest["files"].items():
        path = Path(directory) / name
        hash_now = bool(verify) or (verify is None and info["bytes"] <= AUTO_VERIFY_BYTES)
        check_file(path, info, hash_now)
        if verify is None and not hash_now:
            deferred.append((path, info))
    return deferred


def load_npy(path: Path, mmap: bool, shape: tuple[int, ...] | None = None, dtype: str | None = None) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError, MemoryError, SyntaxError) as exc:
        raise map_error(path, f"unreadable array ({(str(exc).splitlines() or [type(exc).__name__])[0][:120]})",
                        "the file is truncated or corrupt; copy the map again or rebuild it") from None
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise map_error(path, f"has shape {tuple(arr.shape)}, the manifest says {tuple(shape)}",
                        "the map is inconsistent; rebuild it")
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise map_error(path, f"holds {arr.dtype} values, the manifest says {dtype}", "the map is inconsistent; "
                        "rebuild it")
    return arr


@dataclass(eq=False)
class MapContents:
    """What both a map and a shard hold, read and checked against the manifest."""

    root: Path
    manifest: dict[str, Any]
    names: list[str]
    trajectory: Trajectory
    settings: DescriptorSettings
    fine: np.ndarray | None
    deferred: list[tuple[Path, dict]] = field(default_factory=list)  # large files not hashed yet
