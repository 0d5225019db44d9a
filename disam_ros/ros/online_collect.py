"""Joining what an evaluated localizer node published to the replayed queries (`disam-eval-online`): per query its
pose, loop-closure hint, candidates and any late hint, as the scoring code takes them."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from disam_ros.eval.hints import LatePose
from disam_ros.eval.metrics import nees
from disam_ros.eval.poses import hint_fields
from disam_ros.eval.queries import Query
from disam_ros.eval.scoring import Answer, TrackedFrame
from disam_ros.ros.client import LocalizerClient


def _place(positions: np.ndarray, pose: Any) -> tuple[int, np.ndarray, np.ndarray]:
    """(nearest map index, position, quaternion xyzw) of a pose (a candidate's, or an unverified published one's:
    those are map poses)."""
    p, o = pose.position, pose.orientation
    pos = np.array([p.x, p.y, p.z])
    return int(np.argmin(np.linalg.norm(positions - pos, axis=1))), pos, np.array([o.x, o.y, o.z, o.w])


@dataclass
class ModeRun:
    """What one mode's node said about every query: the answers (for the detailed tables), one TrackedFrame per
    query (for the modes table), the node's publishing threshold and whether it was calibrated, and the frames it
    dropped and those past the paced replay's per-frame timeout (log times in ns)."""

    results: list = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    tracked: list[TrackedFrame] = field(default_factory=list)
    threshold: float = 0.0
    calibrated: bool = False
    dropped: int = 0
    timed_out: list[int] = field(default_factory=list)
    late: dict[tuple[str, str], LatePose] = field(default_factory=dict)  # late hints' poses by (condition, name)


def collect(run: ModeRun, mode: str, client: LocalizerClient, queries: list[Query], sent: dict[int, float],
            positions: np.ndarray) -> None:
    """Join what the node published to the queries by stamp: a pose is an answer (candidates from ~/candidates,
    NEES from its covariance); its loop-closure hint adds the confidence, the encoder used, the answered map place
    (`map_index`, `place_position`: the retrieval-only pose, which the Answer carries) and the verification. A
    query without a pose is an abstention (unpublished frames carry no confidence online). A verified late hint
    (`verify_keyframes`) is kept apart, by the query's condition and name (eval/hints.py scores it)."""
    d = client.rx.diagnostics[-1][1] if client.rx.diagnostics else {}
    run.threshold = float(d.get("confidence_threshold", "0") or 0)
    run.calibrated = d.get("confidence_calibrated") == "True"
    for q in queries:
        ns = int(q.name.split(".")[0])
        key = divmod(ns, 1_000_000_000)
        gt_p, gt_q = np.asarray(q.position, float), np.asarray(q.quat, float)
        late = client.rx.late.get(key, (None, {}))[1]
        if late.get("verified") is True and "position" in late and "orientation_xyzw" in late:
            run.late[(q.condition, q.name)] = (np.asarray(late["position"], float),
                                               np.asarray(late["orientation_xyzw"], float))
        hit = client.rx.pose_cov.get(key)
        if hit is None:
            run.answers.append(Answer(None))
            run.tracked.append(TrackedFrame(mode, q.condition, q.name, gt_p, gt_q, None, None, math.nan, math.nan,
                                            run.calibrated, math.nan, stamp=ns * 1e-9))
            continue
        t_recv, msg = hit
        index, pos, quat = _place(positions, msg.pose.pose)
        doc = client.rx.loop.get(key, (None, {}))[1]
        checked = hint_fields(doc) or {}
        place_p, place_q = checked.get("place_position", pos), checked.get("place_quat", quat)
        if isinstance(doc.get("map_index"), int) and 0 <= doc["map_index"] < len(positions):
            index = doc["map_index"]
        cands = client.rx.candidates.get(key)
        topk = tuple(_place(positions, c)[0] for c in cands[1].poses) if cands else (index,)
        latency = t_recv - sent[ns] if ns in sent else None  # bags from disam-bag: header stamp == log time
        run.answers.append(Answer(index, place_p, place_q, topk, latency, str(doc.get("domain", ""))))
        conf = doc.get("confidence")
        cov = np.asarray(msg.pose.covariance, float).reshape(6, 6)
        run.tracked.append(TrackedFrame(mode, q.condition, q.name, gt_p, gt_q, pos, quat,
                                        math.nan if conf is None else float(conf), math.nan, run.calibrated,
                                        nees(gt_p - pos, cov[:3, :3]), **checked, stamp=ns * 1e-9, covariance=cov))
