"""From answers to a report: one scoring path for offline and online evaluation.

An answer is whatever the localiser said about one query (a pose, or nothing); this module turns answers
into `QueryResult`s and writes the report folder: Markdown, JSON, per-query JSON lines, the
visuallocalization.net submission file and the plots.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from disam_ros.eval.metrics import DEFAULT_THRESHOLDS, QueryResult, per_condition, within
from disam_ros.eval.plots import ExamplePair, plot_error_cdf, plot_examples, plot_trajectory
from disam_ros.eval.queries import Query
from disam_ros.eval.report import write_json, write_markdown, write_results, write_visloc
from disam_ros.geometry import quat_angle_deg

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
                 title: str = "DISAM localisation report") -> dict[str, Path]:
    """Write every report artefact into `out_dir` (each file atomically) and return their paths."""
    if not results:
        raise ValueError("no queries were evaluated: check the query set (conditions, topics, --every)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = per_condition(list(results), thresholds=THRESHOLDS)
    paths = {
        "markdown": write_markdown(out / "report.md", summaries, title=title, meta=meta),
        "json": write_json(out / "report.json", summaries, meta=meta),
        "results": write_results(out / "results.jsonl", results),
        "visloc": write_visloc(out / "visloc_submission.txt", results),
        "error_cdf": plot_error_cdf(results, out / "error_cdf.png", thresholds=THRESHOLDS),
        "trajectory": plot_trajectory(map_positions, results, out / "trajectory.png", threshold=THRESHOLDS[-1]),
    }
    if examples:
        paths["examples"] = plot_examples(examples, out / "examples.png")
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
