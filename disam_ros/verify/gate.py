"""The gate that says whether a solved pose may be published as verified, and the two ways a frame's attempts
are judged together (two agreeing candidates; a first look sure enough to end the search). The thresholds are
VerifyConfig's (verify/config.py); why each exists: the Verifier's module docstring."""
from __future__ import annotations

import numpy as np

from disam_ros.geometry import quat_angle_deg
from disam_ros.pose.solver import PoseSolution
from disam_ros.verify.config import VerifyConfig
from disam_ros.verify.motion import MotionGate
from disam_ros.verify.result import Verification


def judged(sol: PoseSolution, k: int, matches: int, key_pos: np.ndarray, key_quat: np.ndarray,
            cfg: VerifyConfig, gate: tuple[float, int, float] | None = None) -> Verification:
    """The gate; `gate` = (max turn, min inliers, min inlier ratio) replaces the config's for unguided and
    dense-search attempts. An attempt judged by the config's own gate that fails only on its distance from the
    guide is marked `far_only`: it may be judged again at its own pose (verify/regate.py)."""
    max_turn, min_inliers, min_ratio = gate or (cfg.max_turn_deg, cfg.min_inliers, cfg.min_inlier_ratio)
    shift = float(np.linalg.norm(sol.position - key_pos))
    turn = float(quat_angle_deg(sol.quat, key_quat))
    far = shift > cfg.max_shift_m or turn > max_turn
    weak = sol.inlier_ratio < min_ratio or sol.num_inliers < min_inliers
    unsure = float(np.max(sol.position_std)) > cfg.max_position_std_m
    outcome = "inconsistent" if far else "too_few_inliers" if weak else "uncertain" if unsure else "verified"
    cov = sol.covariance * cfg.covariance_scale * max(1.0, cfg.covariance_ref_inliers / sol.num_inliers) ** 2
    return Verification(outcome, index=k, position=sol.position, quat=sol.quat, covariance=cov,
                        inliers=sol.num_inliers, matches=matches, inlier_ratio=sol.inlier_ratio,
                        reprojection_px=sol.mean_error_px, inlier_pixels=sol.inlier_points2d,
                        inlier_points=sol.inlier_points3d, far_only=far and not weak and not unsure and gate is None)


def agreeing(attempts: list[Verification], cfg: VerifyConfig, min_inliers: int = 0) -> Verification | None:
    """Two candidates' poses, each solved from its own map image's keypoints and guided by its own pose, that
    land on the same pose (within agree_m, agree_deg) verify each other: a wrong place's solutions stay near the
    guesses that guided them, which are metres apart. The one with more inliers is returned, as verified.
    `min_inliers` (0: cfg.min_agreeing_inliers) is what each needs."""
    need = min_inliers or cfg.min_agreeing_inliers
    ok = sorted((v for v in attempts if v.outcome == "too_few_inliers" and v.inliers >= need),
                key=lambda v: -v.inliers)
    for i, a in enumerate(ok):
        for b in ok[i + 1:]:
            if a.index != b.index and float(np.linalg.norm(a.position - b.position)) <= cfg.agree_m and \
                    float(quat_angle_deg(a.quat, b.quat)) <= cfg.agree_deg:
                a.outcome, a.agreed = "verified", True
                return a
    return None


def may_agree(cfg: VerifyConfig, motion: MotionGate) -> bool:
    """Whether two agreeing SIFT (or learned) candidates may verify a frame: always without a motion check (single
    mode), else only once the drive has a verified pose (`agree_needs_reference`). Why: a drive's first verified
    pose seeds what follows (the motion check, flow, tracking) and nothing checks it; there the candidates come from
    retrieval alone, and two neighbouring map images of a wrong block that looks like the query can agree (a fog
    drive's first keyframe verified 173 m off so). Later, after a gap, the belief carries the drive's history and
    agreement stays (refusing it there cost validation town 7's fog, rain and snow 11 of 360 frames within 0.25 m).
    The dense search's agreement has its own guard against look-alike places (its rival check) and is not gated."""
    return not cfg.agree_needs_reference or motion.max_speed_mps <= 0 or motion.started


def sure(look: Verification, cfg: VerifyConfig) -> bool:
    """A first look (half-scale features) ends the search only when verified with `first_min_inliers` and a position
    1-sigma (the published covariance, worst axis) within `first_max_std_m`: few or badly spread inliers from the
    wrong neighbour pass the gate at half scale more easily, and the full steps would keep a better candidate."""
    if not look.verified or look.inliers < cfg.first_min_inliers:
        return False
    return position_sigma(look.covariance) <= cfg.first_max_std_m


def position_sigma(covariance: np.ndarray) -> float:
    """A pose's largest position standard deviation (m, worst axis of its covariance); inf when it has none."""
    c = np.asarray(covariance, np.float64)[:3, :3]
    return float(np.sqrt(max(np.linalg.eigvalsh(c).max(), 0.0))) if np.all(np.isfinite(c)) else float("inf")


def verified_or(attempts: list[Verification], otherwise: Verification | None) -> Verification | None:
    """The verified attempt with the most inliers, else `otherwise` (a fallback that fails changes nothing)."""
    verified = [v for v in attempts if v.verified]
    return max(verified, key=lambda v: v.inliers) if verified else otherwise
