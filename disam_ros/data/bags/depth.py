"""Depth images from a bag -> ROOT/<condition>/depth/<stem>.png beside the images `bag_to_folder` wrote.

Why a separate pass: depth is optional (only the depth branch's training reads it) and its stream usually runs at
its own rate, so each image takes the depth message nearest in stamp, and only within `max_gap_s` (a depth map
from another moment shows another view). Images without a depth message close enough simply get no depth file,
which the training and the depth error leave out (disam_ros/data/depth.py: depth may be missing per frame).

Accepted encodings are the ROS depth conventions: `16UC1` / `mono16` in millimetres (0 = no return) and `32FC1`
in metres (NaN/inf/<= 0 = no return), with row padding (`step`) and either byte order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.data.bags.common import IMAGE, TYPESTORE, BagError
from disam_ros.data.bags.read import _stamp_ns, _topic_table, open_bag
from disam_ros.data.depth import DEPTH_DIR, MM_PER_M, metres_to_mm, write_depth
from disam_ros.data.stamps import stamp_ns_from_name
from disam_ros.logs import clip

DEPTH_ENCODINGS = {"16UC1": ("<u2", 1.0 / MM_PER_M), "mono16": ("<u2", 1.0 / MM_PER_M), "32FC1": ("<f4", 1.0)}
DEFAULT_DEPTH_GAP_S = 0.05


def decode_depth(height: int, width: int, encoding: str, step: int, is_bigendian: int | bool, data: Any) -> np.ndarray:
    """(H, W) float32 metres, 0 where the sensor has no depth; ValueError naming the problem and the fix."""
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"depth encoding {clip(encoding)} is not supported: publish 16UC1 (millimetres) or 32FC1 "
                         "(metres), the ROS depth-image conventions")
    dtype, scale = DEPTH_ENCODINGS[encoding]
    dt = np.dtype(dtype).newbyteorder(">" if is_bigendian else "<")
    row = width * dt.itemsize
    buf = np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data.tobytes(), np.uint8)
    if height < 1 or width < 1 or step < row or buf.size < step * (height - 1) + row:
        raise ValueError(f"depth image {width}x{height} {encoding} with step {step} has {buf.size} bytes: the "
                         "message is truncated or its step is wrong")
    rows = np.lib.stride_tricks.as_strided(buf, (height, row), (step, 1))
    values = np.ascontiguousarray(rows).view(dt).reshape(height, width).astype(np.float64) * scale
    ok = np.isfinite(values) & (values > 0)
    return np.where(ok, values, 0.0).astype(np.float32)


def depth_message(depth_m: np.ndarray, stamp_ns: int, frame_id: str = "camera_optical_frame"):
    """A rosbags sensor_msgs/Image in 16UC1 millimetres for an (H, W) metre map (writing test and demo bags)."""
    from disam_ros.data.bags.write import _header

    mm = metres_to_mm(depth_m)
    h, w = mm.shape
    return TYPESTORE.types[IMAGE](header=_header(stamp_ns, frame_id), height=h, width=w, encoding="16UC1",
                                  is_bigendian=0, step=2 * w, data=np.frombuffer(mm.astype("<u2").tobytes(), np.uint8))


@dataclass(frozen=True)
class DepthWriteSummary:
    written: int  # images that got a depth file
    without: int  # images with no depth message within max_gap_s
    corrupt: int  # depth messages that could not be decoded (skipped)


def nearest_within(image_ns: np.ndarray, depth_ns: np.ndarray, max_gap_ns: int) -> np.ndarray:
    """For each image stamp the index of the nearest depth stamp (earlier one on a tie), -1 beyond max_gap_ns."""
    order = np.argsort(depth_ns, kind="stable")
    d = np.asarray(depth_ns, np.int64)[order]
    if not len(d):
        return np.full(len(image_ns), -1)
    hi = np.clip(np.searchsorted(d, image_ns), 1, len(d) - 1) if len(d) > 1 else np.zeros(len(image_ns), int)
    lo = np.maximum(hi - 1, 0)
    pick = np.where(np.abs(image_ns - d[lo]) <= np.abs(d[hi] - image_ns), lo, hi)
    gap = np.abs(d[pick] - image_ns)
    return np.where(gap <= max_gap_ns, order[pick], -1)


def _check_topic(bag: str | Path, topics: dict[str, tuple[str, int]], depth_topic: str) -> None:
    if topics.get(depth_topic, ("",))[0] != IMAGE:
        have = ", ".join(f"{t} ({ty})" for t, (ty, _) in sorted(topics.items()) if ty == IMAGE) or "none"
        raise BagError(f"{bag}: no sensor_msgs/Image topic {depth_topic!r} for depth; Image topics present: {have}; "
                       "pass --depth-topic with one of them")


def check_depth_topic(bag: str | Path, depth_topic: str) -> None:
    """BagError (one line) unless the bag has `depth_topic` as a sensor_msgs/Image topic: checked before any
    folder is written."""
    reader = open_bag(bag)
    try:
        _check_topic(bag, _topic_table(reader), depth_topic)
    finally:
        reader.close()


def depth_to_folder(bag: str | Path, condition_dir: str | Path, depth_topic: str,
                    max_gap_s: float = DEFAULT_DEPTH_GAP_S, use_bag_time: bool = False) -> DepthWriteSummary:
    """Write depth/<stem>.png for every image of `condition_dir/images` (named by stamp, as bag_to_folder names
    them) that has a depth message on `depth_topic` within `max_gap_s`. Two passes over the topic: stamps first,
    then only the chosen messages are decoded, so a long drive is never held in memory."""
    images = sorted((Path(condition_dir) / "images").glob("*.png"))
    stamps = [stamp_ns_from_name(p.name) for p in images]
    if not images or any(s is None for s in stamps):
        raise BagError(f"{condition_dir}/images: no images named by their nanosecond stamp; write them with "
                       "disam-bag to-folder first (depth pairs with images by stamp)")
    reader = open_bag(bag)
    try:
        _check_topic(bag, _topic_table(reader), depth_topic)
        conns = [c for c in reader.connections if c.topic == depth_topic]
        msgs, corrupt = [], 0
        for k, (conn, log_ns, raw) in enumerate(reader.messages(connections=conns)):
            try:
                msgs.append((_stamp_ns(reader.deserialize(raw, conn.msgtype), log_ns, use_bag_time), k))
            except Exception:  # truncated/garbled CDR: skipped and counted
                corrupt += 1
        pick = nearest_within(np.asarray(stamps, np.int64), np.asarray([m[0] for m in msgs], np.int64),
                              int(round(max_gap_s * 1e9)))
        wanted: dict[int, list[Path]] = {}
        for img, j in zip(images, pick):
            if j >= 0:
                wanted.setdefault(msgs[j][1], []).append(img)
        out = Path(condition_dir) / DEPTH_DIR
        written = 0
        for k, (conn, _, raw) in enumerate(reader.messages(connections=conns)):
            if k not in wanted:
                continue
            try:
                m = reader.deserialize(raw, conn.msgtype)
                depth = decode_depth(m.height, m.width, m.encoding, m.step, m.is_bigendian, m.data)
            except ValueError as exc:
                if "not supported" in str(exc):
                    raise BagError(f"{bag}: topic {depth_topic}: {exc}") from None
                corrupt += 1
                continue
            for img in wanted[k]:
                write_depth(out / f"{img.stem}.png", depth)
                written += 1
    finally:
        reader.close()
    return DepthWriteSummary(written, len(images) - written, corrupt)
