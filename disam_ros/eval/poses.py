"""Retrieval-only against refined poses, per condition and tracker mode.

Two poses per answered frame: the retrieval-only pose (the answered map place's: the retrieved map image in
single mode, the belief's best place in sequence/window) and the published pose ("refined": the verified,
PnP-refined pose where geometric verification passed, else the retrieval-only pose). Each is scored as the
share of ALL frames within (0.25 m, 2°), (0.5 m, 5°) and (5 m, 10°); a frame without an answer fails both.
Beside the refined shares: the share of frames published as verified, the precision of the verified poses at
(5 m, 10°) with its count, the largest error of any verified pose and the median time verification took
(over the frames it ran on, failed attempts included). A map without geometry (or `disam-eval --no-verify`,
or node recordings older than verification) gives the retrieval-only rows alone and one line saying why.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from disam_ros.eval.metrics import ALL, DEFAULT_THRESHOLDS, threshold_shares, within

PRECISION_AT = DEFAULT_THRESHOLDS[-1]  # (5 m, 10°): what a verified pose must never be farther than
NOTHING_VERIFIED = "no frame went through verification (the localizer ran retrieval-only)"
OLD_HINTS = ("no recorded loop-closure hint carries a verification outcome (recorded from a node without "
             "verification, or before hints had the `verified` key)")


@dataclass(frozen=True)
class PoseRow:
    """One (condition, mode): shares of ALL frames within each threshold, retrieval-only and refined, and what
    verification did (counts over all frames; NaN where nothing was verified or timed)."""

    condition: str
    mode: str
    frames: int
    thresholds: tuple[tuple[float, float], ...]
    retrieval: tuple[float, ...]
    refined: tuple[float, ...]
    verified: int
    verified_right: int  # verified poses within PRECISION_AT
    verified_max_t_m: float
    verified_max_r_deg: float
    refine_ms_median: float

    @property
    def verified_share(self) -> float:
        return self.verified / self.frames if self.frames else math.nan

    @property
    def verified_precision(self) -> float:
        return self.verified_right / self.verified if self.verified else math.nan


def pose_row(condition: str, mode: str, frames: Sequence[Any],
             thresholds: Sequence[tuple[float, float]] = DEFAULT_THRESHOLDS) -> PoseRow:
    """Score `scoring.TrackedFrame`s: `retrieval_errors()` (retrieval-only), `errors()` (published, refined
    where `verified`)."""
    ret = np.array([f.retrieval_errors() for f in frames], float).reshape(-1, 2)
    pub = np.array([f.errors() for f in frames], float).reshape(-1, 2)
    ver = np.array([bool(f.verified) and f.est_position is not None for f in frames], bool)
    ms = np.array([f.refine_ms for f in frames], float)
    ms = ms[np.isfinite(ms)]
    vt, vr = pub[ver, 0], pub[ver, 1]
    return PoseRow(condition, mode, len(frames), tuple((float(a), float(b)) for a, b in thresholds),
                   tuple(threshold_shares(ret[:, 0], ret[:, 1], thresholds)),
                   tuple(threshold_shares(pub[:, 0], pub[:, 1], thresholds)), int(ver.sum()),
                   int(within(vt, vr, *PRECISION_AT).sum()), float(vt.max()) if vt.size else math.nan,
                   float(vr.max()) if vr.size else math.nan, float(np.median(ms)) if ms.size else math.nan)


def by_condition_and_mode(frames: Sequence[Any]) -> Iterator[tuple[str, str, list[Any]]]:
    """(condition, mode, its frames) per condition (sorted) then 'all', each with the modes in the order first seen
    (as the modes table); empty groups left out."""
    modes = list(dict.fromkeys(f.mode for f in frames))
    for c in sorted({f.condition for f in frames}) + [ALL]:
        for m in modes:
            fs = [f for f in frames if f.mode == m and (c == ALL or f.condition == c)]
            if fs:
                yield c, m, fs


def pose_rows(frames: Sequence[Any], thresholds: Sequence[tuple[float, float]] = DEFAULT_THRESHOLDS) -> list[PoseRow]:
    """Rows per condition (sorted) then 'all', each with the modes in the order first seen (as the modes table)."""
    return [pose_row(c, m, fs, thresholds) for c, m, fs in by_condition_and_mode(frames)]


def refine_note(frames: Sequence[Any], reason: str | None = None) -> str | None:
    """Why the refined rows are left out (None: they are shown): `reason` when given, else when no frame went
    through verification."""
    if reason:
        return reason
    return None if any(f.verification for f in frames) else NOTHING_VERIFIED


# ----------------------------------------------------------------------------------------------- JSON / text


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _within(row: PoseRow, shares: Sequence[float]) -> list[dict]:
    return [{"max_t_m": t, "max_r_deg": r, "share": _num(v)} for (t, r), v in zip(row.thresholds, shares)]


def pose_row_dict(row: PoseRow, refined: bool = True) -> dict:
    out = {"condition": row.condition, "mode": row.mode, "frames": row.frames,
           "retrieval_only": {"within": _within(row, row.retrieval)}}
    if refined:
        out["refined"] = {"within": _within(row, row.refined)}
        out.update({"verified": row.verified, "verified_share": _num(row.verified_share),
                    "verified_within_precision_threshold": row.verified_right,
                    "verified_precision": _num(row.verified_precision), "verified_max_t_m": _num(row.verified_max_t_m),
                    "verified_max_r_deg": _num(row.verified_max_r_deg),
                    "refine_ms_median": _num(row.refine_ms_median)})
    return out


def poses_dict(rows: Sequence[PoseRow], note: str | None) -> dict:
    """report.json's "poses": `refined` false and `note` saying why when only retrieval-only rows exist."""
    return {"refined": note is None, "note": note,
            "precision_threshold": {"max_t_m": PRECISION_AT[0], "max_r_deg": PRECISION_AT[1]},
            "rows": [pose_row_dict(r, note is None) for r in rows]}


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100.0 * x:.1f}"


def _label(t: float, r: float) -> str:
    return f"{t:g} m, {r:g}°"


LEGEND = ("Share of ALL frames within each threshold (an unanswered frame fails). **retrieval-only**: the "
          "answered map place's pose (the retrieved map image in single mode, the belief's best place in "
          "sequence/window). **refined**: the published pose: the verified, PnP-refined pose where geometric "
          "verification passed, else the retrieval-only pose. verified: share of frames published as verified; "
          f"precision: share of the verified poses within ({_label(*PRECISION_AT)}), with the counts (right of "
          "verified); "
          "largest error: the largest translation / rotation error of any verified pose; refine: median "
          "milliseconds verification took on the frames it ran on.")


def poses_markdown(rows: Sequence[PoseRow], note: str | None) -> list[str]:
    if not rows:
        return []
    out = ["", "## Retrieval-only and refined poses", "", LEGEND, ""]
    if note is not None:
        out += [f"Refined rows omitted: {note}.", ""]
    head = ["condition", "mode", "pose", "frames", *(f"{_label(t, r)} %" for t, r in rows[0].thresholds)]
    if note is None:
        head += ["verified %", f"precision ≤ {_label(*PRECISION_AT)} %", "largest error", "refine ms"]
    out += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for r in rows:
        name = f"**{r.condition}**" if r.condition == ALL else r.condition
        cells = [name, r.mode, "retrieval-only", str(r.frames), *(_pct(v) for v in r.retrieval)]
        out.append("| " + " | ".join(cells + (["–"] * 4 if note is None else [])) + " |")
        if note is None:
            out.append("| " + " | ".join([name, r.mode, "refined", str(r.frames), *(_pct(v) for v in r.refined),
                                          _pct(r.verified_share), _precision(r), _largest(r), _ms(r)]) + " |")
    return out


def _precision(r: PoseRow) -> str:
    return f"{_pct(r.verified_precision)} ({r.verified_right} of {r.verified})"


def _largest(r: PoseRow) -> str:
    return "–" if not r.verified else f"{r.verified_max_t_m:.2f} m, {r.verified_max_r_deg:.1f}°"


def _ms(r: PoseRow) -> str:
    return "n/a" if not math.isfinite(r.refine_ms_median) else f"{r.refine_ms_median:.1f}"


def pose_rows_text(rows: Sequence[PoseRow], note: str | None) -> list[str]:
    """Terminal table: retrieval-only and refined rows per condition and mode (the Markdown report has the same)."""
    if not rows:
        return []
    head = ["condition", "mode", "pose", "n", *(f"{t:g}m/{r:g}°" for t, r in rows[0].thresholds)]
    if note is None:
        head += ["verified", f"precision {PRECISION_AT[0]:g}m/{PRECISION_AT[1]:g}°", "largest error", "refine ms"]
    table = [head]
    for r in rows:
        shares = [f"{100 * v:5.1f}%" if math.isfinite(v) else "-" for v in r.retrieval]
        table.append([r.condition, r.mode, "retrieval", str(r.frames), *shares] + (["-"] * 4 if note is None else []))
        if note is None:
            table.append([r.condition, r.mode, "refined", str(r.frames),
                          *(f"{100 * v:5.1f}%" if math.isfinite(v) else "-" for v in r.refined),
                          f"{100 * r.verified_share:5.1f}%",
                          "-" if not r.verified else
                          f"{100 * r.verified_precision:5.1f}% ({r.verified_right}/{r.verified})",
                          _largest(r).replace("–", "-"), _ms(r).replace("n/a", "-")])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["", *("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)]
    return lines + ([f"refined rows omitted: {note}"] if note is not None else [])


# ----------------------------------------------------------------------------------------------- node hints


def hint_fields(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a recorded loop-closure hint says about verification, as `TrackedFrame` keyword arguments
    (verified, verification, inliers, refine_ms, place_position, place_quat, and the keyframe_* a verified schema-2
    hint names); None for a hint without the
    `verified` key (a node without verification: its published pose is the map place's). `verification` null
    with `verified` false: verification did not run on that frame (outcome "")."""
    if "verified" not in doc:
        return None
    v = doc.get("verification")
    detail = v if isinstance(v, Mapping) else {}
    outcome = detail.get("outcome", detail.get("verification")) if detail else v
    verified = bool(doc.get("verified"))
    out = {"verified": verified, "verification": str(outcome or ("verified" if verified else "")),
           "inliers": _int(detail.get("inliers", doc.get("inliers"))),
           "refine_ms": _float(detail.get("refine_ms", detail.get("ms", doc.get("refine_ms"))))}
    pos, quat = doc.get("place_position"), doc.get("place_orientation_xyzw")
    if pos is not None and quat is not None:
        out["place_position"], out["place_quat"] = np.asarray(pos, float), np.asarray(quat, float)
    key, kp, kq = doc.get("keyframe_index"), doc.get("keyframe_position"), doc.get("keyframe_orientation_xyzw")
    if verified and isinstance(key, int) and kp is not None and kq is not None:  # schema 2: for disam-slam-eval
        out.update(keyframe_index=key, keyframe_position=np.asarray(kp, float), keyframe_quat=np.asarray(kq, float))
    return out


def _int(x: Any) -> int:
    try:
        return int(x) if x is not None else 0
    except (TypeError, ValueError):
        return 0


def _float(x: Any) -> float:
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def poses_text(frames: Sequence[Any], reason: str | None = None) -> list[str]:
    """The terminal table of `scoring.TrackedFrame`s (`refine_note` decides whether refined rows are shown)."""
    return pose_rows_text(pose_rows(frames), refine_note(frames, reason)) if frames else []
