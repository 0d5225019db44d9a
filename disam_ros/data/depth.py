"""Depth maps on disk: `ROOT/<condition>/depth/<image stem>.png`, 16-bit unsigned, millimetres, 0 = invalid.

Why this format: a 16-bit PNG is lossless, compact, readable by every tool (OpenCV, PIL, ROS depth images use
the same `16UC1` millimetre convention) and 1 mm steps are far below what a retrieval descriptor can use.
Depth is the optical-frame z (distance along the camera's optical axis), not the ray length, so a pixel (u, v)
with depth d back-projects to d * ((u - cx) / fx, (v - cy) / fy, 1) in the optical frame.

Invalid (0) means: no return (sky), not measured, or farther than `MAX_DEPTH_M` (65.535 m): a far surface is
marked unknown rather than clipped to a wrong value, so a masked loss never learns a saturated depth.
In memory depth is float32 metres with 0.0 for invalid; `valid = depth > 0`.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from disam_ros.fsutil import atomic_write_bytes

DEPTH_DIR = "depth"
MM_PER_M = 1000.0
MAX_DEPTH_M = 65535 / MM_PER_M  # the largest depth a 16-bit millimetre PNG holds


def depth_path(image_path: str | Path) -> Path:
    """The depth file of an image: `<cond>/images/<stem>.<ext>` -> `<cond>/depth/<stem>.png`."""
    p = Path(image_path)
    return p.parent.parent / DEPTH_DIR / f"{p.stem}.png"


def metres_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """float metres -> uint16 millimetres (rounded); non-finite, <= 0 or beyond MAX_DEPTH_M -> 0 (invalid)."""
    d = np.asarray(depth_m, np.float64)
    ok = np.isfinite(d) & (d > 0) & (d <= MAX_DEPTH_M)
    mm = np.rint(np.where(ok, d, 0.0) * MM_PER_M)
    return mm.astype(np.uint16)


def mm_to_metres(mm: np.ndarray) -> np.ndarray:
    """uint16 millimetres -> float32 metres, 0 stays 0 (invalid)."""
    return (np.asarray(mm, np.float64) / MM_PER_M).astype(np.float32)


def write_depth(path: str | Path, depth_m: np.ndarray) -> Path:
    """Write an (H, W) depth map in metres as a 16-bit millimetre PNG, atomically; returns `path`."""
    d = np.asarray(depth_m)
    if d.ndim != 2:
        raise ValueError(f"{path}: depth must be a single-channel (H, W) map, got shape {d.shape}")
    ok, buf = cv2.imencode(".png", metres_to_mm(d))
    if not ok:
        raise OSError(f"{path}: could not encode the depth PNG")
    return atomic_write_bytes(path, buf.tobytes())


def read_depth(path: str | Path) -> np.ndarray:
    """(H, W) float32 metres from a 16-bit millimetre PNG, 0.0 where invalid."""
    mm = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if mm is None or mm.size == 0:
        raise ValueError(f"{path}: unreadable or empty depth file; write it as a 16-bit PNG in millimetres")
    if mm.ndim != 2 or mm.dtype != np.uint16:
        raise ValueError(f"{path}: depth must be a single-channel 16-bit PNG in millimetres (0 = invalid), "
                         f"got {mm.dtype} with shape {mm.shape}; convert it with disam_ros.data.depth.write_depth")
    return mm_to_metres(mm)
