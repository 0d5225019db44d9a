"""Bag -> frames: bag summaries, CDR conversion of ROS 1 messages, and the image/pose pairing reader."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from rosbags.convert.converter import is_same_wireformat, migrate_bytes
from rosbags.highlevel import AnyReader

from disam_ros.data.bags.common import (
    CAMERA_INFO,
    COMPRESSED,
    DEFAULT_MAX_GAP_S,
    GAP,
    IMAGE,
    OK,
    OUTSIDE,
    POSE_TYPES,
    TYPESTORE,
    BagError,
    BagWarning,
)
from disam_ros.data.bags.tracks import PoseTrack, interpolate_pose, sort_track
from disam_ros.data.folders import CameraIntrinsics
from disam_ros.data.image_codec import compressed_to_rgb, image_to_rgb
from disam_ros.data.stamps import ns_to_stamp
from disam_ros.geometry import normalize_quat
from disam_ros.logs import one_line


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
    """An opened AnyReader; bags without embedded definitions fall back to the Kilted standard types.
    Whatever rosbags reports (a YAML parser's 8-11 lines included) becomes one line naming the file."""
    p = resolve_bag_path(path)
    try:
        reader = AnyReader([p], default_typestore=TYPESTORE)
        reader.open()
    except Exception as exc:  # rosbags raises several types for a damaged index or metadata
        raise BagError(metadata_problem(p) or f"{p}: unreadable bag ({one_line(exc)}); check the file is "
                       "complete (was the recorder stopped cleanly?)") from None
    return reader


def metadata_problem(bag: Path) -> str | None:
    """One line for a rosbag2 metadata.yaml that is not YAML, or not a rosbag2 record; None if it reads."""
    meta = bag / "metadata.yaml"
    if not bag.is_dir() or not meta.is_file():
        return None
    try:
        doc = yaml.safe_load(meta.read_bytes())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        return f"{meta} is not valid YAML{where}: re-record or restore the bag's metadata.yaml"
    except (OSError, ValueError) as exc:  # unreadable, or not text at all
        return f"{meta} cannot be read ({one_line(exc, 120)}): re-record or restore the bag's metadata.yaml"
    if not isinstance(doc, dict) or not isinstance(doc.get("rosbag2_bagfile_information"), dict):
        return f"{meta} has no rosbag2_bagfile_information record: re-record or restore the bag's metadata.yaml"
    return None


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
            self.errors.append(f"{topic} @ {stamp_ns * 1e-9:.9f}: {one_line(exc)}")

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
        return ns_to_stamp(self.stamp_ns)


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
        """Intrinsics of the first decodable CameraInfo message: fx fy cx cy from K, k1 k2 p1 p2 k3 from D
        (plumb_bob, or rational_polynomial whose k4..k6 are 0). A ValueError names any other lens model."""
        if self.info_topic is None:
            return None
        for _, msg in self._messages(self.info_topic):
            k = np.asarray(msg.k if hasattr(msg, "k") else msg.K, dtype=np.float64)  # ROS 1 spells it K
            return CameraIntrinsics(int(msg.width), int(msg.height), float(k[0]), float(k[4]), float(k[2]),
                                    float(k[5]), *plumb_bob(msg, self.info_topic))
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


def plumb_bob(msg, topic: str) -> tuple[float, ...]:
    """CameraInfo's D as (k1, k2, p1, p2, k3); empty D = no distortion."""
    d = np.asarray(msg.d if hasattr(msg, "d") else msg.D, dtype=np.float64).reshape(-1)  # ROS 1 spells it D
    model = str(getattr(msg, "distortion_model", "plumb_bob") or "plumb_bob")
    if d.size and (model not in ("plumb_bob", "rational_polynomial") or np.any(d[5:] != 0)):
        raise BagError(f"{topic}: CameraInfo distortion model {model!r} with D={d.tolist()[:8]} is not plumb_bob "
                       "(k1 k2 p1 p2 k3): rectify the images or recalibrate with plumb_bob")
    return tuple(float(v) for v in np.r_[d[:5], np.zeros(max(0, 5 - d.size))])
