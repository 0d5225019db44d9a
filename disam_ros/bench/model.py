"""`disam-bench model`: parameter counts and encoder latency per preset.

Latency is the median over `--reps` timed runs after one warm-up, reported per image, at batch 1 (the
localizer's case) and batch 8 (map building). On CUDA float16 + channels_last is measured as well.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from disam_ros.bench.output import emit
from disam_ros.cliutil import OneLineParser, check_output_files
from disam_ros.model.config import PRESETS

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch (and the model's networks) is imported where it is used, so that a typo or --help answers without loading it

BENCH_DOMAINS = ("a", "b")
BATCHES = (1, 8)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_counts(name: str) -> dict[str, int]:
    """Per-domain module sizes and the total of a 2-domain model (built on the meta device: free)."""
    import torch

    from disam_ros.model.config import preset
    from disam_ros.model.networks import DisamNet

    cfg = preset(name, BENCH_DOMAINS)
    with torch.device("meta"):
        net = DisamNet(cfg)
    d = BENCH_DOMAINS[0]
    return {
        "encoder": _count(net.encoders[d]),
        "decoder": _count(net.decoders[d]),
        "discriminator": _count(net.discriminators[d]),
        "total_2_domains": _count(net),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    fn()  # warm-up: allocator, cudnn autotune, lazy init
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def encoder_latency(name: str, device: torch.device, reps: int, half: bool = False) -> dict[str, float]:
    """Median ms per image of one encoder at each batch size."""
    import torch

    from disam_ros.model.config import preset
    from disam_ros.model.networks import build_encoder

    cfg = preset(name, BENCH_DOMAINS)
    torch.manual_seed(0)
    dtype = torch.float16 if half else torch.float32
    fmt = torch.channels_last if half else torch.contiguous_format
    enc = build_encoder(cfg).to(device=device, dtype=dtype, memory_format=fmt).eval()
    out = {}
    for b in BATCHES:
        x = torch.rand(b, cfg.in_channels, cfg.image_size, cfg.image_size, device=device).mul(2).sub(1)
        x = x.to(dtype=dtype, memory_format=fmt)
        with torch.inference_mode():
            out[f"b{b}_ms_per_image"] = _median_ms(lambda x=x: enc(x), device, reps) / b
    return out


def _reps_for(name: str, device: torch.device, reps: int | None) -> int:
    if reps is not None:
        return reps
    return 3 if (name == "paper" and device.type == "cpu") else 10


def run(presets: list[str], device: torch.device, reps: int | None) -> list[dict]:
    import torch

    from disam_ros.model.config import preset

    rows = []
    for name in presets:
        cfg = preset(name, BENCH_DOMAINS)
        r = _reps_for(name, device, reps)
        modes = [("fp32", False)] + ([("fp16+cl", True)] if device.type == "cuda" else [])
        for mode, half in modes:
            row = {"preset": name, "image_size": cfg.image_size, "content_shape": list(cfg.content_shape),
                   "device": str(device), "mode": mode, "reps": r, "threads": torch.get_num_threads()}
            row.update(param_counts(name))
            row.update(encoder_latency(name, device, r, half=half))
            rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    cols = [("preset", "preset"), ("image_size", "size"), ("content_shape", "content"), ("mode", "mode"),
            ("encoder", "enc params"), ("decoder", "dec params"), ("discriminator", "disc params"),
            ("total_2_domains", "total (2 dom)"), ("b1_ms_per_image", "b1 ms/img"), ("b8_ms_per_image", "b8 ms/img")]

    def cell(row: dict, key: str) -> str:
        v = row[key]
        if key == "content_shape":
            return "x".join(map(str, v))
        if isinstance(v, float):
            return f"{v:.1f}"
        if isinstance(v, int) and key not in ("image_size",):
            return f"{v / 1e6:.2f}M"
        return str(v)

    cells = [[h for _, h in cols]] + [[cell(r, k) for k, _ in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="disam-bench model", description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="paper,small,tiny",
                   help="comma-separated presets from " + ",".join(PRESETS) + " (default paper,small,tiny)")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (default)")
    p.add_argument("--reps", type=int, default=None, help="timed runs per point (default 3 for paper on CPU, else 10)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON here")
    args = p.parse_args(argv)
    check_output_files(p, args, "--json")
    import torch

    from disam_ros.model.inference import resolve_device

    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        p.error(f"unknown presets {unknown}: valid presets are {list(PRESETS)}")
    if args.reps is not None and args.reps < 1:
        p.error("--reps must be >= 1")
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        p.error(str(e))
    rows = run(names, device, args.reps)
    emit("model", rows, format_table(rows), args.json, torch=torch.__version__)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
