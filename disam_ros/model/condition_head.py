"""A tiny condition recogniser: photometric statistics of a 32x32 thumbnail -> small MLP -> one softmax per task.

Why not a head on the content code: the content code is trained to be condition-INVARIANT (that is what FCL and
SAM push for), so the evidence for "night" or "snow" is exactly what it tries to throw away; and it needs an
encoder pass before the encoder is chosen. Brightness, colour balance, contrast, haze (dark channel) and their
coarse layout over the frame are what a person reads a condition from; they cost well under a millisecond.

Tasks: always "domain" (the model's condition folders), plus the Table-I attributes ("weather", "daylight",
"foliage") when the training data labels them. Stored as a small file beside the model checkpoint
(`<checkpoint stem>.condition.pt`, see `sidecar_path`); a model without one keeps the clock + weather rule.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from disam_ros.fsutil import atomic_path

FORMAT_TAG = "disam_ros.condition_head"
FORMAT_VERSION = 1
THUMB = 32  # thumbnail side; the features below are defined on it
GRID = 4  # layout cells per side
N_FEATURES = GRID * GRID * 4 + 6 + 8 + 2 + 1 + 1 + 2 + 1


def thumbnail(image: np.ndarray, side: int = THUMB) -> np.ndarray:
    """HxWx3 uint8 RGB -> side x side x 3 float32 in [0, 1] (area averaging: noise-free, aspect ignored)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"condition recogniser needs HxWx3 uint8 RGB, got {image.dtype} {image.shape}")
    interp = cv2.INTER_AREA if image.shape[0] * image.shape[1] > side * side else cv2.INTER_LINEAR
    t = cv2.resize(np.ascontiguousarray(image), (side, side), interpolation=interp)
    return t.astype(np.float32) * (1.0 / 255.0)


def image_features(image: np.ndarray) -> np.ndarray:
    """N_FEATURES float32 statistics of one image: layout (per-cell mean RGB and luminance contrast), global
    colour moments, luminance histogram, saturation, haze (dark channel), edge energy, chroma ratios, log
    brightness. Everything a condition changes and a place barely does."""
    t = thumbnail(image)
    lum = t @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    c = THUMB // GRID
    cells = t.reshape(GRID, c, GRID, c, 3)
    cell_rgb = cells.mean(axis=(1, 3)).reshape(-1)
    cell_std = lum.reshape(GRID, c, GRID, c).std(axis=(1, 3)).reshape(-1)
    rgb_mean, rgb_std = t.mean(axis=(0, 1)), t.std(axis=(0, 1))
    hist = np.histogram(lum, bins=8, range=(0.0, 1.0))[0].astype(np.float32) / lum.size
    mx, mn = t.max(axis=2), t.min(axis=2)
    sat = (mx - mn) / (mx + 1e-3)
    dark = mn.mean()
    gy, gx = np.diff(lum, axis=0), np.diff(lum, axis=1)
    edges = 0.5 * (np.abs(gy).mean() + np.abs(gx).mean())
    g = rgb_mean[1] + 1e-3
    feats = np.concatenate([cell_rgb, cell_std, rgb_mean, rgb_std, hist, [sat.mean(), sat.std()], [dark],
                            [edges], [rgb_mean[0] / g, rgb_mean[2] / g], [np.log(lum.mean() + 1e-3)]])
    return feats.astype(np.float32)


def bright_enough(image: np.ndarray, min_brightness: float) -> bool:
    """The retrieval evaluation's dark-frame rule (training.layouts.drop_dark, Nordland preset 20): keep a frame
    whose 99th-percentile pixel reaches `min_brightness`. A percentile, not the maximum: Nordland's tunnel frames
    are black but for a bright watermark. Used so recognition is scored on the frames R@1 is scored on."""
    return min_brightness <= 0 or float(np.percentile(image, 99)) >= min_brightness


def batch_features(images: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([image_features(im) for im in images]) if len(images) else np.zeros((0, N_FEATURES), np.float32)


class ConditionHead(nn.Module):
    """Standardise -> Linear -> ReLU -> one Linear per task. `tasks` maps task name -> class names (ordered)."""

    def __init__(self, tasks: Mapping[str, Sequence[str]], hidden: int = 32, n_features: int = N_FEATURES) -> None:
        super().__init__()
        if "domain" not in tasks or not tasks["domain"]:
            raise ValueError("a condition head needs a 'domain' task naming the model's domains")
        self.tasks = {k: tuple(v) for k, v in tasks.items()}
        self.hidden, self.n_features = hidden, n_features
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.trunk = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU())
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, len(v)) for k, v in self.tasks.items()})

    def forward(self, feats: Tensor) -> dict[str, Tensor]:
        """Logits per task for (B, n_features) features."""
        h = self.trunk((feats - self.mean) / self.std)
        return {k: head(h) for k, head in self.heads.items()}

    def set_normalisation(self, feats: np.ndarray) -> None:
        """Feature mean/std from the training set (constant features get std 1, not a division by zero)."""
        f = torch.as_tensor(feats, dtype=torch.float32)
        self.mean.copy_(f.mean(0))
        std = f.std(0)
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    @torch.inference_mode()
    def predict_features(self, feats: np.ndarray) -> list[dict[str, dict[str, float]]]:
        logits = self(torch.as_tensor(np.atleast_2d(feats), dtype=torch.float32))
        probs = {k: torch.softmax(v, dim=1).numpy() for k, v in logits.items()}
        n = next(iter(probs.values())).shape[0]
        return [{k: dict(zip(self.tasks[k], map(float, probs[k][i]), strict=True)) for k in self.tasks}
                for i in range(n)]

    def predict(self, image: np.ndarray) -> dict[str, dict[str, float]]:
        """task -> class -> probability for one HxWx3 uint8 RGB frame (what the localizer calls per frame)."""
        return self.predict_features(image_features(image)[None])[0]

    def to_payload(self) -> dict:
        return {"format": FORMAT_TAG, "format_version": FORMAT_VERSION, "hidden": self.hidden,
                "n_features": self.n_features, "tasks": {k: list(v) for k, v in self.tasks.items()},
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_payload(cls, payload: Mapping, where: str = "condition head") -> ConditionHead:
        if not isinstance(payload, Mapping) or payload.get("format") != FORMAT_TAG:
            raise ValueError(f"{where}: not a condition recogniser file; "
                             "train one with `python -m disam_ros.training.condition`")
        if payload.get("format_version") != FORMAT_VERSION or payload.get("n_features") != N_FEATURES:
            raise ValueError(f"{where}: condition recogniser of another version (format "
                             f"{payload.get('format_version')}, {payload.get('n_features')} features); retrain it")
        head = cls(payload["tasks"], int(payload["hidden"]))
        head.load_state_dict(payload["state_dict"], strict=True)
        return head.eval()


def sidecar_path(checkpoint: str | os.PathLike) -> Path:
    """Where the recogniser of a model checkpoint lives: `coarse.pt` -> `coarse.condition.pt`."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".condition.pt")


def save_condition_head(path: str | os.PathLike, head: ConditionHead) -> Path:
    path = Path(path)
    with atomic_path(path, mode=0o644) as tmp:
        torch.save(head.to_payload(), tmp)
    return path


def load_condition_head(path: str | os.PathLike) -> ConditionHead:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise ValueError(f"{path}: unreadable condition recogniser ({exc}); retrain or remove it") from None
    return ConditionHead.from_payload(payload, str(path))


def find_condition_head(checkpoint: str | os.PathLike) -> ConditionHead | None:
    """The recogniser beside `checkpoint`, or None (the model then keeps today's clock + weather behaviour)."""
    side = sidecar_path(checkpoint)
    return load_condition_head(side) if side.is_file() else None
