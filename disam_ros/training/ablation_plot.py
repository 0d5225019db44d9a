"""Validation R@1 over steps for several runs in one PNG, plus their start / best / last table.

Why: an ablation is read from the shape of each run's validation curve (does it ever rise above where it
started, how fast does it fall, does it recover when the lr decays), not from its last number alone. Every run
directory already holds val.json (the start first, see best.py); this puts the runs side by side, each start
marked, so "nothing beats the start" is visible at a glance. Matplotlib Agg via a Figure object: no display.

    python -m disam_ros.training.ablation_plot --out docs/x.png "coarse=runs/abl_coarse" runs/abl_nofcl
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from disam_ros.cliutil import OneLineParser
from disam_ros.fsutil import atomic_path

from .best import SCORE, best_index, score

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "tab:gray")


@dataclass(frozen=True)
class Curve:
    """One run's validation history: steps and their selection scores (mean cross-condition R@1)."""

    label: str
    steps: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def start(self) -> float:
        return self.values[0]

    @property
    def last(self) -> float:
        return self.values[-1]

    @property
    def best(self) -> tuple[int, float]:
        """(step, value) of the best point; the earliest wins ties, so a run that never rose reports its start."""
        k = best_index([{SCORE: v} for v in self.values])
        if k is None:
            return self.steps[0], math.nan
        return self.steps[k], self.values[k]


def load_curve(run_dir: str | Path, label: str | None = None) -> Curve:
    """Read RUN_DIR/val.json; points without a finite score are dropped (they were never comparable)."""
    path = Path(run_dir) / "val.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give a run directory written by disam-train with validation")
    history = json.loads(path.read_text())
    points = [(int(h["step"]), score(h)) for h in history if math.isfinite(score(h))]
    if not points:
        raise ValueError(f"{path} has no validation point with a finite {SCORE!r}: nothing to plot")
    steps, values = zip(*points, strict=True)
    return Curve(label or Path(run_dir).name, tuple(steps), tuple(values))


def plot_curves(curves: Sequence[Curve], path: str | Path, title: str = "Validation R@1 over steps",
                dpi: int = 90) -> Path:
    """One line per run, its start as a hollow circle, its best point as a filled star; the dashed line is the
    first run's start (in an ablation from one shared start, the level every variant has to beat)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("no runs to plot: give at least one run directory")
    fig = Figure(figsize=(10.0, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for k, c in enumerate(curves):
        colour = COLOURS[k % len(COLOURS)]
        style = "-" if k < len(COLOURS) else "--"
        ax.plot(c.steps, c.values, style, color=colour, marker=".", label=c.label, linewidth=1.4)
        ax.plot([c.steps[0]], [c.start], "o", mfc="none", mec=colour, ms=9)
        b_step, b_val = c.best
        ax.plot([b_step], [b_val], "*", color=colour, ms=10)
    ax.axhline(curves[0].start, color="black", linestyle=":", linewidth=1.0, label="start (step 0)")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation R@1")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a curve
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def table(curves: Sequence[Curve]) -> str:
    """Markdown rows: run | start | best | best step | last (3 decimals)."""
    rows = ["| run | start | best | best step | last |", "|---|---|---|---|---|"]
    for c in curves:
        b_step, b_val = c.best
        rows.append(f"| {c.label} | {c.start:.3f} | {b_val:.3f} | {b_step} | {c.last:.3f} |")
    return "\n".join(rows)


def _parse_run(item: str) -> tuple[str | None, str]:
    """`LABEL=DIR` or `DIR` (label = the directory's name)."""
    if "=" in item:
        label, run = item.split("=", 1)
        return label.strip() or None, run
    return None, item


def main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(prog="python -m disam_ros.training.ablation_plot",
                      description="Plot validation R@1 vs step of several runs (their val.json) in one PNG.")
    p.add_argument("runs", nargs="+", help="run directories, each optionally as LABEL=DIR")
    p.add_argument("--out", required=True, help="PNG path to write")
    p.add_argument("--title", default="Validation R@1 over steps")
    p.add_argument("--dpi", type=int, default=90)
    args = p.parse_args(argv)
    try:
        curves = [load_curve(run, label) for label, run in map(_parse_run, args.runs)]
    except (FileNotFoundError, ValueError) as exc:
        p.error(str(exc))
    plot_curves(curves, args.out, title=args.title, dpi=args.dpi)
    print(table(curves))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
