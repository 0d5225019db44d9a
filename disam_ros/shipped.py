"""The checkpoints that ship inside the package, by name, so a user on a fresh install can write
`--coarse real` instead of hunting for `site-packages/disam_ros/assets/real_coarse.pt`.

- `demo` / `demo-fine`: trained on the synthetic world; right for the demo, wrong for real cameras (they fail on
  real images: docs/training.md).
- `real`: the real-camera default (recipe `real_anchor`, since 2026-11-26): encoders `summer` and `winter`;
  `summer`, the map side and what night and day queries use, is an untrained small encoder (random weights keep
  night, where training here lost it); only `winter` was trained, on Nordland, into its code space. Start from
  it on a real camera until you train on your own data (docs/training.md, the real-camera battery).

A value that is not one of these names is a path, exactly as before. `KEYPOINTS` is the learned local-feature
network (model/keypoint_net.py, docs/keypoints.md), a file of its own format rather than a DISAM checkpoint.
"""
from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED = {"demo": "demo_coarse.pt", "demo-fine": "demo_fine.pt", "real": "real_coarse.pt"}
KEYPOINTS = ASSETS / "keypoints.pt"


def shipped_path(name: str) -> Path:
    """The file of a shipped checkpoint name (KeyError for other names)."""
    return ASSETS / SHIPPED[name]


def checkpoint_arg(text: str) -> Path:
    """argparse type for a checkpoint option: a shipped name (`real`, `demo`, `demo-fine`) or a path."""
    return shipped_path(text) if text in SHIPPED else Path(text)
