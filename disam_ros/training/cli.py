"""`disam-train`: train a DISAM model from a recipe.

    disam-train --recipe NAME|<path.yaml> --data ROOT --out RUN_DIR [--init CKPT] [--resume] [key=value ...]
    disam-train --recipe init --data ROOT --out runs/init [model.preset=small]   # the untrained start, to compare

The run validates its start and every `train.val_every` steps on a held-out segment and ships (model.pt) the best
point, never one below the start; the JSON summary on stdout (and RUN_DIR/summary.json) states start / best /
last. Progress and what data is used go to stderr (-q: warnings only).

Overrides are recipe keys (`schedule.steps=500`, or `steps=500` when the name is unique; YAML values:
`data.domains=[sunny,night]`). Multi-GPU / multi-process: `torchrun --nproc_per_node N -m disam_ros.training.cli ...`
(nccl on GPU, gloo on CPU). `--resume` continues RUN_DIR/checkpoints/last.pt exactly (same recipe; only
logging/device keys may change). `disam-train --help` lists the shipped recipes.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from disam_ros import logs
from disam_ros.cliutil import OneLineParser

from . import RECIPE_DIR


def recipe_summaries(recipe_dir: Path = RECIPE_DIR) -> dict[str, str]:
    """Shipped recipe name -> its one-line description, the first line of the YAML when it is a comment: the
    help lists whatever ships (demo_*, rail_* included), so it never goes stale when a recipe is added."""
    out = {}
    for path in sorted(recipe_dir.glob("*.yaml")):
        first = next((line for line in path.read_text().splitlines() if line.strip()), "")
        out[path.stem] = first.lstrip("#").strip() if first.startswith("#") else "(no description comment)"
    return out


def recipes_epilog() -> str:
    summaries = recipe_summaries()
    width = max(map(len, summaries), default=0)
    return "recipes (--recipe NAME; or a YAML path):\n" + "\n".join(
        f"  {name:<{width}}  {text}" for name, text in summaries.items())


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="disam-train", description=__doc__.splitlines()[0], epilog=recipes_epilog(),
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", help="a recipe name listed below, or a YAML file")
    p.add_argument("--data", help="dataset root (ROOT/<condition>/images/*, or see disam_ros/training/layouts.py)")
    p.add_argument("--out", required=True, help="run directory (checkpoints, log.csv, model.pt)")
    p.add_argument("--init", help="start from this model checkpoint's weights (e.g. a translation run's model.pt)")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR/checkpoints/last.pt exactly")
    p.add_argument("--until", type=int, help="stop after this step (the schedule still spans schedule.steps)")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only (default: info on stderr)")
    p.add_argument("overrides", nargs="*", help="recipe overrides key=value")
    return p


def check_args(args: argparse.Namespace) -> None:
    """ValueError (one line) before any data is read: a step bound below 1, an --out that cannot be a folder."""
    if args.until is not None and args.until < 1:
        raise ValueError(f"--until {args.until}: need a step >= 1")
    out = Path(args.out)
    bad = out if out.exists() and not out.is_dir() else next(
        (p for p in out.parents if p.exists() and not p.is_dir()), None)
    if bad is not None:
        raise ValueError(f"--out {out}: {bad} is a file, not a folder: choose another run directory")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    package = logging.getLogger(logs.NAME)
    handlers, level = list(package.handlers), package.level
    logs.setup(-1 if args.quiet else 0)
    try:
        return _run(args)
    finally:  # called in-process (tests, notebooks): leave the package logger as it was found
        package.handlers[:] = handlers
        package.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    from disam_ros.model import CheckpointError  # torch: after the arguments parsed (--help lists recipes at once)

    from .config import apply_overrides, load_recipe
    from .depth_trainer import make_trainer
    from .runlog import read_run

    try:
        check_args(args)
        if args.resume and args.init:
            raise ValueError("--resume and --init exclude each other: resume a run, or start a new one from weights")
        if args.resume:
            saved, saved_root = read_run(args.out)
            recipe = load_recipe(args.recipe, args.overrides) if args.recipe else apply_overrides(saved, args.overrides)
            data = args.data or saved_root
        else:
            if not args.recipe or not args.data:
                raise ValueError("--recipe and --data are required for a new run (or pass --resume)")
            recipe, data = load_recipe(args.recipe, args.overrides), args.data
        trainer = make_trainer(recipe, data, args.out, init=args.init, resume=args.resume)  # depth.enabled: seed 002
        summary = trainer.fit(until=args.until)
    except (ValueError, CheckpointError) as exc:
        print(f"disam-train: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # FileNotFoundError included; a system error names the path, ours the fix
        where = f"{exc.filename}: {exc.strerror}; check the paths" if exc.filename and exc.strerror else exc
        print(f"disam-train: error: {where}", file=sys.stderr)
        return 2
    if trainer.info.is_main:
        print(json.dumps({"out": args.out, **summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
