"""What a map will cost before it is built, and which mode to build it in (`disam-build-map --mode auto`).

The rule of `choose_mode`, most accurate first (Nordland dev R@1, docs/retrieval_accuracy.md): the first mode
whose resident coarse search fits RAM_SHARE of the machine's available RAM and whose files fit the free disk:

1. `exact` while one query streams at most EXACT_SCAN_BYTES of coarse vectors (~17 ms at 15 GB/s): paper-size
   maps up to 64 images, tiny-model maps up to 4096;
2. `pca-full` up to FLAT_MAX_IMAGES (a flat scan of 512 float32 dims: 100k images ~ 37 ms measured; its best 64
   re-scored on full-grid vectors on disk, so it ranks as `exact`);
3. `hnsw-full` up to HNSW_MAX_IMAGES (1.3 KiB of RAM per image, ~12 ms per query at 100k);
4. `ivfpq` beyond (~80 B of RAM per image: a million images in ~0.1 GB).

The `-full` modes keep full-resolution fine features on disk; where those do not fit the free disk, the
pooled-fine twin (`pca`, `hnsw`) is taken instead (11 points R@1 cheaper on Nordland, but 60x less disk).
When even `ivfpq` exceeds the RAM budget the plan says so: `check_map_size` warns before anything is written.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from disam_ros.maps.descriptors import DescriptorSettings, MapSizeEstimate, estimate_map_size, settings_for_mode
from disam_ros.maps.map_format import map_error

if TYPE_CHECKING:
    from disam_ros.model.inference import EncoderLike

log = logging.getLogger(__name__)

AUTO = "auto"
RAM_SHARE = 0.5  # the localizer shares the vehicle computer with SLAM, drivers and its own encoders
EXACT_SCAN_BYTES = 256 << 20
FLAT_MAX_IMAGES = 50_000
HNSW_MAX_IMAGES = 500_000
SIZE_WARN_BYTES = 1 << 30
_POOLED_TWIN = {"pca-full": "pca", "hnsw-full": "hnsw"}


@dataclass(frozen=True)
class ModePlan:
    """The chosen mode, its estimated cost, and one line saying why (logged by the builder)."""

    mode: str
    estimate: MapSizeEstimate
    reason: str
    fits_ram: bool


def _human(b: float) -> str:
    return f"{b / (1 << 30):.2f} GiB" if b >= 1 << 30 else f"{b / (1 << 20):.1f} MiB"


def available_ram() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _candidates(n: int, coarse_dim: int) -> list[str]:
    """Modes allowed by map size alone, most accurate first (the rule in the module docstring)."""
    out = ["exact"] if n * coarse_dim * 4 <= EXACT_SCAN_BYTES else []
    if n <= FLAT_MAX_IMAGES:
        out.append("pca-full")
    if n <= HNSW_MAX_IMAGES:
        out.append("hnsw-full")
    return out + ["ivfpq"]


def choose_mode(n: int, coarse_content: tuple[int, int, int], fine_content: tuple[int, int, int] | None,
                ram_bytes: int | None, disk_bytes: int | None = None) -> ModePlan:
    """The mode `--mode auto` builds for n images of these content shapes on a machine with `ram_bytes`
    available (None: size alone decides, as for shards built on different machines) and `disk_bytes` free."""
    if n < 1:
        raise ValueError(f"a map of {n} images: need at least one image to choose a mode")
    c, h, w = coarse_content
    budget = None if ram_bytes is None else int(RAM_SHARE * ram_bytes)
    last = None
    for mode in _candidates(n, c * h * w):
        for name in (mode, _POOLED_TWIN.get(mode)):
            if name is None:
                continue
            est = estimate_map_size(n, coarse_content, fine_content, settings_for_mode(name))
            last = (name, est)
            if budget is not None and est.ram > budget:
                break  # the twin has the same coarse RAM: go to the next, more compact mode
            if disk_bytes is not None and est.peak_disk > disk_bytes:
                continue
            why = (f"{n} images: {name} is the most accurate mode whose coarse search fits "
                   + ("the size rule" if budget is None else f"{_human(budget)} (half the available RAM)")
                   + ("" if disk_bytes is None else f" and whose files fit {_human(disk_bytes)} of free disk"))
            return ModePlan(name, est, why, True)
    name, est = last
    return ModePlan(name, est, f"{n} images do not fit: even {name} needs {_human(est.ram)} of RAM, "
                    f"{_human(est.peak_disk)} of disk", False)


def resolve_mode(mode: str, n: int | None, coarse: EncoderLike, fine: EncoderLike | None, out_dir: Path,
                     use_ram: bool = True) -> str:
    """The concrete mode for `--mode` (itself unless it is "auto"); logs the choice and its reason."""
    if mode != AUTO:
        return mode
    if not n:
        log.info("--mode auto without a known image count: pca-full (compact RAM, full fine features on disk)")
        return "pca-full"
    probe = _existing(out_dir)
    plan = choose_mode(n, tuple(coarse.content_shape), None if fine is None else tuple(fine.content_shape),
                       available_ram() if use_ram else None, shutil.disk_usage(probe).free)
    (log.info if plan.fits_ram else log.warning)("--mode auto chose %s: %s", plan.mode, plan.reason)
    return plan.mode


def _existing(path: Path) -> Path:
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_map_size(out_dir: Path, total: int | None, coarse: EncoderLike, fine: EncoderLike | None,
                   s: DescriptorSettings, ram_bytes: int | None = -1, geometry: tuple | None = None) -> None:
    """Say what the map will cost before encoding: an exact map of paper-size features is ~6 MiB per image, so
    a few thousand images silently become gigabytes. Warns when the localizer's coarse search would exceed the
    machine's available RAM (`ram_bytes`; -1 reads /proc/meminfo, None skips), refuses (MapError) a build that
    cannot fit on the disk."""
    fine_shape = None if fine is None else tuple(fine.content_shape)
    est = estimate_map_size(max(total or 1, 1), tuple(coarse.content_shape), fine_shape, s, geometry=geometry)
    if not total:
        log.info("map (mode %s): about %s on disk and %s of RAM per image", s.mode, _human(est.disk),
                 _human(est.ram))
        return
    log.info("map of %d images (mode %s): about %s on disk (%s), %s of RAM for the coarse search", total, s.mode,
             _human(est.disk), ", ".join(f"{k} {_human(v)}" for k, v in sorted(est.files.items())), _human(est.ram))
    compact = estimate_map_size(total, tuple(coarse.content_shape), fine_shape, settings_for_mode("pca"),
                                geometry=geometry)
    hint = (f"--mode pca would take about {_human(compact.disk)} on disk and {_human(compact.ram)} of RAM "
            "(--mode pca-full: RAM like pca, full-grid coarse rows and fine features on disk, ranks as exact; "
            "--mode auto picks by size and RAM; docs/benchmarks.md measures every mode's cost)")
    if max(est.disk, est.ram) > SIZE_WARN_BYTES and s.pca_dim is None:
        log.warning("map of %d images in mode %s will take about %s on disk and %s of RAM: %s", total, s.mode,
                    _human(est.disk), _human(est.ram), hint)
    ram = available_ram() if ram_bytes == -1 else ram_bytes
    if ram is not None and est.ram > ram:
        log.warning("map of %d images in mode %s needs about %s of RAM to search, this machine has %s available: "
                    "it will not load here; %s", total, s.mode, _human(est.ram), _human(ram),
                    "build it with --mode auto or --mode ivfpq (~80 B of RAM per image)")
    probe = _existing(out_dir)
    free = shutil.disk_usage(probe).free
    if est.peak_disk > free:
        raise map_error(out_dir, f"the map needs about {_human(est.peak_disk)} of disk to build, {probe} has "
                        f"{_human(free)} free", f"free some space, pass another --out, or {hint}")


__all__ = ["AUTO", "ModePlan", "available_ram", "check_map_size", "choose_mode", "resolve_mode"]
