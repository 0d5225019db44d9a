"""SeqSLAM-style window matching: the best straight path through the last L frames' scores.

The classic baseline (Milford & Wyeth 2012) users know: for every place j the frame stream could end at
and every speed v of a small set, sum the (normalised) scores of the places the vehicle would have passed,
v * (t_now - t_k) metres back along j's drive at frame k; the answer is the (place, speed) with the
best sum. Speeds are in metres per second and look-ups use the drive's arc length, so a query at another
speed than the map, or map images at uneven spacing, match as well as a constant-rate sequence does.

The speeds are a fixed set, or (the default) a band whose grid `speed_grid` spaces so that neighbouring
hypotheses' paths lie at most one map spacing apart at the window's oldest frame. Why: nine speeds spread over
1-37.5 m/s on a route of 2.5 m places and 0.2 s frames had none within 2 m/s of the train's 12.5 m/s; over a
20-frame window the nearest ones (10.1, 14.7) drift ~4.5 m off its path, so the window answered ~2 places
behind or ahead, at the edge of the 5 m tolerance, and its calibration found no block to publish (Nordland node
route 0:889 -> 894:1788, real starter: R@1 84.6 %, 0 % published; with the derived grid, 57 speeds: 99.2 %, 97.6 %
published at 100 %).

Vectorised: one table look-up and one gather over all places per (speed, frame) pair; no loop over places.
"""
from __future__ import annotations

import logging
import math
import weakref
from collections import deque

import numpy as np

from disam_ros.tracking.place_graph import PlaceGraph

log = logging.getLogger(__name__)

PATH_BLOCK = 1 << 15  # slots looked up per block of path_sums (256 kB an int64 array: within a core's cache)
MAX_GRID_SPEEDS = 256  # the cost bound of a derived grid: beyond it neighbouring paths lie more than a spacing apart


def nearest_slots(u: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Index of the u (sorted) nearest to each q; ties to the earlier index."""
    idx = np.searchsorted(u, q)  # first slot at or after q; pick the nearer of it and its predecessor
    prev = np.maximum(idx - 1, 0)
    idx = np.minimum(idx, len(u) - 1)
    return np.where(np.abs(u[prev] - q) <= np.abs(u[idx] - q), prev, idx)


class ShiftedNearest:
    """`nearest_slots(u, u - c)` for every slot at once, by a table over a grid of u's range.

    Why: a binary search per key and per (speed, frame) was ~90 % of the window matcher's time at 100k
    places. The nearest slot is non-decreasing in the key, so the answers at a grid cell's two edges
    (widened a hair against round-off) bound every answer inside it: equal bounds are the answer; bounds
    that are neighbouring places leave one comparison, the same one `nearest_slots` makes; anything else
    (repeated or very close places) takes the exact search. Every answer is `nearest_slots`'s, bit for bit.
    """

    def __init__(self, u: np.ndarray, cell: float) -> None:
        self.u = np.asarray(u, dtype=np.float64)
        self.inv = 1.0 / float(cell)
        self.scaled = (self.u - self.u[0]) * self.inv  # the keys' cell coordinate before the shift
        edge = np.arange(int(self.scaled[-1]) + 3, dtype=np.float64)
        eps = 1e-9 * (edge + 1.0)
        bound = [nearest_slots(self.u, self.u[0] + (edge + d) * float(cell)) for d in (-eps, eps)]
        lo, hi = bound[0][:-1], bound[1][1:]  # cell i spans edges i and i + 1
        pair = (hi == lo + 1) & (self.u[np.minimum(lo + 1, len(self.u) - 1)] > self.u[lo])
        self.table = lo  # the answer, or the first of the pair
        self.kind = np.where(lo == hi, 0, np.where(pair, 1, 2)).astype(np.int8)

    def many(self, c: np.ndarray) -> np.ndarray:
        """(M, N): row m holds, for every slot j, the slot nearest to u_j - c[m] (one pass for M shifts)."""
        c = np.asarray(c, dtype=np.float64)
        n = len(self.u)
        cell = (self.scaled[None, :] - (c * self.inv)[:, None]).astype(np.int64).ravel()  # before u[0]: cell 0
        np.clip(cell, 0, len(self.table) - 1, out=cell)
        out = self.table[cell]
        odd = np.flatnonzero(self.kind[cell])
        if len(odd):
            kind, q = self.kind[cell[odd]], self.u[odd % n] - c[odd // n]
            a = out[odd]
            pick = np.where(np.abs(self.u[a] - q) <= np.abs(self.u[np.minimum(a + 1, n - 1)] - q), a, a + 1)
            hard = kind == 2
            if hard.any():
                pick[hard] = nearest_slots(self.u, q[hard])
            out[odd] = pick
        return out.reshape(len(c), n)


_TABLES: weakref.WeakKeyDictionary[PlaceGraph, ShiftedNearest] = weakref.WeakKeyDictionary()


def shifted_nearest(graph: PlaceGraph) -> ShiftedNearest:
    """The graph's table, built once (graphs are immutable) with cells an eighth of the spacing."""
    if graph not in _TABLES:
        _TABLES[graph] = ShiftedNearest(graph.u, graph.spacing_m / 8.0)
    return _TABLES[graph]


def path_sums(graph: PlaceGraph, frames: np.ndarray, stamps: np.ndarray, speeds: np.ndarray) -> np.ndarray:
    """(N,) best path sum ending at each chain slot: max over `speeds` of sum_k frames[k, slot at t_k].

    frames (L, N) per-frame scores in chain order (oldest first), stamps (L,), speeds (V,) m/s. The slot
    at t_k is the place nearest to arc length u_j - v (t_L - t_k) on j's own drive (clamped to it).
    The (speed, frame) shifts are looked up in blocks of about PATH_BLOCK slots, one pass a block: one pass per
    shift was 68 % of `disam-sequence-eval`'s time on the Nordland dev route (57 speeds x 19 frames a push, 900
    places), and blocks much larger than the CPU's cache were slower than that at 10k places. The sums add the
    frames in the same order as a loop per shift, so the result is the same, bit for bit.
    """
    frames = np.asarray(frames)
    stamps = np.asarray(stamps, dtype=np.float64)
    speeds = np.asarray(speeds, dtype=np.float64)
    nearest, older = shifted_nearest(graph), len(frames) - 1
    best = np.full(len(graph.u), -np.inf)
    newest = frames[-1].astype(np.float64)
    if older == 0:
        return np.maximum(best, newest) if len(speeds) else best
    ks = np.tile(np.arange(older), len(speeds))  # shifts speed by speed, oldest frame first
    shifts = np.repeat(speeds, older) * (stamps[-1] - stamps[:-1])[ks]  # metres back at frame k
    rows = max(1, PATH_BLOCK // max(1, len(graph.u)))
    for lo in range(0, len(shifts), rows):
        block = shifts[lo:lo + rows]
        slots = nearest.many(block)
        if block.min() >= 0:  # a stream going forward: the nearest slot is at most j, only the start clamps
            np.maximum(slots, graph.start, out=slots)
        else:
            np.clip(slots, graph.start, graph.end - 1, out=slots)
        for slot, k in zip(slots, ks[lo:lo + rows].tolist()):
            if k == 0:  # a speed's first shift: its sum starts from the newest frame
                total = newest.copy()
            total += frames[k][slot]
            if k == older - 1:
                np.maximum(best, total, out=best)
    return best


def speed_grid(lo: float, hi: float, span_s: float, spacing_m: float) -> np.ndarray:
    """Speeds from `lo` to `hi` m/s, evenly spaced and as few as keep neighbouring speeds' paths at most
    `spacing_m` apart after `span_s` seconds (the window's oldest frame): any speed in the band then has a
    hypothesis whose path stays within half a spacing of its own, i.e. on its nearest place or the next one.
    At most MAX_GRID_SPEEDS (wider, and the caller warns)."""
    if not (hi > lo and span_s > 0.0 and spacing_m > 0.0):
        return np.array([float(lo)])
    n = math.ceil((hi - lo) * span_s / spacing_m - 1e-9) + 1
    return np.linspace(lo, hi, min(n, MAX_GRID_SPEEDS))


class WindowMatcher:
    """Holds the last `frames` score vectors (chain order) and scores every place as a path end, over the fixed
    `speeds`, or over `speed_grid` of the `band` (lo, hi) m/s for the window's current time span."""

    def __init__(self, graph: PlaceGraph, frames: int, speeds: np.ndarray | None = None,
                 band: tuple[float, float] | None = None) -> None:
        if frames < 1:
            raise ValueError(f"window length {frames} must be >= 1 frame: set window_frames to e.g. 10")
        if (speeds is None) == (band is None):
            raise ValueError("WindowMatcher takes fixed speeds or a speed band, exactly one of them")
        self.graph = graph
        self.band = band
        self.speeds = np.asarray(speeds if speeds is not None else band[:1], dtype=np.float64)
        self._frames: deque[np.ndarray] = deque(maxlen=frames)
        self._stamps: deque[float] = deque(maxlen=frames)
        self._warned = False

    def __len__(self) -> int:
        return len(self._frames)

    def reset(self) -> None:
        self._frames.clear()
        self._stamps.clear()

    def push(self, z_chain: np.ndarray, stamp: float) -> np.ndarray:
        """Add one frame's normalised scores (chain order) and return the path sums of all places."""
        self._frames.append(np.asarray(z_chain, dtype=np.float32))
        self._stamps.append(float(stamp))
        if self.band is not None:
            span = self._stamps[-1] - self._stamps[0]
            self.speeds = speed_grid(*self.band, span, self.graph.spacing_m)
            apart = (self.band[1] - self.band[0]) / max(len(self.speeds) - 1, 1) * span
            if apart > self.graph.spacing_m * (1 + 1e-9) and not self._warned:
                self._warned = True
                log.warning("window speeds: %d over %.3g-%.3g m/s and %.3g s leave paths %.3g m apart, more than the "
                            "map spacing %.3g m: lower max_speed_mps or window_frames, or set window_speeds",
                            len(self.speeds), *self.band, span, apart, self.graph.spacing_m)
        return path_sums(self.graph, np.stack(self._frames), np.asarray(self._stamps), self.speeds)


__all__ = ["MAX_GRID_SPEEDS", "ShiftedNearest", "WindowMatcher", "nearest_slots", "path_sums", "shifted_nearest",
           "speed_grid"]
