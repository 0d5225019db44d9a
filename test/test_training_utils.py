"""Shared helpers of the training tests: a tiny multi-condition world on disk and micro recipes.

A place is a random block pattern; a condition changes gain, tint, offset and noise, so there is real
cross-condition structure for retrieval without paying for the ray-traced synthetic world.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from disam_ros.data.tum import make_trajectory, write_tum
from disam_ros.training.config import load_recipe
from disam_ros.training.recipe import Recipe

CONDITIONS = ("sunny", "night", "snow")
LOOKS = {"sunny": (1.0, (1.0, 1.0, 1.0), 0), "night": (0.35, (1.0, 0.8, 0.5), 5), "snow": (0.6, (0.9, 0.95, 1.0), 90)}


def make_world(root: Path, conditions: tuple[str, ...] = CONDITIONS, places: int = 12, size: tuple[int, int] = (40, 30),
               poses: bool = True, seed: int = 0) -> Path:
    """ROOT/<condition>/images/NNNNNN.png (+ poses.txt, x = 3 m per place) in the product's folder layout."""
    rng = np.random.default_rng(seed)
    base = [cv2.resize(rng.integers(0, 256, (5, 6, 3)).astype(np.float32), size, interpolation=cv2.INTER_NEAREST)
            for _ in range(places)]
    for c in conditions:
        gain, tint, offset = LOOKS.get(c, (0.8, (1.0, 1.0, 1.0), 30))
        (root / c / "images").mkdir(parents=True)
        for p, img in enumerate(base):
            out = img * gain * np.array(tint, np.float32) + offset + rng.normal(0, 4, img.shape)
            cv2.imwrite(str(root / c / "images" / f"{p:06d}.png"), np.clip(out, 0, 255).astype(np.uint8))
        if poses:
            pos = np.stack([np.arange(places) * 3.0, np.zeros(places), np.full(places, 1.5)], 1)
            quats = np.tile([0.0, 0.0, 0.0, 1.0], (places, 1))
            write_tum(root / c / "poses.txt", make_trajectory(np.arange(places, dtype=float), pos, quats))
    return root


def micro_recipe(name: str, *overrides: str) -> Recipe:
    """A recipe shrunk to seconds: micro preset, batch 2, few steps, no progress bar, one thread (busy CPU).

    Split of the 12-place world: train [0, 4) | gap | val [5, 8) | gap | test [9, 12)."""
    base = ["model.preset=micro", "steps=6", "batch_size=2", "data.reference=sunny", "num_negatives=3",
            "progress=false", "log_every=2", "threads=1", "val_tolerance=0.5", "data.train_fraction=0.75",
            "data.val_fraction=0.25", "data.gap=1"]
    return load_recipe(name, base + list(overrides))
