"""A model against the untrained small encoder on the same queries: the paired difference and its 95 % interval.

Why: on a small set two R@1 figures a place apart say nothing by themselves (Gardens Point: 10 places), and the
one-model Wilson interval beside each figure is wider than the question needs: both methods answer the same
queries, so most of the draw of the queries cancels in their per-query difference. `disam-bench real` prints, for
every model it scores, its per-query hit minus the untrained draws' mean hit on that query, averaged over the set,
with a Student t interval over the queries; an interval that holds 0 says the set cannot tell the two apart.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

BASELINE = "untrained small"
BASELINES = ("raw pixels", "untrained tiny", BASELINE)  # the battery's own rows: compared with, not compared


def paired_difference(hits: np.ndarray, base: np.ndarray, level: float = 0.95) -> list[float]:
    """[mean, low, high] of hits - base over the same queries (each in [0, 1]: a hit, or a mean over draws);
    the t interval is clipped to [-1, 1], the range a difference of shares can take."""
    hits, base = np.asarray(hits, dtype=np.float64), np.asarray(base, dtype=np.float64)
    if hits.shape != base.shape or hits.ndim != 1:
        raise ValueError(f"paired hits of shapes {hits.shape} and {base.shape}: score the same queries")
    d = hits - base
    n = len(d)
    if n == 0:
        return [math.nan, math.nan, math.nan]
    mean = float(d.mean())
    if n == 1:
        return [mean, -1.0, 1.0]
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return [mean, max(-1.0, mean - half), min(1.0, mean + half)]


def paired_rows(hits: dict[str, dict[str, np.ndarray]], draws: dict[str, int]) -> dict[str, dict[str, list[float]]]:
    """{method: {set: [mean, low, high]}} for every single model against BASELINE (none without it)."""
    if BASELINE not in hits:
        return {}
    base = hits[BASELINE]
    return {m: {s: paired_difference(h, base[s]) for s, h in by_set.items() if s in base}
            for m, by_set in hits.items() if m not in BASELINES and draws.get(m) == 1}


def paired_lines(rows: list[dict], sets: list[str]) -> list[str]:
    """One line a model: its difference from the untrained small encoder per set (`<set>:vs_small` of its row),
    in points with the interval."""
    out = []
    for r in rows:
        cells = [f"{s} {100 * v[0]:+.1f} [{round(100 * v[1]):+d}, {round(100 * v[2]):+d}]" for s in sets
                 if (v := r.get(f"{s}:vs_small")) is not None and math.isfinite(v[0])]
        if cells:
            out.append(f"{r['method']} - {BASELINE}, paired over the same queries (points, 95 %): " + "; ".join(cells))
    return out
