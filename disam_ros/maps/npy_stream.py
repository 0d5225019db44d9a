"""Append rows to a .npy file whose length is unknown until the end (a map source is any iterable).

The header is written with a fixed size and rewritten on close, so rows stream to disk and a 100k-image
map never has to sit in memory. The result is an ordinary .npy (numpy reads headers padded with spaces).
Rows holding NaN/inf are refused (`NonFiniteRowsError`), after the conversion to the file's dtype (float16
overflows to inf above 65504): a map is written only from finite features.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from disam_ros.maps.integrity import nonfinite_rows

_MAGIC = b"\x93NUMPY\x01\x00"
_HEADER_BYTES = 128  # magic (8) + length (2) + dict padded with spaces + newline; multiple of 64


def _header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    body_len = _HEADER_BYTES - len(_MAGIC) - 2
    if len(text) + 1 > body_len:
        raise ValueError(f"npy header for shape {shape} does not fit in {_HEADER_BYTES} bytes")
    return _MAGIC + struct.pack("<H", body_len) + (text.ljust(body_len - 1) + "\n").encode("latin1")


class NonFiniteRowsError(ValueError):
    """Rows with NaN/inf offered to an `NpyAppender`: `batch_rows` index the refused batch, `rows` the file."""

    def __init__(self, path: Path, rows: np.ndarray, batch_rows: np.ndarray) -> None:
        self.rows, self.batch_rows = rows, batch_rows
        super().__init__(f"{path.name}: row {int(rows[0])} ({len(rows)} in that batch) holds NaN/inf values; a map "
                         "is written only from finite features: check the images and the model")


class NpyAppender:
    """Rows of shape `row_shape` and dtype `dtype`, appended in batches; `close()` fixes the header."""

    def __init__(self, path: Path, row_shape: tuple[int, ...], dtype: str | np.dtype, allow_nan: bool = False) -> None:
        self.path = Path(path)
        self.allow_nan = allow_nan  # map geometry: NaN rows mark keypoints without a 3D point
        self.row_shape = tuple(int(s) for s in row_shape)
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._f = open(self.path, "wb")  # noqa: SIM115 - lives until close()
        self._f.write(_header(self.dtype, (0, *self.row_shape)))

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {rows.shape[1:]} appended to {self.row_shape}")
        bad = () if self.allow_nan else nonfinite_rows(rows)
        if len(bad):
            raise NonFiniteRowsError(self.path, self.rows + bad, bad)
        self._f.write(rows.tobytes())
        self.rows += rows.shape[0]

    def close(self) -> None:
        if self._f.closed:
            return
        self._f.seek(0)
        self._f.write(_header(self.dtype, (self.rows, *self.row_shape)))
        self._f.close()

    def __enter__(self) -> NpyAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
