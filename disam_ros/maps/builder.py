"""Encode reference frames into a map directory (library side of `disam-build-map`).

`build_map` takes any iterable of frames (dataset folders, a rosbag reader, a generator), encodes them in
batches, streams descriptors to disk, and only then finalises (PCA, faiss index) and renames the temporary
directory into place. Shards store pre-finalisation descriptors, and merging runs the same finalisation,
so a sharded build equals a single one.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

import disam_ros
from disam_ros.data.tum import Trajectory, make_trajectory, write_tum
from disam_ros.geometry import quat_angle_deg
from disam_ros.maps.descriptors import (
    DescriptorSettings,
    coarse_vectors,
    fine_vectors,
    fit_pca,
    pooled_shape,
)
from disam_ros.maps.feature_kind import LearnedPlan
from disam_ros.maps.fused import branch_record, depth_dim, with_depth
from disam_ros.maps.geometry_build import GeometryBuilder, GeometryPlan, geometry_budget, geometry_builders
from disam_ros.maps.geometry_store import merge_geometry
from disam_ros.maps.ivfpq import build_faiss
from disam_ros.maps.localization_map import load_contents
from disam_ros.maps.map_format import (
    COARSE_FAISS,
    COARSE_FULL,
    COARSE_NPY,
    COARSE_RAW,
    FINE_NPY,
    FORMAT_TAG,
    FORMAT_VERSION,
    NAMES,
    PCA_NPZ,
    POSES,
    MapStage,
    load_npy,
    map_error,
    write_manifest,
)
from disam_ros.maps.map_plan import check_map_size
from disam_ros.maps.npy_stream import NonFiniteRowsError, NpyAppender

if TYPE_CHECKING:  # typing only: importing the model package here would load torch eagerly
    from disam_ros.model.inference import EncoderLike

_CHUNK = 8192
log = logging.getLogger(__name__)


@dataclass
class MapFrame:
    """One reference image with its pose; `name` identifies it in results (e.g. the file name)."""

    image: np.ndarray
    stamp: float
    position: np.ndarray
    quat: np.ndarray
    name: str


def as_map_frame(obj: Any, i: int) -> MapFrame:
    """Accept MapFrame, a (image, stamp, position, quat, name) tuple, or anything with those attributes
    (a `disam_ros.data.folders.Frame` is named after its file)."""
    if isinstance(obj, MapFrame):
        frame = obj
    elif isinstance(obj, tuple | list) and len(obj) == 5:
        frame = MapFrame(*obj)
    else:
        name = getattr(obj, "name", None) or (Path(obj.path).name if getattr(obj, "path", None) else f"{i:06d}")
        frame = MapFrame(obj.image, obj.stamp, obj.position, obj.quat, name)
    if frame.position is None or frame.quat is None:
        raise ValueError(f"map frame {i} ({frame.name}) has no pose: a map needs a pose per reference image")
    if frame.stamp is None:
        frame.stamp = float(i)
    if "\n" in frame.name or not frame.name:
        raise ValueError(f"map frame {i} has an unusable name {frame.name!r}: names must be non-empty single lines")
    return frame


def model_record(enc: EncoderLike, path: str | Path | None) -> dict[str, Any]:
    return {
        "sha256": getattr(enc, "checkpoint_sha256", None),
        "path": str(Path(path).absolute()) if path else None,
        "domains": list(enc.domains),
        "content_shape": list(enc.content_shape),
        "image_size": int(enc.config.image_size),
    }


@dataclass
class _Encoded:
    names: list[str]
    trajectory: Trajectory
    seconds: float


def _append(out: NpyAppender, rows: np.ndarray, batch: list[MapFrame], role: str) -> None:
    """Stream a batch's descriptors; NaN/inf features stop the build naming the image (nothing is written)."""
    try:
        out.append(rows)
    except NonFiniteRowsError as exc:
        i = int(exc.batch_rows[0])
        more = f" (and {len(exc.batch_rows) - 1} more in its batch)" if len(exc.batch_rows) > 1 else ""
        raise ValueError(f"map image {batch[i].name} (frame {int(exc.rows[0])}): the {role} model gives NaN/inf "
                         f"features{more}, so no map was written; check that image and the {role} checkpoint"
                         ) from None


def _encode_batch(batch: list[MapFrame], coarse: EncoderLike, fine: EncoderLike | None, domain: str,
                  s: DescriptorSettings, raw: NpyAppender, fine_out: NpyAppender | None,
                  full_out: NpyAppender | None = None) -> None:
    images = [f.image for f in batch]
    _append(raw, with_depth(coarse, z := coarse.encode(images, domain), coarse_vectors(z, s.coarse_grid), domain)
            .cpu().numpy(), batch, "coarse")
    if full_out is not None:  # the full-grid vectors a compact map re-scores its shortlist on (coarse_refine)
        _append(full_out, with_depth(coarse, z, coarse_vectors(z, None), domain).cpu().numpy(), batch, "coarse")
    if fine_out is not None:
        fv = fine_vectors(fine.encode(images, domain), s.fine_grid).cpu().numpy()
        _append(fine_out, fv.reshape(len(batch), *fine_out.row_shape), batch, "fine")


def _encode_frames(frames: Iterable[Any], coarse: EncoderLike, fine: EncoderLike | None, domain: str,
                   s: DescriptorSettings, directory: Path, batch_size: int, progress: bool,
                   total: int | None, geos: Sequence[GeometryBuilder] = ()) -> _Encoded:
    """Stream descriptors of all frames to coarse_raw.npy / fine.npy; return names and poses."""
    coarse_shape = pooled_shape(tuple(coarse.content_shape), s.coarse_grid)
    raw_dtype = "float16" if s.pca_dim is not None else s.coarse_dtype  # pre-PCA: 128 KiB/image at paper size
    names, stamps, positions, quats = [], [], [], []
    t0 = time.perf_counter()
    raw = NpyAppender(directory / COARSE_RAW, (int(np.prod(coarse_shape)) + depth_dim(coarse),), raw_dtype)  # seed 002
    fine_out = full_out = None
    if fine is not None:
        fine_out = NpyAppender(directory / FINE_NPY, pooled_shape(tuple(fine.content_shape), s.fine_grid),
                               s.fine_dtype)
    if s.coarse_refine:
        full_out = NpyAppender(directory / COARSE_FULL, (int(np.prod(coarse.content_shape)) + depth_dim(coarse),),
                               "float16")
    try:
        batch: list[MapFrame] = []
        for i, obj in enumerate(tqdm(frames, total=total, unit="img", desc="encode map", disable=not progress)):
            f = as_map_frame(obj, i)
            batch.append(f)
            names.append(f.name)
            stamps.append(f.stamp)
            positions.append(f.position)
            quats.append(f.quat)
            for geo in geos:  # map geometry, streamed per image (maps/geometry_build.py): SIFT, then learned
                geo.add(i, f.image, f.position, f.quat, f.name)
            if len(batch) == batch_size:
                _encode_batch(batch, coarse, fine, domain, s, raw, fine_out, full_out)
                batch = []
        if batch:
            _encode_batch(batch, coarse, fine, domain, s, raw, fine_out, full_out)
    finally:
        for out in (raw, fine_out, full_out):
            if out is not None:
                out.close()
    if not names:
        raise ValueError("no frames to build a map from: check the dataset path, condition or shard")
    traj = make_trajectory(stamps, np.asarray(positions, np.float64), np.asarray(quats, np.float64))
    return _Encoded(names, traj, time.perf_counter() - t0)


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


def _finalize_coarse(directory: Path, s: DescriptorSettings, n: int) -> int:
    """coarse_raw.npy -> (PCA) -> coarse.npy or coarse.faiss; returns the final coarse dimension."""
    raw_path = directory / COARSE_RAW
    raw = load_npy(raw_path, mmap=True)
    final_path = directory / COARSE_NPY
    if s.pca_dim is not None:
        pca = fit_pca(raw, s.pca_dim)
        pca.save(directory / PCA_NPZ)
        with NpyAppender(final_path, (pca.dim,), s.coarse_dtype) as out:
            for i in range(0, n, _CHUNK):
                out.append(pca.project_map(raw[i:i + _CHUNK]))
        del raw
        raw_path.unlink()
    else:
        del raw
        raw_path.rename(final_path)  # inside the MapStage folder: nobody sees it before the stage commits
    final = load_npy(final_path, mmap=True)
    dim = int(final.shape[1])
    if s.index != "flat":
        import faiss

        faiss.write_index(build_faiss(final, s), str(directory / COARSE_FAISS))
        del final
        if not s.refine:  # refine re-scores the index's shortlist on these, read by row from disk
            final_path.unlink()
    return dim


def _manifest(kind: str, n: int, domain: str, frame_id: str, s: DescriptorSettings, models: dict[str, Any],
              coarse_dim: int, traj: Trajectory, build: dict[str, Any], shard: tuple[int, int] | None,
              site: dict[str, Any] | None = None) -> dict:
    coarse_shape = pooled_shape(tuple(models["coarse"]["content_shape"]), s.coarse_grid)
    fine_shape = None if models.get("fine") is None else pooled_shape(tuple(models["fine"]["content_shape"]),
                                                                      s.fine_grid)
    out = {
        "format": FORMAT_TAG,
        "version": FORMAT_VERSION,
        "kind": kind,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "software": f"disam_ros {disam_ros.__version__}",
        "frame_id": frame_id,
        "count": n,
        "reference_domain": domain,
        "models": models,
        "descriptors": {
            "settings": s.to_dict(),
            "coarse_shape": list(coarse_shape),
            "coarse_dim": coarse_dim,
            "fine_shape": None if fine_shape is None else list(fine_shape),
        },
        "stats": pose_stats(traj),
        "build": build,
    }
    if shard is not None:
        out["shard"] = {"index": shard[0], "count": shard[1]}
    if site:
        out["site"] = site  # e.g. latitude/longitude/timezone: lets the node derive daylight from stamps
    return out


def _write_tables(directory: Path, names: Sequence[str], traj: Trajectory) -> None:
    write_tum(directory / POSES, traj)
    (directory / NAMES).write_text("".join(f"{n}\n" for n in names), encoding="utf-8")


def check_domain(domain: str, coarse: EncoderLike | None, fine: EncoderLike | None) -> None:
    for role, enc in (("coarse", coarse), ("fine", fine)):
        if enc is not None and domain not in enc.domains:
            raise ValueError(f"reference domain {domain!r} is unknown to the {role} model (domains "
                             f"{list(enc.domains)}): pass --domain with one of them")


def build_map(frames: Iterable[Any], coarse: EncoderLike, fine: EncoderLike | None, out_dir: str | Path, domain: str,
              settings: DescriptorSettings | None = None, batch_size: int = 16, progress: bool = True, *,
              frame_id: str = "map", shard: tuple[int, int] | None = None, overwrite: bool = False,
              checkpoint_paths: tuple[Any, Any] = (None, None), source: str = "",
              total: int | None = None, site: dict[str, Any] | None = None,
              dataset: dict[str, str] | None = None, poses_source: str | None = None,
              geometry: GeometryPlan | None = None, learned: LearnedPlan | None = None) -> Path:
    """Encode `frames` under `domain` with the coarse (and fine) encoder into the map directory `out_dir`.

    With `shard=(i, n)` the result is shard i of n (merge them with `merge_shards`). Nothing appears at
    `out_dir` unless the whole build succeeds. With `total` (the image count) the map's size is estimated
    first: logged, warned about above SIZE_WARN_BYTES, refused when it cannot fit the free disk space.
    `poses_source` ("poses.txt", "bag", "index", ...) is recorded in the manifest when given. With `geometry`
    the map also gets keypoints, descriptors and 3D points per image (maps/geometry_build.py); with `learned`
    too, a learned block beside SIFT's (maps/feature_kind.py).
    """
    s = settings or DescriptorSettings()
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} must be at least 1")
    check_domain(domain, coarse, fine)
    check_map_size(Path(out_dir), total, coarse, fine, s, geometry=geometry_budget(geometry, learned))
    models = {"coarse": model_record(coarse, checkpoint_paths[0]) | branch_record(coarse),
              "fine": None if fine is None else model_record(fine, checkpoint_paths[1])}
    if learned is not None:
        learned.check()  # a bad network file: one line now, not after the images
    with MapStage(Path(out_dir), overwrite) as stage:
        geos = geometry_builders(geometry, learned, stage.dir)
        try:
            enc = _encode_frames(frames, coarse, fine, domain, s, stage.dir, batch_size, progress, total, geos)
            geo_record = None if not geos else geos[0].finish(progress)
            if len(geos) > 1:  # the same epipolar band and checks as SIFT's: the poses' noise is the poses'
                geo_record["learned"] = geos[1].finish(progress, like=geos[0])
        except BaseException:
            for geo in geos:
                geo.close()  # also removes its temporary features; safe after finish
            raise
        n = len(enc.names)
        build = {"source": source, "batch_size": batch_size, "encode_seconds": round(enc.seconds, 3),
                 "device": str(getattr(coarse, "device", "unknown"))}
        if dataset:  # {"root", "condition"}: where the map images live, for overlays and debug images
            build["dataset"] = dict(dataset)
        if shard is None:
            dim = _finalize_coarse(stage.dir, s, n)
            kind = "map"
        else:
            dim = int(load_npy(stage.dir / COARSE_RAW, mmap=True).shape[1])
            kind = "shard"
        _write_tables(stage.dir, enc.names, enc.trajectory)
        man = _manifest(kind, n, domain, frame_id, s, models, dim, enc.trajectory, build, shard, site)
        if poses_source is not None:
            man["poses_source"] = poses_source
        if geo_record is not None:
            man["geometry"] = geo_record
        write_manifest(stage.dir, man)
        return stage.commit()


def _shard_key(c: Any) -> tuple:
    """What must agree between shards of one map."""
    man = c.manifest
    return (man["reference_domain"], man["frame_id"], json.dumps(man["models"], sort_keys=True),
            json.dumps(man["descriptors"], sort_keys=True), man["shard"]["count"])


def _concat(path: Path, parts: Sequence[np.ndarray], progress: bool = False) -> None:
    """The shards' rows of one file, in shard order, streamed `_CHUNK` rows at a time."""
    with NpyAppender(path, parts[0].shape[1:], parts[0].dtype) as out:
        for arr in tqdm(parts, desc=f"merge {path.name}", unit="shard", disable=not progress):
            for i in range(0, len(arr), _CHUNK):
                out.append(arr[i:i + _CHUNK])


def merge_shards(shard_dirs: Sequence[str | Path], out_dir: str | Path, overwrite: bool = False,
                 progress: bool = True) -> Path:
    """Concatenate shards 0..n-1 (any order given) and finalise them exactly as a single build would."""
    shards = [load_contents(Path(d), "shard", mmap=True, verify=True) for d in shard_dirs]  # read whole anyway
    if not shards:
        raise ValueError("no shard directories given to merge")
    shards.sort(key=lambda c: c.manifest["shard"]["index"])
    first = shards[0]
    count = first.manifest["shard"]["count"]
    for c in shards:
        if _shard_key(c) != _shard_key(first):
            raise map_error(c.root, f"was built with other models, settings, domain or shard count than {first.root}",
                            "merge only shards of one build")
    got = [c.manifest["shard"]["index"] for c in shards]
    if got != list(range(count)):
        raise map_error(first.root.parent, f"shards {got} given, a complete set is 0..{count - 1}",
                        "pass every shard of the build exactly once")
    s = first.settings
    with MapStage(Path(out_dir), overwrite, inputs=tuple(("--merge", Path(d)) for d in shard_dirs)) as stage:
        _concat(stage.dir / COARSE_RAW, [load_npy(c.root / COARSE_RAW, mmap=True) for c in shards], progress)
        if first.fine is not None:
            _concat(stage.dir / FINE_NPY, [c.fine for c in shards])
        if s.coarse_refine:
            _concat(stage.dir / COARSE_FULL, [load_npy(c.root / COARSE_FULL, mmap=True) for c in shards])
        names = [n for c in shards for n in c.names]
        traj = make_trajectory(np.concatenate([c.trajectory.stamps for c in shards]),
                               np.concatenate([c.trajectory.positions for c in shards]),
                               np.concatenate([c.trajectory.quats for c in shards]))
        dim = _finalize_coarse(stage.dir, s, len(names))
        _write_tables(stage.dir, names, traj)
        source = str(first.manifest["build"].get("source", "")).split("; shard")[0]
        build = {**first.manifest["build"], "source": f"{source}; merged from {count} shards",
                 "encode_seconds": round(sum(c.manifest["build"].get("encode_seconds", 0.0) for c in shards), 3)}
        man = _manifest("map", len(names), first.manifest["reference_domain"], first.manifest["frame_id"], s,
                        first.manifest["models"], dim, traj, build, None, first.manifest.get("site"))
        if "poses_source" in first.manifest:
            man["poses_source"] = first.manifest["poses_source"]
        if (geo := merge_geometry(shards, stage.dir)) is not None:
            man["geometry"] = geo
        write_manifest(stage.dir, man)
        return stage.commit()
