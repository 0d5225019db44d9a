"""`disam-demo` (`make demo`): the whole product on the embedded synthetic world, from nothing.

1. render the synthetic town (reference drive + query drives under night, snow, fog, ...);
2. build the map from the reference drive with the shipped demo weights;
3. write each query drive as a rosbag2 (CompressedImage + CameraInfo + ground-truth pose);
4. start the localizer node, replay the bags into it over DDS (loopback), record what it publishes;
5. score it per condition and write the report (Markdown, JSON, plots).

Everything lands in --workdir (default runs/demo); steps whose output is already there are reused.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from disam_ros.ros import env  # noqa: F401  (loopback DDS before rclpy starts)

ASSETS = Path(__file__).resolve().parents[1] / "assets"
QUERY_CONDITIONS = ("sunny_repeat", "overcast", "dusk", "night", "snow", "fog", "rain", "summer", "autumn")
QUICK = dict(size=64, frames=12, conditions=("sunny_repeat", "night", "snow"))


def step(text: str, t0: float) -> None:
    print(f"[{time.monotonic() - t0:6.1f} s] {text}", flush=True)


def make_world(root: Path, size: int, frames: int, conditions: tuple[str, ...]) -> Path:
    from disam_ros.data.synthetic import WorldConfig
    from disam_ros.data.synthetic import make_world as render

    if (root / "world.yaml").is_file():
        return root
    cfg = WorldConfig(seed=0, image_size=size, frames=frames, conditions=("sunny", *conditions))
    return render(cfg, root, progress=True)


def build_map(world: Path, out: Path, coarse: Path, fine: Path) -> Path:
    from disam_ros.retrieval.build_map import main as build_main

    if (out / "manifest.json").is_file():
        return out
    rc = build_main(["--dataset", str(world), "--condition", "sunny", "--coarse", str(coarse), "--fine", str(fine),
                     "--out", str(out)])
    if rc:
        raise RuntimeError(f"building the map failed (exit code {rc})")
    return out


def write_bags(world: Path, out: Path, conditions: tuple[str, ...]) -> list[Path]:
    from disam_ros.data.bags import BagWriteOptions, write_folder_bag

    bags = []
    for cond in conditions:
        bag = out / cond
        if not bag.is_dir():
            write_folder_bag(world, cond, bag, BagWriteOptions(compression="jpeg"))
        bags.append(bag)
    return bags


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="disam-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="where everything is written")
    p.add_argument("--size", type=int, default=128, help="rendered image size (the models resize to 64)")
    p.add_argument("--frames", type=int, default=100, help="frames per drive")
    p.add_argument("--conditions", type=lambda s: tuple(c for c in s.split(",") if c), default=QUERY_CONDITIONS,
                   help="query drives (comma-separated)")
    p.add_argument("--rate", type=float, default=4.0, help="replay time factor")
    p.add_argument("--coarse", type=Path, default=ASSETS / "demo_coarse.pt", help="coarse checkpoint")
    p.add_argument("--fine", type=Path, default=ASSETS / "demo_fine.pt", help="fine checkpoint")
    p.add_argument("--quick", action="store_true", help="a 1-minute version: 64 px, 12 frames, 3 drives")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.size, args.frames, args.conditions = QUICK["size"], QUICK["frames"], QUICK["conditions"]
    for ckpt in (args.coarse, args.fine):
        if not ckpt.is_file():
            print(f"disam-demo: error: {ckpt}: checkpoint not found; pass --coarse/--fine or restore "
                  "disam_ros/assets from the repository", file=sys.stderr)
            return 2
    from disam_ros.ros.online_eval import Drive, camera_topic, evaluate_online, report_online

    t0, w = time.monotonic(), args.workdir
    w.mkdir(parents=True, exist_ok=True)
    step(f"1/5 synthetic world: {len(args.conditions) + 1} drives x {args.frames} frames at {args.size} px", t0)
    world = make_world(w / "world", args.size, args.frames, tuple(args.conditions))
    step("2/5 map from the reference drive (shipped demo weights)", t0)
    map_dir = build_map(world, w / "map", args.coarse, args.fine)
    step("3/5 query drives as rosbag2 (CompressedImage, CameraInfo, ground truth)", t0)
    from disam_ros.eval.queries import world_weather

    drives = []
    for bag in write_bags(world, w / "bags", tuple(args.conditions)):
        topic, compressed = camera_topic(bag)
        drives.append(Drive(bag.name, bag, world_weather(world, bag.name), topic, compressed))
    step(f"4/5 localizer node + replay of {len(drives)} bags at rate {args.rate:g} (node log: {w / 'report'}"
         "/node.log)", t0)
    report = w / "report"
    report.mkdir(parents=True, exist_ok=True)
    with open(report / "node.log", "w") as log:
        results, queries, answers = evaluate_online(map_dir, drives, report, rate=args.rate, log=log)
    step("5/5 scoring", t0)
    rows, paths = report_online(map_dir, results, queries, answers, report, {"demo": str(w), "rate": args.rate})
    print("\n".join(rows))
    print(f"\nreport: {paths['markdown']}\nplots:  {', '.join(str(p) for k, p in paths.items() if k != 'markdown')}")
    step("done", t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
