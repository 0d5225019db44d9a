"""disam-slam-eval's report: the per-drive table (markdown, JSON, stdout) and the trajectory plot."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from disam_ros.eval.plots import new_figure, save_figure


def _m(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.2f}"


def _x(x: float) -> str:
    return "-" if not math.isfinite(x) else ("inf" if x > 1e6 else f"{x:.1f}x")


def _wrong_label(cfg: Any) -> str:
    return f"{100 * cfg.wrong_share:g} % wrong" + (" (added)" if cfg.wrong_mode == "add" else "")


def table_rows(results: Sequence[Any], cfg: Any) -> tuple[list[str], list[list[str]]]:
    """Header and rows shared by markdown and stdout: per drive the odometry's and each run's final ATE."""
    w = _wrong_label(cfg)
    head = ["drive", "frames", "m", "drift %", "closures", "ATE odometry", "ATE closures (final / online)",
            "reduction", f"ATE {w}, robust", f"ATE {w}, no kernel", f"ATE {w} left out (control)", "wrong rejected",
            "RPE 10 m odo -> closures", "update ms"]
    rows = []
    for r in results:
        c, wr, wp, wd = r.runs["clean"], r.runs["wrong_robust"], r.runs["wrong_plain"], r.runs["wrong_dropped"]
        rej, _ = r.rejected["wrong_robust"]
        rows.append([r.condition, str(r.frames), f"{r.length_m:.0f}", f"{r.drift_pct:.1f}", str(r.closures),
                     _m(r.odometry.ate_rmse), f"{_m(c['final'].ate_rmse)} / {_m(c['online'].ate_rmse)}",
                     _x(r.reduction()), _m(wr["final"].ate_rmse), _m(wp["final"].ate_rmse), _m(wd["final"].ate_rmse),
                     f"{rej}/{r.wrong}", f"{_m(r.odometry.rpe_rmse)} -> {_m(c['final'].rpe_rmse)}",
                     f"{r.update_ms_median:.2f}"])
    return head, rows


def summary(results: Sequence[Any]) -> dict[str, Any]:
    """The issue's checks over all drives: reduction per drive, and wrong-hint ATE against the clean one."""
    red = [r.reduction() for r in results]
    ratio_robust = [r.runs["wrong_robust"]["final"].ate_rmse / max(r.runs["clean"]["final"].ate_rmse, 1e-9)
                    for r in results]
    ratio_plain = [r.runs["wrong_plain"]["final"].ate_rmse / max(r.runs["clean"]["final"].ate_rmse, 1e-9)
                   for r in results]
    ratio_control = [r.runs["wrong_robust"]["final"].ate_rmse / max(r.runs["wrong_dropped"]["final"].ate_rmse, 1e-9)
                     for r in results]
    least = results[int(np.argmin(red))] if red else None  # named: a short drive's odometry may leave nothing to cut
    return {"drives": len(results), "min_reduction": float(min(red)) if red else float("nan"),
            "min_reduction_drive": least.condition if least else "",
            "min_reduction_odometry_ate": float(least.odometry.ate_rmse) if least else float("nan"),
            "drives_reduced_5x": int(sum(x >= 5 for x in red)),
            "max_wrong_over_clean_robust": float(max(ratio_robust)) if results else float("nan"),
            "max_wrong_over_clean_plain": float(max(ratio_plain)) if results else float("nan"),
            "max_wrong_over_control_robust": float(max(ratio_control)) if results else float("nan"),
            "median_update_ms": float(np.median([r.update_ms_median for r in results])) if results else float("nan")}


def report_dict(results: Sequence[Any], config: dict[str, Any]) -> dict[str, Any]:
    return {"config": config, "summary": summary(results),
            "drives": [{**asdict(r), "reduction": r.reduction()} for r in results]}


def _legend(cfg: Any) -> str:
    o = cfg.odometry
    return (f"Simulated odometry from each drive's ground truth: scale {100 * o.scale_bias:+g} %, heading bias "
            f"{o.yaw_bias_deg_per_m:g} deg/m, noise {o.sigma_m_per_m:g} m/m and {o.sigma_deg_per_m:g} deg/m (seed "
            f"{o.seed}). Closures: the localizer's verified hints ({cfg.mode} mode) as between-factors to their map "
            f"keyframes, robust kernel {cfg.graph.robust} (k = {cfg.graph.robust_k:g})"
            f"{', unverified answers as absolute priors' if cfg.use_unverified else ''}. ATE: translation RMSE against "
            "the ground truth, no alignment (evo APE); final = smoothed trajectory, online = the pose the back end "
            "had at each frame. " + _wrong_legend(cfg))


def _wrong_legend(cfg: Any) -> str:
    if cfg.wrong_mode == "add":
        return ("Wrong runs: wrong closures, that share of all closures (drawn over all drives), given besides every "
                "right one, each at a frame without a hint, to a random map keyframe >= 10 m from the one of the "
                "hint it was drawn from (its relative pose and covariance); 'wrong rejected': wrong closures whose "
                "robust weight ended < 0.1; 'left out (control)' is the clean run here.")
    return ("Wrong runs: that share of all closures (drawn over all drives) re-pointed at a random map keyframe >= "
            "10 m from the right one, relative pose and covariance kept; 'wrong rejected': wrong closures whose "
            "robust weight ended < 0.1; 'left out (control)': the same hints removed instead of made wrong (a "
            "re-pointed hint is also a right hint lost: robust against control is what the wrong hints themselves "
            "cost).")


def summary_line(results: Sequence[Any]) -> str:
    s = summary(results)
    least = f": {s['min_reduction_drive']}, odometry ATE {_m(s['min_reduction_odometry_ate'])} m" if s["drives"] else ""
    return (f"Drives reduced >= 5x: {s['drives_reduced_5x']}/{s['drives']} (smallest reduction "
            f"{_x(s['min_reduction'])}{least}); wrong hints, final ATE over the clean run's: robust <= "
            f"{_x(s['max_wrong_over_clean_robust'])}, no kernel up to {_x(s['max_wrong_over_clean_plain'])}; "
            f"robust over the control (wrong hints left out) <= {_x(s['max_wrong_over_control_robust'])}; "
            f"iSAM2 update median {s['median_update_ms']:.2f} ms.")


def report_markdown(results: Sequence[Any], cfg: Any) -> list[str]:
    head, rows = table_rows(results, cfg)
    lines = ["# Pose-graph back end with the localizer's loop closures", "", _legend(cfg), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", summary_line(results), "",
              "Plots: trajectories.png. TUM files per drive: trajectories/<drive>/ (`evo_ape tum gt.tum "
              "corrected.tum`)."]
    return lines


def report_text(results: Sequence[Any], cfg: Any) -> list[str]:
    head, rows = table_rows(results, cfg)
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(head)] if rows else [len(h) for h in head]
    fmt = lambda cells: "  ".join(c.rjust(w) if k else c.ljust(w) for k, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return ["Pose-graph back end with the localizer's loop closures", fmt(head), *(fmt(r) for r in rows),
            summary_line(results)]


def plot_trajectories(panels: Sequence[tuple], path) -> None:
    """One top-down panel per drive: truth, odometry, the corrected trajectory, and the closures' keyframes
    (green: right, red: deliberately wrong, from the wrong_robust run)."""
    n = max(1, len(panels))
    cols = min(3, n)
    rows = int(math.ceil(n / cols))
    fig = new_figure(figsize=(5.0 * cols, 4.2 * rows))
    for k, (drive, wrong, odom, runs) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.plot(*drive.gt_positions[:, :2].T, "k-", lw=2, label="ground truth")
        ax.plot(*odom[0][:, :2].T, color="tab:gray", ls="--", label="odometry")
        ax.plot(*runs["clean"].final_p[:, :2].T, color="tab:blue", label="with closures")
        ax.plot(*runs["wrong_plain"].final_p[:, :2].T, color="tab:red", lw=0.8, alpha=0.7, label="wrong, no kernel")
        for c in wrong.closures:
            if c.kind == "between":
                ax.plot(*c.keyframe_position[:2], "x" if c.wrong else ".", color="tab:red" if c.wrong else
                        "tab:green", ms=7 if c.wrong else 4)
        ax.set_title(drive.condition)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    save_figure(fig, path)
