"""Dataset folder -> bag: images, camera info and ground-truth poses, one stamp per frame."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Writer

from disam_ros.data.bags.common import (
    CAMERA_INFO,
    COMPRESSED,
    DEFAULT_IMAGE_TOPIC,
    DEFAULT_INFO_TOPIC,
    DEFAULT_POSE_TOPIC,
    IMAGE,
    POSE_STAMPED,
    STORAGES,
    TYPESTORE,
    BagError,
    BagWarning,
)
from disam_ros.data.folders import CameraIntrinsics, condition_entry, load_condition, read_image
from disam_ros.data.image_codec import encode_compressed, encode_image
from disam_ros.data.stamps import stamp_to_ns
from disam_ros.fsutil import OutputKind, StagedDir, overlap_refusal, replace_refusal, replaceable

INT32_MAX = 2**31 - 1  # builtin_interfaces/Time.sec


@dataclass(frozen=True)
class BagWriteOptions:
    """How a condition folder is laid out as a bag. image_topic None: /camera/image_raw[/compressed]."""

    image_topic: str | None = None
    info_topic: str = DEFAULT_INFO_TOPIC
    pose_topic: str = DEFAULT_POSE_TOPIC
    compression: str | None = None  # None (raw rgb8), "jpeg" or "png"
    jpeg_quality: int = 95
    storage: str = "sqlite3"  # or "mcap"
    frame_id: str = "camera_optical_frame"
    map_frame: str = "map"
    period_s: float = 0.1  # frame spacing when the folder has no poses.txt
    start_s: float = 1.0  # first stamp when the folder has no poses.txt

    def resolved_image_topic(self) -> str:
        if self.image_topic:
            return self.image_topic
        return DEFAULT_IMAGE_TOPIC + ("/compressed" if self.compression else "")


@dataclass(frozen=True)
class BagWriteSummary:
    path: Path
    frames: int
    topics: dict[str, str]


def _header(stamp_ns: int, frame_id: str):
    T = TYPESTORE.types
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id=frame_id)


def image_message(rgb: np.ndarray, stamp_ns: int, frame_id: str, compression: str | None, quality: int = 95):
    """A rosbags Image (rgb8) or CompressedImage message for an HxWx3 RGB array."""
    T = TYPESTORE.types
    if compression:
        c = encode_compressed(rgb, compression, quality)
        return T[COMPRESSED](header=_header(stamp_ns, frame_id), format=c.format,
                             data=np.frombuffer(c.data, np.uint8))
    f = encode_image(rgb, "rgb8")
    return T[IMAGE](header=_header(stamp_ns, frame_id), height=f.height, width=f.width, encoding=f.encoding,
                    is_bigendian=f.is_bigendian, step=f.step, data=np.frombuffer(f.data, np.uint8))


def camera_info_message(cam: CameraIntrinsics, stamp_ns: int, frame_id: str):
    """CameraInfo of camera.yaml: plumb_bob D (zeros for an ideal pinhole), R = I, P = [K | 0]."""
    T = TYPESTORE.types
    K = cam.matrix()
    P = np.hstack([K, np.zeros((3, 1))])
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return T[CAMERA_INFO](header=_header(stamp_ns, frame_id), height=cam.height, width=cam.width,
                          distortion_model="plumb_bob", d=cam.dist(), k=K.reshape(-1), r=np.eye(3).reshape(-1),
                          p=P.reshape(-1), binning_x=0, binning_y=0, roi=roi)


def pose_message(position: np.ndarray, quat: np.ndarray, stamp_ns: int, frame_id: str):
    T = TYPESTORE.types
    p, q = np.asarray(position, float), np.asarray(quat, float)
    pose = T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=p[0], y=p[1], z=p[2]),
        orientation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))
    return T[POSE_STAMPED](header=_header(stamp_ns, frame_id), pose=pose)


BAG_SUFFIXES = (".db3", ".mcap", ".db3-shm", ".db3-wal", ".db3-journal")  # rosbag2 storage files (and sqlite's)
# What the package's recorders write (disam-record, the outputs bag of disam-eval --online): a rosbag2 folder.
BAG_OUTPUT = OutputKind("disam_ros record", lambda e: e.is_file() and (e.name == "metadata.yaml"
                                                                        or e.name.endswith(BAG_SUFFIXES)))
CONDITION_OUTPUT = OutputKind("disam-bag to-folder", condition_entry)  # OUT_ROOT/<condition>


def staging_dir(final: Path, overwrite: bool = False, made_by: str | None = None, kind: OutputKind | None = None,
                inputs: tuple[tuple[str, Path], ...] = ()) -> StagedDir:
    """A staged folder for `final` (disam_ros.fsutil): write into `.path`, named like `final` so bag files are
    named right, then `commit()` or `abort()`. Leftovers of killed writers beside `final` are removed first.

    `overwrite` replaces only a folder disam_ros made as `kind` (its tool writes the marker; else `made_by`)
    holding nothing else, or an empty one, and never one of `inputs`: never a user's folder that happens to be
    at that path (`disam_ros.fsutil.replace_refusal`, the rule of every tool).
    """
    final = Path(final)
    problem = overlap_refusal(final, inputs, "output path")
    if problem is None and os.path.lexists(final) and not overwrite and replaceable(final):  # ours, no --overwrite
        problem = f"{final} already exists; choose a new output path or delete it (to-folder: --overwrite)"
    if problem is not None or (problem := replace_refusal(final, replace=overwrite, option="output path",
                                                          kind=kind)) is not None:
        raise BagError(problem)
    try:
        return StagedDir(final, nested=True, marker=kind.tool if kind is not None else made_by)
    except OSError as exc:
        raise BagError(f"{final}: cannot create {exc.filename or 'it'} ({exc.strerror}); choose a writable output "
                       "directory") from None


def publish_dir(stage: StagedDir) -> Path:
    """Swap the finished staged folder into place (an existing one it may replace goes); returns the path."""
    return stage.commit()


def write_folder_bag(root: str | Path, condition: str, bag: str | Path,
                     options: BagWriteOptions = BagWriteOptions()) -> BagWriteSummary:
    """ROOT/<condition> -> a new rosbag2 at `bag` (written to a temp dir, renamed when complete)."""
    if options.storage not in STORAGES:
        raise BagError(f"unknown storage {options.storage!r}: use one of {', '.join(STORAGES)}")
    folder = load_condition(root, condition)
    if folder.camera is None:
        warnings.warn(f"{folder.root / condition}: no camera.yaml, so the bag gets no CameraInfo topic",
                      BagWarning, stacklevel=2)
    final = Path(bag)
    traj = folder.trajectory
    n = len(folder)
    stamps = [stamp_to_ns(s) for s in traj.stamps] if traj is not None else \
        [stamp_to_ns(options.start_s + k * options.period_s) for k in range(n)]
    if stamps and max(stamps) // 1_000_000_000 > INT32_MAX:
        raise BagError(f"{folder.root / condition}: stamp {max(stamps) / 1e9:.3f} s is past 2038-01-19, beyond a ROS 2 "
                       "header's int32 seconds; shift the stamps in poses.txt (e.g. subtract a constant)")
    stage = staging_dir(final)
    topics = {options.resolved_image_topic(): COMPRESSED if options.compression else IMAGE}
    try:
        with Writer(stage.path, version=9, storage_plugin=STORAGES[options.storage]) as w:
            conn_img = w.add_connection(options.resolved_image_topic(), topics[options.resolved_image_topic()],
                                        typestore=TYPESTORE)
            conn_info = conn_pose = None
            if folder.camera is not None:
                conn_info = w.add_connection(options.info_topic, CAMERA_INFO, typestore=TYPESTORE)
                topics[options.info_topic] = CAMERA_INFO
            if traj is not None:
                conn_pose = w.add_connection(options.pose_topic, POSE_STAMPED, typestore=TYPESTORE)
                topics[options.pose_topic] = POSE_STAMPED
            for k, path in enumerate(folder.image_paths):
                t = stamps[k]
                if conn_pose is not None:
                    msg = pose_message(traj.positions[k], traj.quats[k], t, options.map_frame)
                    w.write(conn_pose, t, TYPESTORE.serialize_cdr(msg, POSE_STAMPED))
                if conn_info is not None:
                    msg = camera_info_message(folder.camera, t, options.frame_id)
                    w.write(conn_info, t, TYPESTORE.serialize_cdr(msg, CAMERA_INFO))
                msg = image_message(read_image(path), t, options.frame_id, options.compression, options.jpeg_quality)
                w.write(conn_img, t, TYPESTORE.serialize_cdr(msg, msg.__msgtype__))
    except BaseException:
        stage.abort()
        raise
    return BagWriteSummary(publish_dir(stage), n, topics)


