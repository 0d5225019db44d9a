"""The camera-rate rows as one figure (`disam-bench node --rate HZ --plot PATH`): per drive, what share of the frames
was answered, right and hinted to SLAM; how late the answers came; what a keyframe's verification cost.

Why: a run prints a dozen numbers for each of twelve drives, and what a user wants from them is where the node falls
behind (which conditions drop frames, which answers come late, which keyframes cost most), which three rows of bars
over the same drives show at a glance. `--against OTHER.json` draws a second run (inline against `verify_keyframes`,
say) as dashed outlines over the same bars, and `--from RUN.json` redraws a saved run without measuring again.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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


def aligned(p: RatePanels, drives: list[str]) -> RatePanels:
    """`p` reindexed to `drives` (another run's order): NaN where `p` has no such drive."""
    at = {d: k for k, d in enumerate(p.drives)}

    def pick(values: list[float]) -> list[float]:
        return [values[at[d]] if d in at else float("nan") for d in drives]

    return replace(p, drives=list(drives), shares={k: pick(v) for k, v in p.shares.items()},
                   latency_median=pick(p.latency_median), latency_p95=pick(p.latency_p95),
                   keyframe_median=pick(p.keyframe_median), keyframe_q1=pick(p.keyframe_q1),
                   keyframe_q3=pick(p.keyframe_q3))


def load_rate_run(path: str | Path) -> dict[str, Any]:
    """A saved `disam-bench node --rate ... --json` document; ValueError (one line, naming the fix) for anything
    else, so that a wrong file is refused before minutes of measuring."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it as JSON ({type(exc).__name__}); give the file that "
                         "`disam-bench node --rate HZ --json FILE` wrote") from None
    rows = doc.get("results") if isinstance(doc, dict) else None
    if (not isinstance(doc, dict) or doc.get("mode") != "rate" or not isinstance(rows, list)
            or not all(isinstance(r, dict) and "drive" in r for r in rows)):
        raise ValueError(f"{path}: not a camera-rate run; give the file that `disam-bench node --rate HZ --json FILE` "
                         "wrote")
    return doc


def run_labels(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, str]:
    """What tells two runs apart: the node parameters whose values differ (`defaults` where a run set none of them),
    else the rate, else nothing ("" for both)."""
    pa, pb = a.get("node_parameters") or {}, b.get("node_parameters") or {}
    keys = sorted(k for k in {*pa, *pb} if pa.get(k) != pb.get(k))
    if keys:
        def label(p: dict) -> str:
            return ", ".join(f"{k}: {json.dumps(p[k])}" for k in keys if k in p) or "defaults"
        return label(pa), label(pb)
    if a.get("rate_hz") != b.get("rate_hz"):
        return f"{a.get('rate_hz'):g} Hz", f"{b.get('rate_hz'):g} Hz"
    return "", ""


def plot_rate(rows: list[dict], rate_hz: float, path: str | Path, title: str = "", against: list[dict] | None = None,
              labels: tuple[str, str] = ("this run", "the other run")) -> Path:
    """Three rows of bars over the drives: shares of the sent frames, answer latency (bar: median, whisker: p95),
    keyframe verification (bar: median, whisker: quartiles; only when some drive verified keyframes). `against`:
    another run's rows, drawn over the same drives as dashed outlines (its p95 a cross), named by `labels`."""
    p = rate_panels(rows)
    q = aligned(rate_panels(against), p.drives) if against is not None else None
    x = np.arange(len(p.drives))
    keyframes = bool(np.isfinite(p.keyframe_median).any() or (q is not None and np.isfinite(q.keyframe_median).any()))
    fig = new_figure(figsize=(max(6.0, 0.75 * len(x) + 2.0), 7.2 if keyframes else 5.2))
    axes = [fig.add_subplot(3 if keyframes else 2, 1, k + 1) for k in range(3 if keyframes else 2)]
    width = 0.8 / len(SHARES)
    for k, (key, label) in enumerate(SHARES):
        at = x - 0.4 + (k + 0.5) * width
        axes[0].bar(at, p.shares[key], 0.92 * width, color=COLOURS[k], label=label)
        if q is not None:
            axes[0].bar(at, q.shares[key], 0.92 * width, fill=False, edgecolor="0.15", linestyle="--", linewidth=1.0)
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
    if q is not None:
        outlines = [(axes[1], q.latency_median, q.latency_p95)] + ([(axes[2], q.keyframe_median, None)] if keyframes
                                                                     else [])
        for ax, median, top in outlines:
            ax.bar(x, median, 0.5, fill=False, edgecolor="0.15", linestyle="--", linewidth=1.0)
            if top is not None:
                ax.plot(x, top, "x", color="0.15", markersize=5)
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(p.drives if ax is axes[-1] else [], rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    heading = title or f"Localizer node at {rate_hz:g} Hz, per drive"
    if q is not None:
        heading += f"\nfilled: {labels[0]}; dashed outlines: {labels[1]}"
    fig.suptitle(heading, fontsize=10 if q is None else 9)
    fig.subplots_adjust(left=0.12, right=0.98, top=0.86 if q is not None else 0.88, bottom=0.16, hspace=0.25)
    return save_figure(fig, path)
