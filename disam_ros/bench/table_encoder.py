"""Stand-ins for tests and benchmarks: an "encoder" that returns given feature maps, so the real map builder
and localizer run on constructed descriptors without a network in the loop."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class _Config:
    image_size: int


class TableEncoder:
    """encode(image k) -> features[k]; `image_for(k)` makes the 2x2 token image that stands for row k.

    Duck-types `disam_ros.model.Encoder` (domains, content_shape, config, checkpoint_sha256, device, encode);
    every domain maps to the same table, so queries use rows of their own.
    """

    def __init__(self, features: np.ndarray, domains: tuple[str, ...] = ("ref", "query"),
                 checkpoint_sha256: str = "t" * 64) -> None:
        self.features = torch.as_tensor(np.asarray(features, dtype=np.float32))
        self.domains = tuple(domains)
        self.checkpoint_sha256 = checkpoint_sha256
        self.device = torch.device("cpu")
        self.config = _Config(image_size=2)

    @property
    def content_shape(self) -> tuple[int, int, int]:
        return tuple(self.features.shape[1:])

    @staticmethod
    def image_for(k: int) -> np.ndarray:
        digits = [(k >> (8 * i)) & 255 for i in range(4)]
        img = np.zeros((2, 2, 3), np.uint8)
        img.reshape(-1)[:4] = digits
        return img

    @staticmethod
    def key(img: np.ndarray) -> int:
        flat = np.asarray(img).reshape(-1)[:4].astype(np.int64)
        return int(sum(int(d) << (8 * i) for i, d in enumerate(flat)))

    def encode(self, images, domain: str) -> torch.Tensor:
        if domain not in self.domains:
            raise ValueError(f"unknown domain {domain!r}: known domains are {list(self.domains)}")
        imgs = [images] if isinstance(images, np.ndarray) and images.ndim == 3 else list(images)
        return self.features[[self.key(i) for i in imgs]]


def token_frames(n: int, positions: np.ndarray | None = None, offset: int = 0) -> list[tuple]:
    """(image, stamp, position, quat, name) tuples for table rows offset..offset+n-1 along the x axis."""
    pos = np.stack([np.arange(n, dtype=np.float64), np.zeros(n), np.zeros(n)], 1) if positions is None else positions
    return [(TableEncoder.image_for(offset + i), float(i), pos[i], np.array([0.0, 0.0, 0.0, 1.0]), f"img{i:05d}")
            for i in range(n)]
