"""DISAM model: networks, losses, Grad-SAM, checkpoints and inference encoders (no ROS imports).

Public API::

    from disam_ros.model import ModelConfig, preset, PRESETS, DisamNet, Encoder, EncoderLike
    from disam_ros.model import save_checkpoint, load_checkpoint, CheckpointError, file_sha256

Loss functions live in `disam_ros.model.losses`, `.gradsam`, `.related_losses` and `.objective`.
"""
from .checkpoint import CheckpointError, file_sha256, load_checkpoint, save_checkpoint
from .config import PRESETS, ModelConfig, preset
from .inference import Encoder, EncoderLike
from .networks import DisamNet, seeded_net

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
