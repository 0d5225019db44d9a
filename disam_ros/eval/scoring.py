"""From answers to a report: one scoring path for offline and online evaluation.

An answer is whatever the localiser said about one query (a pose, or nothing); this module turns answers
into `QueryResult`s and writes the report folder: Markdown, JSON, per-query JSON lines, the
visuallocalization.net submission file and the plots.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.eval.metrics import (
    ALL,
    DEFAULT_THRESHOLDS,
    ModeSummary,
    QueryResult,
    in_map,
    per_condition,
    summarize_mode,
    within,
)
from disam_ros.eval.plots import (
    ExamplePair,
    plot_error_cdf,
    plot_examples,
    plot_precision_coverage,
    plot_reliability,
    plot_trajectory,
)
from disam_ros.eval.poses import pose_rows, poses_dict, poses_markdown, refine_note
from disam_ros.eval.queries import Query
from disam_ros.eval.report import write_json, write_markdown, write_results, write_tracked, write_visloc
from disam_ros.geometry import quat_angle_deg
from disam_ros.tracking.calibration import precision_coverage

THRESHOLDS = DEFAULT_THRESHOLDS  # (0.25 m, 2°), (0.5 m, 5°), (5 m, 10°): the long-term localisation benchmark


@dataclass(frozen=True, eq=False)
class Answer:
    """The localiser's answer to one query; index None means it abstained (or never answered online)."""

    index: int | None
    position: np.ndarray | None = None
    quat: np.ndarray | None = None
    topk: tuple[int, ...] = ()
    latency_s: float | None = None
    domain: str = ""


def query_result(q: Query, a: Answer, map_positions: np.ndarray, map_names: Sequence[str]) -> QueryResult:
    answered = a.index is not None and a.position is not None and a.quat is not None
    cands = map_positions[list(a.topk)] if a.topk else None
    return QueryResult(
        name=q.name, condition=q.condition, gt_position=np.asarray(q.position), gt_quat=np.asarray(q.quat),
        est_position=np.asarray(a.position) if answered else None,
        est_quat=np.asarray(a.quat) if answered else None,
        latency_s=a.latency_s, candidate_positions=cands,
        match_name=map_names[a.index] if answered else None,
    )


def is_correct(r: QueryResult, threshold: tuple[float, float]) -> bool:
    if not r.answered:
        return False
    t = np.linalg.norm(r.est_position - r.gt_position)
    return bool(within(np.array([t]), np.array([quat_angle_deg(r.gt_quat, r.est_quat)]), *threshold)[0])


def write_report(out_dir: str | Path, results: Sequence[QueryResult], map_positions: np.ndarray,
                 examples: Sequence[ExamplePair] = (), meta: Mapping | None = None,
                 title: str = "DISAM localisation report", tracked: Sequence[TrackedFrame] = (),
                 publish: Mapping[str, float] | None = None,
                 tolerance: tuple[float, float] = (5.0, 10.0),
                 map_quats: np.ndarray | None = None, no_refine: str | None = None,
                 sections: Sequence[tuple[str, Sequence[str], Any]] = ()) -> dict[str, Path]:
    """Write every report artefact into `out_dir` (each file atomically) and return their paths.

    `tracked`: per-frame records of tracker modes; then the report gains the modes table, the retrieval-only
    against refined rows (without refined rows, and a line saying why, when `no_refine` gives a reason or no
    frame was verified), modes.jsonl, the reliability diagram and the precision-vs-coverage plot (`publish`:
    each mode's publishing threshold). `sections`: a report's own (JSON key, Markdown lines, JSON value), last."""
    if not results:
        raise ValueError("no queries were evaluated: check the query set (conditions, topics, --every)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = per_condition(list(results), thresholds=THRESHOLDS)
    poses = None if map_quats is None else (np.asarray(map_positions), np.asarray(map_quats))
    modes = mode_summaries(tracked, publish or {}, tolerance, poses) if tracked else []
    note = refine_note(tracked, no_refine)
    rows = pose_rows(tracked, THRESHOLDS)
    own = [line for _, lines, _ in sections for line in lines]
    paths = {
        "markdown": write_markdown(out / "report.md", summaries, title=title, meta=meta, modes=modes,
                                   tolerance=tolerance,
                                   poses=[*poses_markdown(rows, note), *own]),
        "json": write_json(out / "report.json", summaries, meta=meta, modes=modes,
                           poses=poses_dict(rows, note) if rows else None,
                           extra={key: value for key, _, value in sections}),
        "results": write_results(out / "results.jsonl", results),
        "visloc": write_visloc(out / "visloc_submission.txt", results),
        "error_cdf": plot_error_cdf(results, out / "error_cdf.png", thresholds=THRESHOLDS),
        "trajectory": plot_trajectory(map_positions, results, out / "trajectory.png", threshold=THRESHOLDS[-1]),
    }
    if examples:
        paths["examples"] = plot_examples(examples, out / "examples.png")
    if tracked:
        paths.update(write_mode_artefacts(out, tracked, modes, tolerance))
    return paths


def write_mode_artefacts(out: Path, tracked: Sequence[TrackedFrame], modes: Sequence[ModeSummary],
                         tolerance: tuple[float, float]) -> dict[str, Path]:
    """modes.jsonl, reliability.png and precision_coverage.png (all conditions pooled, per mode)."""
    rel, curves = {}, {}
    for row in (r for r in modes if r.condition == ALL):
        fs = [f for f in tracked if f.mode == row.mode and f.est_position is not None]
        if not fs:
            continue
        conf = np.array([f.confidence for f in fs], float)
        ok = np.array([f.correct(tolerance) for f in fs], float)
        rel[row.mode] = (conf, ok)
        pc = precision_coverage(conf, ok)
        curves[row.mode] = (pc["coverage"] * len(fs) / row.frames, pc["precision"], (row.coverage, row.precision))
    paths = {"modes": write_tracked(out / "modes.jsonl", tracked)}
    if rel:
        paths["reliability"] = plot_reliability(rel, out / "reliability.png")
        paths["precision_coverage"] = plot_precision_coverage(curves, out / "precision_coverage.png")
    return paths


def summary_rows(results: Sequence[QueryResult]) -> list[str]:
    """A compact per-condition table for terminals (the Markdown report has the full one)."""
    summaries = per_condition(list(results), thresholds=THRESHOLDS)
    head = ["condition", "n"] + [f"{t:g}m/{r:g}°" for t, r in THRESHOLDS] + ["abstain", "median t"]
    rows = [head]
    for name, s in summaries.items():
        shares = [f"{100 * x:5.1f}%" for x in s.shares]
        med = "-" if not np.isfinite(s.median_t_m) else f"{s.median_t_m:.2f} m"
        rows.append([name, str(s.queries)] + shares + [f"{100 * s.abstain_rate:4.1f}%", med])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]


# ----------------------------------------------------------------------------------------------------------
# tracker modes: one record per (mode, frame), summarised per condition at each mode's publishing threshold


@dataclass(frozen=True, eq=False)
class TrackedFrame:
    """What one tracker mode said about one query: the published pose (None: no pose; the verified, refined pose
    where verification passed, else the answered map place's), its confidence, the raw feature a calibration
    maps, whether the confidence is calibrated and the position NEES of the published pose under its covariance;
    then the retrieval-only pose (the answered map place's; None: the same as the published one) and what
    verification said (`verification`: its outcome, "" where it did not run)."""

    mode: str
    condition: str
    name: str
    gt_position: np.ndarray
    gt_quat: np.ndarray
    est_position: np.ndarray | None
    est_quat: np.ndarray | None
    confidence: float
    feature: float
    calibrated: bool
    nees: float
    features: dict[str, float] = field(default_factory=dict)  # every candidate feature (disam-calibrate chooses)
    place_position: np.ndarray | None = None  # retrieval-only pose: the answered map place's
    place_quat: np.ndarray | None = None
    verified: bool = False
    verification: str = ""  # verify.verifier.OUTCOMES; "" where verification did not run
    inliers: int = 0
    refine_ms: float = float("nan")
    # What a pose-graph back end needs from the frame (disam-slam-eval reads them from modes.jsonl): its stamp,
    # the published pose's covariance (6x6, ROS order) and, where verified, the map keyframe it was solved against.
    stamp: float = float("nan")
    covariance: np.ndarray | None = None
    keyframe_index: int | None = None
    keyframe_position: np.ndarray | None = None
    keyframe_quat: np.ndarray | None = None
    # Every candidate the verifier tried (what a failed frame had to work with): keyframe, outcome, inliers, matches,
    # inlier_ratio, hops (0: against a map image; n: tracked) and the attempt's own errors against the ground truth.
    attempts: list[dict] = field(default_factory=list)
    # A keyframe verified after the frame was answered (`verify_keyframes` at a camera rate; the node's late hint):
    # position, quat, covariance, keyframe_index, keyframe_position, keyframe_quat (None: none came)
    late: dict | None = None

    def errors(self) -> tuple[float, float]:
        """(translation m, rotation deg) of the published pose; NaN when there is no answer."""
        return _pose_errors(self, self.est_position, self.est_quat)

    def retrieval_errors(self) -> tuple[float, float]:
        """(translation m, rotation deg) of the retrieval-only pose (the answered map place's)."""
        if self.place_position is None or self.place_quat is None:
            return self.errors()
        return _pose_errors(self, self.place_position, self.place_quat)

    def correct(self, tolerance: tuple[float, float]) -> bool:
        """Whether the published pose is within the tolerance."""
        t, r = self.errors()
        return bool(within(np.array([t]), np.array([r]), *tolerance)[0])


def _pose_errors(f: TrackedFrame, position: np.ndarray | None, quat: np.ndarray | None) -> tuple[float, float]:
    if position is None or quat is None:
        return float("nan"), float("nan")
    t = float(np.linalg.norm(np.asarray(position) - f.gt_position))
    return t, float(quat_angle_deg(f.gt_quat, quat))


def in_map_mask(frames: Sequence[TrackedFrame], map_poses: tuple[np.ndarray, np.ndarray] | None,
                tolerance: tuple[float, float]) -> np.ndarray | None:
    """Per frame: could some map pose (positions, xyzw quaternions) answer it within the tolerance."""
    if map_poses is None or not frames:
        return None
    return in_map(np.stack([f.gt_position for f in frames]), np.stack([f.gt_quat for f in frames]), *map_poses,
                  tolerance)


def mode_summaries(frames: Sequence[TrackedFrame], thresholds: Mapping[str, float],
                   tolerance: tuple[float, float],
                   map_poses: tuple[np.ndarray, np.ndarray] | None = None) -> list[ModeSummary]:
    """Rows per condition (sorted) then 'all', each with the modes in the order first seen; with `map_poses`
    each row also counts its in-map frames and their R@1 (`metrics.in_map`). R@1 and in-map R@1 score the
    retrieval-only pose, precision and ECE the published one (`metrics.ModeSummary`)."""
    mask = in_map_mask(frames, map_poses, tolerance)
    modes = list(dict.fromkeys(f.mode for f in frames))
    conds = sorted({f.condition for f in frames}) + [ALL]
    rows = []
    for c in conds:
        for m in modes:
            pick = [i for i, f in enumerate(frames) if f.mode == m and (c == ALL or f.condition == c)]
            if not pick:
                continue
            fs = [frames[i] for i in pick]
            err = np.array([f.retrieval_errors() for f in fs], float).reshape(-1, 2)
            pub = np.array([f.errors() for f in fs], float).reshape(-1, 2)
            conf = np.array([f.confidence if f.est_position is not None else np.nan for f in fs], float)
            rows.append(summarize_mode(c, m, err[:, 0], err[:, 1], conf, np.array([f.nees for f in fs], float),
                                       thresholds.get(m, 0.0), tolerance, all(f.calibrated for f in fs
                                                                             if f.est_position is not None),
                                       in_map_mask=None if mask is None else mask[pick],
                                       published_errors=(pub[:, 0], pub[:, 1])))
    return rows


def _pct(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{100 * x:5.1f}%"


def mode_rows_text(tracked: Sequence[TrackedFrame], publish: Mapping[str, float],
                   tolerance: tuple[float, float],
                   map_poses: tuple[np.ndarray, np.ndarray] | None = None) -> list[str]:
    """Terminal table of the modes side by side (the Markdown report has the full one)."""
    if not tracked:
        return []
    head = ["condition", "mode", "n", f"R@1 {tolerance[0]:g}m/{tolerance[1]:g}°", "in map", "R@1 in map",
            "coverage", "precision", "ECE", "NEES"]
    rows = [head]
    for s in mode_summaries(tracked, publish, tolerance, map_poses):
        r1 = [v for (t, r), v in zip(s.thresholds, s.shares) if (t, r) == tuple(tolerance)]
        rows.append([s.condition, s.mode, str(s.frames), _pct(r1[0]) if r1 else "-",
                     "-" if s.in_map is None else str(s.in_map), _pct(s.in_map_share), _pct(s.coverage),
                     _pct(s.precision), "-" if not np.isfinite(s.ece) else f"{s.ece:.3f}",
                     "-" if not np.isfinite(s.nees_mean) else f"{s.nees_mean:.2f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return ["", *("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)]


def attempt_record(attempt: Any, gt_position: np.ndarray, gt_quat: np.ndarray) -> dict:
    """One verification attempt (verify.verifier.Verification) as modes.jsonl keeps it; t_m / r_deg: its solved
    pose against the ground truth (None where nothing was solved), so a failed frame shows what it had."""
    a = attempt
    solved = bool(np.all(np.isfinite(a.position)))
    t_m = float(np.linalg.norm(np.asarray(a.position) - np.asarray(gt_position))) if solved else None
    r_deg = float(quat_angle_deg(a.quat, np.asarray(gt_quat))) if solved else None
    ratio = float(a.inlier_ratio) if math.isfinite(a.inlier_ratio) else None
    return {"keyframe": int(a.index), "outcome": str(a.outcome), "inliers": int(a.inliers), "matches": int(a.matches),
            "inlier_ratio": ratio, "hops": int(a.hops), "t_m": t_m, "r_deg": r_deg,
            "scale": float(a.scale), "dense": bool(getattr(a, "dense", False)),
            "far_only": bool(getattr(a, "far_only", False)), "regated_from": int(getattr(a, "regated_from", -1)),
            "features": str(getattr(a, "features", "sift"))}
