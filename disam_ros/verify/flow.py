"""Optical-flow tracking between verifications (sequence and window modes): a verified frame hands its solve's
inliers (pixels and the MAP points they matched) to the next frame, which finds those pixels by pyramidal
Lucas-Kanade flow, checked forward and backward, and solves its pose against the same map points.

Why: a camera at 10-30 Hz sees nearly the same image frame after frame; detecting and matching features against
the map for each of them costs 30-200 ms (SIFT at full scale, the dense search), following the previous frame's
inliers costs 2-4 ms. The points stay the map's, so the pose does not drift the way visual odometry does, and
a full verification every `flow_frames` frames (and whenever flow fails) renews them.

When it is tried: only when the camera is predicted to have moved at most `flow_max_step_m` since the seed (its
speed, from the last two verified poses, times the time since): flow assumes small motion, and on the synthetic
drives' frames 3 m and up to 10 deg apart it tracked few frames and put those less accurately than the verifier.
The pose is judged by the verifier's gate with flow's own thresholds (`flow_min_inliers`,
`flow_min_inlier_ratio`) and the seed's pose as the guide, and by the motion check like any verified pose.

What a chain may follow: the solve's inliers always; the keyframe's map points projected by the pose only from a
SIFT-verified pose whose worst-axis position sigma is within `flow_seed_max_sigma_m`, because those points carry
that pose's error into every frame of the chain (a 17-inlier fog pose 0.39 m off held ten flow frames 0.35 m off
on the development town). For the same reason a flow pose's covariance is its own solve's plus the chain's first
pose's.

On by default (`flow_frames` 5, `flow_min_inliers` 50): on drives filmed at 8x the frame rate it made frames
cost ~10 ms at the median instead of 35-220 ms, with as many or more within (0.25 m, 2 deg) on the development
towns and, held out, on every drive but the unseen town's rain (docs/pose.md, which also says what was tried and
dropped). On drives with frames over 1 m apart it is never tried.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.frames import cam_from_map, project
from disam_ros.pose.solver import SolverConfig, solve_absolute_pose
from disam_ros.verify.config import VerifyConfig
from disam_ros.verify.gate import judged, position_sigma
from disam_ros.verify.result import Verification

LK_LEVELS = 3  # pyramid levels above the image: flow up to ~8x the window
LK_MIN_EIG = 1e-4  # OpenCV's default; 1e-3 or 3e-3 (dropping flatter patches) made the dense drives worse
EDGE_PX = 10.5  # map points projected closer than this to the image border are not followed, whatever the patch:
#                 with the border at half an 11 px patch instead, 30 Hz chains drifted more (validation town 7)


@lru_cache(maxsize=8)
def lk_params(window_px: int) -> dict:
    """OpenCV's pyramidal Lucas-Kanade settings with a `window_px` square patch (VerifyConfig.flow_window_px); built
    once per patch size, not on every flow step (read-only: callers unpack it)."""
    return {"winSize": (window_px, window_px), "maxLevel": LK_LEVELS,
            "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01), "minEigThreshold": LK_MIN_EIG}


@dataclass(frozen=True, eq=False)
class FlowSeed:
    """What a verified frame hands on: its grey image, its inliers' pixels (N,2) float32 and map points (N,3), its
    pose and stamp, the camera's speed when it was taken (NaN: unknown), its keyframe and flow frames since the
    last full verification."""

    grey: np.ndarray
    pixels: np.ndarray
    points: np.ndarray
    position: np.ndarray
    quat: np.ndarray
    stamp: float
    speed_mps: float
    keyframe: int
    hops: int
    precise: bool = True  # the chain started from a SIFT-verified pose (map points may be projected from it)
    covariance: np.ndarray | None = None  # the chain's first (fully verified) pose's: flow poses add it to their own


def next_seed(previous: FlowSeed | None, v: Verification, grey: np.ndarray | None, stamp: float, cfg: VerifyConfig,
              map_points: np.ndarray | None = None, cam: Intrinsics | None = None) -> FlowSeed | None:
    """The seed a verified `v` makes: its solve's inliers, plus `map_points` (its keyframe's, strongest first, when
    given with the camera) where its pose projects them into the image, up to `flow_max_points` in all: a dusk
    frame verifies from 30-40 inliers, too few to follow, while its keyframe has hundreds of points its pose puts
    on the image to a pixel or two. Only from a chain that began with a SIFT-verified pose whose worst-axis
    position sigma is within `flow_seed_max_sigma_m`: a dense-search pose is a few decimetres off in fog, and so
    is a SIFT pose from a dozen inliers; points projected from either would carry that error through every flow
    frame (development town: fog 49 -> 41 of 80 frames within 0.25 m). The seed keeps the chain's first pose's
    covariance (flow poses add it to theirs) and its speed from `previous` when recent."""
    if cfg.flow_frames <= 0 or not v.verified or v.inlier_pixels is None or not math.isfinite(stamp):
        return None
    speed = math.nan
    if previous is not None and 0.0 < stamp - previous.stamp <= cfg.track_max_gap_s:
        speed = float(np.linalg.norm(v.position - previous.position)) / (stamp - previous.stamp)
    precise = (previous is not None and previous.precise) if v.flow else \
        (not v.dense and position_sigma(v.covariance) <= cfg.flow_seed_max_sigma_m)
    pixels, points = np.asarray(v.inlier_pixels, np.float64), np.asarray(v.inlier_points, np.float64)
    room = cfg.flow_max_points - len(pixels)
    if precise and room > 0 and map_points is not None and cam is not None and len(map_points):
        uv, z = project(map_points, *cam_from_map(v.position, v.quat), cam)
        edge = EDGE_PX
        seen = (z > 0) & (uv[:, 0] >= edge) & (uv[:, 0] < cam.width - edge) & (uv[:, 1] >= edge) \
            & (uv[:, 1] < cam.height - edge)
        keep = spread(uv, np.flatnonzero(seen), room, cam)
        pixels, points = np.vstack([pixels, uv[keep]]), np.vstack([points, map_points[keep]])
    if len(pixels) < cfg.flow_min_inliers:
        return None
    cov = previous.covariance if v.flow and previous is not None else \
        (v.covariance.copy() if np.all(np.isfinite(v.covariance)) else None)
    return FlowSeed(grey, pixels.astype(np.float32).reshape(-1, 1, 2), points, v.position.copy(), v.quat.copy(),
                    stamp, speed, int(v.index), v.hops if v.flow else 0, precise, covariance=cov)


def spread(uv: np.ndarray, idx: np.ndarray, n: int, cam: Intrinsics) -> np.ndarray:
    """Up to `n` of the points `idx`, spread over the image: the first (strongest) point of each cell of a grid
    with about `n` cells, then the next of each, and so on. Why: the strongest points of a keyframe crowd onto a
    few facades, and a pose from one corner of the image is poorly determined."""
    side = max(8.0, float(np.sqrt(cam.width * cam.height / max(n, 1))))
    cells = (uv[idx, 1] // side).astype(np.int64) * (int(cam.width // side) + 1) + (uv[idx, 0] // side).astype(np.int64)
    _, inverse, counts = np.unique(cells, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")  # by cell, strongest first within each
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(idx), np.int64)
    rank[order] = np.arange(len(idx)) - starts[inverse[order]]  # a point's place within its cell
    return idx[np.lexsort((np.arange(len(idx)), rank))[:n]]


def trackable(seed: FlowSeed | None, grey: np.ndarray | None, stamp: float, cfg: VerifyConfig) -> bool:
    """Flow is on, the seed has hops left, is recent, of this image size, and the camera's predicted motion since
    it is small."""
    if seed is None or cfg.flow_frames <= 0 or seed.hops >= cfg.flow_frames or grey.shape != seed.grey.shape:
        return False
    dt = stamp - seed.stamp
    return 0.0 < dt <= cfg.track_max_gap_s and math.isfinite(seed.speed_mps) \
        and seed.speed_mps * dt <= cfg.flow_max_step_m


def flow_attempt(seed: FlowSeed, grey: np.ndarray, cam: Intrinsics, cfg: VerifyConfig,
                 drift_m: float | None = None) -> Verification:
    """The seed's pixels followed into `grey` (forward and backward within `flow_fb_px`), the pose solved from
    them against their map points and judged (module docstring); its covariance grows by `drift_m` a frame
    followed (None: flow_drift_m; a drive's measured drift, verify/flow_chain.py)."""
    lk = lk_params(cfg.flow_window_px)
    ahead, ok, _ = cv2.calcOpticalFlowPyrLK(seed.grey, grey, seed.pixels, None, **lk)
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(grey, seed.grey, ahead, None, **lk)
    good = (ok.reshape(-1) == 1) & (ok_back.reshape(-1) == 1) \
        & (np.linalg.norm((back - seed.pixels).reshape(-1, 2), axis=1) <= cfg.flow_fb_px)
    failed = Verification("too_few_inliers", index=seed.keyframe, matches=int(good.sum()), hops=seed.hops + 1,
                          flow=True)
    if int(good.sum()) < cfg.flow_min_inliers:
        return failed
    solver = SolverConfig(max_error_px=cfg.flow_max_error_px, min_inliers=cfg.flow_min_inliers,
                          sigma_floor_px=cfg.sigma_floor_px)
    sol = solve_absolute_pose(ahead.reshape(-1, 2)[good].astype(np.float64), seed.points[good], cam, solver)
    if sol is None:
        return failed
    v = judged(sol, seed.keyframe, int(good.sum()), seed.position, seed.quat, cfg,
               (cfg.max_turn_deg, cfg.flow_min_inliers, cfg.flow_min_inlier_ratio))
    v.flow, v.hops = True, seed.hops + 1
    if seed.covariance is not None:  # the followed points carry the first pose's error (measured or projected)
        v.covariance = v.covariance + seed.covariance
    v.covariance = v.covariance + drift_covariance(v.hops, cfg.flow_drift_m if drift_m is None else drift_m)
    return v


def drift_covariance(hops: int, drift_m: float) -> np.ndarray:
    """What `hops` frames of flow since the last solved pose add to a flow pose's (6, 6) covariance: (drift_m x
    hops)^2 on each position axis. Why linear in the frames: flow's small errors are biased the same way frame
    after frame (forward motion, fog and dusk contrast), so the error grows with the chain's length, not its square
    root (30 Hz keyframes, validation town 7: rms 0.07 m after 1-3 frames, 0.16 after 13-15, 0.47 after 26-31)."""
    cov = np.zeros((6, 6))
    cov[:3, :3] = np.eye(3) * (drift_m * hops) ** 2
    return cov
