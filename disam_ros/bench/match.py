"""`disam-bench match`: local feature matching across conditions, the same numbers for every method.

Why: the product's weak spot is local matching across conditions (night, rain, snow: few frames solve a pose).
Before any learned detector/descriptor is trained, this fixes how it will be judged, with SIFT and ORB as the
baselines (methods: disam_ros/bench/match_methods.py; a new one registers a `detect_and_describe`). Parts:
- `webcams`: webcams_dev night frames against their camera's brightest frame; truth = the identity
  (match_webcams.py): recovered %, MMA@3/5/10 px, median inliers, ms per frame;
- `synth`: the synthetic town (held-out seed 11, 640x480), a daylight map frame against the nearest query frame
  of each other condition; truth = rendered depth + poses (match_synth.py): MMA@5/10/20 px and the PnP pose
  within the product's buckets;
- `gardens`: Gardens Point mini, day against night, right place's fundamental-matrix inliers against the best
  wrong place's (match_gardens.py).
Matching everywhere: brute force, ratio 0.8, mutual; OpenCV on one thread (timings are single-thread).

    disam-bench match [--parts webcams,synth,gardens] [--methods sift,orb,sift_map] [--pairs 15] [--json out.json]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2

from disam_ros.bench.match_methods import METHODS, learned_method, method_names, register
from disam_ros.bench.output import emit
from disam_ros.cliutil import OneLineParser, check_output_files, image_size, name_list, non_negative_int, positive_int

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
PARTS = ("webcams", "synth", "gardens")
DEFAULT_CONDITIONS = "sunny_repeat,overcast,dusk,night,rain,snow,fog"
HELD_OUT_SEED = 11  # docs/notes/pose.md: the unseen town, which chose no threshold


def methods_arg(text: str) -> tuple[str, ...]:
    try:
        return method_names(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parts_arg(text: str) -> tuple[str, ...]:
    parts = name_list(text)
    if unknown := [p for p in parts if p not in PARTS]:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    return parts


def conditions_arg(text: str) -> tuple[str, ...]:
    from disam_ros.data.synthetic.conditions import CONDITIONS

    names = name_list(text)
    if bad := [c for c in names if c not in CONDITIONS or c == "sunny"]:
        raise argparse.ArgumentTypeError(f"condition(s) {', '.join(bad)} cannot be queries: choose from "
                                         f"{', '.join(c for c in CONDITIONS if c != 'sunny')} (sunny is the map)")
    return names


def parser() -> OneLineParser:
    p = OneLineParser(prog="disam-bench match", description=__doc__.splitlines()[0])
    p.add_argument("--parts", type=parts_arg, default=PARTS, help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument("--methods", type=methods_arg, default=("sift", "orb", "sift_map"),
                   help=f"comma-separated, of {', '.join(METHODS)} (default sift,orb,sift_map)")
    p.add_argument("--data", type=Path, default=SHARED_DATA, help="folder holding webcams_dev and gardens_point_mini")
    p.add_argument("--webcams", type=Path, help="webcams: a collection in webcams_dev's layout (camera folders and "
                   "frames.csv; default DATA/webcams_dev), e.g. the cameras held back from it")
    p.add_argument("--gardens", type=Path, help="gardens: a day/night pair set in gardens_point_mini's layout "
                   "(query/ and ref/ numbered alike; default DATA/gardens_point_mini)")
    p.add_argument("--frames", type=non_negative_int, default=0,
                   help="webcams: night frames per camera, evenly spread (default 0: all)")
    p.add_argument("--world", type=Path, help="synth: a town folder to reuse, or to render into and keep (default: "
                   "rendered into a temporary folder)")
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="synth: town seed (default 11, held out)")
    p.add_argument("--size", type=image_size, default=(640, 480), help="synth: image size (default 640x480)")
    p.add_argument("--pairs", type=positive_int, default=15, help="synth: pairs per condition (default 15)")
    p.add_argument("--conditions", type=conditions_arg, default=conditions_arg(DEFAULT_CONDITIONS),
                   help=f"synth: query conditions (default {DEFAULT_CONDITIONS})")
    p.add_argument("--keypoints", type=Path, help="learned: a network from disam-train-keypoints (default: the "
                   "shipped one)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", help="also write the rows as JSON here")
    return p


DEV_COPIES = {"webcams": "webcams_dev", "gardens": "gardens_point_mini"}


def part_root(args: argparse.Namespace, part: str) -> Path:
    """The folder a real-data part reads: its own option, else its development copy under --data."""
    own = getattr(args, part, None)
    return Path(own) if own is not None else args.data / DEV_COPIES[part]


def missing_data(args: argparse.Namespace) -> str | None:
    """The first data folder a requested part needs and cannot find, as the error line naming the fix."""
    for part, marker in (("webcams", "frames.csv"), ("gardens", "ref")):
        root = part_root(args, part)
        if part in args.parts and not (root / marker).exists():
            if getattr(args, part, None) is not None:
                return f"--{part} {root}: no {marker} there: give a folder in the {root.name} layout or drop --{part}"
            return (f"--data {args.data}: no {root.name}/{marker} there: point --data at the folder holding "
                    f"{root.name} (../shared/data), give --{part} DIR, or leave the part out with --parts")
    if args.world is not None and args.world.exists() and not (args.world / "world.yaml").is_file() \
            and any(args.world.iterdir()):
        return f"--world {args.world}: a non-empty folder without world.yaml: give a town folder or a new path"
    return None


def bar(args: argparse.Namespace, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=args.quiet, file=sys.stderr, leave=False)


def run_parts(args: argparse.Namespace) -> list[dict]:
    from disam_ros.bench.match_gardens import gardens_images, run_gardens
    from disam_ros.bench.match_synth import render_town, run_synth
    from disam_ros.bench.match_webcams import run_webcams, webcam_pairs

    rows: list[dict] = []
    if "webcams" in args.parts:
        root = part_root(args, "webcams")
        with bar(args, len(webcam_pairs(root, args.frames)) * len(args.methods), "webcams") as b:
            rows += run_webcams(root, args.methods, args.frames, b.update)
    if "synth" in args.parts:
        with tempfile.TemporaryDirectory(prefix="disam-match-") as tmp:
            if not args.quiet:
                print(f"rendering the town (seed {args.seed}) ...", file=sys.stderr, flush=True)
            world = render_town(args.world or Path(tmp) / "town", args.seed, args.size, args.pairs + 4,
                                args.conditions)
            with bar(args, args.pairs * len(args.conditions) * len(args.methods), "synth") as b:
                rows += run_synth(world, args.methods, args.conditions, args.pairs, b.update)
    if "gardens" in args.parts:
        root = part_root(args, "gardens")
        with bar(args, len(gardens_images(root)[0]) * len(args.methods), "gardens") as b:  # day images per method
            rows += run_gardens(root, args.methods, b.update)
    return rows


def pct(v: float) -> str:
    return f"{100 * v:.1f}"


def num(v: float, digits: int = 0) -> str:
    return "-" if v != v else f"{v:.{digits}f}"


def format_table(rows: list[dict]) -> str:
    """One markdown table per part present in `rows`."""
    out: list[str] = []
    web = [r for r in rows if r["part"] == "webcams"]
    if web:
        out += ["webcams night -> day (identity truth)", "",
                "| method | camera | frames | recovered % | MMA@3 % | MMA@5 % | MMA@10 % | median matches | "
                "median inliers | ms/frame |", "|---|---|---|---|---|---|---|---|---|---|"]
        out += [f"| {r['method']} | {r['group']} | {r['frames']} | {pct(r['recovered'])} | {pct(r['mma@3'])} | "
                f"{pct(r['mma@5'])} | {pct(r['mma@10'])} | {num(r['median_matches'])} | "
                f"{num(r['median_inliers'])} | {num(r['ms'], 1)} |" for r in web]
    syn = [r for r in rows if r["part"] == "synth"]
    if syn:
        out += ["", "synthetic town, sunny map frame -> nearby query frame (depth + pose truth)", "",
                "| method | condition | pairs | MMA@5 % | MMA@10 % | MMA@20 % | PnP 0.25 m 2 deg % | 0.5 m 5 deg % | "
                "5 m 10 deg % | median matches | median inliers | ms/frame |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        out += [f"| {r['method']} | {r['group']} | {r['pairs']} | {pct(r['mma@5'])} | {pct(r['mma@10'])} | "
                f"{pct(r['mma@20'])} | {pct(r['pose@0.25m2deg'])} | {pct(r['pose@0.5m5deg'])} | "
                f"{pct(r['pose@5m10deg'])} | {num(r['median_matches'])} | {num(r['median_inliers'])} | "
                f"{num(r['ms'], 1)} |" for r in syn]
    gp = [r for r in rows if r["part"] == "gardens"]
    if gp:
        out += ["", "Gardens Point mini, day -> night (fundamental-matrix inliers)", "",
                "| method | places | right place wins % | median inliers, right | median inliers, best wrong |",
                "|---|---|---|---|---|"]
        out += [f"| {r['method']} | {r['places']} | {pct(r['right_wins'])} | {num(r['median_right_inliers'])} | "
                f"{num(r['median_best_wrong_inliers'])} |" for r in gp]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    check_output_files(p, args, "--json")
    if (problem := missing_data(args)) is not None:
        p.error(problem)
    if args.keypoints is not None and not args.keypoints.is_file():
        p.error(f"--keypoints {args.keypoints}: no such file: give a network written by disam-train-keypoints")
    shipped = METHODS["learned"]
    if args.keypoints is not None:
        register("learned", learned_method(args.keypoints))
    import torch  # here, not at import: a typo or --help answers without loading torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        rows = run_parts(args)
    except (ValueError, OSError) as exc:
        p.error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    finally:
        register("learned", shipped)  # a caller in the same process gets the shipped network back
    emit("match", rows, format_table(rows), args.json, parts=list(args.parts), methods=list(args.methods),
         data=str(args.data), seed=args.seed, size=list(args.size), pairs=args.pairs,
         conditions=list(args.conditions), frames_per_camera=args.frames)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
