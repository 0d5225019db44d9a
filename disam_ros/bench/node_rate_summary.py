"""The rows of `disam-bench node --rate` (disam_ros/bench/node_rate.py): what came back for each published frame,
summarised per drive and over all drives, and the table printed from them. Pure functions of the records."""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from disam_ros.eval.metrics import DEFAULT_THRESHOLDS, nees, within
from disam_ros.geometry import quat_angle_deg

FINE, COARSE = DEFAULT_THRESHOLDS[0], DEFAULT_THRESHOLDS[-1]  # (0.25 m, 2 deg), (5 m, 10 deg)
CHI2_3_90 = 6.251  # 90 % quantile of chi-square with 3 degrees of freedom: a position inside its 90 % ellipsoid
# the node's diagnostics counters read per drive (before/after difference)
COUNTERS = ("received", "dropped_in_queue", "dropped_by_node", "processed", "localized", "not_localized",
            "junk_frames", "bad_input", "errors", "verified_frames", "unverified_frames", "keyframes_solved",
            "keyframes_verified")


@dataclass
class FrameRecord:
    """One published query frame and what came back for it (times in seconds, monotonic clock)."""

    t_pub: float
    gt_position: np.ndarray
    gt_quat: np.ndarray
    t_recv: float | None = None
    position: np.ndarray | None = None
    quat: np.ndarray | None = None
    verified: bool = False
    refine_ms: float = math.nan
    late_position: np.ndarray | None = None  # a late loop-closure hint's pose (verify_keyframes), None: none came
    late_quat: np.ndarray | None = None
    covariance: np.ndarray | None = None  # the published pose's position covariance (3, 3), when one came


def _share(flags: Sequence[bool], n: int) -> float | None:
    return sum(bool(f) for f in flags) / n if n else None


def from_first_verified(frames: Sequence[FrameRecord]) -> list[FrameRecord]:
    """The drive's frames from its first one answered as verified on, in publishing order ([] when none was).
    Why: on one core the first verified keyframe and its catch-up take ~0.5-1.3 s of a drive, so a short drive's
    share within (0.25 m, 2 deg) is mostly that start; the frames after it show what the node keeps up with."""
    ordered = sorted(frames, key=lambda f: f.t_pub)
    first = next((i for i, f in enumerate(ordered) if f.verified and f.t_recv is not None), None)
    return [] if first is None else ordered[first:]


def _within_share(frames: Sequence[FrameRecord], threshold: tuple[float, float] = FINE) -> float | None:
    """Share of the frames (sent) whose answered pose is within `threshold` (m, deg); None for no frames."""
    answered = [f for f in frames if f.t_recv is not None and f.position is not None]
    t_err = np.array([np.linalg.norm(np.asarray(f.position) - f.gt_position) for f in answered], float)
    r_err = np.array([quat_angle_deg(f.gt_quat, np.asarray(f.quat)) for f in answered], float)
    return _share(within(t_err, r_err, *threshold), len(frames))


def _fine(position: Any, quat: Any, f: FrameRecord) -> bool:
    return bool(within(np.array([np.linalg.norm(np.asarray(position) - f.gt_position)]),
                       np.array([quat_angle_deg(f.gt_quat, np.asarray(quat))]), *FINE)[0])


def _hinted_share(frames: Sequence[FrameRecord]) -> float | None:
    """Share of the frames (sent) a SLAM back end got a verified loop closure within (0.25 m, 2 deg) for: the
    frame's own hint (verified, with its pose) or a late one (a keyframe verified after the frame was answered)."""
    return _share([(f.verified and f.position is not None and _fine(f.position, f.quat, f))
                   or (f.late_position is not None and _fine(f.late_position, f.late_quat, f)) for f in frames],
                  len(frames))


def _verified_trust(frames: Sequence[FrameRecord]) -> dict[str, Any]:
    """What a SLAM back end may take a verified answer for: how many verified answers were off by more than
    (0.25 m, 2 deg), and their position NEES (median, share inside the 90 % ellipsoid) over those with a
    covariance. Why: a share within 0.25 m says how often the node is right, not whether a verified pose and its
    covariance can be believed (at 30 Hz long flow chains drift while still verified)."""
    verified = [f for f in frames if f.verified and f.t_recv is not None and f.position is not None]
    values = [nees(np.asarray(f.position) - f.gt_position, f.covariance) for f in verified
              if f.covariance is not None]
    values = [v for v in values if math.isfinite(v)]
    return {"verified_wrong": sum(not _fine(f.position, f.quat, f) for f in verified),
            "nees_median": statistics.median(values) if values else None,
            "nees_inside_90": _share([v <= CHI2_3_90 for v in values], len(values))}


def summarize_frames(drive: str, frames: Sequence[FrameRecord], node: Mapping[str, int] | None = None
                     ) -> dict[str, Any]:
    """Counts, latency (ms) over answered frames, and shares over SENT frames; `node`: counter differences.
    `first_verified_s`: from the drive's first publish to its first frame answered as verified;
    `within_0.25m_2deg_after_first`: the fine share over the frames from that one on (`from_first_verified`)."""
    answered = [f for f in frames if f.t_recv is not None and f.position is not None]
    lat = sorted(1e3 * (f.t_recv - f.t_pub) for f in answered)
    steady = from_first_verified(frames)
    refine = [f.refine_ms for f in answered if math.isfinite(f.refine_ms)]
    pubs = sorted(f.t_pub for f in frames)
    row: dict[str, Any] = {
        "drive": drive, "sent": len(frames), "answered": len(answered), "dropped": len(frames) - len(answered),
        "publish_hz": (len(pubs) - 1) / (pubs[-1] - pubs[0]) if len(pubs) > 1 and pubs[-1] > pubs[0] else None,
        "latency_median_ms": statistics.median(lat) if lat else None,
        "latency_p95_ms": float(np.percentile(lat, 95)) if lat else None,
        "latency_max_ms": max(lat) if lat else None,
        "within_0.25m_2deg": _within_share(frames, FINE),
        "within_5m_10deg": _within_share(frames, COARSE),
        "verified_share": _share([f.verified for f in answered], len(frames)),
        "verify_ms_median": statistics.median(refine) if refine else None,
        "first_verified_s": steady[0].t_pub - min(f.t_pub for f in frames) if steady else None,
        "within_0.25m_2deg_after_first": _within_share(steady),
        "late_hints": sum(f.late_position is not None for f in frames),
        "hinted_0.25m_2deg": _hinted_share(frames),
        **_verified_trust(frames),
    }
    if node is not None:
        row["node"] = {k: v for k, v in node.items() if k in COUNTERS}
        row["keyframe_ms_median"] = node.get("keyframe_ms_median")  # wall clock, sharing the core
        row["keyframe_run_ms_median"] = node.get("keyframe_run_ms_median")  # on a CPU: the cost on one thread
        row["keyframe_verify_run_ms_median"] = node.get("keyframe_verify_run_ms_median")  # of it, verification's
        row["keyframe_verify_run_ms"] = node.get("keyframe_verify_run_ms")  # ... each keyframe's (combine_runs)
        if node.get("keyframes_solved"):  # verify_keyframes: how many the thread solved, and verified
            row.update(keyframes_solved=node["keyframes_solved"], keyframes_verified=node.get("keyframes_verified"))
    return row


def summarize_all(drives: Sequence[tuple[str, Sequence[FrameRecord], Mapping[str, int] | None]]) -> dict[str, Any]:
    """The "all" row: every drive's frames together (publish_hz: the mean of the drives'; the after-first share
    pools each drive's frames from its own first verified one; first_verified_s: the median of the drives')."""
    row = summarize_frames("all", [f for _, frames, _ in drives for f in frames],
                           {k: sum((n or {}).get(k, 0) for _, _, n in drives) for k in COUNTERS})
    per = [summarize_frames(d, f) for d, f, _ in drives]
    hz = [r["publish_hz"] for r in per if r["publish_hz"] is not None]
    row["publish_hz"] = statistics.fmean(hz) if hz else None
    firsts = [r["first_verified_s"] for r in per if r["first_verified_s"] is not None]
    row["first_verified_s"] = statistics.median(firsts) if firsts else None
    steady = [f for _, frames, _ in drives for f in from_first_verified(frames)]
    row["within_0.25m_2deg_after_first"] = _within_share(steady)
    return row


def combine_runs(runs: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Several runs' rows -> one row per drive (the first run's order): the median over the runs of every numeric
    field (and of every node counter) that some run has, and `within_0.25m_2deg_range` [min, max]; the keyframes'
    verification median is taken over every run's keyframes together. Why: on one shared core a drive's shares
    move by several points from run to run, and one run's figure is not the bench's; a run has 2-15 keyframes a
    drive, and the median of such runs' medians moved by 100 ms between benches of the same code."""
    out = []
    for first in runs[0]:
        same = [r for rows in runs for r in rows if r["drive"] == first["drive"]]
        row: dict[str, Any] = {"drive": first["drive"], "runs": len(same)}
        for k in first:
            values = [r.get(k) for r in same]
            if k == "node" and any(isinstance(v, Mapping) for v in values):
                nodes = [v for v in values if isinstance(v, Mapping)]
                row[k] = {c: statistics.median(n[c] for n in nodes if c in n) for c in nodes[0]}
            elif k not in row:
                nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
                row[k] = statistics.median(nums) if nums else None
        pooled = [x for r in same for x in r.get("keyframe_verify_run_ms") or ()]
        if pooled:  # a run has a few keyframes a drive: the median over all runs' keyframes, not of runs' medians
            row["keyframe_verify_run_ms"], row["keyframe_verify_run_ms_median"] = pooled, statistics.median(pooled)
        shares = [r["within_0.25m_2deg"] for r in same if r.get("within_0.25m_2deg") is not None]
        row["within_0.25m_2deg_range"] = [min(shares), max(shares)] if shares else None
        out.append(row)
    return out


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    cols = [("drive", "drive"), ("sent", "sent"), ("answered", "answered"), ("dropped", "dropped"),
            ("publish_hz", "pub Hz"), ("latency_median_ms", "median ms"), ("latency_p95_ms", "p95 ms"),
            ("latency_max_ms", "max ms"), ("within_0.25m_2deg", "0.25m/2°"), ("within_5m_10deg", "5m/10°"),
            ("verified_share", "verified"), ("verify_ms_median", "verify ms"), ("keyframe_ms_median", "keyframe ms"),
            ("keyframe_run_ms_median", "kf run ms"), ("keyframe_verify_run_ms_median", "kf verify ms"),
            ("keyframes_solved", "keyframes"), ("keyframes_verified", "kf verified"),
            ("verified_wrong", "verified off"), ("nees_median", "NEES med"), ("nees_inside_90", "in 90 %"),
            ("first_verified_s", "1st verified s"), ("within_0.25m_2deg_after_first", "0.25m/2° after"),
            ("late_hints", "late hints"), ("hinted_0.25m_2deg", "hinted 0.25m/2°")]
    if any(r.get("within_0.25m_2deg_range") for r in rows):  # --runs: the median's range beside it
        cols.insert(9, ("within_0.25m_2deg_range", "range"))
    pct = {"within_0.25m_2deg", "within_5m_10deg", "verified_share", "within_0.25m_2deg_after_first",
           "hinted_0.25m_2deg", "nees_inside_90"}

    def fmt(k: str, v: Any) -> str:
        if v is None:
            return "-"
        if k == "within_0.25m_2deg_range":
            return f"{100 * v[0]:.0f}-{100 * v[1]:.0f} %"
        return f"{100 * v:.0f} %" if k in pct else f"{v:.1f}" if isinstance(v, float) else str(v)

    cells = [[h for _, h in cols]] + [[fmt(k, r.get(k)) for k, _ in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
