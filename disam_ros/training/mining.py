"""Hard negatives mined from the whole training map, every `supervised.mine_every` steps.

Why: random candidates are almost all easy (other places look different enough), so after a few hundred steps
the supervised loss has nothing to push. What retrieval gets wrong are the few map images the current model
scores above the true place; mining finds them by encoding every training image with the model as it is now
(exactly as the map would: resized straight to the input size, the retrieval descriptor of its domain's
encoder) and keeping, per anchor and partner condition, the M most similar images of *other* places.
Every rank mines the same table from the same weights, and the table is saved with the training state, so a
resumed run draws the same candidates.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from disam_ros.data.folders import read_image
from disam_ros.model import DisamNet
from disam_ros.model.related_losses import retrieval_descriptor

from .datasets import resize_square, to_tensor
from .layouts import DomainImages


def hardest_other_places(sim: Tensor, pos_a: np.ndarray, pos_b: np.ndarray, min_dist: float, m: int) -> np.ndarray:
    """(Na, m) int64: per row of `sim` (Na, Nb), the columns of highest similarity whose place lies farther than
    `min_dist` from the row's place, best first; -1 pads rows with fewer such columns."""
    far = torch.from_numpy(np.linalg.norm(pos_a[:, None] - pos_b[None], axis=-1) > min_dist)
    masked = sim.float().masked_fill(~far, -torch.inf)
    k = min(m, sim.shape[1])
    top = masked.topk(k, dim=1)
    idx = top.indices.numpy().astype(np.int64)
    idx[~torch.isfinite(top.values).numpy()] = -1
    if k < m:
        idx = np.concatenate([idx, np.full((idx.shape[0], m - k), -1, np.int64)], 1)
    return idx


class Miner:
    """Encodes the training map and builds the hard-negative tables; keeps decoded images when `cache`."""

    def __init__(self, domains: Sequence[DomainImages], image_size: int, descriptor: str, min_dist: float, m: int,
                 cache: bool = True, batch: int = 64) -> None:
        self.domains, self.size, self.descriptor = tuple(domains), image_size, descriptor
        self.min_dist, self.m, self.batch = min_dist, m, batch
        self.cache: dict[tuple[int, int], Tensor] | None = {} if cache else None

    def _image(self, dom: int, idx: int) -> Tensor:
        key = (dom, idx)
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        t = to_tensor(resize_square(read_image(self.domains[dom].paths[idx]), self.size))
        if self.cache is not None:
            self.cache[key] = t
        return t

    @torch.no_grad()
    def descriptors(self, net: DisamNet, dom: int, device: torch.device) -> Tensor:
        """(N, D) retrieval descriptors of every training image of domain `dom` with its own encoder."""
        name, n, out = self.domains[dom].name, len(self.domains[dom]), []
        for s in range(0, n, self.batch):
            x = torch.stack([self._image(dom, i) for i in range(s, min(n, s + self.batch))]).to(device)
            out.append(retrieval_descriptor(net.encode(x, name), self.descriptor).float().cpu())
        return torch.cat(out)

    def all_descriptors(self, net: DisamNet, device: torch.device) -> list[Tensor]:
        """Every domain's descriptors, the net in eval mode meanwhile (its mode is restored)."""
        was_training = net.training
        net.eval()
        try:
            return [self.descriptors(net, k, device) for k in range(len(self.domains))]
        finally:
            net.train(was_training)

    def mine(self, net: DisamNet, device: torch.device) -> dict[tuple[int, int], np.ndarray]:
        """{(i, j): (N_i, m) hardest other-place images of domain j for each training image of domain i}."""
        desc = self.all_descriptors(net, device)
        out = {}
        for i, di in enumerate(self.domains):
            for j, dj in enumerate(self.domains):
                if i != j:
                    out[(i, j)] = hardest_other_places(desc[i] @ desc[j].T, di.positions, dj.positions,
                                                       self.min_dist, self.m)
        return out


def table_to_plain(table: dict[tuple[int, int], np.ndarray]) -> dict[str, Tensor]:
    """Checkpoint-safe form (str keys, int32 tensors) of a mining table."""
    return {f"{i}>{j}": torch.from_numpy(v.astype(np.int32)) for (i, j), v in table.items()}


def table_from_plain(plain: dict[str, Tensor]) -> dict[tuple[int, int], np.ndarray]:
    out = {}
    for key, v in plain.items():
        i, j = key.split(">")
        out[(int(i), int(j))] = v.numpy().astype(np.int64)
    return out
