"""Learned local features for geometric verification: the keypoint network of model/keypoint_net.py behind the
same `Features` record SIFT gives (pose/features.py), so that guided matching, the pose solver and the gate take
either without knowing which.

Why a second kind of feature: SIFT's gradients vanish at night, in rain and in snow; the network trained on the
synthetic world's exact cross-condition correspondences solves many of those pairs (docs/keypoints.md). Its
descriptors are unit vectors (64 floats) matched by mutual nearest neighbour alone (`LEARNED_RATIO` 1.0, chosen
on a validation town: Lowe's 0.8 throws away most right matches of a learned descriptor).

A map stores the network it was built with (maps/geometry_store.py), so the query's keypoints come from exactly
the same weights whatever the package ships later; `load_net` caches networks by file content.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from disam_ros.pose.features import Features

LEARNED_RATIO = 1.0  # mutual nearest neighbours only (docs/notes/matching.md, validation town)
LEARNED_DIM = 64


@dataclass(frozen=True)
class LearnedConfig:
    """How learned keypoints are found: at most `limit`, non-maximum suppression over `radius` px, detector
    probability at least `threshold` (the values the shipped network was judged with)."""

    limit: int = 2000
    radius: int = 4
    threshold: float = 0.01

    def __post_init__(self) -> None:
        if not (isinstance(self.limit, int) and self.limit > 0 and isinstance(self.radius, int)
                and 0 <= self.radius <= 16 and 0.0 <= self.threshold < 1.0):
            raise ValueError(f"LearnedConfig: limit={self.limit!r} must be a positive integer, radius="
                             f"{self.radius!r} an integer in 0..16 and threshold={self.threshold!r} in [0, 1)")

    def to_record(self, sha256: str) -> dict:
        """What a map records about its learned keypoints (the network's hash ties them to its weights)."""
        return {"kind": "learned", "limit": self.limit, "radius": self.radius, "threshold": self.threshold,
                "sha256": sha256}

    @classmethod
    def from_record(cls, record: object) -> LearnedConfig:
        """The inverse of `to_record`; a ValueError names a record that is not one."""
        keys = ("limit", "radius", "threshold")
        if not isinstance(record, dict) or record.get("kind") != "learned" or not set(keys) <= set(record):
            raise ValueError(f"learned features record {str(record)[:80]!r} is not a learned recipe: rebuild the map")
        return cls(**{k: record[k] for k in keys})


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_NETS: dict[str, object] = {}
_LOCK = threading.Lock()


def load_net(path: str | Path, device: str = "cpu") -> object:
    """The keypoint network in `path` (model/keypoint_net.py format) on `device` (cpu, cuda[:N]: `detect_learned`
    runs where its weights are), loaded once per file content and device; a ValueError names a file that is not
    one. torch is imported here, not at module import, so SIFT-only users never pay."""
    from disam_ros.model.keypoint_net import load_keypoint_net

    key = f"{file_sha256(path)}@{device}"
    with _LOCK:
        if key not in _NETS:
            _NETS[key] = load_keypoint_net(path).to(device)
        return _NETS[key]


def detect_learned(image: np.ndarray, net: object, config: LearnedConfig = LearnedConfig()) -> Features:
    """Keypoints (x, y pixel centres), unit descriptors (N, 64) float32, scales (the network's 8 px cell) and
    detector probabilities as responses, strongest first."""
    from disam_ros.model.keypoint_net import CELL, extract

    kps, scores, desc = extract(net, image, limit=config.limit, radius=config.radius, threshold=config.threshold)
    return Features(kps.astype(np.float32), desc.astype(np.float32), np.full(len(kps), float(CELL), np.float32),
                    scores.astype(np.float32))
