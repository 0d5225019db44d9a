"""Training throughput: iterations/s of the real training step per preset and recipe (table + JSON).

    disam-bench training [--presets micro tiny small] [--recipes translation coarse fine] [--paper]
                         [--device cpu|cuda] [--threads 1] [--json out.json]

One iteration = one generator step (both directions) + one discriminator step, as in `Trainer.train_step`,
on a fixed batch of a throw-away toy world (decoding is not timed). coarse/fine are timed in the hard-negative
phase (K candidates per direction), their expensive end. `--paper` adds the paper preset (256 px, ngf 64,
batch 1) for a couple of iterations: minutes per iteration set on a CPU.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from disam_ros.cliutil import OneLineParser, check_output_files
from disam_ros.fsutil import atomic_write_text

BATCH = {"micro": 4, "tiny": 4, "small": 2, "paper": 1}
ITERS = {"micro": 10, "tiny": 8, "small": 4, "paper": 2}


def toy_world(root: Path, size: int, places: int = 12) -> Path:
    """Three conditions of random block images: enough for a dataset, no rendering cost."""
    rng = np.random.default_rng(0)
    for c, gain in (("sunny", 1.0), ("night", 0.3), ("snow", 0.7)):
        (root / c / "images").mkdir(parents=True)
        for p in range(places):
            img = cv2.resize(rng.integers(0, 256, (6, 6, 3)).astype(np.uint8), (size, size),
                             interpolation=cv2.INTER_NEAREST)
            cv2.imwrite(str(root / c / "images" / f"{p:06d}.png"), (img * gain).astype(np.uint8))
    return root


def bench_one(world: Path, out: Path, preset: str, recipe: str, device: str, threads: int, k: int) -> dict:
    """Seconds per iteration (median of ITERS after two warm-up iterations) on a fixed batch."""
    # torch and the trainer are imported here, not at import: a typo or --help answers without loading torch
    import torch
    from torch.utils.data import default_collate

    from disam_ros.training.config import load_recipe
    from disam_ros.training.datasets import PairKey
    from disam_ros.training.trainer import Trainer

    b = BATCH[preset]
    r = load_recipe(recipe, [f"model.preset={preset}", f"batch_size={b}", "data.reference=sunny", f"device={device}",
                             f"threads={threads}", "progress=false", "schedule.ramp_keys=[]", f"num_negatives={k}",
                             "data.train_fraction=1.0", "pool_size=50"])
    t = Trainer(r, world, out)
    hard = t.base_weights.triplet_fcl > 0 or t.base_weights.triplet_sam > 0
    batch = default_collate([t.dataset[PairKey(0, n, 0, 1, hard)] for n in range(b)])
    times = []
    for i in range(2 + ITERS[preset]):
        t0 = time.perf_counter()
        t.train_step(batch)
        if t.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    s = float(np.median(times))
    return {"preset": preset, "recipe": recipe, "batch": b, "negatives": k if hard else 0,
            "image_size": t.cfg.image_size, "s_per_it": s, "it_per_s": 1.0 / s, "images_per_s": 2 * b / s}


def run(args: argparse.Namespace) -> dict:
    import torch

    presets = list(args.presets) + (["paper"] if args.paper else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            size = {"micro": 32, "tiny": 64, "small": 128, "paper": 256}[preset]
            world = toy_world(Path(tmp) / f"world{size}", size)
            for recipe in args.recipes:
                rows.append(bench_one(world, Path(tmp) / f"run-{preset}-{recipe}", preset, recipe, args.device,
                                      args.threads, args.negatives))
                print(_row(rows[-1]), flush=True)
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    return {"torch": torch.__version__, "device": device, "threads": torch.get_num_threads(), "rows": rows}


def _row(r: dict) -> str:
    return (f"| {r['preset']} | {r['image_size']} | {r['recipe']} | {r['batch']} | {r['negatives']} | "
            f"{r['s_per_it']:.3f} | {r['it_per_s']:.2f} | {r['images_per_s']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="disam-bench training", description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="*", default=["micro", "tiny", "small"])
    p.add_argument("--recipes", nargs="*", default=["translation", "coarse", "fine"])
    p.add_argument("--paper", action="store_true", help="also the paper preset (slow on CPU)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy CPU)")
    p.add_argument("--negatives", type=int, default=10, help="K hard-negative candidates for coarse/fine")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    check_output_files(p, args, "--json")
    print("| preset | px | recipe | batch | K | s/it | it/s | img/s |\n|---|---|---|---|---|---|---|---|", flush=True)
    result = run(args)
    print(json.dumps(result, indent=1))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
