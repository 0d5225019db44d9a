"""What a pose-graph back end receives from the localizer, read back from `disam-eval`'s modes.jsonl: per drive
the frames in time order with their ground truth, and the loop closures the node's hints carry.

A verified frame becomes a between-factor from its map keyframe (the relative pose keyframe -> camera and its
covariance, computed exactly as the node's loop-closure hint computes them: disam_ros.pose.relative); an
unverified answered frame can become an absolute prior with its wide retrieval covariance. Reading them from the
evaluation's own records (not re-running the localizer) keeps the back-end experiments to seconds and scores
the back end on exactly the frames the localizer report scored.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from disam_ros.geometry import quat_to_rot, rot_to_quat
from disam_ros.pose.relative import relative_covariance, relative_pose


@dataclass(frozen=True)
class Closure:
    """One localizer hint as a back end uses it. kind 'between': the camera at `t` seen from map keyframe
    `keyframe_id` (relative pose + 6x6 covariance, ROS order, keyframe frame); 'absolute': the map pose with
    its covariance (unverified retrieval)."""

    t: float
    kind: str
    position: np.ndarray  # the camera pose the hint asks for, map frame
    quat: np.ndarray
    covariance: np.ndarray  # of `position`/`quat` (absolute) or of the relative pose (between)
    keyframe_id: int | None = None
    keyframe_position: np.ndarray | None = None
    keyframe_quat: np.ndarray | None = None
    rel_position: np.ndarray | None = None
    rel_quat: np.ndarray | None = None
    wrong: bool = False  # deliberately corrupted (disam-slam-eval --wrong-share)
    arrives: float = math.nan  # a late hint's: the frame stamp it reached the back end at (inf: after the last
    #                           frame; NaN: at its own stamp `t`)


@dataclass(frozen=True)
class Drive:
    """One query drive in time order: stamps (N,), ground-truth camera poses, and the localizer's hints."""

    condition: str
    stamps: np.ndarray
    gt_positions: np.ndarray
    gt_quats: np.ndarray
    closures: tuple[Closure, ...]

    @property
    def length_m(self) -> float:
        return float(np.linalg.norm(np.diff(self.gt_positions, axis=0), axis=1).sum())


def between(t: float, key_id: int, key_p: np.ndarray, key_q: np.ndarray, p: np.ndarray, q: np.ndarray,
            cov: np.ndarray, wrong: bool = False) -> Closure:
    """The hint of a verified frame: camera pose (p, q) with covariance `cov` (absolute, map frame) as seen
    from keyframe (key_p, key_q)."""
    rel_p, rel_q = relative_pose(key_p, key_q, p, q)
    return Closure(t, "between", np.asarray(p, float), np.asarray(q, float), relative_covariance(cov, key_q),
                   int(key_id), np.asarray(key_p, float), np.asarray(key_q, float), rel_p, rel_q, wrong)


def _closure(row: dict, use_unverified: bool) -> Closure | None:
    """The frame's hint: its verified pose, else a late hint's (`verify_keyframes`: a keyframe verified after the
    frame was answered, at the frame's stamp), else with `use_unverified` its published pose; None: no hint."""
    if row.get("est_position") is None or row.get("covariance") is None:
        return None
    p, q = np.asarray(row["est_position"], float), np.asarray(row["est_quat"], float)
    cov = np.asarray(row["covariance"], float).reshape(6, 6)
    if row.get("verified") and row.get("keyframe_index") is not None:
        return between(float(row["stamp"]), int(row["keyframe_index"]), np.asarray(row["keyframe_position"], float),
                       np.asarray(row["keyframe_quat"], float), p, q, cov)
    if late := row.get("late"):
        c = between(float(row["stamp"]), int(late["keyframe_index"]), np.asarray(late["keyframe_position"], float),
                    np.asarray(late["keyframe_quat"], float), np.asarray(late["position"], float),
                    np.asarray(late["quat"], float), np.asarray(late["covariance"], float).reshape(6, 6))
        arrived = late.get("arrived_stamp", float(row["stamp"]))  # records without it: at the frame's own stamp
        return replace(c, arrives=math.inf if arrived is None else float(arrived))
    if use_unverified:
        return Closure(float(row["stamp"]), "absolute", p, q, cov)
    return None


def read_drives(path: str | Path, mode: str, use_unverified: bool = False) -> list[Drive]:
    """The drives of one tracker mode in modes.jsonl, in file order (one per condition)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file: pass the modes.jsonl that disam-eval wrote (--out DIR)")
    rows: dict[str, list[dict]] = {}
    modes = set()
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not JSON ({exc.msg}): pass disam-eval's modes.jsonl") from None
        modes.add(row.get("mode"))
        if row.get("mode") == mode:
            rows.setdefault(str(row["condition"]), []).append(row)
    if not rows:
        raise ValueError(f"{path}: no frames of mode '{mode}' (present: {', '.join(sorted(map(str, modes)))}): "
                         f"pick one with --mode or run disam-eval --modes {mode}")
    return [_drive(c, r, use_unverified, path) for c, r in rows.items()]


def _drive(condition: str, rows: Sequence[dict], use_unverified: bool, path: Path) -> Drive:
    if any(r.get("stamp") is None for r in rows):
        raise ValueError(f"{path}: frames without 'stamp': written by an older disam-eval; run disam-eval again")
    rows = sorted(rows, key=lambda r: float(r["stamp"]))
    closures = tuple(c for c in (_closure(r, use_unverified) for r in rows) if c is not None)
    return Drive(condition, np.array([float(r["stamp"]) for r in rows]),
                 np.array([r["gt_position"] for r in rows], float), np.array([r["gt_quat"] for r in rows], float),
                 closures)


def keyframe_pool(drives: Sequence[Drive]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Every map keyframe some hint referred to, id -> pose: where deliberately wrong closures point."""
    pool = {}
    for d in drives:
        for c in d.closures:
            if c.kind == "between":
                pool[int(c.keyframe_id)] = (c.keyframe_position, c.keyframe_quat)
    return pool


def choose_wrong(drives: Sequence[Drive], share: float, rng: np.random.Generator) -> list[set[int]]:
    """Per drive, the indices of the closures to corrupt: `share` of ALL between-closures of the run (at least
    one when there are any and share > 0), drawn uniformly over the pool, so a drive with few closures gets its
    fair share and not a forced one."""
    slots = [(k, i) for k, d in enumerate(drives) for i, c in enumerate(d.closures) if c.kind == "between"]
    chosen: list[set[int]] = [set() for _ in drives]
    if not slots or share <= 0:
        return chosen
    n = min(len(slots), max(1, int(round(share * len(slots)))))
    for j in rng.choice(len(slots), size=n, replace=False):
        k, i = slots[int(j)]
        chosen[k].add(i)
    return chosen


def corrupt(drive: Drive, chosen: set[int], pool: dict[int, tuple[np.ndarray, np.ndarray]],
            rng: np.random.Generator, min_offset_m: float = 10.0, add: bool = False) -> Drive:
    """The closures at indices `chosen` re-pointed at a random other map keyframe at least `min_offset_m` from the
    true one, keeping the measured relative pose and its covariance: a confident hint to the wrong place, as a
    retrieval + verification failure would give. `add`: the right closure stays and the wrong one is given as
    well, at a frame of the drive without a hint where there is one (else at the right one's frame), so the
    wrong run has every right hint of the clean one and differs from it by the wrong hints alone."""
    if not chosen:
        return drive
    out, extra = [], []
    free = sorted(set(map(float, drive.stamps)) - {float(c.t) for c in drive.closures})
    for k, c in enumerate(drive.closures):
        if k in chosen and c.kind == "between":
            far = [i for i, (p, _) in pool.items() if np.linalg.norm(p - c.keyframe_position) >= min_offset_m]
            if far:
                i = int(rng.choice(far))
                kp, kq = pool[i]
                if add:
                    t = free.pop(int(rng.integers(len(free)))) if free else float(c.t)
                    extra.append(_repointed(replace(c, t=t), i, kp, kq))
                else:
                    c = _repointed(c, i, kp, kq)
        out.append(c)
    closures = tuple(sorted(out + extra, key=lambda c: float(c.t)))
    return Drive(drive.condition, drive.stamps, drive.gt_positions, drive.gt_quats, closures)


def _repointed(c: Closure, key_id: int, key_p: np.ndarray, key_q: np.ndarray) -> Closure:
    R = quat_to_rot(key_q)
    p = key_p + R @ c.rel_position
    q = rot_to_quat(R @ quat_to_rot(c.rel_quat))
    return Closure(c.t, "between", p, q, c.covariance, key_id, key_p, key_q, c.rel_position, c.rel_quat, True,
                   c.arrives)
