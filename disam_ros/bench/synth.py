"""`disam-bench synth`: synthetic-world rendering speed per condition and size, and whole-world wall time.

Per-frame numbers are medians over a few frames of each condition's own traversal in one process
(so they do not depend on the pool); the whole-world number is the wall time of `make_world` for the
default demo world, with its worker pool, PNG writing and contact sheet included.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from disam_ros.cliutil import OneLineParser, check_output_files
from disam_ros.data.synthetic import WorldConfig, make_town, make_world, plan_traversal
from disam_ros.data.synthetic.conditions import CONDITIONS, get_condition
from disam_ros.data.synthetic.render import cast
from disam_ros.data.synthetic.shade import look_for, render
from disam_ros.fsutil import atomic_write_text
from disam_ros.geometry import quat_to_rot

DEMO = WorldConfig(image_size=128, frames=100)


def time_condition(cfg: WorldConfig, world, name: str, frames: int) -> dict:
    """Median seconds per frame for the full render and for the ray cast alone."""
    traj, _ = plan_traversal(cfg, world, name)
    cond, cam = get_condition(name), cfg.camera()
    look = look_for(world, cond, float(traj.stamps[0]))
    picks = np.linspace(0, len(traj) - 1, frames).astype(int)
    render(world, (traj.positions[0], traj.quats[0]), cam, cond, look=look)  # warm caches (shadow map)
    full, geo = [], []
    for k in picks:
        t0 = time.perf_counter()
        render(world, (traj.positions[k], traj.quats[k]), cam, cond, frame=int(k), look=look)
        t1 = time.perf_counter()
        cast(world, traj.positions[k], quat_to_rot(traj.quats[k]), cam, cond.foliage)
        full.append(t1 - t0)
        geo.append(time.perf_counter() - t1)
    return {"condition": name, "size": cam.width, "median_s": float(np.median(full)),
            "fps": 1.0 / float(np.median(full)), "cast_median_s": float(np.median(geo))}


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="disam-bench synth", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="128,256", help="comma-separated square image sizes")
    p.add_argument("--frames", type=int, default=5, help="frames timed per condition and size")
    p.add_argument("--conditions", default=",".join(CONDITIONS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--world", action=argparse.BooleanOptionalAction, default=True,
                   help="also time make_world for the default demo world (10 conditions x 100 frames, 128 px)")
    p.add_argument("--workers", type=int, default=DEMO.workers)
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    args = p.parse_args(argv)
    check_output_files(p, args, "--json")
    names = [n.strip() for n in args.conditions.split(",") if n.strip()]
    try:
        for n in names:
            get_condition(n)
    except ValueError as exc:
        p.exit(2, f"disam-bench synth: error: {exc}\n")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        cfg = WorldConfig(seed=args.seed, image_size=size, frames=100)
        world = make_town(cfg)
        rows += [time_condition(cfg, world, n, args.frames) for n in names]
    print(f"{'condition':<14}{'size':>6}{'ms/frame':>10}{'fps':>8}{'cast ms':>9}")
    for r in rows:
        print(f"{r['condition']:<14}{r['size']:>6}{1000 * r['median_s']:>10.1f}{r['fps']:>8.1f}"
              f"{1000 * r['cast_median_s']:>9.1f}")
    result = {"per_frame": rows}
    for size in sorted({r["size"] for r in rows}):
        med = float(np.median([r["median_s"] for r in rows if r["size"] == size]))
        result[f"median_fps_{size}"] = 1.0 / med
        print(f"all conditions {size}x{size}: median {1000 * med:.1f} ms/frame, {1.0 / med:.1f} fps (one process)")
    if args.world:
        cfg = WorldConfig(**{**DEMO.__dict__, "seed": args.seed, "workers": args.workers})
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            make_world(cfg, Path(tmp) / "world", progress=False)
            wall = time.perf_counter() - t0
        n = len(cfg.condition_names()) * cfg.frames
        result["demo_world"] = {"conditions": len(cfg.condition_names()), "frames": cfg.frames, "size": 128,
                                "workers": cfg.workers, "wall_s": wall, "frames_per_s": n / wall}
        print(f"demo world: {n} frames at 128x128 with {cfg.workers} workers in {wall:.1f} s ({n / wall:.1f} frames/s)")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
