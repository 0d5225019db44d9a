"""`disam-demo` (`make demo`): the whole product on the embedded synthetic world, from nothing.

1. render the synthetic town (reference drive + query drives under night, snow, fog, ...);
2. build the map from the reference drive with the shipped demo weights;
3. write each query drive as a rosbag2 (CompressedImage + CameraInfo + ground-truth pose);
4. start two localizer nodes, one in sequence mode (the default: a Bayes filter over the drive) and one in
   single-frame mode (the paper's retrieval), replay the bags into both at once over DDS (loopback; by default
   each frame waits for both nodes' answers, so the figures do not depend on how busy the machine is), record
   what they publish;
5. score them per condition and write the report (Markdown, JSON, plots): the detailed tables for the
   sequence node, both modes side by side (R@1, coverage, precision, ECE, NEES), and at the end the
   retrieval-only against refined rows per condition and mode (the three thresholds for the map place's pose
   and for the published, verified-and-refined pose; verified share, precision, largest error, refine time).

Everything lands in --workdir (default runs/demo); steps whose output is already there are reused.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from disam_ros.cliutil import (
    OneLineParser,
    image_size,
    name_list,
    os_error_line,
    output_dir_error,
    positive_int,
)
from disam_ros.ros import env
from disam_ros.ros.pace import add_pace_options, pace_from_args
from disam_ros.shipped import ASSETS

QUERY_CONDITIONS = ("sunny_repeat", "overcast", "dusk", "night", "snow", "fog", "rain", "summer", "autumn",
                    "sunny_repeat_dense")  # the last filmed at camera rate (0.3-0.4 m apart): optical flow shows there
# 640x480: local features exist, so the nodes verify and publish metric poses (at 128 px they cannot); the
# drives are short (16 frames, 48 m) because rendering and SIFT at this size cost ~0.7 s and ~0.3 s a frame
QUICK = dict(size=(320, 240), frames=12, conditions=("sunny_repeat", "night", "snow"))
FULL = dict(size=(640, 480), frames=16, conditions=QUERY_CONDITIONS)


def step(text: str, t0: float) -> None:
    print(f"[{time.monotonic() - t0:6.1f} s] {text}", flush=True)


def make_world(root: Path, size: tuple[int, int], frames: int, conditions: tuple[str, ...]) -> Path:
    from disam_ros.data.synthetic import WorldConfig
    from disam_ros.data.synthetic import make_world as render

    if (root / "world.yaml").is_file():
        return root
    cfg = WorldConfig(seed=0, image_size=size, frames=frames, conditions=("sunny", *conditions))
    return render(cfg, root, progress=True)


def build_map(world: Path, out: Path, coarse: Path, fine: Path) -> Path:
    from disam_ros.maps import MapBuildConfig, build_map_from_folder

    manifest = out / "manifest.json"
    if manifest.is_file():
        geometry = json.loads(manifest.read_text()).get("geometry") or {}
        if geometry.get("gradients"):
            return out
        print(f"the map in {out} was built before dense-search descriptors: rebuilding it", flush=True)
    return build_map_from_folder(MapBuildConfig(out=out, dataset=world, condition="sunny", coarse=coarse, fine=fine,
                                                overwrite=manifest.is_file()))


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
    p = OneLineParser(prog="disam-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="where everything is written")
    p.add_argument("--size", type=image_size, help="rendered image size WIDTHxHEIGHT (default 640x480; the models "
                   "resize to 64, verification uses the full image)")
    p.add_argument("--frames", type=positive_int, help=f"frames per drive (default {FULL['frames']})")
    p.add_argument("--conditions", type=name_list,
                   help=f"query drives, comma-separated, from {', '.join(QUERY_CONDITIONS)} (default: all)")
    # --pace realtime's default rate 0.5: each node verifies a 640x480 frame in ~0.3 s on a 2-core CPU
    add_pace_options(p, rate=0.5)
    p.add_argument("--coarse", type=Path, default=ASSETS / "demo_coarse.pt", help="coarse checkpoint")
    p.add_argument("--fine", type=Path, default=ASSETS / "demo_fine.pt", help="fine checkpoint")
    p.add_argument("--quick", action="store_true", help="a 1-minute version: 320x240 px, 12 frames, 3 drives (options "
                   "given explicitly still win)")
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill what the user left out from the full or --quick preset; ValueError (one line) for a bad value,
    found before anything is rendered."""
    preset = QUICK if args.quick else FULL
    args.pace = pace_from_args(args)
    for key in ("size", "frames", "conditions"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    unknown = [c for c in args.conditions if c not in QUERY_CONDITIONS]
    if unknown:
        raise ValueError(f"unknown condition(s) {', '.join(unknown)}: --conditions takes {', '.join(QUERY_CONDITIONS)}")
    for ckpt in (args.coarse, args.fine):
        if not ckpt.is_file():
            raise ValueError(f"{ckpt}: checkpoint not found; pass --coarse/--fine or restore disam_ros/assets from "
                             "the repository")
    from disam_ros.model.checkpoint import read_checkpoint

    for ckpt in (args.coarse, args.fine):
        read_checkpoint(ckpt)  # memory-mapped, cheap: a bad file fails here (one line), not after rendering
    if problem := output_dir_error(args.workdir, "--workdir"):
        raise ValueError(problem)
    return args


def check_world(world: Path, conditions: tuple[str, ...]) -> None:
    """A reused workdir may hold a world rendered for other drives: say so instead of failing inside a step."""
    missing = [c for c in conditions if not (world / c / "images").is_dir()]
    if missing:
        raise ValueError(f"{world} was rendered without {', '.join(missing)}: use a fresh --workdir (or delete "
                         "its world/ folder) to render them")


def slam_step(report: Path) -> None:
    """What the hints do for a SLAM back end: disam-slam-eval on the sequence node's published hints."""
    from disam_ros.eval.slam_eval import SlamEvalConfig
    from disam_ros.eval.slam_eval import evaluate as evaluate_slam

    print()
    evaluate_slam(SlamEvalConfig(report / "modes.jsonl", report / "slam", mode="sequence"), progress=False)
    print(f"\nback end: {report / 'slam' / 'report.md'}, {report / 'slam' / 'trajectories.png'}")


def run(args: argparse.Namespace) -> int:
    """The five steps; errors propagate to main, which prints them as one line."""
    from disam_ros.ros.online_eval import DEFAULT_MODES, Drive, camera_topic, evaluate_online_modes, report_online

    t0, w = time.monotonic(), args.workdir
    w.mkdir(parents=True, exist_ok=True)
    step(f"1/6 synthetic world: {len(args.conditions) + 1} drives x {args.frames} frames at "
         f"{args.size[0]}x{args.size[1]} px", t0)
    world = make_world(w / "world", args.size, args.frames, tuple(args.conditions))
    check_world(world, tuple(args.conditions))
    step("2/6 map from the reference drive (shipped demo weights)", t0)
    map_dir = build_map(world, w / "map", args.coarse, args.fine)
    step("3/6 query drives as rosbag2 (CompressedImage, CameraInfo, ground truth)", t0)
    from disam_ros.eval.queries import world_weather

    drives = []
    for bag in write_bags(world, w / "bags", tuple(args.conditions)):
        topic, compressed = camera_topic(bag)
        drives.append(Drive(bag.name, bag, world_weather(world, bag.name), topic, compressed))
    step(f"4/6 localizer nodes ({' and '.join(DEFAULT_MODES)} mode) + replay of {len(drives)} bags "
         f"{args.pace.describe()} (node log: {w / 'report'}/node.log)", t0)
    report = w / "report"
    report.mkdir(parents=True, exist_ok=True)
    with open(report / "node.log", "w") as log:
        runs, queries = evaluate_online_modes(map_dir, drives, report, DEFAULT_MODES, args.pace, log=log,
                                              progress=lambda line: step(f"    {line}", t0))
    step("5/6 scoring", t0)
    rows, paths = report_online(map_dir, runs, queries, report, {"demo": str(w), "replay": args.pace.describe()})
    print("\n".join(rows))
    print(f"\nreport: {paths['markdown']}\nplots:  {', '.join(str(p) for k, p in paths.items() if k != 'markdown')}")
    step("6/6 pose-graph back end (GTSAM) on the sequence node's loop-closure hints, drifting odometry, evo", t0)
    slam_step(report)
    step("done", t0)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env.isolated_env()  # the demo's own DDS graph: loopback and a private random domain, before any rclpy
    try:
        return run(resolve_args(args))
    except (ValueError, RuntimeError) as exc:  # BagError, ReplayError and bad values included
        print(f"disam-demo: error: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"disam-demo: error: {os_error_line(exc, 'choose another --workdir')}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
