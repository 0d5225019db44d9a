"""The honest protocol: train / validation / test as contiguous segments of the route, with gaps between them.

Why contiguous and with gaps: neighbouring frames of a route show almost the same scene, so a random split (or
adjacent segments) lets a model be selected or scored on views it trained on. Why cut *all* frames: a filter
(near-black tunnel frames, say) changes the frame count, and a cut at "half of what survived" moves the test
segment from run to run; the cut is a property of the route, the filter is applied inside each part after.

Along the reference route of N frames (indices in route order), with m = round(train_fraction * N):

    train [0, t) | gap | val [v0, v1) | gap | test [m, N)

v1 = m - gap (= N when there is no test part: train_fraction 1), v0 = v1 - round(val_fraction * N),
t = v0 - gap (= v1 when there is no validation part). Every other condition's frame follows its nearest
reference frame (places: pose translations or same-name ranks), and a frame whose nearest reference frame
lies in a gap is used by nobody. Without places each condition's own route is cut by the same rule.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layouts import DomainImages

PARTS = ("train", "val", "test")
GAP = -1  # label of a frame that belongs to no part


@dataclass(frozen=True)
class RouteSplit:
    """[start, stop) frame ranges of the three parts along a route of `n` frames."""

    n: int
    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]

    def labels(self) -> np.ndarray:
        """(n,) part index per frame: 0 train, 1 val, 2 test, GAP (-1) for the frames between parts."""
        out = np.full(self.n, GAP, dtype=np.int64)
        for k, (lo, hi) in enumerate((self.train, self.val, self.test)):
            out[lo:hi] = k
        return out

    def describe(self) -> str:
        """'train [0, 706) | val [711, 889) | test [894, 1788) of 1788 frames' (empty parts left out)."""
        parts = [f"{name} [{lo}, {hi})" for name, (lo, hi) in zip(PARTS, (self.train, self.val, self.test)) if hi > lo]
        return " | ".join(parts) + f" of {self.n} frames"


def split_points(n: int, train_fraction: float, val_fraction: float, gap: int) -> RouteSplit:
    """The cut of a route of n frames (module docstring). ValueError (one line) when no training frame is left."""
    m = n if train_fraction >= 1.0 else round(n * train_fraction)
    test = (m, n)
    v1 = m - gap if m < n else n
    v0 = v1 - round(n * val_fraction)
    t = v0 - gap if v0 < v1 else v1
    if t < 1:
        raise ValueError(f"a route of {n} frames leaves no training frame with data.train_fraction={train_fraction}, "
                         f"data.val_fraction={val_fraction}, data.gap={gap}: lower data.gap or data.val_fraction")
    return RouteSplit(n, (0, t), (v0, v1) if v0 < v1 else (v1, v1), test)


def nearest_labels(positions: np.ndarray, ref_positions: np.ndarray, ref_labels: np.ndarray,
                   chunk: int = 2048) -> np.ndarray:
    """Label of each position's nearest reference frame (first one on ties), in chunks to bound memory."""
    out = np.empty(len(positions), dtype=np.int64)
    for s in range(0, len(positions), chunk):
        d = np.linalg.norm(positions[s:s + chunk, None] - ref_positions[None], axis=-1)
        out[s:s + chunk] = ref_labels[d.argmin(1)]
    return out


@dataclass(frozen=True)
class SplitDomain:
    """One condition cut into its three parts (dark frames not yet removed)."""

    train: DomainImages
    val: DomainImages
    test: DomainImages
    in_gaps: int


def split_route(domains: list[DomainImages], reference: str, train_fraction: float, val_fraction: float,
                gap: int) -> tuple[RouteSplit, list[SplitDomain]]:
    """Cut the reference route by `split_points` and every other condition by its nearest reference frame."""
    ref = next(d for d in domains if d.name == reference)
    cut = split_points(len(ref), train_fraction, val_fraction, gap)
    ref_labels = cut.labels()
    out = []
    for d in domains:
        if d is ref:
            labels = ref_labels
        elif d.positions is None or ref.positions is None:
            labels = split_points(len(d), train_fraction, val_fraction, gap).labels()
        else:
            labels = nearest_labels(d.positions, ref.positions, ref_labels)
        parts = [d.subset(np.flatnonzero(labels == k)) for k in range(len(PARTS))]
        out.append(SplitDomain(*parts, in_gaps=int((labels == GAP).sum())))
    return cut, out
