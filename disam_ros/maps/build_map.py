"""`disam-build-map`: encode a dataset condition into a map directory, build one shard of it, or merge shards.

    disam-build-map --dataset ROOT --condition sunny --coarse C.pt [--fine F.pt] --out MAP [--mode auto]
        --mode auto (default) picks the most accurate mode that fits the map's size, RAM and disk
        (maps/map_plan.py: exact -> pca-full -> hnsw-full -> ivfpq); the log line says which and why
        ROOT/sunny/images/* (folders) or ROOT/sunny/*.png (flat, e.g. Nordland: same name = same place), with
        poses from ROOT/sunny/poses.txt (TUM, sorted-name order); without it image i sits at (i, 0, 0) m
    disam-build-map ... --shard 0/4 --out MAP.shard0          # one of four contiguous parts (other machines;
                                                              # auto then decides by the whole map's size only)
    disam-build-map --merge MAP.shard0 MAP.shard1 ... --out MAP
    disam-build-map --bag DRIVE_BAG --domain sunny --coarse C.pt [--fine F.pt] --out MAP   # straight from a bag
        --geometry auto (default): map geometry for metric poses (SIFT keypoints + 3D points per image) from
        <condition>/depth/ when present, else triangulated between neighbouring images; none without intrinsics
        (camera.yaml / CameraInfo) or poses (maps/geometry_build.py)
        --verify-features both|learned [--keypoint-net NET]: also store learned keypoints and 3D points beside
        SIFT's, with a copy of the network, for the verifier (maps/feature_kind.py; default sift)
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from disam_ros import logs
from disam_ros.cliutil import OneLineParser, non_negative_float, non_negative_int, output_dir_error
from disam_ros.data.folders import (
    IMAGE_SUFFIXES,
    CameraIntrinsics,
    ConditionFolder,
    check_name_order,
    load_condition,
)
from disam_ros.data.tum import make_trajectory, read_tum
from disam_ros.fsutil import replace_refusal
from disam_ros.maps.builder import build_map, merge_shards
from disam_ros.maps.descriptors import DTYPES, INDEXES, MODES, settings_for_mode
from disam_ros.maps.feature_kind import VERIFY_FEATURES, LearnedPlan
from disam_ros.maps.geometry_build import GEOMETRY_CHOICES, GeometryPlan, check_learned, plan_geometry
from disam_ros.maps.map_format import MAP_OUTPUT, MapError, is_older_map
from disam_ros.maps.map_plan import AUTO, resolve_mode
from disam_ros.pose.features import MAP_SIFT
from disam_ros.shipped import KEYPOINTS, checkpoint_arg
from disam_ros.threads import apply_threads

log = logging.getLogger(__name__)

__all__ = ["MapBuildConfig", "build_map", "build_map_from_bag", "build_map_from_folder", "main", "merge_shards"]


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="disam-build-map", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, help="dataset root holding <condition>/images/* or <condition>/*.png, "
                   "and <condition>/poses.txt")
    p.add_argument("--condition", help="reference condition folder to encode (e.g. sunny)")
    p.add_argument("--bag", type=Path, help="reference drive as a rosbag2 / ROS 1 bag (images + pose topic)")
    p.add_argument("--image-topic", help="with --bag: camera topic (default: the bag's only image topic)")
    p.add_argument("--pose-topic", help="with --bag: pose topic (default: the bag's only PoseStamped topic)")
    p.add_argument("--max-gap", type=non_negative_float, default=0.2,
                   help="with --bag: longest pose gap to interpolate over (s, a finite number >= 0)")
    p.add_argument("--domain", help="model domain to encode under (default: the condition name)")
    p.add_argument("--coarse", type=checkpoint_arg, help="coarse model checkpoint: a file, or a shipped one by name "
                   "('real': the real-camera default, map side under --domain summer; 'demo': the synthetic world's)")
    p.add_argument("--fine", type=checkpoint_arg, help="fine model checkpoint, a file or 'demo-fine' (omit for "
                   "coarse-only maps)")
    p.add_argument("--out", type=Path, required=True, help="map directory to write")
    p.add_argument("--merge", type=Path, nargs="+", metavar="SHARD_DIR", help="merge shard directories into --out")
    p.add_argument("--mode", default=AUTO, choices=[AUTO, *MODES], help="descriptor preset (default auto: by map "
                   "size, RAM and disk; see docs/benchmarks.md)")
    p.add_argument("--coarse-grid", type=int, help="pool coarse maps to GxG (overrides the mode)")
    p.add_argument("--fine-grid", type=int, help="pool fine maps to GxG (overrides the mode)")
    p.add_argument("--pca-dim", type=int, help="PCA dimension (overrides the mode)")
    p.add_argument("--coarse-dtype", choices=DTYPES)
    p.add_argument("--fine-dtype", choices=DTYPES)
    p.add_argument("--index", choices=INDEXES)
    p.add_argument("--coarse-refine", type=int, metavar="N", help="re-score the best N of a compact map's coarse "
                   "ranking on full-grid vectors kept on disk, so it ranks as exact (default: the mode's, 64 for "
                   "pca-full, none for the others; 0 = none; costs the full code's size per image on disk)")
    p.add_argument("--geometry", default="auto", choices=GEOMETRY_CHOICES, help="map geometry for metric poses "
                   "(default auto: depth when <condition>/depth/ exists, else triangulate; none without intrinsics)")
    p.add_argument("--sift-scale", type=float, default=1.0, help="map geometry: detect SIFT on the image resized "
                   "by this factor in [0.1, 1] (0.5: about 4x faster verification per frame; docs/pose.md)")
    p.add_argument("--sift-max-side", type=int, default=MAP_SIFT.max_side, help="map geometry: detect SIFT on "
                   f"copies at most this many pixels along the longer side (default {MAP_SIFT.max_side}; 0 = no cap); "
                   "for map photographs bigger than the query camera's images, its longer side (docs/maps.md)")
    p.add_argument("--verify-features", default="sift", choices=VERIFY_FEATURES, help="map geometry: what the "
                   "verifier matches; learned or both also store learned keypoints and their 3D points beside SIFT's "
                   "(default sift; recorded, the node's default; docs/maps.md)")
    p.add_argument("--keypoint-net", type=Path, help="with --verify-features learned/both: the keypoint network "
                   "(default: the shipped one); a copy goes into the map")
    p.add_argument("--frame-id", default="map", help="TF frame of the poses (default map)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="CPU threads: a count bounds torch, OpenCV and OpenBLAS (a machine shared with other work); "
                   "default 0 = torch at min(2, cores), OpenCV's SIFT on every core (docs/benchmarks.md, CPU threads)")
    p.add_argument("--shard", type=parse_shard, help="build only contiguous part i of n (i/n)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing map at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar; log warnings only")
    return p


def reference_folder(root: Path, condition: str) -> tuple[ConditionFolder, str, str]:
    """(images with poses, layout, poses source) of a reference condition in either layout training accepts:
    `folders` (ROOT/<condition>/images/*) or `flat` (ROOT/<condition>/*.png, the same name in two conditions
    is the same place). Poses come from ROOT/<condition>/poses.txt; without it, image i of the sorted names
    is placed at (i, 0, 0) m with identity rotation ("index": positions are ranks, enough for retrieval and
    frame-distance scores, not for metric poses); `build_map_from_folder` warns of it once the build goes on."""
    cdir = root / condition
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root not found; check --dataset")
    if (cdir / "images").is_dir():
        folder, layout = load_condition(root, condition), "folders"
    elif cdir.is_dir():
        images = tuple(sorted(p for p in cdir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        if not images:
            raise FileNotFoundError(f"{cdir}: no images ({', '.join(IMAGE_SUFFIXES)}) in condition {condition!r}, "
                                    "directly or under images/; check --dataset and --condition")
        traj = read_tum(cdir / "poses.txt") if (cdir / "poses.txt").is_file() else None
        if traj is not None and len(traj) != len(images):
            raise ValueError(f"{cdir / 'poses.txt'}: {len(traj)} poses for {len(images)} images; one pose line "
                             "per image, in sorted file-name order")
        if traj is not None:
            check_name_order(images, traj, cdir / "poses.txt")
        folder, layout = ConditionFolder(root, condition, images, traj, None), "flat"
    else:
        raise FileNotFoundError(f"{cdir}: condition {condition!r} not found (expected {condition}/images/* or "
                                f"{condition}/*.png under {root}); check --condition")
    if folder.trajectory is not None:
        return folder, layout, "poses.txt"
    n = len(folder)
    index = make_trajectory(np.arange(n, dtype=np.float64), np.stack([np.arange(n, dtype=np.float64),
                            np.zeros(n), np.zeros(n)], 1), np.tile([0.0, 0.0, 0.0, 1.0], (n, 1)))
    return dataclasses.replace(folder, trajectory=index), layout, "index"


@dataclass(frozen=True)
class MapBuildConfig:
    """One map build, as `disam-build-map` takes it (the CLI only parses into this; the demo, the benchmarks and
    the tests call `build_map_from_folder` / `build_map_from_bag` with it directly, hloc-style)."""

    out: Path
    coarse: Path | None = None  # required for folder and bag builds
    fine: Path | None = None  # None: a coarse-only map
    dataset: Path | None = None  # folder build: ROOT and the reference condition
    condition: str | None = None
    bag: Path | None = None  # bag build: the drive, its topics, and the model domain of its condition
    image_topic: str | None = None
    pose_topic: str | None = None
    max_gap: float = 0.2
    domain: str | None = None  # default: the condition name
    mode: str = AUTO  # resolved by map_plan.choose_mode once the encoders and the image count are known
    coarse_grid: int | None = None
    fine_grid: int | None = None
    pca_dim: int | None = None
    coarse_dtype: str | None = None
    fine_dtype: str | None = None
    index: str | None = None
    coarse_refine: int | None = None  # None: the mode's; 0: no re-score; N: best N on full-grid rows (refine.py)
    geometry: str = "auto"  # map geometry: auto, depth, triangulate or none (maps/geometry_build.py)
    sift_scale: float = 1.0  # map geometry: detect SIFT on the image resized by this (queries follow the map)
    sift_max_side: int = MAP_SIFT.max_side  # ... and on at most this many pixels along the longer side (0 = no cap)
    verify_features: str = "sift"  # learned / both: a learned block beside SIFT's (maps/feature_kind.py)
    keypoint_net: Path | None = None  # its network (None: the shipped one)
    frame_id: str = "map"
    batch_size: int = 16
    device: str = "auto"
    shard: tuple[int, int] | None = None
    overwrite: bool = False
    progress: bool = True

    def settings(self, mode: str | None = None):
        """The descriptor settings of `mode` (default: `self.mode`, which must not be "auto" then)."""
        s = settings_for_mode(mode or self.mode, coarse_grid=self.coarse_grid, fine_grid=self.fine_grid,
                              pca_dim=self.pca_dim, coarse_dtype=self.coarse_dtype, fine_dtype=self.fine_dtype,
                              index=self.index)
        if self.coarse_refine is None:
            return s
        if isinstance(self.coarse_refine, bool) or not isinstance(self.coarse_refine, int) or self.coarse_refine < 0:
            raise ValueError(f"--coarse-refine {self.coarse_refine!r}: give a number of map images >= 0 (0 = none)")
        if self.coarse_refine and s.coarse_grid is None and s.pca_dim is None:
            if self.mode != AUTO:
                raise ValueError(f"--coarse-refine applies to modes that pool or project the coarse vectors; "
                                 f"--mode {s.mode} ranks on full-grid vectors already: drop --coarse-refine")
            log.info("--mode auto chose %s, which ranks on full-grid vectors already: --coarse-refine unused", s.mode)
            return s
        return dataclasses.replace(s, coarse_refine=self.coarse_refine or None)

    def learned_plan(self) -> LearnedPlan | None:
        """--verify-features / --keypoint-net: the learned block to store, its network checked now (one-line
        ValueError); None for sift."""
        if self.verify_features not in VERIFY_FEATURES:
            raise ValueError(f"--verify-features {self.verify_features!r}: expected one of "
                             f"{', '.join(VERIFY_FEATURES)}")
        if self.verify_features == "sift":
            if self.keypoint_net is not None:
                raise ValueError("--keypoint-net applies to --verify-features learned or both: add one or drop it")
            return None
        plan = LearnedPlan(Path(self.keypoint_net or KEYPOINTS), verify_features=self.verify_features)
        plan.check()
        return plan

    def encoders(self):
        from disam_ros.model import Encoder

        coarse = Encoder.from_checkpoint(self.coarse, device=self.device)
        return coarse, (Encoder.from_checkpoint(self.fine, device=self.device) if self.fine else None)


def check_out(conf: MapBuildConfig) -> None:
    """MapError (one line) when --out may not be written: the rule MapStage applies when the map is written,
    asked before any model is loaded, and never over the folder or bag the build reads (a dataset made by
    disam-synth given as both --dataset and --out was replaced by the map)."""
    inputs = tuple((opt, Path(p)) for opt, p in (("--dataset", conf.dataset), ("--bag", conf.bag)) if p is not None)
    if (problem := replace_refusal(conf.out, replace=conf.overwrite, legacy=is_older_map, kind=MAP_OUTPUT,
                                   inputs=inputs)) is not None:
        raise MapError(problem)


def build_map_from_folder(conf: MapBuildConfig) -> Path:
    """Encode ROOT/<condition> (folders or flat layout) into a map (or one shard of it); returns the map dir."""
    from disam_ros.data.folders import iter_frames

    if conf.dataset is None or conf.condition is None or conf.coarse is None:
        raise ValueError("a folder build needs --dataset, --condition and --coarse (or use --merge / --bag)")
    check_out(conf)
    dataset = Path(conf.dataset)
    folder, layout, poses_source = reference_folder(dataset, conf.condition)
    source = f"{dataset.absolute()} condition {conf.condition}"
    whole = len(folder)  # auto decides by the whole map, so every shard of it gets the same mode
    if conf.shard is not None:
        i, n = conf.shard
        lo, hi = i * len(folder) // n, (i + 1) * len(folder) // n
        folder = dataclasses.replace(folder, image_paths=folder.image_paths[lo:hi], trajectory=folder.trajectory[lo:hi],
                                     depth_paths=folder.depth_paths[lo:hi])
        source += f"; shard {i}/{n} (images {lo}..{hi - 1})"
    geometry = sift_scaled(folder_geometry(conf.geometry, folder, dataset / conf.condition, poses_source),
                           conf.sift_scale, conf.sift_max_side)
    check_learned(geometry, learned := conf.learned_plan())
    if poses_source == "index":  # said once the build will go on: a refused --geometry says it all by itself
        log.warning("%s has no poses.txt: map image i (sorted names) is placed at (i, 0, 0) m with identity rotation "
                    "(manifest poses_source \"index\"); add poses.txt (TUM) for metric poses", dataset / conf.condition)
    coarse, fine = conf.encoders()
    settings = conf.settings(resolve_mode(conf.mode, whole, coarse, fine, conf.out, use_ram=conf.shard is None))
    return build_map(iter_frames(folder), coarse, fine, conf.out, conf.domain or conf.condition, settings,
                     conf.batch_size, progress=conf.progress, frame_id=conf.frame_id, shard=conf.shard,
                     overwrite=conf.overwrite, checkpoint_paths=(conf.coarse, conf.fine), source=source,
                     total=len(folder), site=dataset_site(dataset), poses_source=poses_source,
                     dataset={"root": str(dataset.absolute()), "condition": conf.condition, "layout": layout},
                     geometry=geometry, learned=learned)


def sift_scaled(plan: GeometryPlan | None, scale: float, max_side: int = MAP_SIFT.max_side) -> GeometryPlan | None:
    """The plan with its SIFT detection scale and longer-side cap set (recorded in the map; the verifier treats
    queries alike). A ValueError names a cap below 0."""
    if max_side < 0:
        raise ValueError(f"--sift-max-side {max_side}: give a number of pixels >= 0 (0 = no cap)")
    if plan is None:
        return None
    return dataclasses.replace(plan, sift=dataclasses.replace(plan.sift, scale=scale, max_side=max_side))


def folder_geometry(choice: str, folder: ConditionFolder, cdir: Path, poses_source: str) -> GeometryPlan | None:
    """--geometry for a folder build: intrinsics from <condition>/camera.yaml, depth from <condition>/depth/."""
    from disam_ros.pose.camera import Intrinsics

    cam = folder.camera
    if cam is None and (cdir / "camera.yaml").is_file():  # flat layout: ConditionFolder does not read it
        cam = CameraIntrinsics.load(cdir / "camera.yaml")
    return plan_geometry(choice, None if cam is None else Intrinsics.from_camera(cam), folder.has_depth,
                         poses_source != "index", str(cdir), folder.depth)


def dataset_site(root: Path) -> dict | None:
    """latitude/longitude/timezone from ROOT/world.yaml (one schema: disam_ros.data.world_yaml), if present; a
    malformed world.yaml is an error (ValueError naming the key), not a silent map without a site."""
    from disam_ros.data.world_yaml import world_yaml_if_present

    info = world_yaml_if_present(root)
    if info is None or info.site is None:
        return None
    return {k: v for k, v in dataclasses.asdict(info.site).items() if v is not None}


def bag_frames(bag: Path, image_topic: str | None, pose_topic: str | None, max_gap_s: float):
    """(image, stamp, position, quat, name) per camera frame of a bag, the pose interpolated to its stamp;
    frames without a pose within max_gap_s are skipped (the reader warns with the count)."""
    from disam_ros.data.bags import BagReader
    from disam_ros.data.stamps import name_for_stamp_ns

    with BagReader(bag, image_topic=image_topic, pose_topic=pose_topic, max_gap_s=max_gap_s,
                   require_pose=True) as reader:
        for f in reader.frames():
            yield f.image, f.stamp, f.position, f.quat, name_for_stamp_ns(f.stamp_ns)


def bag_image_count(bag: Path, image_topic: str | None) -> int | None:
    """Image messages in the bag (on `image_topic`, else on all image topics): the map size `--mode auto` plans
    for, an upper bound since frames without a pose are skipped. None when the bag cannot be read (the build
    then reports why)."""
    from disam_ros.data.bags.read import bag_info

    try:
        topics = bag_info(bag).topics
    except Exception:  # noqa: BLE001 - any unreadable bag: the reader gives the one-line error later
        return None
    return sum(t.count for t in topics if (t.topic == image_topic if image_topic else t.msgtype.endswith("Image")))


def build_map_from_bag(conf: MapBuildConfig) -> Path:
    """Encode a recorded drive (images + pose topic) into a map; returns the map dir."""
    if conf.bag is None or conf.coarse is None or conf.domain is None:
        raise ValueError("a bag build needs --bag, --coarse and --domain (the model domain of the drive's condition)")
    if conf.shard is not None or conf.dataset is not None:
        raise ValueError("--bag builds a whole map from one bag: drop --shard/--dataset")
    if not (isinstance(conf.max_gap, int | float) and math.isfinite(conf.max_gap) and conf.max_gap >= 0):
        raise ValueError(f"--max-gap {conf.max_gap!r}: need a finite number of seconds >= 0 (default 0.2)")
    check_out(conf)
    learned = conf.learned_plan()
    coarse, fine = conf.encoders()
    bag = Path(conf.bag)
    from disam_ros.data.bags import open_bag
    open_bag(bag).close()  # a missing or damaged bag is refused now, in one line, before any progress bar
    geometry = sift_scaled(bag_geometry(conf.geometry, bag, conf.image_topic, conf.pose_topic), conf.sift_scale,
                           conf.sift_max_side)
    check_learned(geometry, learned)
    settings = conf.settings(resolve_mode(conf.mode, bag_image_count(bag, conf.image_topic), coarse, fine,
                                              conf.out))
    return build_map(bag_frames(bag, conf.image_topic, conf.pose_topic, conf.max_gap), coarse, fine, conf.out,
                     conf.domain, settings, conf.batch_size, progress=conf.progress, frame_id=conf.frame_id,
                     overwrite=conf.overwrite, checkpoint_paths=(conf.coarse, conf.fine),
                     source=f"{bag.absolute()} (bag)", poses_source="bag", geometry=geometry, learned=learned)


def bag_geometry(choice: str, bag: Path, image_topic: str | None, pose_topic: str | None) -> GeometryPlan | None:
    """--geometry for a bag build: intrinsics from its CameraInfo; the bag reader has no depth stream, so auto
    triangulates (`disam-bag to-folder --depth-topic` then a folder build uses the depth)."""
    if choice == "none":
        return None
    from disam_ros.data.bags import BagReader
    from disam_ros.pose.camera import Intrinsics

    with BagReader(bag, image_topic=image_topic, pose_topic=pose_topic, require_pose=True) as reader:
        info = reader.camera_info()
    if info is not None and (problem := info.problem()) is not None:
        raise ValueError(f"{bag}: its CameraInfo: {problem}; recalibrate the camera, or build with --geometry none")
    return plan_geometry(choice, None if info is None else Intrinsics.from_camera(info), False, True, str(bag))


def config_from_args(args: argparse.Namespace) -> MapBuildConfig:
    fields = {f.name for f in dataclasses.fields(MapBuildConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    return MapBuildConfig(**values, progress=not args.quiet)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    apply_threads(args.threads, image_pools=args.threads > 0)  # by default SIFT keeps OpenCV's every core
    # the library logs the size estimate (info) and the index-poses / large-map warnings: show them
    logs.setup(-1 if args.quiet else 0)
    bad_out = output_dir_error(args.out, "--out")
    if bad_out:
        print(f"disam-build-map: error: {bad_out}", file=sys.stderr)
        return 2
    try:
        if args.merge:
            out = merge_shards(args.merge, args.out, args.overwrite, progress=not args.quiet)
        elif args.bag is not None:
            out = build_map_from_bag(config_from_args(args))
        else:
            out = build_map_from_folder(config_from_args(args))
    except (ValueError, FileNotFoundError, OSError) as exc:  # MapError and CheckpointError are ValueErrors
        print(f"disam-build-map: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
