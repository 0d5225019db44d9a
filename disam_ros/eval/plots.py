"""Evaluation figures (PNG, matplotlib Agg via Figure objects: no pyplot state, no display, thread-safe).

* error CDF per condition: translation and rotation errors, y = share of ALL queries (so a curve tops out at
  the answered share), with the protocol thresholds drawn;
* trajectory: the map (reference) trajectory top-down, each query at its ground-truth position coloured by
  correct / wrong / abstained, wrong ones with a line to where the localiser put them; one panel per condition;
* example pairs: query beside its retrieved match, optionally with a heatmap (e.g. Grad-SAM) overlaid.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from disam_ros.eval.metrics import DEFAULT_THRESHOLDS, QueryResult, errors_of, within
from disam_ros.fsutil import atomic_path

if TYPE_CHECKING:  # matplotlib loads with the first figure: the evaluation CLIs start ~0.3 s sooner without it
    from matplotlib.figure import Figure

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "tab:gray")
LINESTYLES = ("-", "--", ":")


def curve_style(k: int) -> dict:
    """Distinct colour, then line style, for the k-th curve: ten conditions before any colour repeats."""
    return {"color": COLOURS[k % len(COLOURS)], "linestyle": LINESTYLES[(k // len(COLOURS)) % len(LINESTYLES)]}


def new_figure(**kw) -> Figure:
    """A matplotlib Figure (no pyplot state); every plot of the package makes its figure here, so matplotlib loads
    with the first one."""
    from matplotlib.figure import Figure

    return Figure(**kw)


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Render to a temp file, then rename: a reader never sees half a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def _by_condition(results: Sequence[QueryResult]) -> dict[str, list[QueryResult]]:
    out: dict[str, list[QueryResult]] = {}
    for r in results:
        out.setdefault(r.condition, []).append(r)
    return dict(sorted(out.items()))


def _cdf(ax, errors: np.ndarray, n_all: int, label: str, style: dict) -> None:
    e = np.sort(errors[np.isfinite(errors)])
    if e.size:
        y = np.arange(1, e.size + 1) / n_all
        ax.step(np.r_[e[0], e], np.r_[0.0, y], where="post", label=label, **style)


def plot_error_cdf(results: Sequence[QueryResult], path: str | Path,
                   thresholds: Sequence[tuple[float, float]] = DEFAULT_THRESHOLDS,
                   title: str = "Localisation error CDF") -> Path:
    if not results:
        raise ValueError("no query results to plot: run the evaluation first")
    fig = new_figure(figsize=(11, 4.2), layout="constrained")
    ax_t, ax_r = fig.subplots(1, 2)
    for k, (cond, rs) in enumerate(_by_condition(results).items()):
        t_err, r_err = errors_of(rs)
        abst = len(rs) - sum(r.answered for r in rs)
        label = f"{cond} (n={len(rs)}, abstained {abst})"
        _cdf(ax_t, t_err, len(rs), label, curve_style(k))
        _cdf(ax_r, r_err, len(rs), label, curve_style(k))
    for ax, idx, unit in ((ax_t, 0, "translation error (m)"), (ax_r, 1, "rotation error (°)")):
        for thr in sorted({t[idx] for t in thresholds}):
            ax.axvline(thr, color="grey", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(unit)
        ax.set_ylim(0, 1.02)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.set_ylabel("share of all queries ≤ error")
    ax_t.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def _trajectory_panel(ax, map_xy: np.ndarray, rs: Sequence[QueryResult], threshold: tuple[float, float]) -> None:
    ax.plot(map_xy[:, 0], map_xy[:, 1], "-", color="0.75", lw=1.5, zorder=1, label="map trajectory")
    t_err, r_err = errors_of(rs)
    ok = within(t_err, r_err, *threshold)
    gt = np.array([r.gt_position for r in rs], float).reshape(-1, 3)
    answered = np.array([r.answered for r in rs], bool)
    wrong = answered & ~ok
    for i in np.flatnonzero(wrong):
        est = np.asarray(rs[i].est_position, float)
        ax.plot([gt[i, 0], est[0]], [gt[i, 1], est[1]], "-", color="tab:red", lw=0.5, alpha=0.5, zorder=2)
    ax.scatter(gt[ok, 0], gt[ok, 1], s=14, c="tab:green", zorder=3, label=f"correct ({ok.sum()})")
    ax.scatter(gt[wrong, 0], gt[wrong, 1], s=14, c="tab:red", zorder=3, label=f"wrong ({wrong.sum()})")
    ax.scatter(gt[~answered, 0], gt[~answered, 1], s=18, c="0.3", marker="x", zorder=3,
               label=f"abstained ({(~answered).sum()})")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.legend(loc="best", fontsize=7)


def plot_trajectory(map_positions: np.ndarray, results: Sequence[QueryResult], path: str | Path,
                    threshold: tuple[float, float] = DEFAULT_THRESHOLDS[-1], title: str | None = None) -> Path:
    """Top-down (x, y) map trajectory with queries coloured by correct at `threshold` (m, deg)."""
    if not results:
        raise ValueError("no query results to plot: run the evaluation first")
    groups = _by_condition(results)
    cols = min(3, len(groups))
    rows = -(-len(groups) // cols)
    fig = new_figure(figsize=(5.0 * cols, 4.6 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    map_xy = np.asarray(map_positions, float).reshape(-1, 3)[:, :2]
    for ax, (cond, rs) in zip(axes, groups.items()):
        _trajectory_panel(ax, map_xy, rs, threshold)
        ax.set_title(cond)
    for ax in axes[len(groups):]:
        ax.set_axis_off()
    fig.suptitle(title or f"Queries correct within ({threshold[0]:g} m, {threshold[1]:g}°)")
    return save_figure(fig, path)


@dataclass(frozen=True)
class ExamplePair:
    """A query image and its retrieved match (HxWx3 uint8 RGB), with optional heatmaps (HxW, any scale)."""

    query: np.ndarray
    match: np.ndarray
    caption: str = ""
    correct: bool | None = None
    query_heatmap: np.ndarray | None = None
    match_heatmap: np.ndarray | None = None


def _show(ax, image: np.ndarray, heatmap: np.ndarray | None, alpha: float) -> None:
    img = np.asarray(image)
    ax.imshow(img)
    if heatmap is not None:
        h = np.asarray(heatmap, np.float32)
        if h.ndim != 2:
            raise ValueError(f"heatmap must be 2-D (HxW), got shape {h.shape}: pass one map per image")
        h = cv2.resize(h, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
        lo, hi = float(np.nanmin(h)), float(np.nanmax(h))
        ax.imshow((h - lo) / (hi - lo) if hi > lo else np.zeros_like(h), cmap="jet", alpha=alpha, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_examples(examples: Sequence[ExamplePair], path: str | Path, title: str = "Query → retrieved match",
                  heatmap_alpha: float = 0.45) -> Path:
    """One row per example: query | match; caption coloured green (correct), red (wrong) or black."""
    if not examples:
        raise ValueError("no example pairs to plot: pick some queries first")
    fig = new_figure(figsize=(8, 2.8 * len(examples)), layout="constrained")
    axes = fig.subplots(len(examples), 2, squeeze=False)
    for (ax_q, ax_m), ex in zip(axes, examples):
        _show(ax_q, ex.query, ex.query_heatmap, heatmap_alpha)
        _show(ax_m, ex.match, ex.match_heatmap, heatmap_alpha)
        colour = {True: "tab:green", False: "tab:red"}.get(ex.correct, "black")
        ax_q.set_title(f"query {ex.caption}".strip(), fontsize=9, color=colour)
        ax_m.set_title("match" + ("" if ex.correct is None else " (correct)" if ex.correct else " (wrong)"),
                       fontsize=9, color=colour)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_reliability(modes: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, bins: int = 10,
                     title: str = "Reliability: confidence vs share within tolerance") -> Path:
    """One panel per mode: per confidence bin, the share of answers within tolerance (bars) against the
    diagonal of a perfect calibration; counts on the bars. `modes`: mode -> (confidence, correct) arrays."""
    if not modes:
        raise ValueError("no tracker modes to plot: evaluate at least one mode")
    fig = new_figure(figsize=(4.2 * len(modes), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(modes), squeeze=False)).reshape(-1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    for ax, (mode, (conf, ok)) in zip(axes, modes.items()):
        p, c = np.asarray(conf, float), np.asarray(ok, float)
        idx = np.clip(np.digitize(p, edges[1:-1], right=True), 0, bins - 1)
        n = np.bincount(idx, minlength=bins)
        acc = np.divide(np.bincount(idx, c, bins), n, out=np.full(bins, np.nan), where=n > 0)
        ax.bar(edges[:-1], np.nan_to_num(acc), width=1.0 / bins, align="edge", color="tab:blue", alpha=0.7,
               edgecolor="white", label="share within tolerance")
        for x, a, k in zip(edges[:-1], acc, n):
            if k:
                ax.text(x + 0.5 / bins, min(np.nan_to_num(a) + 0.02, 0.95), str(k), ha="center", fontsize=7)
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence")
        ax.set_title(f"{mode} (n={len(p)})")
    axes[0].set_ylabel("share of answers within tolerance")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_precision_coverage(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path,
                            title: str = "Precision vs coverage (sweeping the confidence threshold)") -> Path:
    """One curve per mode: (coverage, precision) over thresholds, the mode's publishing point marked.
    `curves`: mode -> (coverage array, precision array, (coverage, precision) at the threshold as a pair)."""
    if not curves:
        raise ValueError("no tracker modes to plot: evaluate at least one mode")
    fig = new_figure(figsize=(6.0, 4.6), layout="constrained")
    ax = fig.subplots()
    for k, (mode, (cov, prec, point)) in enumerate(curves.items()):
        style = curve_style(k)
        ax.step(np.r_[0.0, cov], np.r_[prec[:1] if len(prec) else [1.0], prec], where="post", label=mode, **style)
        if point is not None and np.isfinite(point).all():
            ax.plot(*point, "o", color=style["color"], ms=6)
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("coverage (share of frames published)")
    ax.set_ylabel("precision (share of published within tolerance)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, title="dot: publishing threshold")
    fig.suptitle(title)
    return save_figure(fig, path)
