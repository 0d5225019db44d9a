"""Report writers: per-condition Markdown and JSON, per-query results (JSON lines), visuallocalization.net.

Every writer goes through `disam_ros.fsutil.atomic_write_text` (temp file, then rename) so an interrupted
evaluation never leaves half a report that looks complete.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.eval.metrics import ALL, ConditionSummary, QueryResult
from disam_ros.fsutil import atomic_write_text
from disam_ros.geometry import normalize_quat, quat_to_rot

# meta key: how many ranked candidates were kept per query (the localiser's top_k). Recall@N for a larger N
# cannot be measured (the candidates beyond K were never seen), so it is reported as n/a, never as R@K.
CANDIDATES = "candidates per query"


def candidates_of(meta: Mapping | None) -> int | None:
    """The K recorded in the report's meta, None when unknown (then every R@N is shown as computed)."""
    try:
        k = int((meta or {}).get(CANDIDATES))
    except (TypeError, ValueError):
        return None
    return k if k > 0 else None


def _measured(n: int, candidates: int | None) -> bool:
    return candidates is None or n <= candidates


def _num(x: float | None) -> float | None:
    """JSON-safe float: NaN/inf/None -> null (strict JSON has no NaN)."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


def threshold_label(max_t: float, max_r: float) -> str:
    return f"{max_t:g} m, {max_r:g}°"


# ----------------------------------------------------------------------------------------------------------
# JSON


def summary_to_dict(s: ConditionSummary, candidates: int | None = None) -> dict:
    """JSON of one condition; a recall@N above the `candidates` kept per query is null (not measured)."""
    return {
        "queries": s.queries, "answered": s.answered, "abstained": s.abstained, "abstain_rate": _num(s.abstain_rate),
        "within": [{"max_t_m": t, "max_r_deg": r, "share": _num(v)} for (t, r), v in zip(s.thresholds, s.shares)],
        "median_t_m": _num(s.median_t_m), "median_r_deg": _num(s.median_r_deg),
        "recall": [{"n": n, "radius_m": r, "share": _num(v) if _measured(n, candidates) else None}
                   for (n, r), v in sorted(s.recall.items())],
        "latency_s": {f"p{p:g}": _num(v) for p, v in s.latency_s.items()},
    }


def report_dict(summaries: Mapping[str, ConditionSummary], meta: Mapping | None = None,
                modes: Sequence[Any] = (), poses: Mapping | None = None, extra: Mapping | None = None) -> dict:
    """`modes`: `metrics.ModeSummary` rows (tracker modes side by side), listed under "modes" when given;
    `poses`: retrieval-only against refined rows (`poses.poses_dict`), under "poses" when given; `extra`: further
    top-level keys (a report's own sections, e.g. "hints")."""
    k = candidates_of(meta)
    out = {"meta": dict(meta or {}), "conditions": {c: summary_to_dict(s, k) for c, s in summaries.items()}}
    if modes:
        out["modes"] = [mode_summary_dict(r) for r in modes]
    if poses:
        out["poses"] = dict(poses)
    out.update(extra or {})
    return out


def write_json(path: str | Path, summaries: Mapping[str, ConditionSummary], meta: Mapping | None = None,
               modes: Sequence[Any] = (), poses: Mapping | None = None, extra: Mapping | None = None) -> Path:
    doc = report_dict(summaries, meta, modes, poses, extra)
    return atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------------------------------------
# Markdown


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100.0 * x:.1f}"


def _f(x: float, digits: int) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _name(c: str) -> str:
    return f"**{c}**" if c == ALL else c


def accuracy_table(summaries: Mapping[str, ConditionSummary]) -> list[str]:
    first = next(iter(summaries.values()))
    shares = [threshold_label(t, r) + " %" for t, r in first.thresholds]
    head = ["condition", "queries", "answered", "abstained %", *shares, "median t (m)", "median r (°)"]
    lines = [_row(head), _row(["---"] + ["---:"] * (len(head) - 1))]
    for c, s in summaries.items():
        counts = [str(s.queries), str(s.answered), _pct(s.abstain_rate)]
        medians = [_f(s.median_t_m, 3), _f(s.median_r_deg, 2)]
        lines.append(_row([_name(c), *counts, *(_pct(v) for v in s.shares), *medians]))
    return lines


def recall_table(summaries: Mapping[str, ConditionSummary], candidates: int | None = None) -> list[str]:
    """R@N table; a column with N above the `candidates` kept per query reads n/a (see recall_legend)."""
    keys = sorted({k for s in summaries.values() for k in s.recall})
    if not keys:
        return []
    head = ["condition", *(f"R@{n} ≤ {r:g} m %" for n, r in keys)]
    lines = [_row(head), _row(["---"] + ["---:"] * len(keys))]
    nan = float("nan")
    for c, s in summaries.items():
        lines.append(_row([_name(c), *(_pct(s.recall.get(k, nan) if _measured(k[0], candidates) else nan)
                                       for k in keys)]))
    return lines


def recall_legend(summaries: Mapping[str, ConditionSummary], candidates: int | None) -> str:
    """What the R@N table means, and why a column is n/a."""
    text = ("Share of queries with at least one of the top-N retrieved database images within r metres of the "
            "ground truth.")
    unmeasured = sorted({n for s in summaries.values() for n, _ in s.recall if not _measured(n, candidates)})
    if unmeasured:
        text += (f" R@{', R@'.join(map(str, unmeasured))}: n/a, because only the top {candidates} candidates per "
                 "query were kept, so recall beyond them was not measured (raise --top-k offline, or the node's "
                 "top_k parameter).")
    return text


def latency_table(summaries: Mapping[str, ConditionSummary]) -> list[str]:
    ps = sorted({p for s in summaries.values() for p in s.latency_s})
    if not ps:
        return []
    lines = [_row(["condition", *(f"p{p:g} (ms)" for p in ps)]), _row(["---"] + ["---:"] * len(ps))]
    for c, s in summaries.items():
        lines.append(_row([_name(c), *(_f(1000.0 * s.latency_s.get(p, float("nan")), 1) for p in ps)]))
    return lines


def markdown_report(summaries: Mapping[str, ConditionSummary], title: str = "DISAM localisation report",
                    meta: Mapping | None = None, modes: Sequence[Any] = (),
                    tolerance: tuple[float, float] = (5.0, 10.0), poses: Sequence[str] = ()) -> str:
    """`poses`: Markdown lines of the retrieval-only against refined section (`poses.poses_markdown`)."""
    if not summaries:
        raise ValueError("no results to report: the evaluation produced no queries; check the query set")
    out = [f"# {title}", ""]
    out += [f"- {k}: {v}" for k, v in (meta or {}).items()]
    out += ["", "## Correctly localised", "",
            "Share of ALL queries with translation error ≤ T and rotation error ≤ R (inclusive); an abstention "
            "counts as a failure. Medians are over answered queries." + (
                " The pose scored is the retrieval-only one (the answered map place's); refined poses: see "
                "\"Retrieval-only and refined poses\"." if poses else ""), "", *accuracy_table(summaries)]
    k = candidates_of(meta)
    if rec := recall_table(summaries, k):
        out += ["", "## Recall@N", "", recall_legend(summaries, k), "", *rec]
    if lat := latency_table(summaries):
        out += ["", "## Latency", "", "Per-query latency percentiles (image stamp to published pose, or the "
                "offline per-query time), all queries with a measured latency.", "", *lat]
    if modes:
        out += modes_markdown(modes, tolerance)
    out += list(poses)
    return "\n".join(out) + "\n"


def write_markdown(path: str | Path, summaries: Mapping[str, ConditionSummary],
                   title: str = "DISAM localisation report", meta: Mapping | None = None, modes: Sequence[Any] = (),
                   tolerance: tuple[float, float] = (5.0, 10.0), poses: Sequence[str] = ()) -> Path:
    return atomic_write_text(path, markdown_report(summaries, title, meta, modes, tolerance, poses))


# ----------------------------------------------------------------------------------------------------------
# visuallocalization.net


def world_to_camera(position: np.ndarray, quat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera pose in the map (p, q xyzw) -> (q_cw as w x y z, t_cw) with R_cw = R^T and t_cw = -R^T p."""
    q = normalize_quat(quat)
    R = quat_to_rot(q)
    t = -R.T @ np.asarray(position, float)
    return np.array([q[3], -q[0], -q[1], -q[2]]), t


def visloc_line(name: str, position: np.ndarray, quat: np.ndarray) -> str:
    if not name or any(ch.isspace() for ch in name):
        raise ValueError(f"query name {name!r} is empty or holds whitespace: the submission format is "
                         "space-separated; rename the image")
    q, t = world_to_camera(position, quat)
    return name + " " + " ".join(f"{v:.9f}" for v in (*q, *t))


def visloc_lines(results: Sequence[QueryResult]) -> list[str]:
    """One line per answered query, `name qw qx qy qz tx ty tz`; abstentions are left out (the benchmark
    then counts them as not localised)."""
    return [visloc_line(r.name, r.est_position, r.est_quat) for r in results if r.answered]


def write_visloc(path: str | Path, results: Sequence[QueryResult]) -> Path:
    lines = visloc_lines(results)
    return atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


# ----------------------------------------------------------------------------------------------------------
# per-query results (JSON lines), so plots and reports can be redone without re-running the localiser


def _arr(x) -> list | None:
    return None if x is None else np.asarray(x, float).tolist()


def result_to_dict(r: QueryResult) -> dict:
    return {"name": r.name, "condition": r.condition, "gt_position": _arr(r.gt_position), "gt_quat": _arr(r.gt_quat),
            "est_position": _arr(r.est_position), "est_quat": _arr(r.est_quat), "latency_s": r.latency_s,
            "candidate_positions": _arr(r.candidate_positions), "match_name": r.match_name}


def result_from_dict(d: Mapping) -> QueryResult:
    def arr(key):
        return None if d.get(key) is None else np.asarray(d[key], float)

    return QueryResult(d["name"], d["condition"], arr("gt_position"), arr("gt_quat"), arr("est_position"),
                       arr("est_quat"), d.get("latency_s"), arr("candidate_positions"), d.get("match_name"))


def write_results(path: str | Path, results: Sequence[QueryResult]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(result_to_dict(r)) + "\n" for r in results))


def read_results(path: str | Path) -> list[QueryResult]:
    out = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(result_from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: not a query result ({exc}); re-run the evaluation") from None
    return out


# ----------------------------------------------------------------------------------------------------------
# tracker modes side by side (single / sequence / window)


def mode_summary_dict(s: Any) -> dict:
    """JSON of one `metrics.ModeSummary` row."""
    return {"condition": s.condition, "mode": s.mode, "frames": s.frames, "answered": s.answered,
            "within": [{"max_t_m": t, "max_r_deg": r, "share": _num(v)} for (t, r), v in zip(s.thresholds, s.shares)],
            "threshold": _num(s.threshold), "calibrated": s.calibrated, "published": s.published,
            "coverage": _num(s.coverage), "precision": _num(s.precision), "ece": _num(s.ece),
            "nees_mean": _num(s.nees_mean), "nees_median": _num(s.nees_median), "in_map": s.in_map,
            "in_map_share": _num(s.in_map_share)}


def modes_table(rows: Sequence[Any], tolerance: tuple[float, float]) -> list[str]:
    """Markdown: per condition, one line per mode (R@1 within each threshold, coverage, precision, ECE, NEES)."""
    if not rows:
        return []
    shares = [f"R@1 {threshold_label(t, r)} %" for t, r in rows[0].thresholds]
    head = ["condition", "mode", "frames", *shares, "in map", f"R@1 in map {threshold_label(*tolerance)} %",
            "threshold", "coverage %",
            f"precision ≤ {threshold_label(*tolerance)} %", "ECE", "NEES mean"]
    lines = [_row(head), _row(["---", "---"] + ["---:"] * (len(head) - 2))]
    for s in rows:
        thr = ("none" if not math.isfinite(s.threshold) else f"{s.threshold:.3f}") + ("" if s.calibrated else " (h)")
        lines.append(_row([_name(s.condition), s.mode, str(s.frames), *(_pct(v) for v in s.shares),
                           "–" if s.in_map is None else str(s.in_map), _pct(s.in_map_share), thr,
                           _pct(s.coverage), _pct(s.precision), _f(s.ece, 3), _f(s.nees_mean, 2)]))
    return lines


MODES_LEGEND = ("R@1: share of ALL frames whose retrieval-only answer (the answered map place's pose, published or "
                "not) is within the tolerance. In map: frames "
                "that some map pose lies within the tolerance of (a drive that runs past the map's end has frames "
                "no answer can get right); R@1 in map: the share of those answered within the tolerance. "
                "Coverage: share "
                "of frames published, i.e. answered with confidence ≥ the threshold (the map calibration's "
                "threshold for a calibrated mode; (h): a heuristic confidence and the heuristic threshold). "
                "Precision: share of the published poses (refined where verified) within the tolerance. ECE: "
                "expected calibration error of the answered frames' confidence against their published pose being "
                "within the tolerance (10 bins). NEES: mean normalised "
                "estimation error squared of the published positions under their covariance (3 is consistent). "
                "Plots: reliability.png, precision_coverage.png.")


def modes_markdown(rows: Sequence[Any], tolerance: tuple[float, float]) -> list[str]:
    return ["", "## Modes side by side", "", MODES_LEGEND, "", *modes_table(rows, tolerance)]


def tracked_to_dict(f: Any) -> dict:
    """One line of modes.jsonl (a `scoring.TrackedFrame`): est_* is the published pose (refined where verified),
    place_* the retrieval-only pose (the answered map place's), each with its errors (null: no answer)."""
    (pt, pr), (rt, rr) = f.errors(), f.retrieval_errors()
    answered = f.est_position is not None
    place_p, place_q = (f.place_position, f.place_quat) if f.place_position is not None else (f.est_position,
                                                                                             f.est_quat)
    return {"mode": f.mode, "condition": f.condition, "name": f.name, "gt_position": _arr(f.gt_position),
            "gt_quat": _arr(f.gt_quat), "est_position": _arr(f.est_position), "est_quat": _arr(f.est_quat),
            "confidence": _num(f.confidence), "feature": _num(f.feature), "calibrated": f.calibrated,
            "nees": _num(f.nees), "place_position": _arr(place_p) if answered else None,
            "place_quat": _arr(place_q) if answered else None, "retrieval_t_m": _num(rt), "retrieval_r_deg": _num(rr),
            "published_t_m": _num(pt), "published_r_deg": _num(pr), "verified": bool(f.verified),
            "verification": f.verification or None, "inliers": int(f.inliers), "refine_ms": _num(f.refine_ms),
            "stamp": _num(f.stamp), "covariance": _arr(f.covariance) if f.covariance is not None else None,
            "keyframe_index": f.keyframe_index, "keyframe_position": _arr(f.keyframe_position),
            "keyframe_quat": _arr(f.keyframe_quat), "attempts": list(f.attempts),
            "late": None if f.late is None else {k: v if k in ("keyframe_index", "arrived_stamp") else _arr(v)
                                                 for k, v in f.late.items()}}


def write_tracked(path: str | Path, frames: Sequence[Any]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(tracked_to_dict(f)) + "\n" for f in frames))
