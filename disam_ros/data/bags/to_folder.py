"""Bag -> dataset folder (images/, poses.txt in TUM, camera.yaml) for training and map building."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from disam_ros.data.bags.common import DEFAULT_MAX_GAP_S, BagError
from disam_ros.data.bags.read import BagReader, ReadStats
from disam_ros.data.bags.write import CONDITION_OUTPUT, publish_dir, staging_dir
from disam_ros.data.stamps import name_for_stamp_ns, ns_to_stamp
from disam_ros.data.tum import make_trajectory, write_tum


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
        if not cv2.imwrite(str(images / name_for_stamp_ns(fr.stamp_ns)), fr.image[:, :, ::-1]):
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
    if not condition or condition in (".", "..") or "/" in condition or "\0" in condition:
        raise BagError(f"condition {condition!r} is not a folder name: give one name such as night, so the "
                       "images stay inside OUT_ROOT")
    final = Path(out_root) / condition
    with BagReader(bag, image_topic, pose_topic, info_topic, max_gap_s, strict, use_bag_time=use_bag_time) as reader:
        # after the topics check: a bad call leaves nothing behind; the marker lets a later --overwrite replace it
        stage = staging_dir(final, overwrite, kind=CONDITION_OUTPUT, inputs=(("BAG", Path(bag)),))
        tmp = stage.path
        try:
            rows = _write_frames(reader, tmp / "images")
            if reader.pose_topic is not None:
                write_tum(tmp / "poses.txt", make_trajectory([ns_to_stamp(r[0]) for r in rows], [r[1] for r in rows],
                                                             [r[2] for r in rows]))
            if (cam := reader.camera_info()) is not None:
                cam.save(tmp / "camera.yaml")
        except BaseException:
            stage.abort()
            raise
        stats, posed = reader.stats, reader.pose_topic is not None
    publish_dir(stage)
    return FolderWriteSummary(final, len(rows), posed, stats.frames - len(rows), stats)
