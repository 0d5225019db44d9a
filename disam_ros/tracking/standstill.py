"""Standstill detection from the image stream: is the camera where it was one frame ago?

Why: a vehicle stopped at a junction sends the same view frame after frame. Without odometry, the sequence
filter cannot tell a stop from slow driving, its speed bins carry the belief on ahead, and every repeated
frame is counted as new evidence for whatever that one view resembles. Measured on the demo world's stops
drive (8-frame stops, default settings): the belief ran two places (15 m) ahead during a stop and stayed
wrong until the vehicle moved again. Consecutive frames of a standing camera differ by sensor noise only
(0.2 grey levels on the 32x24 thumbnail in the synthetic world), those of a moving one by 3-30 in clear
weather and 0.9-2.6 in fog: the gap is wide, and relative to the drive's own moving frames it needs no
per-camera tuning.

The test is relative: a frame is "still" when its thumbnail differs from the previous one by less than
`ratio` times the median difference of the last `history` frames that were moving. So fog (small
differences everywhere) and a busy street (large ones) set their own scale. The first `min_history`
moving frames after a start decide nothing. The ratio is small (0.1) on purpose: a missed stop costs what
it cost before, a moving frame taken for a stop costs a frame of motion. With 0.25 the demo's fog drive,
whose first frames turn a corner (differences 9-12, then 1.5 on the straight), held for ten moving frames
and fell from 71 % to 51 % right; a stop among other moving things (traffic) is simply not detected.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

THUMB = (32, 24)  # width x height: area averaging removes most sensor noise, ego-motion survives


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """Grey, THUMB-sized, float32: what consecutive frames are compared on."""
    a = np.asarray(rgb, dtype=np.float32)  # float before averaging: uint8 rounding would hide small steps
    small = cv2.resize(a, THUMB, interpolation=cv2.INTER_AREA)
    return small @ np.float32([0.299, 0.587, 0.114]) if small.ndim == 3 and small.shape[2] == 3 else small


def frame_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails, in grey levels."""
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


@dataclass
class StandstillDetector:
    """Stateful: feed every frame in order; `reset()` on a tracker reset or a stream restart."""

    ratio: float = 0.1  # still below this share of a typical moving step (0: never still)
    history: int = 20
    min_history: int = 5

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"standstill ratio {self.ratio!r} must lie in [0, 1): e.g. 0.1, or 0 to disable")
        self._moving: deque[float] = deque(maxlen=max(int(self.history), 1))
        self._prev: np.ndarray | None = None
        self.last_difference = float("nan")

    def reset(self) -> None:
        self._moving.clear()
        self._prev = None
        self.last_difference = float("nan")

    def typical_step(self) -> float | None:
        """Median difference of the recent moving frames (None until min_history of them were seen)."""
        return float(np.median(self._moving)) if len(self._moving) >= self.min_history else None

    def __call__(self, rgb: np.ndarray) -> bool:
        """True when this frame shows the scene the previous one showed (the camera did not move)."""
        thumb = thumbnail(rgb)
        prev, self._prev = self._prev, thumb
        if prev is None or prev.shape != thumb.shape or self.ratio == 0.0:
            return False
        d = self.last_difference = frame_difference(thumb, prev)
        typical = self.typical_step()
        still = typical is not None and d < self.ratio * typical
        if not still:
            self._moving.append(d)
        return still


__all__ = ["THUMB", "StandstillDetector", "frame_difference", "thumbnail"]
