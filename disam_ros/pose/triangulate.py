"""Triangulation of feature tracks seen by cameras of known intrinsics and known pose, with the checks that
decide whether a 3D point is fit to go into a map.

Why: a map image's 3D points come from depth where a dataset has it, otherwise from other map images of known
pose that see the same scene (chosen by maps/covisibility.py; matched features). A point is only as good as its
geometry, so every point carries the first reason it failed, in this order: DEGENERATE (no finite solution),
BEHIND (not in front of every camera), REPROJECTION (farther than max_error_px from an observation in some
view), PARALLAX (the largest angle between the viewing rays is below min_angle_deg: depth along the ray is not
observable, e.g. a far building seen from two frames 1 m apart).

Method: the linear DLT on undistorted normalised coordinates (cv2.undistortPoints), one SVD per track,
batched over all tracks seen in the same views (numpy's batched SVD); the map origin is moved to the mean
camera centre first so that large map coordinates do not spoil the conditioning. The DLT is not refined
(no bundle adjustment here): the reprojection check bounds its error instead.

Poses are camera-from-map (R, t), built from the stored convention (camera optical frame in the map frame,
position + xyzw) by View.from_pose; see disam_ros.pose.frames.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.frames import cam_from_map, normalized, project


class Reject(IntEnum):
    """Why a track gave no map point (OK: it did); the first failed check in this order."""

    OK = 0
    DEGENERATE = 1
    BEHIND = 2
    REPROJECTION = 3
    PARALLAX = 4


@dataclass(frozen=True)
class TriangulationLimits:
    """Acceptance of a triangulated point; 1.5 degrees is COLMAP's default minimum triangulation angle."""

    max_error_px: float = 4.0
    min_angle_deg: float = 1.5

    def __post_init__(self) -> None:
        if not (np.isfinite(self.max_error_px) and self.max_error_px > 0):
            raise ValueError(f"TriangulationLimits.max_error_px={self.max_error_px!r} must be finite and > 0")
        if not (np.isfinite(self.min_angle_deg) and 0 <= self.min_angle_deg < 180):
            raise ValueError(f"TriangulationLimits.min_angle_deg={self.min_angle_deg!r} must be in [0, 180)")


@dataclass(frozen=True)
class View:
    """One camera: intrinsics and camera-from-map pose (x_cam = R x_map + t)."""

    cam: Intrinsics
    R: np.ndarray
    t: np.ndarray

    @classmethod
    def from_pose(cls, cam: Intrinsics, position: np.ndarray, quat: np.ndarray) -> View:
        """From a stored pose: camera optical frame in the map frame (position, xyzw)."""
        R, t = cam_from_map(position, quat)
        return cls(cam, R, t)

    @property
    def centre(self) -> np.ndarray:
        return -np.asarray(self.R).T @ np.asarray(self.t).reshape(3)


@dataclass(frozen=True)
class Triangulation:
    """Per track: point (map frame; NaN where DEGENERATE), ok, reason (Reject codes), the largest ray angle
    (degrees) and the largest reprojection error over the views (pixels)."""

    points: np.ndarray  # (N,3)
    ok: np.ndarray  # (N,) bool
    reason: np.ndarray  # (N,) uint8 Reject
    angle_deg: np.ndarray  # (N,)
    max_error_px: np.ndarray  # (N,)

    def reasons(self) -> list[str]:
        """Reason names per track, for logs and reports."""
        return [Reject(int(r)).name for r in self.reason]


def dlt(views: Sequence[View], xn: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Homogeneous points (N,4) relative to `origin` from normalised coordinates xn (N,V,2), batched SVD."""
    rows = []
    for k, v in enumerate(views):
        P = np.concatenate([v.R, (v.t + v.R @ origin)[:, None]], 1)  # camera-from-(map - origin)
        rows.append(xn[:, k, 0:1] * P[2] - P[0])
        rows.append(xn[:, k, 1:2] * P[2] - P[1])
    A = np.stack(rows, 1)  # (N, 2V, 4)
    return np.linalg.svd(A)[2][:, -1, :]


def ray_angles_deg(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Largest angle (degrees) between the rays from any two camera centres (V,3) to each point (N,3)."""
    rays = points[:, None, :] - centres[None]
    rays = rays / np.maximum(np.linalg.norm(rays, axis=2, keepdims=True), 1e-300)
    best = np.zeros(len(points))
    for i in range(len(centres)):
        for j in range(i + 1, len(centres)):
            cos = np.clip(np.sum(rays[:, i] * rays[:, j], axis=1), -1.0, 1.0)
            best = np.maximum(best, np.degrees(np.arccos(cos)))
    return best


def _check_tracks(views: Sequence[View], uv: np.ndarray) -> np.ndarray:
    uv = np.asarray(uv, np.float64)
    if len(views) < 2 or uv.ndim != 3 or uv.shape[1:] != (len(views), 2):
        raise ValueError(f"triangulation needs >= 2 views and observations (N, {len(views)}, 2) pixels, got "
                         f"{len(views)} views and shape {uv.shape}")
    if not np.all(np.isfinite(uv)):
        raise ValueError("triangulation observations hold NaN/inf pixels: drop unmatched features first")
    return uv


def triangulate(views: Sequence[View], uv: np.ndarray, limits: TriangulationLimits | None = None) -> Triangulation:
    """Triangulate N tracks each observed in all V views: uv (N,V,2) pixels (OpenCV pixel centres)."""
    limits = limits or TriangulationLimits()
    uv = _check_tracks(views, uv)
    n = len(uv)
    if n == 0:
        z = np.zeros(0)
        return Triangulation(np.zeros((0, 3)), z.astype(bool), z.astype(np.uint8), z, z)
    xn = np.stack([normalized(uv[:, k], v.cam) for k, v in enumerate(views)], 1)
    centres = np.stack([v.centre for v in views])
    origin = centres.mean(0)
    h = dlt(views, xn, origin)
    w = h[:, 3]
    degenerate = ~np.isfinite(h).all(1) | (np.abs(w) <= 1e-12 * np.linalg.norm(h, axis=1))
    safe_w = np.where(degenerate, 1.0, w)
    points = np.where(degenerate[:, None], np.nan, h[:, :3] / safe_w[:, None] + origin)
    filled = np.where(degenerate[:, None], 0.0, points)
    depth = np.zeros((n, len(views)))
    error = np.zeros((n, len(views)))
    for k, v in enumerate(views):
        proj, depth[:, k] = project(filled, v.R, v.t, v.cam)
        error[:, k] = np.linalg.norm(proj - uv[:, k], axis=1)
    angle = ray_angles_deg(filled, centres)
    max_err = np.where(degenerate, np.inf, error.max(1))
    reason = np.full(n, Reject.OK, dtype=np.uint8)
    # assign in reverse priority so that the first failing check wins
    reason[angle < limits.min_angle_deg] = Reject.PARALLAX
    reason[max_err > limits.max_error_px] = Reject.REPROJECTION
    reason[(depth <= 0).any(1)] = Reject.BEHIND
    reason[degenerate] = Reject.DEGENERATE
    return Triangulation(points, reason == Reject.OK, reason, angle, max_err)


def triangulate_two_view(view1: View, view2: View, uv1: np.ndarray, uv2: np.ndarray,
                         limits: TriangulationLimits | None = None) -> Triangulation:
    """Matched pixels (N,2) in two views -> N points: the common case of neighbouring reference frames."""
    uv1, uv2 = np.asarray(uv1, np.float64), np.asarray(uv2, np.float64)
    if uv1.shape != uv2.shape or uv1.ndim != 2 or uv1.shape[1:] != (2,):
        raise ValueError(f"two-view triangulation needs matched pixels (N,2) and (N,2), got {uv1.shape} "
                         f"and {uv2.shape}")
    return triangulate([view1, view2], np.stack([uv1, uv2], 1), limits)


def triangulate_track(views: Sequence[View], uv: np.ndarray,
                      limits: TriangulationLimits | None = None) -> Triangulation:
    """One track seen in V >= 2 views, uv (V,2) -> a Triangulation of length 1."""
    return triangulate(views, np.asarray(uv, np.float64)[None], limits)
