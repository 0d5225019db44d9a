"""Is a map's data what its builder wrote, and usable? sha256 per chunk, and no NaN/inf in any stored float.

The manifest's hashes prove each file is the one it lists, not that what was hashed is sane: a buggy tool (or
anyone) can rewrite an array and its hashes together. One NaN row in coarse.npy turns every query's scores to
NaN, and the node would drop every frame blaming the camera. So every float array is also checked for NaN/inf:

* at build: `NpyAppender` refuses non-finite rows, and the builder names the image (maps/builder.py);
* at load: the .npy files hashed at load (up to AUTO_VERIFY_BYTES; all with verify=True) are scanned whole
  (`check_finite_now`), pca.npz always (it is read into RAM anyway);
* in the background: the larger .npy files chunk by chunk, right after each chunk's hash (`MapVerification`),
  so the cost is paid where the hashing already is and a node still starts at once;
* by `disam-map-info --verify`: every float array, coarse.faiss included (`finite_problems`).

The scan reads the float bits as integers (exponent all ones = NaN or inf), a block at a time: 8-12 ms for a
memory-mapped 10k x 4096 float16 array (78 MiB, page-cached) on one core, against 45-70 ms for the sha256 of
the same bytes and ~120 ms for `np.isfinite(a).all()`.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Any
from zipfile import BadZipFile

import numpy as np

from disam_ros.maps.map_format import (
    COARSE_FAISS,
    COARSE_FULL,
    COARSE_NPY,
    COARSE_RAW,
    FINE_NPY,
    GEOM_KEYPOINTS,
    GEOM_LEARNED_FILES,
    GEOM_POINTS,
    MapError,
    load_npy,
    map_error,
)

log = logging.getLogger(__name__)
FLOAT_NPY = (COARSE_NPY, COARSE_RAW, COARSE_FULL, FINE_NPY, GEOM_KEYPOINTS, *GEOM_LEARNED_FILES[:2])
NAN_ROWS_NPY = (GEOM_POINTS, GEOM_LEARNED_FILES[2])  # NaN rows = keypoints without a 3D point (geometry_store.py)
_BLOCK = 1 << 18  # elements per scan block: the mask temporaries stay in cache (measured best of 2^14..2^22)
_EXPONENT = {2: (np.uint16, 0x7C00), 4: (np.uint32, 0x7F800000), 8: (np.uint64, 0x7FF0000000000000)}
_CORRUPT = "the file is truncated or corrupt; copy the map again or rebuild it"
_FIX = "the map was built from broken features or edited since; rebuild the map"


def first_nonfinite(values: np.ndarray) -> int | None:
    """Flat index (in memory order) of the first NaN/inf in `values`, None when every value is finite."""
    values = np.asarray(values) if not isinstance(values, np.ndarray) else values
    if values.dtype.kind not in "fc":
        return None
    flat = values.ravel(order="K")  # no copy for a C- or F-ordered array or memmap
    bits = _EXPONENT.get(values.dtype.itemsize) if values.dtype.kind == "f" and values.dtype.isnative else None
    for lo in range(0, flat.size, _BLOCK):
        block = flat[lo:lo + _BLOCK]
        if bits is None:
            bad = ~np.isfinite(block)
        else:
            kind, mask = bits
            bad = (block.view(kind) & kind(mask)) == mask
        if bad.any():
            return lo + int(np.argmax(bad))
    return None


def nonfinite_rows(values: np.ndarray) -> np.ndarray:
    """Indices of the rows (first axis) holding any NaN/inf; the fast scan first, rows only when it finds one."""
    if first_nonfinite(values) is None:
        return np.zeros(0, np.int64)
    return np.flatnonzero(~np.isfinite(np.asarray(values).reshape(len(values), -1)).all(axis=1))


def array_problem(path: Path, values: np.ndarray, name: str = "", first_row: int = 0) -> str | None:
    """One line naming `path` and the first row (value, for 1-D) holding NaN/inf; None when all are finite."""
    i = first_nonfinite(values)
    if i is None:
        return None
    order = "F" if values.flags.f_contiguous and not values.flags.c_contiguous else "C"
    row = int(np.unravel_index(i, values.shape, order=order)[0]) if values.ndim else 0
    what = f"{name + ' ' if name else ''}{'row' if values.ndim > 1 else 'value'} {first_row + row}"
    return str(map_error(path, f"{what} holds NaN/inf values", _FIX))


def check_finite_now(directory: Path, manifest: dict[str, Any], deferred: list[tuple[Path, dict]],
                     verify: bool | None) -> None:
    """At load: scan the float .npy files that were hashed now (neither the deferred ones, which the background
    check scans chunk by chunk, nor any with verify=False); MapError naming the file and row."""
    if verify is False:
        return
    later = {p.name for p, _ in deferred}
    for name in FLOAT_NPY:
        if name in manifest["files"] and name not in later:
            path = Path(directory) / name
            if (problem := array_problem(path, load_npy(path, mmap=True))) is not None:
                raise MapError(problem)


def faiss_problem(path: Path) -> str | None:
    """NaN/inf among the vectors (and IVF centroids) a faiss index gives back; None when finite or when the
    index cannot give its vectors back."""
    import faiss  # local: only ivf/hnsw maps have an index

    index = faiss.read_index(str(path))
    parts = [("", index)]
    try:
        ivf = faiss.extract_index_ivf(index)
        ivf.make_direct_map()
        parts.append(("centroid", ivf.quantizer))
    except RuntimeError:
        pass  # not an IVF index (HNSW): its vectors come back as they are
    for name, idx in parts:
        step = max(1, (8 << 20) // (4 * idx.d))
        for lo in range(0, idx.ntotal, step):
            try:
                vectors = idx.reconstruct_n(lo, min(step, idx.ntotal - lo))
            except RuntimeError:
                return None
            if (problem := array_problem(path, vectors, name, first_row=lo)) is not None:
                return problem
    return None


def finite_problems(directory: Path, manifest: dict[str, Any]) -> list[str]:
    """Every stored float array of a map or shard scanned for NaN/inf (what --verify runs): one line per bad file
    naming its first bad row. Unreadable files are left to the loader's own checks."""
    out = []
    for name in manifest["files"]:
        path = Path(directory) / name
        try:
            if name.endswith(".npy") and name not in NAN_ROWS_NPY:
                problems = [array_problem(path, np.load(path, mmap_mode="r", allow_pickle=False))]
            elif name.endswith(".npz"):
                with np.load(path, allow_pickle=False) as z:
                    problems = [array_problem(path, z[k], k) for k in z.files]
            elif name == COARSE_FAISS:
                problems = [faiss_problem(path)]
            else:
                continue
        except (OSError, ValueError, EOFError, KeyError, RuntimeError, BadZipFile):
            continue
        out += [p for p in problems if p is not None][:1]
    return out


class MapVerification:
    """Background check of the files too large to check at start: sha256 chunk by chunk where the manifest has
    chunk hashes (whole files for maps written before them), and NaN/inf in each verified chunk of a float .npy.

    state: "ok" (all checked), "verifying", "failed" (`problem` holds the one-line MapError message, logged
    once; the Localizer then answers no query from this map), "unverified" (loaded with verify=False) or
    "stopped"; `describe()` says it in words with the progress, for diagnostics. hashlib releases the GIL, so
    the thread costs one core for a while, not the node's latency.
    """

    def __init__(self, jobs: list[tuple[Path, dict]] = (), chunk_bytes: int | None = None,
                 state: str = "ok") -> None:
        self.problem: str | None = None
        self.state = "verifying" if jobs else state
        self.bytes_checked = 0
        self.seconds = 0.0
        self.chunks_total = sum(len(info["chunks"]) if chunk_bytes and info.get("chunks") else 1 for _, info in jobs)
        self.chunks_done = 0
        self._stop, self._done = threading.Event(), threading.Event()
        if not jobs:
            self._done.set()
            return
        threading.Thread(target=self._run, args=(list(jobs), chunk_bytes), name="disam-map-verify",
                         daemon=True).start()

    def describe(self) -> str:
        """'verified', 'verifying 3/12 chunks', 'failed: <problem>', 'unverified (...)' or 'stopped'."""
        state = self.state
        if state == "verifying":
            return f"verifying {self.chunks_done}/{self.chunks_total} chunks"
        if state == "failed":
            return f"failed: {self.problem}"
        return {"ok": "verified", "unverified": "unverified (loaded with verify=False: sizes only)"}.get(state, state)

    def wait(self, timeout: float | None = None) -> bool:
        """True once the check has finished (whatever its outcome)."""
        return self._done.wait(timeout)

    def stop(self) -> None:
        self._stop.set()

    def _run(self, jobs: list[tuple[Path, dict]], chunk_bytes: int | None) -> None:
        t0 = time.perf_counter()
        path, problem = jobs[0][0], None
        try:
            for path, info in jobs:
                problem = self._check(path, info, chunk_bytes)
                if problem is not None or self._stop.is_set():
                    break
            if self._stop.is_set() and problem is None:
                self.state = "stopped"
            elif problem is not None:
                self.problem, self.state = problem, "failed"
                log.error("map integrity check failed, no pose will be computed from this map: %s", problem)
            else:
                self.state = "ok"
        except OSError as exc:
            self.problem, self.state = str(map_error(path, f"unreadable during verification ({exc.strerror or exc})",
                                                     "copy the map again or rebuild it")), "failed"
            log.error("map integrity check failed: %s", self.problem)
        finally:
            self.seconds = time.perf_counter() - t0
            self._done.set()

    def _check(self, path: Path, info: dict, chunk_bytes: int | None) -> str | None:
        arr = _float_npy(path)
        if chunk_bytes and info.get("chunks"):
            with open(path, "rb") as f:
                for i, want in enumerate(info["chunks"]):
                    if self._stop.is_set():
                        return None
                    lo = i * chunk_bytes
                    f.seek(lo)
                    data = f.read(chunk_bytes)
                    if hashlib.sha256(data).hexdigest() != want:
                        hi = min(lo + chunk_bytes, info["bytes"]) - 1
                        return str(map_error(path, f"checksum mismatch in bytes {lo}..{hi} (chunk {i} of "
                                             f"{len(info['chunks'])})", _CORRUPT))
                    self.bytes_checked += len(data)
                    if arr is not None and (problem := _chunk_rows_problem(path, arr, lo, lo + len(data))):
                        return problem
                    self.chunks_done += 1
            return None
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(8 << 20), b""):
                if self._stop.is_set():
                    return None
                h.update(block)
                self.bytes_checked += len(block)
        if h.hexdigest() != info["sha256"]:
            return str(map_error(path, "checksum mismatch (sha256 differs from the manifest)", _CORRUPT))
        problem = array_problem(path, arr) if arr is not None else None
        self.chunks_done += problem is None
        return problem


def _float_npy(path: Path) -> np.ndarray | None:
    """The float array of a .npy file, memory-mapped (None for other files; a header problem was reported at
    load, where the same file was opened)."""
    if path.suffix != ".npy" or path.name in NAN_ROWS_NPY:
        return None
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return arr if arr.dtype.kind in "fc" and arr.ndim and isinstance(arr, np.memmap) else None


def _chunk_rows_problem(path: Path, arr: np.memmap, lo: int, hi: int) -> str | None:
    """NaN/inf in the rows that bytes lo..hi of the file hold (rows cut by a chunk edge are checked twice)."""
    if not arr.flags.c_contiguous:  # Fortran order: rows are not contiguous bytes; whole array with the last chunk
        return array_problem(path, arr) if hi >= arr.offset + arr.nbytes else None
    row_bytes = arr.itemsize * (int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1)
    r0 = max(0, (lo - arr.offset) // row_bytes)
    r1 = min(len(arr), -(-(hi - arr.offset) // row_bytes))
    if r1 <= r0:
        return None
    # a map of these rows alone, unmapped when it goes: scanned through the whole file's map, the pages stayed in
    # the node's resident set until the file was done (RSS +2.5 GB for a 10k-image map's full-grid rows)
    part = np.memmap(path, dtype=arr.dtype, mode="r", offset=arr.offset + r0 * row_bytes,
                     shape=(r1 - r0, *arr.shape[1:]))
    return array_problem(path, part, first_row=r0)
