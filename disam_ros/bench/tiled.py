"""Large maps from a few rendered frames: the real map builder fed with tiled, perturbed real encodings.

A 10k-image map at 640x480 would take hours to render and encode here, and latency does not depend on which
images the map holds, only on its size and mode. So B frames are rendered and encoded once by the real
encoders, and `TiledEncoder` answers "encode map image k" with the encoding of frame k mod B plus Gaussian
noise (NOISE_SHARE of each element's variance over the B frames, seeded by k): every map image is distinct,
the statistics stay those of real features, and `build_map` runs unchanged (PCA, faiss index, checksums),
so the node loads a real map built by the product from the real checkpoints.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from disam_ros.bench.table_encoder import TableEncoder

NOISE_SHARE = 0.25
TILE_OFFSET_M = 100.0  # copy t of the drive lies t x 100 m to the left: far outside any confidence radius


class TiledEncoder:
    """Duck-types `disam_ros.model.Encoder` for the map builder (domains, content_shape, config, device,
    checkpoint_sha256 of the real encoder, so the map records and checks the real checkpoint)."""

    def __init__(self, real: Any, base: torch.Tensor, seed: int = 0) -> None:
        self.domains = tuple(real.domains)
        self.config = real.config
        self.checkpoint_sha256 = real.checkpoint_sha256
        self.device = torch.device("cpu")
        self.base = base.detach().float().cpu()
        self.sd = torch.sqrt(NOISE_SHARE * self.base.var(dim=0)) if len(self.base) > 1 else torch.zeros_like(base[0])
        self.seed = int(seed)

    @property
    def content_shape(self) -> tuple[int, int, int]:
        return tuple(self.base.shape[1:])

    def row(self, k: int) -> torch.Tensor:
        """Map image k's content code: frame k mod B plus its own seeded noise."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
        return self.base[k % len(self.base)] + self.sd * torch.randn(self.base.shape[1:], generator=g)

    def encode(self, images: Any, domain: str) -> torch.Tensor:
        if domain not in self.domains:
            raise ValueError(f"unknown domain {domain!r}: known domains are {list(self.domains)}")
        imgs = [images] if isinstance(images, np.ndarray) and images.ndim == 3 else list(images)
        return torch.stack([self.row(TableEncoder.key(i)) for i in imgs])


def tiled_frames(n: int, positions: np.ndarray, quats: np.ndarray) -> Iterator[tuple]:
    """(token image, stamp, position, quat, name) for map images 0..n-1: image k stands at the pose of frame
    k mod B, shifted TILE_OFFSET_M to the left per copy of the drive."""
    b = len(positions)
    for k in range(n):
        pos = np.asarray(positions[k % b], np.float64) + np.array([0.0, TILE_OFFSET_M * (k // b), 0.0])
        yield TableEncoder.image_for(k), float(k), pos, np.asarray(quats[k % b], np.float64), f"{k:08d}"


def encode_all(enc: Any, images: list[np.ndarray], domain: str, batch: int = 16) -> torch.Tensor:
    """(B, C, h, w) float32 content codes of the rendered frames."""
    return torch.cat([enc.encode(images[i:i + batch], domain).float().cpu() for i in range(0, len(images), batch)])
