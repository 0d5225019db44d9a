"""`disam-bench sequence`: time of one sequence-localizer update (predict + correct + estimate) per map size.

The map is a road driven several times (drives 2 m apart, so every place has transfer edges), places
1 m apart; stamps advance 1 s, so the speed band and its cached ranges are those of a steady drive. Every
frame brings a full score vector (N,), either random values (`--scores random`, the default: a vehicle
that is lost, the filter's worst case, since nothing concentrates its belief) or a drive along the road
at 1 m/s whose place scores d' = 2.8 above correlated noise (`--scores drive`: a vehicle being tracked).
Maps above `SequenceLocalizer.exact_cells` cells run the sparse belief; `--dense` times the exact dense
filter instead. The goal is <= 2 ms at 100k places on one core for the default (sequence) mode.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np

from disam_ros.bench.output import emit
from disam_ros.cliutil import OneLineParser, check_output_files
from disam_ros.tracking.place_graph import PlaceGraph
from disam_ros.tracking.sequence import SEQUENCE_MODES, ObservationModel, SequenceConfig, SequenceLocalizer

DRIVES = 4
SCORES = ("random", "drive")


class DenseLocalizer(SequenceLocalizer):
    """The exact dense filter whatever the map size (the reference the sparse belief is measured against)."""

    exact_cells = 1 << 62


def synthetic_map(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n places on DRIVES parallel passes of one road, 1 m apart along it and 2 m across."""
    per = -(-n // DRIVES)
    i = np.arange(n)
    pos = np.stack([(i % per).astype(np.float64), 2.0 * (i // per), np.zeros(n)], axis=1)
    return pos, i // per


def frame_scores(pos: np.ndarray, count: int, kind: str, seed: int) -> np.ndarray:
    """(count, N) float32 score vectors: random, or a 1 m/s drive (d' 2.8 over noise correlated 0.5 frame
    to frame) starting a quarter along the road."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.normal(0.3, 0.05, (count, len(pos))).astype(np.float32)
    out, noise, x0 = np.empty((count, len(pos)), np.float32), rng.normal(0, 1, len(pos)), pos[:, 0].max() / 4
    for k in range(count):
        noise = 0.5 * noise + np.sqrt(0.75) * rng.normal(0, 1, len(pos))
        out[k] = noise + 2.8 * np.exp(-0.5 * (pos[:, 0] - x0 - k) ** 2)
    return out


def time_updates(n: int, mode: str, frames: int, speed_bins: int = 6, seed: int = 0, dense: bool = False,
                 scores: str = "random") -> dict:
    pos, drives = synthetic_map(n)
    t0 = time.perf_counter()
    graph = PlaceGraph.build(pos, drives)
    build_ms = (time.perf_counter() - t0) * 1e3
    cfg = replace(SequenceConfig(), mode=mode, max_speed_mps=3.0, speed_bins=speed_bins)
    loc = (DenseLocalizer if dense else SequenceLocalizer)(graph, cfg, ObservationModel(gain=0.5))
    s = frame_scores(pos, frames + 1 if scores == "drive" else min(frames + 1, 16), scores, seed)
    loc.update(s[0], 0.0)  # warm-up: first frame has no motion step, ranges get cached
    ms = []
    for k in range(1, frames + 1):
        t = time.perf_counter()
        loc.update(s[k % len(s)], float(k))
        ms.append((time.perf_counter() - t) * 1e3)
    path = "-" if mode != "sequence" else ("sparse" if loc._sparse is not None else "dense")
    return {"places": n, "mode": mode, "frames": frames, "median_ms": float(np.median(ms)),
            "p90_ms": float(np.percentile(ms, 90)), "graph_build_ms": build_ms, "speed_bins": cfg.speed_bins,
            "transfer_edges": int(len(graph.xfer_src)), "belief": path, "scores": scores,
            "support": int(len(loc._sparse.support)) if loc._sparse is not None else None}


def format_table(rows: list[dict]) -> str:
    head = (f"{'places':>8}  {'mode':>8}  {'bins':>4}  {'belief':>6}  {'scores':>6}  {'median ms':>9}  {'p90 ms':>7}  "
            f"{'graph build ms':>14}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['places']:>8}  {r['mode']:>8}  {r['speed_bins']:>4}  {r['belief']:>6}  {r['scores']:>6}  "
                     f"{r['median_ms']:>9.3f}  {r['p90_ms']:>7.3f}  {r['graph_build_ms']:>14.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="disam-bench sequence", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000", help="comma-separated map sizes (places)")
    p.add_argument("--modes", default="sequence", help=f"comma-separated modes from {','.join(SEQUENCE_MODES)}")
    p.add_argument("--frames", type=int, default=50, help="timed updates per point")
    p.add_argument("--speed-bins", default="6", help="comma-separated speed bins of the filter (default 6)")
    p.add_argument("--scores", default="random", choices=SCORES, help="random (a lost vehicle) or drive (tracked)")
    p.add_argument("--dense", action="store_true", help="time the exact dense filter at every size")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON here")
    args = p.parse_args(argv)
    check_output_files(p, args, "--json")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in SEQUENCE_MODES]
    if bad or any(s < 2 for s in sizes) or args.frames < 1:
        p.error(f"modes must be from {list(SEQUENCE_MODES)} (got {bad}), sizes >= 2 and --frames >= 1")
    bins = [int(b) for b in args.speed_bins.split(",") if b.strip()]
    rows = [time_updates(n, m, args.frames, k, dense=args.dense, scores=args.scores) for n in sizes for m in modes
            for k in (bins if m == "sequence" else [1])]
    emit("sequence", rows, format_table(rows), args.json, cpus=os.cpu_count())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
