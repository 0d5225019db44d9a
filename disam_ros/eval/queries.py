"""Query sets for evaluation: condition folders or rosbags, as one stream of posed images.

Both offline and online evaluation read their ground truth from here, so the two score the same queries.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from disam_ros.data.folders import iter_frames, list_conditions, load_condition
from disam_ros.data.stamps import name_for_stamp_ns
from disam_ros.data.world_yaml import world_yaml_if_present


@dataclass(frozen=True, eq=False)
class Query:
    name: str
    condition: str
    image: np.ndarray  # HxWx3 uint8 RGB
    stamp: float
    position: np.ndarray
    quat: np.ndarray


def folder_conditions(root: str | Path, wanted: Sequence[str] | None, reference: str | None) -> list[str]:
    """The query conditions of a dataset: `wanted`, else all but the reference (the map's own images)."""
    present = list_conditions(root)
    if wanted:
        unknown = [c for c in wanted if c not in present]
        if unknown:
            raise ValueError(f"{root}: no condition {', '.join(unknown)}; present: {', '.join(present)}")
        return list(wanted)
    return [c for c in present if c != reference]


def folder_queries(root: str | Path, condition: str, every: int = 1) -> Iterator[Query]:
    folder = load_condition(root, condition, require_poses=True)
    for f in iter_frames(folder):
        if f.index % every == 0:
            yield Query(f.path.name, condition, f.image, float(f.stamp), f.position, f.quat)


def bag_queries(bag: str | Path, condition: str, image_topic: str | None = None, pose_topic: str | None = None,
                max_gap_s: float = 0.2, every: int = 1) -> Iterator[Query]:
    """Images of a bag with ground truth interpolated to their stamps (unposed images are skipped, counted
    by the reader's summary warning)."""
    from disam_ros.data.bags import BagReader

    with BagReader(bag, image_topic=image_topic, pose_topic=pose_topic, max_gap_s=max_gap_s,
                   require_pose=True) as reader:
        for f in reader.frames():
            if f.index % every == 0:
                yield Query(name_for_stamp_ns(f.stamp_ns), condition, f.image, f.stamp, f.position, f.quat)


def world_weather(root: str | Path | None, condition: str) -> str | None:
    """The weather a synthetic (or hand-written) world.yaml records for a condition: what a driver would set
    on the node's `weather` parameter for that drive. None when unknown (no file, condition or label); a
    malformed world.yaml is a one-line ValueError rather than a silent switch to the default weather."""
    info = world_yaml_if_present(root) if root else None
    entry = info.conditions.get(condition) if info else None
    return entry.weather if entry else None
