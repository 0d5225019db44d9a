"""What a SLAM back end got from the localizer's loop-closure topic: per condition and tracker mode, the frames with a
verified hint within (0.25 m, 2 deg), in time (the frame's own hint) or late (`verify_keyframes`: a keyframe verified
after its frame was answered goes out as a second hint at that frame's stamp, `"late": true`).

Why its own table: with `verify_keyframes` the published poses of drives that optical flow cannot follow (rain, a
3 m-spaced drive at 30 Hz) are mostly unverified, while their keyframes' verified poses reach SLAM late; the pose
tables score only what was published with the frame. `disam-eval-online` writes it; `disam-eval --keyframes --rate`
and `disam-bench node --rate` give the same share per drive (`hinted`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from disam_ros.eval.metrics import ALL
from disam_ros.eval.poses import by_condition_and_mode

WITHIN = (0.25, 2.0)  # m, deg: a hint SLAM can close a loop on (the real-time replay's and the bench's tolerance)

LatePose = tuple[np.ndarray, np.ndarray]  # a late hint's position and quaternion (x, y, z, w), map frame


@dataclass(frozen=True)
class HintRow:
    """One (condition, mode): frames, verified in-time hints within WITHIN, late hints received and those within
    WITHIN, and the frames SLAM got a verified hint within WITHIN for, in time or late (`hinted`)."""

    condition: str
    mode: str
    frames: int
    in_time: int
    late: int
    late_within: int
    hinted: int

    @property
    def hinted_share(self) -> float:
        return self.hinted / self.frames if self.frames else math.nan


def hint_row(condition: str, mode: str, frames: Sequence[Any], late: Mapping[tuple[str, str], LatePose]) -> HintRow:
    """Score `scoring.TrackedFrame`s (a verified published pose is a hint in time: the evaluated nodes hint every
    published pose) and the late hints by (condition, frame name)."""
    in_time = late_n = late_within = hinted = 0
    for f in frames:
        ok = bool(f.verified) and f.est_position is not None and f.correct(WITHIN)
        pose = late.get((f.condition, f.name))
        late_ok = False
        if pose is not None:
            late_n += 1
            late_ok = replace(f, est_position=np.asarray(pose[0], float), est_quat=np.asarray(pose[1], float)
                              ).correct(WITHIN)
            late_within += int(late_ok)
        in_time += int(ok)
        hinted += int(ok or late_ok)
    return HintRow(condition, mode, len(frames), in_time, late_n, late_within, hinted)


def hint_rows(tracked: Sequence[Any], late: Mapping[str, Mapping[tuple[str, str], LatePose]]) -> list[HintRow]:
    """Rows per condition (sorted) then 'all', each with the modes in the order first seen; `late`: per mode, the
    late hints' poses by (condition, frame name)."""
    return [hint_row(c, m, fs, late.get(m, {})) for c, m, fs in by_condition_and_mode(tracked)]


def hints_markdown(rows: Sequence[HintRow]) -> list[str]:
    """The report's section (empty without rows)."""
    if not rows:
        return []
    out = ["", "## Loop-closure hints", "",
           "What a SLAM back end got on `~/loop_closure`: in time, the frames whose own hint is a verified pose "
           "within (0.25 m, 2°); late, the hints of keyframes verified after their frames were answered "
           "(`verify_keyframes`), received and within (0.25 m, 2°); hinted: the share of ALL frames with a verified "
           "hint within (0.25 m, 2°), in time or late.", "",
           "| condition | mode | frames | in time | late | late within | hinted % |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = f"**{r.condition}**" if r.condition == ALL else r.condition
        out.append(f"| {name} | {r.mode} | {r.frames} | {r.in_time} | {r.late} | {r.late_within} | "
                   f"{100 * r.hinted_share:.1f} |")
    return out


def hints_dict(rows: Sequence[HintRow]) -> list[dict]:
    return [{"condition": r.condition, "mode": r.mode, "frames": r.frames, "in_time": r.in_time, "late": r.late,
             "late_within": r.late_within, "hinted": r.hinted, "hinted_share": r.hinted_share} for r in rows]


def hints_text(rows: Sequence[HintRow]) -> list[str]:
    """Terminal lines: the 'all' rows (one per mode)."""
    return [f"hints {r.mode}: {r.hinted}/{r.frames} frames hinted within 0.25 m, 2 deg "
            f"({100 * r.hinted_share:.1f} %; {r.in_time} in time, {r.late_within} of {r.late} late)"
            for r in rows if r.condition == ALL]
