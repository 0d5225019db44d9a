"""Dataset folders <-> rosbags, and images with ground-truth poses out of any bag (no ROS install needed).

Everything goes through the `rosbags` library, so bags are read and written on machines without
rosbag2_py or the ros2 CLI: ROS 2 bags in sqlite3 or mcap storage, ROS 1 `.bag` files for reading.

Writing (`write_folder_bag`): one condition folder becomes a bag with the images (sensor_msgs/Image rgb8,
or CompressedImage jpeg/png), sensor_msgs/CameraInfo from camera.yaml, and the ground truth as
geometry_msgs/PoseStamped (camera optical frame in the map frame, the TUM convention). Every message of a
frame carries the TUM stamp in its header and as the bag's log time.

Reading (`BagReader`): images are paired with the ground truth by header stamp. A pose is linearly
interpolated (slerp for the rotation) between the two pose messages around the image stamp, never
extrapolated, and never across a hole in the pose stream longer than `max_gap` seconds: such images are
skipped and counted. One bad message never stops a read: it is skipped, counted per topic, and reported in
one warning summary when the read ends.

Decisions (documented in docs/evaluation.md):
* pose stamps that go backwards are sorted, with a warning (`strict=True` raises instead); duplicate pose
  stamps keep the first message. Images may come in any order: each one is paired on its own.
* the default `max_gap` is 0.2 s (ground truth at >= 5 Hz); an image stamp equal to a pose stamp always
  takes that pose exactly.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from rosbags.convert.converter import is_same_wireformat, migrate_bytes
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from disam_ros.data.folders import CameraIntrinsics, load_condition, read_image
from disam_ros.data.image_codec import compressed_to_rgb, encode_compressed, encode_image, image_to_rgb
from disam_ros.data.tum import make_trajectory, write_tum
from disam_ros.geometry import normalize_quat

DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_INFO_TOPIC = "/camera/camera_info"
DEFAULT_POSE_TOPIC = "/ground_truth/pose"
DEFAULT_MAX_GAP_S = 0.2
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
POSE_TYPES = (POSE_STAMPED, "geometry_msgs/msg/PoseWithCovarianceStamped", "nav_msgs/msg/Odometry")
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
TYPESTORE = get_typestore(Stores.ROS2_KILTED)  # same definitions and hashes as the rclpy Kilted wheels

# association status codes, per image
OK, OUTSIDE, GAP = 0, 1, 2


class BagError(ValueError):
    """A bag cannot serve the request (missing topic, unreadable file, unsorted stamps in strict mode)."""


class BagWarning(UserWarning):
    """Messages were skipped or reordered while reading a bag; the summary says how many and why."""


# ----------------------------------------------------------------------------------------------------------
# pure pose interpolation


def stamp_to_ns(stamp: float) -> int:
    return int(round(float(stamp) * 1e9))


def slerp(q0: np.ndarray, q1: np.ndarray, u: float) -> np.ndarray:
    """Spherical interpolation of xyzw quaternions along the shorter arc (u=0 -> q0, u=1 -> q1)."""
    q0, q1 = normalize_quat(q0), normalize_quat(q1)
    d = float(np.dot(q0, q1))
    if d < 0.0:
        q1, d = -q1, -d
    if d > 0.9999995:  # nearly equal: the slerp formula divides by ~0, lerp is exact to 1e-13 here
        return normalize_quat(q0 + u * (q1 - q0))
    theta = np.arccos(min(d, 1.0))
    return normalize_quat((np.sin((1 - u) * theta) * q0 + np.sin(u * theta) * q1) / np.sin(theta))


@dataclass(frozen=True)
class PoseTrack:
    """Ground-truth poses sorted by stamp: stamps_ns (N,) int64, positions (N,3), quats (N,4) xyzw."""

    stamps_ns: np.ndarray
    positions: np.ndarray
    quats: np.ndarray

    def __len__(self) -> int:
        return len(self.stamps_ns)


def interpolate_pose(track: PoseTrack, t_ns: int, max_gap_s: float) -> tuple[int, np.ndarray | None, np.ndarray | None]:
    """(status, position, quat) of the track at t_ns: OK, OUTSIDE (before/after the track) or GAP.

    The two bracketing poses must be at most `max_gap_s` apart; a stamp equal to a pose stamp takes it.
    """
    n = len(track)
    i = int(np.searchsorted(track.stamps_ns, t_ns, side="right")) - 1
    if i >= 0 and track.stamps_ns[i] == t_ns:
        return OK, track.positions[i].copy(), track.quats[i].copy()
    if i < 0 or i + 1 >= n:
        return OUTSIDE, None, None
    t0, t1 = int(track.stamps_ns[i]), int(track.stamps_ns[i + 1])
    if (t1 - t0) > max_gap_s * 1e9:
        return GAP, None, None
    u = (t_ns - t0) / (t1 - t0)
    p = (1.0 - u) * track.positions[i] + u * track.positions[i + 1]
    return OK, p, slerp(track.quats[i], track.quats[i + 1], u)


def sort_track(stamps_ns, positions, quats, strict: bool = False) -> tuple[PoseTrack, int, int]:
    """Sort poses by stamp and drop duplicate stamps (first kept): (track, n_backwards, n_duplicates)."""
    s = np.asarray(stamps_ns, dtype=np.int64)
    backwards = int(np.sum(np.diff(s) < 0)) if len(s) > 1 else 0
    if backwards and strict:
        k = int(np.argmax(np.diff(s) < 0)) + 1
        raise BagError(f"pose stamps go backwards {backwards} time(s) (first at pose message {k}: "
                       f"{s[k] * 1e-9:.9f} s after {s[k - 1] * 1e-9:.9f} s); re-record the ground truth "
                       "or read with strict=False (--sort) to sort them")
    order = np.argsort(s, kind="stable")
    s = s[order]
    keep = np.r_[True, np.diff(s) != 0] if len(s) else np.zeros(0, bool)
    track = PoseTrack(s[keep], np.asarray(positions, float).reshape(-1, 3)[order][keep],
                      np.asarray(quats, float).reshape(-1, 4)[order][keep])
    return track, backwards, int(np.sum(~keep))


# ----------------------------------------------------------------------------------------------------------
# writing


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
    """CameraInfo for an ideal pinhole: plumb_bob with zero distortion, R = I, P = [K | 0]."""
    T = TYPESTORE.types
    K = cam.matrix()
    P = np.hstack([K, np.zeros((3, 1))])
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return T[CAMERA_INFO](header=_header(stamp_ns, frame_id), height=cam.height, width=cam.width,
                          distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1),
                          p=P.reshape(-1), binning_x=0, binning_y=0, roi=roi)


def pose_message(position: np.ndarray, quat: np.ndarray, stamp_ns: int, frame_id: str):
    T = TYPESTORE.types
    p, q = np.asarray(position, float), np.asarray(quat, float)
    pose = T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=p[0], y=p[1], z=p[2]),
        orientation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))
    return T[POSE_STAMPED](header=_header(stamp_ns, frame_id), pose=pose)


def staging_dir(final: Path, overwrite: bool = False) -> Path:
    """A fresh temp dir beside `final`, holding a child with final's name (so bag files are named right)."""
    if final.exists() and not overwrite:
        raise BagError(f"{final} already exists; choose a new output path or delete it (to-folder: --overwrite)")
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent)) / final.name


def publish_dir(tmp: Path, final: Path) -> None:
    """Rename the finished temp dir into place; an existing `final` (overwrite) is swapped out first."""
    if final.exists():
        os.replace(final, tmp.parent / f"{final.name}.old")
    os.replace(tmp, final)
    shutil.rmtree(tmp.parent, ignore_errors=True)


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
    tmp = staging_dir(final)
    traj = folder.trajectory
    n = len(folder)
    stamps = [stamp_to_ns(s) for s in traj.stamps] if traj is not None else \
        [stamp_to_ns(options.start_s + k * options.period_s) for k in range(n)]
    topics = {options.resolved_image_topic(): COMPRESSED if options.compression else IMAGE}
    try:
        with Writer(tmp, version=9, storage_plugin=STORAGES[options.storage]) as w:
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
        shutil.rmtree(tmp.parent, ignore_errors=True)
        raise
    publish_dir(tmp, final)
    return BagWriteSummary(final, n, topics)


# ----------------------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class TopicSummary:
    topic: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class BagInfo:
    path: Path
    storage: str
    ros_version: int
    start_ns: int
    end_ns: int
    topics: tuple[TopicSummary, ...]

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) * 1e-9

    @property
    def message_count(self) -> int:
        return sum(t.count for t in self.topics)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "storage": self.storage, "ros_version": self.ros_version,
                "start_s": self.start_ns * 1e-9, "end_s": self.end_ns * 1e-9, "duration_s": self.duration_s,
                "message_count": self.message_count,
                "topics": [{"topic": t.topic, "type": t.msgtype, "count": t.count} for t in self.topics]}


def resolve_bag_path(path: str | Path) -> Path:
    """A rosbag2 directory (also given as its .db3/.mcap file) or a ROS 1 .bag file."""
    p = Path(path)
    if p.is_file() and p.suffix in (".db3", ".mcap") and (p.parent / "metadata.yaml").is_file():
        return p.parent
    if (p.is_dir() and (p / "metadata.yaml").is_file()) or (p.is_file() and p.suffix in (".bag", ".mcap")):
        return p
    if not p.exists():
        raise BagError(f"{p}: bag not found; pass a rosbag2 directory or a ROS 1 .bag file")
    raise BagError(f"{p}: not a rosbag2 directory (no metadata.yaml) nor a ROS 1 .bag file")


def open_bag(path: str | Path) -> AnyReader:
    """An opened AnyReader; bags without embedded definitions fall back to the Kilted standard types."""
    p = resolve_bag_path(path)
    reader = AnyReader([p], default_typestore=TYPESTORE)
    try:
        reader.open()
    except Exception as exc:  # rosbags raises several types for a damaged index or metadata
        raise BagError(f"{p}: unreadable bag ({exc}); check the file is complete (was the recorder stopped "
                       "cleanly?)") from None
    return reader


def _topic_table(reader: AnyReader) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for c in reader.connections:
        typ, n = out.get(c.topic, (c.msgtype, 0))
        out[c.topic] = (typ, n + c.msgcount)
    return out


def _storage_of(path: Path) -> str:
    if path.suffix == ".bag":
        return "rosbag1"
    names = [path.name] if path.is_file() else [p.name for p in path.iterdir()]
    if any(".mcap" in n for n in names):
        return "mcap"
    return "sqlite3" if any(".db3" in n for n in names) else "unknown"


def bag_info(path: str | Path) -> BagInfo:
    reader = open_bag(path)
    try:
        table = _topic_table(reader)
        storage = _storage_of(resolve_bag_path(path))
        topics = tuple(TopicSummary(t, typ, n) for t, (typ, n) in sorted(table.items()))
        count = sum(t.count for t in topics)
        start, end = (reader.start_time, reader.end_time) if count else (0, 0)
        return BagInfo(resolve_bag_path(path), storage, 2 if reader.is2 else 1, start, end, topics)
    finally:
        reader.close()


def cdr_converter(reader: AnyReader, msgtype: str) -> Callable[[bytes | memoryview], bytes]:
    """raw bytes of `msgtype` as stored in the bag -> ROS 2 CDR with the Kilted definition (what rclpy
    publishes). ROS 2 bags pass through; ROS 1 bags are re-encoded, migrating e.g. Header.seq away."""
    if reader.is2:
        return bytes
    src = reader.typestore
    if is_same_wireformat(src, TYPESTORE, msgtype, msgtype):
        return lambda raw: bytes(TYPESTORE.ros1_to_cdr(raw, msgtype))  # the ROS 2 side knows to drop seq
    cache: dict[str, object] = {}
    return lambda raw: bytes(migrate_bytes(src, TYPESTORE, msgtype, msgtype, cache, raw, src_is2=False, dst_is2=True))


@dataclass
class ReadStats:
    """What a read kept and skipped; `summary()` is the one-line warning text."""

    images: int = 0
    frames: int = 0
    poses: int = 0
    pose_backwards: int = 0
    pose_duplicates: int = 0
    outside: int = 0
    gap: int = 0
    corrupt: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add_corrupt(self, topic: str, stamp_ns: int, exc: Exception) -> None:
        """Count a skipped message; keep the text of the first two errors per topic for the summary."""
        self.corrupt[topic] = self.corrupt.get(topic, 0) + 1
        if self.corrupt[topic] <= 2:
            self.errors.append(f"{topic} @ {stamp_ns * 1e-9:.9f}: {exc}")

    @property
    def skipped(self) -> int:
        return self.outside + self.gap + sum(self.corrupt.values())

    def summary(self) -> str:
        parts = [f"{self.frames} of {self.images} images kept"]
        if self.gap:
            parts.append(f"{self.gap} skipped: pose gap longer than max_gap")
        if self.outside:
            parts.append(f"{self.outside} skipped: stamp outside the ground-truth time span")
        for topic, n in sorted(self.corrupt.items()):
            parts.append(f"{n} corrupt message(s) skipped on {topic}")
        if self.pose_backwards:
            parts.append(f"pose stamps went backwards {self.pose_backwards} time(s): sorted")
        if self.pose_duplicates:
            parts.append(f"{self.pose_duplicates} duplicate pose stamp(s): first kept")
        if self.errors:
            parts.append("first errors: " + " | ".join(self.errors))
        return "; ".join(parts)


@dataclass(frozen=True)
class BagFrame:
    index: int
    stamp_ns: int
    image: np.ndarray  # HxWx3 uint8 RGB
    position: np.ndarray | None
    quat: np.ndarray | None

    @property
    def stamp(self) -> float:
        return self.stamp_ns * 1e-9


def _stamp_ns(msg, log_ns: int, use_bag_time: bool) -> int:
    if use_bag_time:
        return int(log_ns)
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _pose_of(msg) -> tuple[np.ndarray, np.ndarray]:
    pose = msg.pose.pose if hasattr(msg.pose, "pose") else msg.pose
    p, o = pose.position, pose.orientation
    pos = np.array([p.x, p.y, p.z], dtype=np.float64)
    if not np.all(np.isfinite(pos)):
        raise ValueError("pose position is NaN/inf")
    return pos, normalize_quat(np.array([o.x, o.y, o.z, o.w], dtype=np.float64))


class BagReader:
    """Images with interpolated ground truth and camera intrinsics from one bag. Use as a context manager.

    Topics left as None are found by type (one image topic, one pose topic, one CameraInfo topic); a named
    topic that is not in the bag raises a BagError listing the topics present.
    """

    def __init__(self, path: str | Path, image_topic: str | None = None, pose_topic: str | None = None,
                 info_topic: str | None = None, max_gap_s: float = DEFAULT_MAX_GAP_S, strict: bool = False,
                 require_pose: bool = False, use_bag_time: bool = False) -> None:
        self.path = resolve_bag_path(path)
        self.max_gap_s, self.strict, self.use_bag_time = float(max_gap_s), strict, use_bag_time
        self.stats = ReadStats()
        self._reader = open_bag(self.path)
        try:
            self.topics = _topic_table(self._reader)
            self.image_topic = self._pick(image_topic, (IMAGE, COMPRESSED), "image", "--image-topic")
            if self.image_topic is None:
                raise BagError(f"{self.path}: no Image/CompressedImage topic; {self.topics_line()}")
            self.pose_topic = self._pick(pose_topic, POSE_TYPES, "pose", "--pose-topic")
            if require_pose and self.pose_topic is None:
                raise BagError(f"{self.path}: no ground-truth pose topic ({', '.join(POSE_TYPES)}); "
                               f"{self.topics_line()}")
            self.info_topic = self._pick(info_topic, (CAMERA_INFO,), "CameraInfo", "--info-topic")
        except BaseException:
            self.close()
            raise
        self._track: PoseTrack | None = None

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def topics_line(self) -> str:
        listed = ", ".join(f"{t} ({typ}, {n} msgs)" for t, (typ, n) in sorted(self.topics.items()))
        return f"topics present: {listed or 'none'}"

    def _pick(self, wanted: str | None, types: tuple[str, ...], role: str, flag: str) -> str | None:
        if wanted:
            if wanted not in self.topics:
                raise BagError(f"{self.path}: no topic {wanted!r}; {self.topics_line()}; pass {flag} with one of them")
            if self.topics[wanted][0] not in types:
                raise BagError(f"{self.path}: topic {wanted} is {self.topics[wanted][0]}, not a {role} type "
                               f"({', '.join(types)}); pass {flag} with the right topic")
            return wanted
        found = [t for t, (typ, _) in sorted(self.topics.items()) if typ in types]
        if len(found) > 1 and role == "CameraInfo" and self.image_topic:
            ns = self.image_topic.removesuffix("/compressed").rsplit("/", 1)[0] + "/"
            found = [t for t in found if t.startswith(ns)] or found
        if len(found) > 1:
            raise BagError(f"{self.path}: {len(found)} {role} topics ({', '.join(found)}); pass {flag} to choose one")
        return found[0] if found else None

    def _raw(self, topic: str) -> Iterator[tuple[int, object | None]]:
        """(log time ns, message or None) for one topic; None: undecodable, already counted as corrupt."""
        conns = [c for c in self._reader.connections if c.topic == topic]
        for conn, log_ns, raw in self._reader.messages(connections=conns):
            try:
                yield log_ns, self._reader.deserialize(raw, conn.msgtype)
            except Exception as exc:  # truncated/garbled CDR raises assorted errors: all mean "corrupt"
                self.stats.add_corrupt(topic, log_ns, exc)
                yield log_ns, None

    def _messages(self, topic: str) -> Iterator[tuple[int, object]]:
        return ((t, m) for t, m in self._raw(topic) if m is not None)

    def poses(self) -> PoseTrack | None:
        """The ground-truth track, sorted by stamp (BagError in strict mode when stamps go backwards)."""
        if self.pose_topic is None:
            return None
        if self._track is None:
            stamps, pos, quats = [], [], []
            for log_ns, msg in self._messages(self.pose_topic):
                try:
                    p, q = _pose_of(msg)
                    t = _stamp_ns(msg, log_ns, self.use_bag_time)
                except (ValueError, AttributeError) as exc:
                    self.stats.add_corrupt(self.pose_topic, log_ns, exc)
                    continue
                stamps.append(t)
                pos.append(p)
                quats.append(q)
            self._track, self.stats.pose_backwards, self.stats.pose_duplicates = sort_track(
                stamps, pos, quats, self.strict)
            self.stats.poses = len(stamps)
        return self._track

    def camera_info(self) -> CameraIntrinsics | None:
        """Intrinsics of the first decodable CameraInfo message (fx fy cx cy from K)."""
        if self.info_topic is None:
            return None
        for _, msg in self._messages(self.info_topic):
            k = np.asarray(msg.k if hasattr(msg, "k") else msg.K, dtype=np.float64)  # ROS 1 spells it K
            return CameraIntrinsics(int(msg.width), int(msg.height), float(k[0]), float(k[4]), float(k[2]),
                                    float(k[5]))
        return None

    def frames(self, skip_unposed: bool = True) -> Iterator[BagFrame]:
        """Decoded images in bag order with their interpolated pose; a summary warning at the end."""
        track = self.poses()
        kind = self.topics[self.image_topic][0]
        decode = compressed_to_rgb if kind == COMPRESSED else image_to_rgb
        try:
            for log_ns, msg in self._raw(self.image_topic):
                self.stats.images += 1
                if msg is None:
                    continue
                try:
                    t = _stamp_ns(msg, log_ns, self.use_bag_time)
                    rgb = decode(msg)
                except (ValueError, AttributeError) as exc:
                    self.stats.add_corrupt(self.image_topic, log_ns, exc)
                    continue
                pos = quat = None
                if track is not None:
                    status, pos, quat = interpolate_pose(track, t, self.max_gap_s)
                    if status != OK and skip_unposed:
                        self.stats.gap += status == GAP
                        self.stats.outside += status == OUTSIDE
                        continue
                yield BagFrame(self.stats.frames, t, rgb, pos, quat)
                self.stats.frames += 1
        finally:
            if self.stats.skipped or self.stats.pose_backwards or self.stats.pose_duplicates:
                warnings.warn(f"{self.path}: {self.stats.summary()}", BagWarning, stacklevel=2)


# ----------------------------------------------------------------------------------------------------------
# bag -> folder


@dataclass(frozen=True)
class FolderWriteSummary:
    path: Path
    frames: int
    with_poses: bool
    duplicates: int
    stats: ReadStats


def _write_frames(reader: BagReader, images: Path) -> list[tuple[int, np.ndarray | None, np.ndarray | None]]:
    """PNG per frame named by stamp; (stamp_ns, position, quat) rows sorted by stamp."""
    images.mkdir(parents=True)
    rows, seen = [], set()
    for fr in reader.frames():
        if fr.stamp_ns in seen:
            continue
        seen.add(fr.stamp_ns)
        if not cv2.imwrite(str(images / f"{fr.stamp_ns:020d}.png"), fr.image[:, :, ::-1]):
            raise BagError(f"{images}: could not write PNG (disk full or read-only?)")
        rows.append((fr.stamp_ns, fr.position, fr.quat))
    if not rows:
        raise BagError(f"{reader.path}: no image could be read with a pose ({reader.stats.summary()})")
    return sorted(rows, key=lambda r: r[0])


def bag_to_folder(bag: str | Path, out_root: str | Path, condition: str, *, image_topic: str | None = None,
                  pose_topic: str | None = None, info_topic: str | None = None,
                  max_gap_s: float = DEFAULT_MAX_GAP_S, strict: bool = False, overwrite: bool = False,
                  use_bag_time: bool = False) -> FolderWriteSummary:
    """A bag -> OUT_ROOT/<condition>/images/<stamp_ns>.png + poses.txt (TUM) + camera.yaml, atomically.

    Images are named by their 20-digit nanosecond stamp, so sorted file names are time order and the k-th
    pose line belongs to the k-th file, as disam_ros.data.folders expects. Frames without a pose (beyond
    max_gap) are left out; a repeated image stamp keeps the first image.
    """
    final = Path(out_root) / condition
    with BagReader(bag, image_topic, pose_topic, info_topic, max_gap_s, strict, use_bag_time=use_bag_time) as reader:
        tmp = staging_dir(final, overwrite)  # after the topics check: a bad call leaves nothing behind
        try:
            rows = _write_frames(reader, tmp / "images")
            if reader.pose_topic is not None:
                write_tum(tmp / "poses.txt", make_trajectory([r[0] * 1e-9 for r in rows], [r[1] for r in rows],
                                                             [r[2] for r in rows]))
            if (cam := reader.camera_info()) is not None:
                cam.save(tmp / "camera.yaml")
        except BaseException:
            shutil.rmtree(tmp.parent, ignore_errors=True)
            raise
        stats, posed = reader.stats, reader.pose_topic is not None
    publish_dir(tmp, final)
    return FolderWriteSummary(final, len(rows), posed, stats.frames - len(rows), stats)
