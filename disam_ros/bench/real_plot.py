"""The real-camera battery as one figure (`disam-bench real --plot PATH`): R@1 per set, one bar per method, the
untrained rows' draw range as a whisker, validation and test sets apart.

Why: what the battery is for is a comparison at a glance (does the model beat random weights on every set, by how
much, and is the gap within the draws' spread?), which a bar chart shows faster than a table of ranges.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from disam_ros.eval.plots import COLOURS, new_figure, save_figure

WIDTH = 0.8  # of a set's slot, shared by its bars


@dataclass(frozen=True)
class Bar:
    method: str
    column: str
    x: float
    width: float
    height: float  # R@1 in %
    low: float  # the draws' range in % (low == high == height for one draw)
    high: float


def bar_layout(rows: list[dict], columns: list[str]) -> list[Bar]:
    """A bar per (method, column) the rows have: set k's bars centred on x = k, WIDTH / n_methods apart."""
    step = WIDTH / max(len(rows), 1)
    bars = []
    for m, row in enumerate(rows):
        for k, col in enumerate(columns):
            if col not in row:
                continue
            value = 100.0 * row[col]
            low, high = (100.0 * v for v in row.get(f"{col}:range", (row[col], row[col])))
            bars.append(Bar(row["method"], col, k - WIDTH / 2 + (m + 0.5) * step, step, value, low, high))
    return bars


def plot_battery(rows: list[dict], parts: dict[str, str], path: str | Path) -> Path:
    """Grouped bars of `rows` (disam-bench real's JSON results) over the sets in `parts` ({set: validation|test}),
    each labelled with its part and query count."""
    columns = list(parts)
    bars = bar_layout(rows, columns)
    fig = new_figure(figsize=(max(6.0, 1.9 * len(columns)), 3.6))
    ax = fig.add_subplot(1, 1, 1)
    for m, row in enumerate(rows):
        mine = [b for b in bars if b.method == row["method"]]
        x = np.array([b.x for b in mine])
        h = np.array([b.height for b in mine])
        err = np.array([[b.height - b.low for b in mine], [b.high - b.height for b in mine]])
        ranged = row.get("draws", 1) > 1
        ax.bar(x, h, [0.92 * b.width for b in mine], color=COLOURS[m % len(COLOURS)], label=_label(row),
               yerr=err if ranged else None, capsize=3 if ranged else 0, ecolor="0.25")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([f"{c}\n{parts[c]}, {rows[0].get(c + ':queries', '?')} queries" for c in columns],
                       fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("R@1 (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Real-camera battery: R@1 per set (whiskers: the untrained draws' range)", fontsize=10)
    ax.legend(fontsize=8, ncol=min(len(rows), 4), loc="upper center", bbox_to_anchor=(0.5, -0.19), frameon=False)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.91, bottom=0.27)
    return save_figure(fig, path)


def _label(row: dict) -> str:
    draws = row.get("draws", 1)
    return f"{row['method']} (mean of {draws} draws)" if draws > 1 else row["method"]
