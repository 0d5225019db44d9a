"""Rows of a large .npy file read by offset instead of through a memory map.

Why: a query reads a few dozen scattered rows of a file of gigabytes (a `pca-full` map's full-grid coarse rows,
a candidate's fine features, its keypoints, descriptors and 3D points). Through a memory map each page fault also
maps the kernel's read-ahead around the row, and those pages stay in the process's resident set for as long as
the map is open: after 28 queries against a 10k-image map the node's RSS read 3 GB where the rows asked for were
450 MB, and over a long drive a map's geometry would end up resident whole. pread leaves the file in the page
cache (shared, reclaimable, not the node's RSS) and copies only the rows asked for.
"""
from __future__ import annotations

import math
import os
import weakref
from pathlib import Path

import numpy as np

from disam_ros.maps.map_format import load_npy, map_error


class RowFile:
    """A C-ordered .npy file of N rows (any row shape) read on demand, indexed like a read-only array along its
    first axis: `rows[i]`, `rows[lo:hi]` (one read) and `rows[ids]` return fresh arrays; `shape`, `dtype`, len()."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: str) -> None:
        arr = load_npy(path, True, shape, dtype)  # the map's one-line errors for a bad header, shape or dtype
        if arr.ndim < 1 or not arr.flags.c_contiguous:
            raise map_error(path, "is not a row-major array", "rebuild the map")
        self.path, self.shape, self.dtype = Path(path), tuple(arr.shape), arr.dtype
        self.offset = int(arr.offset)
        self.row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        del arr
        self._fd = os.open(path, os.O_RDONLY)
        self._closer = weakref.finalize(self, os.close, self._fd)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        if isinstance(key, slice):
            lo, hi, step = key.indices(self.shape[0])
            if step != 1:
                raise IndexError(f"{self.path.name}: only contiguous row ranges are read, not step {step}")
            return self._read(lo, max(hi - lo, 0))
        if np.ndim(key) == 0:
            i = int(key)
            i = i + self.shape[0] if i < 0 else i
            self._check(np.array([i]))
            return self._read(i, 1)[0]
        ids = np.asarray(key, dtype=np.int64).reshape(-1)
        self._check(ids)
        out = np.empty((len(ids), *self.shape[1:]), self.dtype)
        if not len(ids) or not self.row_bytes:
            return out
        starts = np.flatnonzero(np.diff(ids, prepend=-2) != 1)  # runs of consecutive rows: one read each
        ends = np.append(starts[1:], len(ids))
        view, rb = memoryview(out).cast("B"), self.row_bytes
        for a, b, row in zip(starts.tolist(), ends.tolist(), ids[starts].tolist()):
            self._into(view[a * rb:b * rb], row)
        return out

    def _check(self, ids: np.ndarray) -> None:
        if len(ids) and (ids.min() < 0 or ids.max() >= self.shape[0]):
            raise IndexError(f"rows {ids.min()}..{ids.max()} of {self.path.name}, which holds {self.shape[0]}")

    def _read(self, lo: int, count: int) -> np.ndarray:
        out = np.empty((count, *self.shape[1:]), self.dtype)
        if count and self.row_bytes:
            self._into(memoryview(out).cast("B"), lo)
        return out

    def _into(self, view: memoryview, lo: int) -> None:
        """Fill `view` (whole rows) with the rows from `lo` on; a cut file is refused in one line."""
        at, done = self.offset + lo * self.row_bytes, 0
        while done < len(view):  # a large range may come back in pieces
            got = os.preadv(self._fd, [view[done:]], at + done)
            if got <= 0:
                rows = len(view) // self.row_bytes
                raise map_error(self.path, f"rows {lo}..{lo + rows - 1} are cut short ({done} of {len(view)} bytes)",
                                "the file is truncated; copy the map again or rebuild it")
            done += got

    def close(self) -> None:
        self._closer()


def open_rows(path: Path, on_disk: bool, shape: tuple[int, ...], dtype: str) -> np.ndarray | RowFile:
    """A map array read on demand (`on_disk`: what a node keeps open) or loaded whole into RAM."""
    return RowFile(path, shape, dtype) if on_disk else load_npy(path, False, shape, dtype)


__all__ = ["RowFile", "open_rows"]
