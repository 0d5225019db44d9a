"""Exact-resume state as plain values: RNG states, optimiser states, the discriminators' image pools.

Checkpoints are read with `torch.load(weights_only=True)` (a checkpoint cannot run code), so everything
saved here is converted to str-keyed dicts, lists, numbers and tensors, and converted back on load.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor


def capture_rng() -> dict[str, Any]:
    """Python, numpy, torch CPU and every CUDA device's generator state."""
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def optimizer_to_plain(opt: torch.optim.Optimizer) -> dict[str, Any]:
    sd = opt.state_dict()
    return {"state": {str(k): v for k, v in sd["state"].items()}, "param_groups": sd["param_groups"]}


def optimizer_from_plain(opt: torch.optim.Optimizer, plain: dict[str, Any]) -> None:
    opt.load_state_dict({"state": {int(k): v for k, v in plain["state"].items()},
                         "param_groups": plain["param_groups"]})


class ImagePool:
    """History of generated images shown to a discriminator (CycleGAN/ComboGAN, pool of 50).

    Half of the time the discriminator judges an older fake instead of the newest one, which damps the
    generator/discriminator oscillation. Decisions come from the pool's own generator so that they are
    part of the saved state rather than of the global RNG.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.images: list[Tensor] = []
        self.gen = torch.Generator().manual_seed(seed)

    def query(self, batch: Tensor) -> Tensor:
        if self.size == 0:
            return batch
        out = []
        for img in batch.detach():
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif torch.rand((), generator=self.gen).item() < 0.5:
                k = int(torch.randint(self.size, (), generator=self.gen))
                out.append(self.images[k])
                self.images[k] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        imgs = torch.stack(self.images).cpu() if self.images else torch.empty(0)
        return {"images": imgs, "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        imgs = state["images"]
        self.images = [im.to(device) for im in imgs] if imgs.numel() else []
        self.gen.set_state(state["gen"])
