"""Never ship worse than the start: which validation point is the best, and what the run summary says.

Why: minutes of unsupervised DISAM training lowered cross-condition R@1 below the untrained encoder on every
real dataset measured, and the last checkpoint was shipped anyway. The start (step 0: untrained, or the `--init`
weights) is validated like every later point and competes with them; the shipped model is the best point, and
the start wins ties, so a run can only ship something its validation scored strictly higher than where it began.
A history entry is the validation result of one step: {"step": s, "<condition>": R@1, ..., "mean": R@1}.
"""
from __future__ import annotations

import math
from typing import Any

SCORE = "mean"


def score(entry: dict[str, Any]) -> float:
    """The selection score of a history entry: mean cross-condition R@1; NaN when it has none."""
    value = entry.get(SCORE, math.nan)
    return float(value) if isinstance(value, int | float) else math.nan


def best_index(history: list[dict[str, Any]]) -> int | None:
    """Index of the first entry with the highest finite score (earlier wins ties, so the start does); None
    when no entry has a finite score."""
    best, best_score = None, -math.inf
    for k, entry in enumerate(history):
        s = score(entry)
        if math.isfinite(s) and s > best_score:
            best, best_score = k, s
    return best


def improves(history: list[dict[str, Any]], candidate: dict[str, Any]) -> bool:
    """Would `candidate` become the new best? Strictly above every earlier finite score (first point: finite)."""
    s = score(candidate)
    if not math.isfinite(s):
        return False
    prior = [score(h) for h in history if math.isfinite(score(h))]
    return not prior or s > max(prior)


def summarize(history: list[dict[str, Any]]) -> dict[str, Any]:
    """start / best / last validation points, whether training improved on the start, and the warning line.

    `improved` is True only when the best point is a later step that scores strictly above the start.
    """
    if not history:
        return {"val_start": None, "val_best": None, "val_last": None, "improved": None,
                "warning": "no validation points (no places, or an empty validation part): the last weights are "
                           "shipped unselected; use a layout with places and data.val_fraction > 0"}
    start, last = history[0], history[-1]
    k = best_index(history)
    best = history[k] if k is not None else None
    improved = k is not None and k > 0 and score(history[k]) > score(start)
    warning = None
    if not improved:
        warning = (f"validation R@1 never rose above the start ({_fmt(start)} at step {start['step']}; "
                   f"last {_fmt(last)} at step {last['step']}): model.pt is the starting weights; this training "
                   "did not help")
    return {"val_start": start, "val_best": best, "val_last": last, "improved": improved, "warning": warning}


def _fmt(entry: dict[str, Any]) -> str:
    s = score(entry)
    return f"{s:.3f}" if math.isfinite(s) else "n/a"
