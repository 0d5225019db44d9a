"""SeqSLAM-style window matching: the best straight path through the last L frames' scores.

The classic baseline (Milford & Wyeth 2012) users know: for every place j the frame stream could end at
and every speed v of a small set, sum the (normalised) scores of the places the vehicle would have passed,
v * (t_now - t_k) metres back along j's drive at frame k; the answer is the (place, speed) with the
best sum. Speeds are in metres per second and look-ups use the drive's arc length, so a query at another
speed than the map, or map images at uneven spacing, match as well as a constant-rate sequence does.

Vectorised: one searchsorted and one gather over all places per (speed, frame) pair; no loop over places.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from disam_ros.retrieval.place_graph import PlaceGraph


def path_sums(graph: PlaceGraph, frames: np.ndarray, stamps: np.ndarray, speeds: np.ndarray) -> np.ndarray:
    """(N,) best path sum ending at each chain slot: max over `speeds` of sum_k frames[k, slot at t_k].

    frames (L, N) per-frame scores in chain order (oldest first), stamps (L,), speeds (V,) m/s. The slot
    at t_k is the place nearest to arc length u_j - v (t_L - t_k) on j's own drive (clamped at its start).
    """
    frames = np.asarray(frames)
    stamps = np.asarray(stamps, dtype=np.float64)
    u, start, last = graph.u, graph.start, graph.end - 1
    best = np.full(len(u), -np.inf)
    back = stamps[-1] - stamps  # seconds before the newest frame
    for v in np.asarray(speeds, dtype=np.float64):
        total = frames[-1].astype(np.float64, copy=True)
        for k in range(len(frames) - 1):
            q = u - v * back[k]
            idx = np.searchsorted(u, q)  # first slot at or after q; pick the nearer of it and its predecessor
            prev = np.maximum(idx - 1, 0)
            idx = np.minimum(idx, len(u) - 1)
            idx = np.where(np.abs(u[prev] - q) <= np.abs(u[idx] - q), prev, idx)
            total += frames[k][np.clip(idx, start, last)]
        np.maximum(best, total, out=best)
    return best


class WindowMatcher:
    """Holds the last `frames` score vectors (chain order) and scores every place as a path end."""

    def __init__(self, graph: PlaceGraph, frames: int, speeds: np.ndarray) -> None:
        if frames < 1:
            raise ValueError(f"window length {frames} must be >= 1 frame: set window_frames to e.g. 10")
        self.graph = graph
        self.speeds = np.asarray(speeds, dtype=np.float64)
        self._frames: deque[np.ndarray] = deque(maxlen=frames)
        self._stamps: deque[float] = deque(maxlen=frames)

    def __len__(self) -> int:
        return len(self._frames)

    def reset(self) -> None:
        self._frames.clear()
        self._stamps.clear()

    def push(self, z_chain: np.ndarray, stamp: float) -> np.ndarray:
        """Add one frame's normalised scores (chain order) and return the path sums of all places."""
        self._frames.append(np.asarray(z_chain, dtype=np.float32))
        self._stamps.append(float(stamp))
        return path_sums(self.graph, np.stack(self._frames), np.asarray(self._stamps), self.speeds)


__all__ = ["WindowMatcher", "path_sums"]
