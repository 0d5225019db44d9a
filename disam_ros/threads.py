"""CPU threads of the runtime (node, `disam-eval`, map building): a bounded default, not one thread per core.

Why: torch starts one intra-op thread per core. The per-frame work here is small (one encoder pass on a small
image, one matrix-vector product over the map's descriptors), so on a many-core host the threads' hand-offs cost
more than they share: on a 16-core GPU host the pca search of a 1k map took 96 ms at torch's default threads,
against 10.9 ms on one thread of a 2-core machine (2026-11-26, main 3f8a3bf). `disam-bench threads` measures
1, 2, 4 and all threads on the machine at hand; docs/benchmarks.md holds the table the default was chosen from.
A vehicle's computer also runs SLAM, drivers and planning beside us: a small default leaves them their cores.
"""
from __future__ import annotations

import logging
import os
import sys

# docs/benchmarks.md, "CPU threads": on the 2-core machine nothing got faster beyond 2; a dedicated 16-core host
# was faster at 16, but a vehicle's computer shares its cores, so the default stays small
DEFAULT_MAX_THREADS = 2
log = logging.getLogger(__name__)


def available_cpus() -> int:
    """Cores this process may run on (its affinity mask: a container's or taskset's limit, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads(cap: int = DEFAULT_MAX_THREADS) -> int:
    return max(1, min(cap, available_cpus()))


def resolve_threads(requested: int | None) -> int:
    """`requested` threads, or the default for 0 / None; a negative count is an error that names the fix."""
    if requested is None or requested == 0:
        return default_threads()
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise ValueError(f"threads={requested!r} must be an integer >= 0 (0: the default, "
                         f"min({DEFAULT_MAX_THREADS}, cores)), e.g. threads=2")
    return requested


def apply_threads(requested: int | None, image_pools: bool = True) -> int:
    """Set the CPU thread pools of torch, (when loaded) faiss and, with `image_pools`, OpenCV and numpy's BLAS;
    returns the count in force.

    Why OpenCV and BLAS: both size their pools to every core when first loaded, before any parameter is read, so
    with torch's alone a node given `threads: 1` on a 16-core vehicle still ran its descriptor products and image
    filters on 16 threads. Map building leaves them (`image_pools=False`): offline work on a machine of its own,
    whose SIFT over thousands of images uses every core OpenCV finds."""
    import torch

    n = resolve_threads(requested)
    torch.set_num_threads(n)
    if image_pools:
        import cv2
        from threadpoolctl import threadpool_limits

        cv2.setNumThreads(n)
        threadpool_limits(limits=n, user_api="blas")  # in force from here on (not used as a context manager)
    faiss = sys.modules.get("faiss")
    if faiss is not None and hasattr(faiss, "omp_set_num_threads"):
        faiss.omp_set_num_threads(n)
    log.debug("CPU threads: %d of %d available", n, available_cpus())
    return n
