"""`disam-bench retrieval`: query latency and memory per map image, per mode and map size, against the
reference implementation's per-image Python loop; `disam-bench retrieval accuracy` measures what the
compact modes cost in accuracy (see `disam_ros.bench.retrieval_accuracy`), `disam-bench retrieval scale`
builds and queries ivfpq maps of up to a million synthesised images (`disam_ros.bench.retrieval_scale`).

Maps are filled with random descriptors of the right shapes (the paper's 256x64x64 content code unless
--content says otherwise): latency does not depend on the values. Combinations whose resident coarse
vectors exceed the memory budget are reported as not fitting, with the reason, instead of being run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from disam_ros.cliutil import (
    OneLineParser,
    check_output_files,
    int_list,
    name_list,
    positive_float,
    positive_int,
)
from disam_ros.data.tum import make_trajectory
from disam_ros.fsutil import atomic_write_text
from disam_ros.maps.builder import build_faiss
from disam_ros.maps.descriptors import (
    MODES,
    DescriptorSettings,
    coarse_vectors,
    fine_vectors,
    fit_pca,
    pooled_shape,
)
from disam_ros.maps.localization_map import LocalizationMap
from disam_ros.maps.map_format import MapContents, load_npy
from disam_ros.maps.npy_stream import NpyAppender
from disam_ros.retrieval.index import NUMPY_UPCAST_LIMIT, resolve_device
from disam_ros.retrieval.search import Localizer, SearchConfig

if TYPE_CHECKING:
    import torch

# torch is imported in the functions that make tensors, not at import: a typo or --help answers without loading it
# (the maps and retrieval modules above load it on first use too).

PAPER_CONTENT = (256, 64, 64)
CPU_BUDGET_BYTES = 12 << 30  # half of this 24 GiB machine: it is shared, and generation needs headroom
KIB = 1024.0


@dataclass
class Row:
    mode: str
    n: int
    device: str
    backend: str = ""
    status: str = "ok"
    coarse_ms: float = math.nan
    fine_ms: float = math.nan
    total_ms: float = math.nan
    ram_kib_per_image: float = math.nan  # resident coarse vectors as searched
    disk_kib_per_image: float = math.nan  # coarse + fine as stored (fine is memory-mapped, not resident)
    bound_ms: float = math.nan  # bytes scanned / measured bandwidth (flat indexes only)
    speedup_vs_loop: float = math.nan
    extra: dict[str, Any] = field(default_factory=dict)


def measure_bandwidth(nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """Streaming-read bandwidth in GB/s: the best of a multi-threaded torch sum and a numpy sum over 1 GiB."""
    import torch

    buf = torch.ones(nbytes // 4, dtype=torch.float32)
    arr = buf.numpy()
    best = 0.0
    for fn in (lambda: buf.sum(), lambda: arr.sum()):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best = max(best, nbytes / min(times) / 1e9)
    return best


def coarse_resident_bytes(s: DescriptorSettings, n: int, content: tuple[int, int, int], device: str) -> int:
    """What the search keeps in memory for the coarse stage (the auto backend's choice, see index.py)."""
    dim = s.pca_dim or int(np.prod(pooled_shape(content, s.coarse_grid)))
    if s.index == "ivfpq":  # one byte per PQ code + an 8-byte id; the refine vectors stay on disk
        return n * (min(s.pq_m, dim) + 8)
    elem = 2 if s.coarse_dtype == "float16" else 4
    if device == "cpu" and s.index == "flat" and elem == 2 and n * dim * 4 <= NUMPY_UPCAST_LIMIT:
        elem = 4  # numpy backend upcasts small float16 maps
    return n * dim * elem


def _random_coarse(n: int, shape: tuple[int, int, int], dtype: str, rng: torch.Generator) -> np.ndarray:
    import torch

    out = np.empty((n, int(np.prod(shape))), dtype=dtype)
    step = max(1, (64 << 20) // (4 * out.shape[1]))
    for i in range(0, n, step):
        x = torch.randn((min(step, n - i), *shape), generator=rng)
        out[i:i + step] = coarse_vectors(x).numpy()
    return out


def _random_pca_coarse(n: int, shape: tuple[int, int, int], s: DescriptorSettings,
                       rng: torch.Generator) -> tuple[Any, np.ndarray]:
    """A PCA fitted on a random sample (so the query projection has its real cost) and random vectors in
    the projected space for the map: latency does not depend on the values, and projecting 100k random
    65536-dim vectors would take longer than the whole benchmark."""
    import torch

    dim = int(np.prod(shape))
    pca = fit_pca(_random_coarse(min(n, max(s.pca_dim, (256 << 20) // (4 * dim))), shape, "float32", rng), s.pca_dim)
    out = np.empty((n, pca.dim), dtype=s.coarse_dtype)
    step = 1 << 16
    for i in range(0, n, step):
        out[i:i + step] = torch.randn((min(step, n - i), pca.dim), generator=rng).numpy() / math.sqrt(pca.dim)
    return pca, out


def _random_fine(path: Path, n: int, shape: tuple[int, int, int], dtype: str, rng: torch.Generator) -> np.ndarray:
    import torch

    step = max(1, (64 << 20) // (4 * int(np.prod(shape))))
    with NpyAppender(path, shape, dtype) as out:
        for i in range(0, n, step):
            k = min(step, n - i)
            out.append(fine_vectors(torch.randn((k, *shape), generator=rng)).numpy().reshape(k, *shape))
    return load_npy(path, mmap=True)


def random_map(mode: str, n: int, content: tuple[int, int, int], workdir: Path, seed: int = 0) -> LocalizationMap:
    """An in-memory map of `n` random descriptors in `mode` (fine features, and an ivfpq map's refine vectors,
    memory-mapped from `workdir`/map_MODE_N)."""
    import torch

    s = MODES[mode]
    root = workdir / f"map_{mode}_{n}"
    root.mkdir(parents=True, exist_ok=True)
    rng = torch.Generator().manual_seed(seed)
    cshape = pooled_shape(content, s.coarse_grid)
    fshape = pooled_shape(content, s.fine_grid)
    pca = faiss_index = None
    if s.pca_dim:
        pca, coarse = _random_pca_coarse(n, cshape, s, rng)
    else:
        coarse = _random_coarse(n, cshape, s.coarse_dtype, rng)
    if s.index != "flat":
        if s.refine:
            np.save(root / "coarse.npy", coarse)
        faiss_index, coarse = build_faiss(coarse, s), None
    fine = _random_fine(root / "fine.npy", n, fshape, s.fine_dtype, rng)
    dim = pca.dim if pca else int(np.prod(cshape))
    manifest = {"count": n, "reference_domain": "ref", "frame_id": "map",
                "descriptors": {"settings": s.to_dict(), "coarse_shape": list(cshape), "coarse_dim": dim,
                                "fine_shape": list(fshape)},
                "models": {"coarse": {"content_shape": list(content)}, "fine": {"content_shape": list(content)}},
                "stats": {"spacing_m": 1.0, "spacing_deg": 0.0}}
    x = np.arange(n, dtype=np.float64)
    traj = make_trajectory(x, np.stack([x, 0 * x, 0 * x], 1), np.tile([0.0, 0.0, 0.0, 1.0], (n, 1)))
    contents = MapContents(root, manifest, [f"{i:06d}" for i in range(n)], traj, s, fine)
    return LocalizationMap(contents, coarse, faiss_index, pca)


def time_queries(loc: Localizer, content: tuple[int, int, int], queries: int, seed: int = 1) -> dict[str, float]:
    """Median per-stage milliseconds of localize_features on random query features (after a warm-up)."""
    import torch

    rng = torch.Generator().manual_seed(seed)
    dev = loc.device
    feats = [(torch.randn(content, generator=rng).to(dev), torch.randn(content, generator=rng).to(dev))
             for _ in range(queries + 2)]
    runs = [loc.localize_features(c, f).timings_ms for c, f in feats]
    runs = runs[2:]
    return {k: float(np.median([r[k] for r in runs])) for k in ("coarse_search", "fine_rerank", "total")}


def reference_loop_ms_per_image(content: tuple[int, int, int], subset: int, queries: int = 3) -> float:
    """Faithful re-creation of the reference test loop: one float32 feature map per map image (4 MiB at the
    paper shape), scored one by one with torch CosineSimilarity (eq. 16), Python floats collected, sorted."""
    import torch

    cos = torch.nn.CosineSimilarity(dim=2)
    c = content[0]
    db = [torch.randn((1, *content)) for _ in range(subset)]
    times = []
    for _ in range(queries):
        q = torch.randn((1, *content))
        t0 = time.perf_counter()
        scores = [float(torch.mean(cos(q.view(1, c, -1), d.view(1, c, -1)))) for d in db]
        np.argsort(scores)[::-1][:3]
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times)) / subset


def bench_case(mode: str, n: int, content: tuple[int, int, int], device: str, budget: int, workdir: Path,
               queries: int, bandwidth: float) -> Row:
    row = Row(mode, n, device)
    s = MODES[mode]
    resident = coarse_resident_bytes(s, n, content, device)
    row.ram_kib_per_image = resident / n / KIB
    fbytes = int(np.prod(pooled_shape(content, s.fine_grid))) * (2 if s.fine_dtype == "float16" else 4)
    cbytes = (s.pca_dim or int(np.prod(pooled_shape(content, s.coarse_grid)))) * (2 if s.coarse_dtype == "float16"
                                                                                     else 4)
    row.disk_kib_per_image = (cbytes + fbytes) / KIB
    if resident > budget:
        row.status = (f"does not fit: coarse vectors need {resident / 2**30:.1f} GiB resident, budget "
                      f"{budget / 2**30:.0f} GiB")
        return row
    if n * fbytes > shutil.disk_usage(workdir).free // 2:  # full paper-size fine features: 2 MiB per image
        row.status = f"does not fit: fine features need {n * fbytes / 2**30:.0f} GiB of disk (the *-full modes)"
        return row
    t0 = time.perf_counter()
    m = random_map(mode, n, content, workdir)
    row.extra["build_s"] = round(time.perf_counter() - t0, 2)
    loc = Localizer(m, None, None, SearchConfig(device=device))
    row.backend = loc.index.backend
    t = time_queries(loc, content, queries)
    row.coarse_ms, row.fine_ms, row.total_ms = t["coarse_search"], t["fine_rerank"], t["total"]
    if s.index == "flat" and device == "cpu":  # every query streams the map vectors and the PCA matrix once
        scanned = resident + (m.pca.components.nbytes if m.pca is not None else 0)
        row.bound_ms = scanned / (bandwidth * 1e9) * 1e3
    del m, loc
    shutil.rmtree(workdir / f"map_{mode}_{n}")
    return row


def _fmt(v: float, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def render_table(rows: list[Row], loop_ms: dict[int, float]) -> str:
    head = (f"{'mode':<8} {'N':>7} {'device':<6} {'backend':<7} {'coarse ms':>10} {'fine ms':>8} {'total ms':>9} "
            f"{'bound ms':>9} {'x bound':>7} {'RAM KiB/img':>11} {'disk KiB/img':>12} {'vs loop':>9}  status")
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = r.coarse_ms / r.bound_ms if r.bound_ms == r.bound_ms and r.bound_ms > 0 else math.nan
        lines.append(f"{r.mode:<8} {r.n:>7} {r.device:<6} {r.backend or '-':<7} {_fmt(r.coarse_ms, 3):>10} "
                     f"{_fmt(r.fine_ms, 3):>8} {_fmt(r.total_ms, 3):>9} {_fmt(r.bound_ms, 3):>9} {_fmt(ratio):>7} "
                     f"{_fmt(r.ram_kib_per_image, 1):>11} {_fmt(r.disk_kib_per_image, 1):>12} "
                     f"{_fmt(r.speedup_vs_loop, 0) + 'x' if r.speedup_vs_loop == r.speedup_vs_loop else '-':>9}  "
                     f"{r.status}")
    lines.append("")
    lines.append("reference loop (per-image torch CosineSimilarity over float32 maps; timed on a subset and "
                 "EXTRAPOLATED linearly): " + ", ".join(f"N={n}: {ms / 1e3:.2f} s/query" for n, ms in loop_ms.items()))
    return "\n".join(lines)


def check_goals(rows: list[Row], loop_ms: dict[int, float]) -> dict[str, Any]:
    """The three targets of the retrieval design, evaluated on the rows that ran."""
    ok_rows = [r for r in rows if r.status == "ok"]
    at10k = [r for r in ok_rows if r.n == 10_000 and r.device == "cpu"]
    exact_cpu = [r for r in ok_rows if r.mode == "exact" and r.device == "cpu" and r.bound_ms == r.bound_ms]
    compact = [r for r in rows if r.mode in ("pooled", "pca", "ivf", "hnsw")]
    return {
        "speedup_10k_min": min((r.speedup_vs_loop for r in at10k), default=math.nan),
        "speedup_10k_ok": bool(at10k) and all(r.speedup_vs_loop >= 100 for r in at10k),
        "exact_cpu_x_bound_max": max((r.coarse_ms / r.bound_ms for r in exact_cpu), default=math.nan),
        "exact_cpu_within_2x": bool(exact_cpu) and all(r.coarse_ms <= 2 * r.bound_ms for r in exact_cpu),
        "compact_kib_per_image_max": max((r.disk_kib_per_image for r in compact), default=math.nan),
        "compact_within_64kib": bool(compact) and all(r.disk_kib_per_image <= 64 for r in compact),
    }


def _modes(text: str) -> list[str]:
    modes = list(name_list(text))
    if unknown := [m for m in modes if m not in MODES]:
        raise argparse.ArgumentTypeError(f"unknown mode(s) {', '.join(unknown)}: use {', '.join(MODES)}")
    return modes


def _content(text: str) -> tuple[int, int, int]:
    dims = int_list(text)
    if len(dims) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not C,h,w: need three integers >= 1, e.g. 256,64,64")
    return dims[0], dims[1], dims[2]


def _device(text: str) -> str:
    if not re.fullmatch(r"all|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda, cuda:N or all")
    return text


def _parse(argv: list[str]) -> argparse.Namespace:
    """Every value checked here, so a typo is one line and exit 2 before minutes of map generation."""
    p = OneLineParser(prog="disam-bench retrieval", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1k images, tiny content shape, few queries")
    p.add_argument("--json", type=Path, help="write results as JSON here")
    p.add_argument("--sizes", type=int_list, default="1000,10000,100000", help="map sizes, comma-separated")
    p.add_argument("--modes", type=_modes, default=",".join(m for m in MODES), help="comma-separated")
    p.add_argument("--content", type=_content, default="256,64,64", help="content code C,h,w (paper: 256,64,64)")
    p.add_argument("--queries", type=positive_int, default=15)
    p.add_argument("--loop-subset", type=positive_int, default=128, help="map images the reference loop is timed on")
    p.add_argument("--device", type=_device, default="all", help="cpu, cuda[:N], or all (cuda when available)")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: torch's choice); set "
                   "OMP_NUM_THREADS and OPENBLAS_NUM_THREADS in the environment to pin the BLAS pools too")
    p.add_argument("--cpu-budget-gib", type=positive_float, default=CPU_BUDGET_BYTES / 2**30)
    args = p.parse_args(argv)
    check_output_files(p, args, "--json")
    return args


def _devices(choice: str) -> list[str]:
    if choice == "all":
        import torch

        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    resolve_device(choice)
    return [choice]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["accuracy"]:
        from disam_ros.bench.retrieval_accuracy import main as accuracy_main

        return accuracy_main(argv[1:])
    if argv[:1] == ["scale"]:
        from disam_ros.bench.retrieval_scale import main as scale_main

        return scale_main(argv[1:])
    args = _parse(argv)
    import torch

    sizes = [1000] if args.quick else args.sizes
    content = (64, 16, 16) if args.quick else args.content
    queries = 3 if args.quick else args.queries
    modes = args.modes
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    bandwidth = measure_bandwidth(256 << 20 if args.quick else 1 << 30)
    per_image = reference_loop_ms_per_image(content, 16 if args.quick else args.loop_subset)
    loop_ms = {n: per_image * n for n in sizes}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="disam-bench-retrieval-") as tmp:
        for device in _devices(args.device):
            budget = int(args.cpu_budget_gib * 2**30) if device == "cpu" else \
                int(0.8 * torch.cuda.get_device_properties(torch.device(device)).total_memory)
            for n in sizes:
                for mode in modes:
                    row = bench_case(mode, n, content, device, budget, Path(tmp), queries, bandwidth)
                    if row.status == "ok":
                        row.speedup_vs_loop = loop_ms[n] / row.total_ms
                    rows.append(row)
                    print(f"  {mode} N={n} {device}: {row.status} {_fmt(row.total_ms, 3)} ms", file=sys.stderr)
    goals = check_goals(rows, loop_ms)
    env = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_avg_1min": load_before,
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS")}
    print(f"content code {content}, memory bandwidth {bandwidth:.1f} GB/s (streaming read), {env}")
    print(render_table(rows, loop_ms))
    print("goals: " + json.dumps(goals))
    if args.json:
        out = {"content": content, "env": env, "bandwidth_gbs": bandwidth, "loop_ms_per_image": per_image,
               "loop_ms_extrapolated": loop_ms, "rows": [asdict(r) for r in rows], "goals": goals}
        atomic_write_text(args.json, json.dumps(out, indent=2))
    return 0
