"""Rows read by offset (`maps/npy_rows.RowFile`) index like the array np.load gives, read only what is asked,
refuse a cut file in one line, and never map the file (its pages would stay in the process's RSS)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from disam_ros.maps import MapError
from disam_ros.maps.npy_rows import RowFile, open_rows


def _mapped(path: Path) -> bool:
    """Whether this process has the file memory-mapped (Linux)."""
    return str(path.resolve()) in Path("/proc/self/maps").read_text()


@pytest.mark.parametrize("shape", [(9,), (9, 3), (9, 2, 4, 3)])
def test_row_file_indexes_as_the_array_does(tmp_path, shape):
    table = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    np.save(tmp_path / "t.npy", table)
    rows = RowFile(tmp_path / "t.npy", shape, "float32")
    assert rows.shape == shape and rows.ndim == len(shape) and len(rows) == 9 and rows.dtype == np.float32
    for key in (0, 8, -1, slice(2, 6), slice(None), slice(7, 100), slice(5, 2), np.array([8, 0, 8, 3])):
        got = rows[key]
        np.testing.assert_array_equal(got, table[key])
        assert np.shape(got) == np.shape(table[key]) and not isinstance(got, np.memmap)
    assert rows[np.zeros(0, np.int64)].shape == (0, *shape[1:])
    with pytest.raises(IndexError, match="only contiguous"):
        rows[::2]
    with pytest.raises(IndexError, match="rows 9..9"):
        rows[9]
    rows.close()


def test_a_cut_file_is_refused_in_one_line(tmp_path):
    np.save(tmp_path / "t.npy", np.ones((100, 4), np.float32))
    rows = RowFile(tmp_path / "t.npy", (100, 4), "float32")
    with open(tmp_path / "t.npy", "r+b") as f:  # cut after it was opened, as a copy still being written would be
        f.truncate(128 + 50 * 16)
    np.testing.assert_array_equal(rows[10:50], np.ones((40, 4)))
    with pytest.raises(MapError, match=r"rows 40\.\.59 are cut short \(160 of 320 bytes\)") as err:
        rows[40:60]
    assert "\n" not in str(err.value)
    with pytest.raises(MapError, match=r"rows 55\.\.55 are cut short"):  # scattered rows: the same one line
        rows[np.array([10, 55])]


def test_rows_on_disk_are_never_mapped_into_the_process(tmp_path):
    table = np.arange(4096 * 64, dtype=np.float32).reshape(-1, 64)
    np.save(tmp_path / "big.npy", table)
    kept = open_rows(tmp_path / "big.npy", False, table.shape, "float32")
    assert isinstance(kept, np.ndarray) and not isinstance(kept, np.memmap)
    rows = open_rows(tmp_path / "big.npy", True, table.shape, "float32")
    total = sum(float(rows[lo:lo + 512].sum(dtype=np.float64)) for lo in range(0, len(rows), 512))
    assert total == float(table.sum(dtype=np.float64))
    assert not _mapped(tmp_path / "big.npy")  # so no page it read stays in the process's resident set
    mapped = np.load(tmp_path / "big.npy", mmap_mode="r")
    assert _mapped(tmp_path / "big.npy") and float(mapped[:10].sum()) == float(table[:10].sum())  # the contrast


def test_threads_reading_one_file_get_their_own_rows(tmp_path):
    """The frame loop and the keyframe thread read one map's rows at once: pread has no shared file position."""
    from concurrent.futures import ThreadPoolExecutor

    table = np.arange(2000 * 32, dtype=np.float32).reshape(2000, 32)
    np.save(tmp_path / "t.npy", table)
    rows = RowFile(tmp_path / "t.npy", table.shape, "float32")
    rng = np.random.default_rng(1)
    asks = [rng.integers(0, 2000, 64) for _ in range(200)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda ids: rows[ids], asks))
    for ids, g in zip(asks, got, strict=True):
        np.testing.assert_array_equal(g, table[ids])
