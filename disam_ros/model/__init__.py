"""DISAM model: networks, losses, Grad-SAM, checkpoints and inference encoders (no ROS imports).

Public API::

    from disam_ros.model import ModelConfig, preset, PRESETS, DisamNet, Encoder, EncoderLike
    from disam_ros.model import save_checkpoint, load_checkpoint, CheckpointError, file_sha256

Loss functions live in `disam_ros.model.losses`, `.gradsam`, `.related_losses` and `.objective`.

The names are loaded on first use (PEP 562), so that the torch-free `disam_ros.model.config` (the presets) can be
imported without torch: a command's `--help` lists them in a fraction of a second.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checkpoint import CheckpointError, file_sha256, load_checkpoint, save_checkpoint
    from .config import PRESETS, ModelConfig, preset
    from .inference import Encoder, EncoderLike
    from .networks import DisamNet, seeded_net

_HOME = {
    "CheckpointError": "checkpoint", "file_sha256": "checkpoint", "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint", "PRESETS": "config", "ModelConfig": "config", "preset": "config",
    "Encoder": "inference", "EncoderLike": "inference", "DisamNet": "networks", "seeded_net": "networks",
}

__all__ = [
    "PRESETS",
    "CheckpointError",
    "DisamNet",
    "Encoder",
    "EncoderLike",
    "ModelConfig",
    "file_sha256",
    "load_checkpoint",
    "preset",
    "save_checkpoint",
    "seeded_net",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
