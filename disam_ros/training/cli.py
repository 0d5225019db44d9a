"""`disam-train`: train a DISAM model from a recipe.

    disam-train --recipe coarse|fine|translation|<path.yaml> --data ROOT --out RUN_DIR
                [--init CKPT] [--resume] [key=value ...]

Overrides are recipe keys (`schedule.steps=500`, or `steps=500` when the name is unique; YAML values:
`data.domains=[sunny,night]`). Multi-GPU / multi-process: `torchrun --nproc_per_node N -m disam_ros.training.cli ...`
(nccl on GPU, gloo on CPU). `--resume` continues RUN_DIR/checkpoints/last.pt exactly (same recipe; only
logging/device keys may change). Until the console script exists: `python -m disam_ros.training.cli ...`.
"""
from __future__ import annotations

import argparse
import json
import sys

from disam_ros.model import CheckpointError

from .config import apply_overrides, load_recipe
from .trainer import Trainer, read_run


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, naming the fix
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="disam-train", description=__doc__.splitlines()[0])
    p.add_argument("--recipe", help="coarse, fine, translation, soft_contrastive, geo_local or a YAML file")
    p.add_argument("--data", help="dataset root (ROOT/<condition>/images/*, or see disam_ros/training/layouts.py)")
    p.add_argument("--out", required=True, help="run directory (checkpoints, log.csv, model.pt)")
    p.add_argument("--init", help="start from this model checkpoint's weights (e.g. a translation run's model.pt)")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR/checkpoints/last.pt exactly")
    p.add_argument("--until", type=int, help="stop after this step (the schedule still spans schedule.steps)")
    p.add_argument("overrides", nargs="*", help="recipe overrides key=value")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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
        trainer = Trainer(recipe, data, args.out, init=args.init, resume=args.resume)
        summary = trainer.fit(until=args.until)
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        print(f"disam-train: error: {exc}", file=sys.stderr)
        return 2
    if trainer.info.is_main:
        print(json.dumps({"out": args.out, **summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
