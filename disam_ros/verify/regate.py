"""A SIFT pose refused only for lying far from the map image that guided it, judged again at its own pose
(VerifyConfig.regate_far_poses, node `verify_regate_far_poses`, `disam-eval --regate-far-poses`).

Why: the gate refuses a pose more than `max_shift_m` / `max_turn_deg` from the candidate whose pose guided its
matches (verify/gate.py): those matches were chosen where that pose projects the map points, so a solution far
from it usually fits noise. But a candidate's map points may be seen from elsewhere: on real photographs two right
poses (2-4 cm off, 60-183 inliers at an inlier ratio of 0.54-0.69) were refused because the retrieval candidate
that guided them was a wrong place 12-20 m / 32-52 deg away. That judged the guide, not the pose.

So an attempt that fails only that check (its inliers, inlier ratio and position sigma pass: `far_only`) names
the map images near its own pose: within `max_shift_m` and `max_turn_deg` of it (the gate's own measures, so no
image is tried whose pose the gate would refuse as a guide), nearest first, not among the frame's candidates
(those were tried and failed). Each is matched and solved as a candidate is, guided by its own pose, and judged by
the full gate against it; the frame is verified with that second solution only when it passes and lands within
`agree_m` / `agree_deg` of the first. A wrong pose far from every map image has no image to confirm it; one near a
map image must be confirmed by that image's own keypoints, as if retrieval had named it, and those must put the
camera where the first solve did (a second solve that passes the gate elsewhere is "inconsistent": the pose
that named its image was wrong). At most `regate_images` second attempts a frame, each costing what a candidate
does.

Only the full-scale guided attempts (candidates, turned guides) are judged again: the half-scale first look
hands over to them anyway, and the dense search, map-point tracking, optical flow and unguided matching keep
their own gates (a dense pose far from its guide stays "inconsistent"). Off by default: the default is chosen by
measurement on the development towns, which has not been made yet.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from disam_ros.geometry import quat_angle_deg
from disam_ros.verify.config import VerifyConfig
from disam_ros.verify.result import Verification


def regated(best: Verification, attempts: list[Verification], tried: Iterable[int], loc_map: Any,
            attempt: Callable[[int], Verification], cfg: VerifyConfig) -> Verification:
    """`best` unchanged when verified, when off, or when no far-only attempt is confirmed; else the confirming
    second attempt, verified (module docstring). `attempts`: the frame's attempts so far, the second ones
    appended; `tried`: map images already tried at full scale (not tried again); `attempt(j)`: map image j
    matched, solved and judged as a candidate (Verifier._attempt)."""
    if best.verified or not cfg.regate_far_poses:
        return best
    firsts = sorted((a for a in attempts if a.far_only and a.scale == 1.0 and a.hops == 0), key=lambda a: -a.inliers)
    seen, left = {int(k) for k in tried}, cfg.regate_images
    for first in firsts:
        for j in nearby(loc_map, first.position, first.quat, cfg, seen)[:left]:
            seen.add(j)
            left -= 1
            second = attempt(j)
            second.regated_from = first.index
            attempts.append(second)
            if second.verified and agree(first, second, cfg):
                return second
            if second.verified:
                second.outcome, second.support = "inconsistent", None
    return best


def nearby(loc_map: Any, position: np.ndarray, quat: np.ndarray, cfg: VerifyConfig, exclude: Iterable[int] = ()
           ) -> list[int]:
    """Map images within `max_shift_m` and `max_turn_deg` (geodesic, the gate's measure) of the pose, nearest
    first (ties: the lower index), those in `exclude` left out."""
    positions, quats = np.asarray(loc_map.positions, np.float64), np.asarray(loc_map.quats, np.float64)
    dist = np.linalg.norm(positions - np.asarray(position, np.float64), axis=1)
    ok = (dist <= cfg.max_shift_m) & (quat_angle_deg(quats, np.asarray(quat, np.float64)) <= cfg.max_turn_deg)
    ok[[int(k) for k in exclude if 0 <= int(k) < len(ok)]] = False
    cand = np.flatnonzero(ok)
    return [int(k) for k in cand[np.lexsort((cand, dist[cand]))]]


def agree(a: Verification, b: Verification, cfg: VerifyConfig) -> bool:
    """Two poses within `agree_m` and `agree_deg` of each other."""
    return float(np.linalg.norm(a.position - b.position)) <= cfg.agree_m and \
        float(quat_angle_deg(a.quat, b.quat)) <= cfg.agree_deg
