"""The verifier's dense search (VerifyConfig.gradient_candidates): a candidate's map keypoints looked for in the
query without detecting keypoints there, by their gradient-histogram descriptors (pose/gradients.py), near where
the candidate's pose projects them; the pose solved from what is found and judged by the verifier's gate with
the dense search's own inlier thresholds.

Why after SIFT: where SIFT verifies it is the more accurate (keypoints to a tenth of a pixel, any scale); the
dense search is for the frames it cannot verify, rain, snow and fog above all, where the query's keypoints are
not where the map's are (docs/pose.md). Why its own thresholds: every searched map point yields a find, right
or wrong; without a ratio test a place 20-45 m off reached 87 inliers at 22 % of its finds on the dev town, as
many as right poses, so only finds clearly better than their runner-up count (which cuts a wrong place to <= 47
inliers) and 60 inliers at 30 % of them, or two candidates agreeing, verify.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from disam_ros.geometry import quat_angle_deg
from disam_ros.pose import gradients
from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.frames import cam_from_map, project
from disam_ros.pose.solver import PoseSolution, SolverConfig, solve_absolute_pose
from disam_ros.verify.config import VerifyConfig

RIVAL_POINTS = 150  # map points per place in the rival test (`rivalled`; dev town: as separating as 400, refined)


@dataclass(frozen=True)
class QueryGrid:
    """A query's descriptor grid and the channels it was read from (the finds are refined on them)."""

    grid: gradients.DescriptorGrid
    channels: np.ndarray
    cell: int
    scale: float = 1.0  # the working image's size over the query's (gradients.working_scale)


def query_grid(rgb: np.ndarray, map_cell: int, map_cam: Intrinsics, cam: Intrinsics, cfg: VerifyConfig
               ) -> QueryGrid:
    """The query's channels and grid, on its working image (gradients.prepared_grey). The cell spans the same
    angle of view as the map's (`map_cell` at 640 px of the map's working width, scaled by the two cameras' focal
    lengths in their working images), so a query from another camera or at another resolution is described at
    the scale the map was; the grid stride scales with the working width."""
    grey, f = gradients.prepared_grey(rgb)
    w = grey.shape[1]
    f_map = gradients.working_scale(map_cam.width, map_cam.height)
    map_px = gradients.cell_pixels(map_cell, round(map_cam.width * f_map))
    cell = max(2, 2 * round(map_px * (cam.fx * f) / (map_cam.fx * f_map) / 2.0))
    stride = max(1, round(cfg.gradient_stride * w / 640.0))
    channels = gradients.orientation_channels(grey, cell)
    return QueryGrid(gradients.describe_grid(channels, cell, stride), channels, cell, f)


def search_pose(query: QueryGrid, map_desc: np.ndarray, points: np.ndarray, R: np.ndarray, t: np.ndarray,
                cam: Intrinsics, cfg: VerifyConfig, refine: bool = True) -> tuple[PoseSolution | None, int]:
    """Look for up to `gradient_max_points` map points (unit descriptors `map_desc`, map-frame `points`, in the
    map's strongest-first order) that camera-from-map (R, t) projects into or near the image, each within
    `gradient_radius` x width of its projection; solve (RANSAC at max_error_px), refine the inliers' positions to
    sub-pixel and solve again from them alone (`refine`; without it the first solve is returned, cheaper and
    coarser: enough to count inliers). Returns (solution or None, points searched)."""
    radius = cfg.gradient_radius * cam.width
    uv, z = project(points, R, t, cam)
    near = (z > 0) & (uv[:, 0] > -radius / 2) & (uv[:, 0] < cam.width + radius / 2) \
        & (uv[:, 1] > -radius / 2) & (uv[:, 1] < cam.height + radius / 2)
    idx = np.flatnonzero(near)[: cfg.gradient_max_points]
    if len(idx) < cfg.gradient_min_inliers:
        return None, len(idx)
    f = query.scale
    pos, sim, second = gradients.search(map_desc[idx], gradients.to_working(uv[idx], f), query.grid, radius * f)
    # distinct finds only: Lowe's ratio test on distances (|a - b|^2 = 2 - 2 a.b for unit vectors)
    found = np.isfinite(sim) & (2.0 - 2.0 * sim < cfg.gradient_ratio ** 2 * (2.0 - 2.0 * second))
    idx, pos = idx[found], gradients.from_working(pos[found], f)
    # the finds are as precise as the grid, whose spacing scales with the image: so do the thresholds in pixels
    px = max(1.0, cam.width / 640.0)
    solver = SolverConfig(max_error_px=cfg.max_error_px * px, min_inliers=cfg.min_agreeing_inliers,
                          sigma_floor_px=max(cfg.sigma_floor_px, cfg.gradient_sigma_floor_px) * px)
    if len(idx) < solver.min_inliers:
        return None, len(idx)
    first = solve_absolute_pose(pos, points[idx], cam, solver)
    if first is None or not refine:
        return first, len(idx)
    inl = first.inlier_mask
    refined = gradients.refine(query.channels, map_desc[idx[inl]], gradients.to_working(pos[inl], f), query.cell,
                               max(1, query.grid.stride - 1))
    second = solve_absolute_pose(gradients.from_working(refined, f), points[idx[inl]], cam, solver)
    if second is None:
        return first, len(idx)
    # judged against every point searched: the ratio is the share of the search that agrees with the pose
    n = len(idx)
    return replace(second, inlier_ratio=second.num_inliers / n), n


def dense_gate(cfg: VerifyConfig) -> tuple[float, int, float]:
    """The dense search's own gate for gate.judged: (max turn, min inliers, min inlier ratio) (module docstring)."""
    return cfg.max_turn_deg, cfg.gradient_min_inliers, cfg.gradient_min_inlier_ratio


def narrow(cfg: VerifyConfig) -> VerifyConfig:
    """The search from a pose centimetres off (`polish`, and around a flow pose: verify/prior_step.py): the window
    `gradient_polish_radius` wide, `gradient_polish_points` map points."""
    return replace(cfg, gradient_radius=cfg.gradient_polish_radius, gradient_max_points=cfg.gradient_polish_points)


def rivalled(v: Any, query: QueryGrid, loc_map: Any, side_of: Callable[[int], Any], cam: Intrinsics,
             cfg: VerifyConfig) -> bool:
    """Whether a marginal dense pose `v` (a Verification with fewer than gradient_sure_inliers at a ratio below
    gradient_sure_ratio) is out-found by a map image gradient_rival_m from its candidate: Lowe's ratio test at
    the level of places. Why: a town repeats its blocks; on the dev town a wrong candidate 9-14 m off verified
    60-70 inliers at 31-38 % of its finds, and the true place, searched the same way, found more. The candidate
    and its rivals are searched alike and cheaply (their first RIVAL_POINTS map points, no refinement): only the
    counts are compared. `side_of(j)` gives map image j's unit gradient descriptors (`.gradients`) and points."""
    lo, hi = cfg.gradient_rival_m
    if hi <= 0 or v.inliers >= cfg.gradient_sure_inliers or v.inlier_ratio >= cfg.gradient_sure_ratio:
        return False
    positions = np.asarray(loc_map.positions, np.float64)
    quick = replace(cfg, gradient_max_points=max(RIVAL_POINTS, cfg.gradient_min_inliers))

    def found(j: int) -> int:
        side = side_of(j)
        R, t = cam_from_map(positions[j], np.asarray(loc_map.quats[j], np.float64))
        sol, _ = search_pose(query, side.gradients, side.points, R, t, cam, quick, refine=False)
        return 0 if sol is None else sol.num_inliers

    own = found(int(v.index))
    d = np.linalg.norm(positions - positions[v.index], axis=1)
    return any(found(int(j)) >= own for j in np.flatnonzero((d >= lo) & (d <= hi)))


def polish(v: Any, sol: PoseSolution, query: QueryGrid, side: Any, cam: Intrinsics, cfg: VerifyConfig
           ) -> PoseSolution:
    """A verified dense pose `v` (solved as `sol` from `side`'s map points) searched again from itself: the
    first `gradient_polish_points` map points in view, each within `gradient_polish_radius` x width of where `sol`
    projects it, refined and solved. Why: the first search is guided by the map image's pose, metres off, so its
    window is wide and only the strongest 400 points are looked for; from a pose centimetres off, a window a
    fifth as wide finds more points, fewer of them wrong (dev town: 94 -> 101 of 109 dense poses within 0.25 m).
    The polished pose replaces `v`'s position and orientation only when it stays within
    `gradient_polish_max_shift_m` and `gradient_polish_max_turn_deg` of the first (else a new search has found
    something else: the first is kept); the outcome, inlier counts and covariance stay the first search's, which
    the gate and the covariance scale were set on. Returns the solution `v` now carries."""
    if cfg.gradient_polish_points <= 0:
        return sol
    better, _ = search_pose(query, side.gradients, side.points, sol.R, sol.t, cam, narrow(cfg))
    if better is None or float(np.linalg.norm(better.position - sol.position)) > cfg.gradient_polish_max_shift_m \
            or float(quat_angle_deg(better.quat, sol.quat)) > cfg.gradient_polish_max_turn_deg:
        return sol
    v.position, v.quat = better.position.copy(), better.quat.copy()
    v.inlier_pixels, v.inlier_points = better.inlier_points2d, better.inlier_points3d
    return better
