"""The camera-rate rows as one figure (`disam-bench node --rate HZ --plot PATH`): per drive, what share of the frames
was answered, right and hinted to SLAM; how late the answers came; what a keyframe's verification cost.

Why: a run prints a dozen numbers for each of twelve drives, and what a user wants from them is where the node falls
behind (which conditions drop frames, which answers come late, which keyframes cost most), which three rows of bars
over the same drives show at a glance.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from disam_ros.eval.plots import COLOURS, new_figure, save_figure

SHARES = (("answered", "answered"), ("within_0.25m_2deg", "within (0.25 m, 2 deg)"),
          ("hinted_0.25m_2deg", "hinted to SLAM (in time or late)"))


@dataclass(frozen=True)
class RatePanels:
    """Per drive (the rows' order, the pooled `all` row left out): shares of the sent frames in %, latency of the
    answered frames (median and p95, ms), and the keyframes' verification times (median and quartiles over every
    keyframe of every run, ms; NaN where a drive had none)."""

    drives: list[str]
    shares: dict[str, list[float]]
    latency_median: list[float]
    latency_p95: list[float]
    keyframe_median: list[float]
    keyframe_q1: list[float]
    keyframe_q3: list[float]


def _pct(row: dict, key: str) -> float:
    if key == "answered":
        return 100.0 * row["answered"] / row["sent"] if row.get("sent") else float("nan")
    value = row.get(key)
    return float("nan") if value is None else 100.0 * value


def _ms(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def rate_panels(rows: list[dict]) -> RatePanels:
    """What the figure draws, from `disam-bench node --rate`'s JSON `results`."""
    rows = [r for r in rows if r["drive"] != "all"]
    times = [np.asarray(r.get("keyframe_verify_run_ms") or [], np.float64) for r in rows]
    quartiles = [np.percentile(t, [25, 75]) if len(t) else (np.nan, np.nan) for t in times]
    return RatePanels(
        drives=[r["drive"] for r in rows],
        shares={key: [_pct(r, key) for r in rows] for key, _ in SHARES},
        latency_median=[_ms(r.get("latency_median_ms")) for r in rows],
        latency_p95=[_ms(r.get("latency_p95_ms")) for r in rows],
        keyframe_median=[_ms(r.get("keyframe_verify_run_ms_median")) for r in rows],
        keyframe_q1=[float(q[0]) for q in quartiles],
        keyframe_q3=[float(q[1]) for q in quartiles])


def plot_rate(rows: list[dict], rate_hz: float, path: str | Path, title: str = "") -> Path:
    """Three rows of bars over the drives: shares of the sent frames, answer latency (bar: median, whisker: p95),
    keyframe verification (bar: median, whisker: quartiles; only when some drive verified keyframes)."""
    p = rate_panels(rows)
    x = np.arange(len(p.drives))
    keyframes = bool(np.isfinite(p.keyframe_median).any())
    fig = new_figure(figsize=(max(6.0, 0.75 * len(x) + 2.0), 7.2 if keyframes else 5.2))
    axes = [fig.add_subplot(3 if keyframes else 2, 1, k + 1) for k in range(3 if keyframes else 2)]
    width = 0.8 / len(SHARES)
    for k, (key, label) in enumerate(SHARES):
        axes[0].bar(x - 0.4 + (k + 0.5) * width, p.shares[key], 0.92 * width, color=COLOURS[k], label=label)
    axes[0].set_ylim(0, 105)
    axes[0].set_ylabel("% of sent frames")
    axes[0].legend(fontsize=7, ncol=len(SHARES), loc="upper center", bbox_to_anchor=(0.5, 1.28), frameon=False)
    med, p95 = np.asarray(p.latency_median), np.asarray(p.latency_p95)
    axes[1].bar(x, med, 0.5, color=COLOURS[3], yerr=[np.zeros_like(med), np.nan_to_num(p95 - med)], capsize=3,
                ecolor="0.25")
    axes[1].set_ylabel("latency ms\n(median, p95)")
    if keyframes:
        kmed = np.asarray(p.keyframe_median)
        lo, hi = np.nan_to_num(kmed - np.asarray(p.keyframe_q1)), np.nan_to_num(np.asarray(p.keyframe_q3) - kmed)
        axes[2].bar(x, kmed, 0.5, color=COLOURS[4], yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], capsize=3,
                    ecolor="0.25")
        axes[2].set_ylabel("keyframe verify ms\n(median, quartiles)")
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(p.drives if ax is axes[-1] else [], rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title or f"Localizer node at {rate_hz:g} Hz, per drive", fontsize=10)
    fig.subplots_adjust(left=0.12, right=0.98, top=0.88, bottom=0.16, hspace=0.25)
    return save_figure(fig, path)
