"""Rows of a large .npy file read by offset instead of through a memory map.

Why: a query reads a few dozen scattered rows of a file of gigabytes (a `pca-full` map's full-grid coarse rows).
Through a memory map each page fault also maps the kernel's read-ahead around the row, and those pages stay in the
process's resident set: after 28 queries against a 10k-image map the node's RSS read 3 GB where the rows asked for
were 450 MB. pread leaves the file in the page cache (shared, reclaimable, not the node's RSS) and copies only the
rows asked for.
"""
from __future__ import annotations

import os
import weakref
from pathlib import Path

import numpy as np

from disam_ros.maps.map_format import load_npy, map_error


class RowFile:
    """A 2-D C-ordered .npy file whose rows are read on demand: `rows[ids]` -> (len(ids), D) array."""

    def __init__(self, path: Path, shape: tuple[int, int], dtype: str) -> None:
        arr = load_npy(path, True, shape, dtype)  # the map's one-line errors for a bad header, shape or dtype
        if arr.ndim != 2 or not arr.flags.c_contiguous:
            raise map_error(path, "is not a row-major 2-D array", "rebuild the map")
        self.path, self.shape, self.dtype = Path(path), tuple(arr.shape), arr.dtype
        self.offset, self.row_bytes = int(arr.offset), int(arr.strides[0])
        del arr
        self._fd = os.open(path, os.O_RDONLY)
        self._closer = weakref.finalize(self, os.close, self._fd)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.shape[0]):
            raise IndexError(f"rows {ids.min()}..{ids.max()} of {self.path.name}, which holds {self.shape[0]}")
        out = np.empty((len(ids), self.shape[1]), self.dtype)
        for k, i in enumerate(ids):
            got = os.preadv(self._fd, [memoryview(out[k]).cast("B")], self.offset + int(i) * self.row_bytes)
            if got != self.row_bytes:
                raise map_error(self.path, f"row {int(i)} is cut short ({got} of {self.row_bytes} bytes)",
                                "the file is truncated; copy the map again or rebuild it")
        return out

    def close(self) -> None:
        self._closer()


__all__ = ["RowFile"]
