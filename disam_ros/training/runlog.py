"""The run directory: its paths, and the CSV / val.json / TensorBoard log of a training run.

Split from the loop so that what a run leaves on disk (and how a resumed run truncates and continues it) is
in one place: recipe.yaml, log.csv, val.json, summary.json, checkpoints/{last,best}.pt, model.pt.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from disam_ros.fsutil import atomic_write_text
from disam_ros.model import load_checkpoint
from disam_ros.model.objective import LOSS_KEYS

from .config import recipe_from_dict
from .recipe import Recipe

LOG_COLUMNS = ("step", "epoch", "lr", "ramp", "hard", "pair", *LOSS_KEYS, "sup", "keep", "total", "disc", "it_per_s",
               "val_r1")


@dataclass(frozen=True)
class RunPaths:
    out: Path

    @property
    def last(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    @property
    def model(self) -> Path:
        return self.out / "model.pt"

    @property
    def log(self) -> Path:
        return self.out / "log.csv"

    @property
    def recipe(self) -> Path:
        return self.out / "recipe.yaml"

    @property
    def val(self) -> Path:
        return self.out / "val.json"

    @property
    def best(self) -> Path:
        return self.out / "checkpoints" / "best.pt"

    @property
    def summary(self) -> Path:
        return self.out / "summary.json"


def read_run(out: str | Path) -> tuple[Recipe, str]:
    """(recipe, data root) stored in a run's last checkpoint: what --resume continues."""
    path = RunPaths(Path(out)).last
    if not path.is_file():
        raise FileNotFoundError(f"{path}: nothing to resume (no checkpoint yet): start without --resume")
    _, _, meta = load_checkpoint(path, map_location="cpu")
    return recipe_from_dict(meta["extra"]["recipe"], source=str(path)), meta["extra"]["data_root"]


class RunLogger:
    """CSV log (interval means of the step stats), val.json history, TensorBoard when it is installed."""

    def __init__(self, paths: RunPaths, start_step: int, enabled: bool) -> None:
        self.paths, self.enabled, self.acc, self.t = paths, enabled, [], time.perf_counter()
        self.tb = None
        if not enabled:
            return
        paths.out.mkdir(parents=True, exist_ok=True)
        _truncate_log(paths.log, start_step)
        new = not paths.log.is_file()
        self.fh = paths.log.open("a", newline="")
        self.csv = csv.DictWriter(self.fh, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        if new:
            self.csv.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(paths.out / "tb"))
        except ImportError:  # tensorboard is optional
            self.tb = None

    def add(self, stats: dict[str, Any]) -> None:
        if self.enabled:
            self.acc.append(stats)

    def flush(self, step: int) -> None:
        if not self.enabled or not self.acc:
            return
        last, n = self.acc[-1], len(self.acc)
        row = {k: last[k] for k in ("step", "epoch", "lr", "ramp", "hard", "pair")}
        for k in (*LOSS_KEYS, "sup", "keep", "total", "disc"):
            row[k] = f"{sum(s[k] for s in self.acc) / n:.6g}"
        now = time.perf_counter()
        row["it_per_s"] = f"{n / (now - self.t):.3f}"
        self.csv.writerow(row)
        self.fh.flush()
        if self.tb is not None:
            for k in (*LOSS_KEYS, "sup", "keep", "total", "disc", "lr"):
                self.tb.add_scalar(f"train/{k}", float(row[k]), step)
        self.acc, self.t = [], now

    def val(self, step: int, result: dict[str, float]) -> None:
        if not self.enabled or not result:
            return
        history = json.loads(self.paths.val.read_text()) if self.paths.val.is_file() else []
        history = [h for h in history if h["step"] < step] + [{"step": step, **result}]
        atomic_write_text(self.paths.val, json.dumps(history, indent=1))
        self.csv.writerow({"step": step, "val_r1": f"{result.get('mean', math.nan):.4f}"})
        if self.tb is not None:
            for k, v in result.items():
                self.tb.add_scalar(f"val/R@1/{k}", v, step)

    def close(self) -> None:
        if self.enabled:
            self.fh.close()
            if self.tb is not None:
                self.tb.close()


def _truncate_log(path: Path, step: int) -> None:
    """On resume, drop log rows written after the checkpoint we resume from (they will be redone)."""
    if not path.is_file():
        return
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = [r for r in rows if r.get("step") and int(r["step"]) <= step]
    if len(keep) == len(rows):
        return
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(keep)
