"""`disam-bench threads`: the runtime's CPU work at 1, 2, 4 and all threads, the table the default comes from.

Three workloads, as the product runs them: one frame through the shipped real encoder (the node and `disam-eval`,
per frame), a batch of 32 frames (map building, per image), and the coarse search of one query against a map of
1k and 10k descriptors of that encoder's size (exact float32, the node's default index on CPU). Medians of
`--reps` timed calls after one warm-up. Thread counts above the machine's cores are measured too: they show what
oversubscription costs.

    disam-bench threads [--counts 1,2,4,all] [--reps 20] [--json out.json]
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from disam_ros.bench.model import _median_ms
from disam_ros.bench.output import emit
from disam_ros.cliutil import OneLineParser, check_output_files
from disam_ros.retrieval.index import TorchFlatIndex
from disam_ros.shipped import shipped_path
from disam_ros.threads import DEFAULT_MAX_THREADS, available_cpus, default_threads


def median_ms(fn: Callable[[], object], reps: int) -> float:
    """Median ms of `reps` calls after one warm-up (the model suite's timer, on the CPU)."""
    import torch  # here and below, not at import: a typo or --help answers without loading torch

    return _median_ms(fn, torch.device("cpu"), reps)


def thread_counts(text: str) -> list[int]:
    """'1,2,4,all' -> sorted distinct counts, 'all' = this process's cores."""
    out = set()
    for part in text.split(","):
        part = part.strip()
        out.add(available_cpus() if part == "all" else int(part))
    if not out or min(out) < 1:
        raise ValueError(f"--counts {text!r}: give thread counts >= 1 or 'all', e.g. --counts 1,2,4,all")
    return sorted(out)


def measure(threads: int, reps: int, map_sizes: tuple[int, ...]) -> dict:
    import torch

    from disam_ros.model import Encoder

    torch.set_num_threads(threads)
    enc = Encoder.from_checkpoint(shipped_path("real"), device="cpu")
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    row = {"threads": threads, "encode_frame_ms": median_ms(lambda: enc.encode([frame], enc.domains[0]), reps)}
    batch = [frame] * 32
    row["build_ms_per_image"] = median_ms(lambda: enc.encode(batch, enc.domains[0]), max(3, reps // 5)) / 32
    dim = int(np.prod(enc.content_shape))
    q = torch.from_numpy(rng.standard_normal(dim, dtype=np.float32))
    for n in map_sizes:
        index = TorchFlatIndex(rng.standard_normal((n, dim), dtype=np.float32), torch.device("cpu"))
        row[f"search_{n // 1000}k_ms"] = median_ms(lambda index=index: index.search(q, 10), reps)
    return row


def format_table(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k != "threads"]
    lines = ["| threads | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['threads']} | " + " | ".join(f"{r[k]:.2f}" for k in keys) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="disam-bench threads", description=__doc__.splitlines()[0])
    p.add_argument("--counts", default="1,2,4,all", help="thread counts, comma-separated ('all' = this machine's)")
    p.add_argument("--reps", type=int, default=20, help="timed calls per point (median)")
    p.add_argument("--map-sizes", default="1000,10000", help="map sizes for the search row")
    p.add_argument("--json", help="also write the results as JSON here")
    args = p.parse_args(argv)
    check_output_files(p, args, "--json")
    try:
        counts = thread_counts(args.counts)
        sizes = tuple(int(s) for s in args.map_sizes.split(","))
    except ValueError as e:
        p.error(str(e))
    if args.reps < 1 or min(sizes) < 1:
        p.error("--reps and --map-sizes must be >= 1, e.g. --reps 20 --map-sizes 1000")
    import torch

    before = torch.get_num_threads()
    rows = [measure(n, args.reps, sizes) for n in counts]
    torch.set_num_threads(before)
    emit("threads", rows, format_table(rows), args.json, cpus=available_cpus(), torch_default_threads=before,
         product_default=default_threads(), cap=DEFAULT_MAX_THREADS, torch=torch.__version__)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
