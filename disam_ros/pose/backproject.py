"""Map keypoints -> 3D map points through the map image's depth, refusing the depths that would poison PnP.

Why: where a dataset has depth (the synthetic world, an RGB-D or lidar-projected reference drive) a map image's
keypoint becomes a 3D point with no triangulation at all, which is what the absolute pose solver needs. A
keypoint is only as good as the depth under it, and the worst depths are not the missing ones (0 is easy to
skip) but those at object silhouettes: a SIFT blob or a dense feature cell on a pole's edge reads the pole's
depth one pixel and the facade 20 m behind the next, and a bilinear sample there is a point in mid-air. So every
keypoint carries the first reason it failed, in this order:

- OUTSIDE: the keypoint's sampling window leaves the image;
- INVALID: a depth in the window is 0, NaN, inf or negative (sky, no return: data/depth.py's "0 = invalid");
- RANGE: the depth is outside [min_depth_m, max_depth_m] (far points pin the rotation, not the translation,
  and a rendered or sensed far depth is the least accurate);
- EDGE: the window's depth range relative to the centre depth exceeds `max_relative_step` (a discontinuity).
  With `planar=True` the test is run on inverse depth after removing its best affine fit over the window: a
  plane's inverse depth is exactly affine in (u, v), so a slanted facade or the ground near the horizon keeps
  its points while a silhouette still fails.

Depth convention (data/depth.py, data/synthetic/render.py GBuffer.depth): metres along the optical axis (z),
not the ray length, so pixel (u, v) at depth d back-projects to d * (x_n, y_n, 1) in the optical frame with
(x_n, y_n) its undistorted normalised coordinates. Sub-pixel keypoints sample the depth bilinearly in *inverse*
depth (affine on a plane, so the sample is exact there; bilinear z-depth is not).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.frames import cam_from_map, normalized


class DepthReject(IntEnum):
    """Why a keypoint got no 3D point (OK: it got one); the first failed check in this order."""

    OK = 0
    OUTSIDE = 1
    INVALID = 2
    RANGE = 3
    EDGE = 4


@dataclass(frozen=True)
class DepthLimits:
    """Acceptance of a depth sample. radius: half-size of the square window checked around the keypoint (1 = 3x3;
    a dense match located only to a feature cell wants about half the cell). max_relative_step: largest
    (max - min) / centre depth inside the window (0.3 = a 30 % jump: a pole 10 m in front of a facade 20 m away
    fails it). Measured with pose/match_eval.py on the synthetic world (exact depth): 0.1 refused about a
    fifth of the SIFT keypoints that had depth, two thirds of them right, and cost PnP successes; 0.3 did as
    well as no test there. Sensor depth (mixed pixels at silhouettes) needs the test more than rendered depth.
    60 m keeps clear of the 16-bit PNG limit (65.5 m), which the synthetic world uses to mark 'beyond range'."""

    min_depth_m: float = 0.1
    max_depth_m: float = 60.0
    radius: int = 1
    max_relative_step: float = 0.3
    planar: bool = False

    def __post_init__(self) -> None:
        if not (np.isfinite(self.min_depth_m) and 0 <= self.min_depth_m < self.max_depth_m):
            raise ValueError(f"DepthLimits: need 0 <= min_depth_m={self.min_depth_m!r} < max_depth_m="
                             f"{self.max_depth_m!r}")
        if not (isinstance(self.radius, int) and 0 <= self.radius <= 64):
            raise ValueError(f"DepthLimits.radius={self.radius!r} must be an integer in 0..64 pixels")
        if not (np.isfinite(self.max_relative_step) and self.max_relative_step > 0):
            raise ValueError(f"DepthLimits.max_relative_step={self.max_relative_step!r} must be finite and > 0")


@dataclass(frozen=True)
class BackProjection:
    """Per keypoint: point in the map frame (NaN unless ok), ok, reason (DepthReject codes), sampled depth
    (metres, NaN where none) and the window's relative depth step (NaN where not measured)."""

    points: np.ndarray  # (N,3)
    ok: np.ndarray  # (N,) bool
    reason: np.ndarray  # (N,) uint8
    depth: np.ndarray  # (N,)
    step: np.ndarray  # (N,)

    def counts(self) -> dict[str, int]:
        """How many keypoints each reason got, for logs and reports."""
        return {r.name: int(np.sum(self.reason == r)) for r in DepthReject}


def _check(uv: np.ndarray, depth: np.ndarray, cam: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    uv = np.asarray(uv, np.float64)
    d = np.asarray(depth)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise ValueError(f"back-projection needs keypoints (N,2) pixels, got shape {uv.shape}")
    if d.ndim != 2 or d.shape != (cam.height, cam.width):
        raise ValueError(f"depth map shape {d.shape} differs from the camera's {cam.height}x{cam.width}: pass "
                         "the map image's own depth, or scale the intrinsics with Intrinsics.scaled")
    if not np.all(np.isfinite(uv)):
        raise ValueError("back-projection got NaN/inf keypoints: drop unmatched keypoints first")
    return uv, d.astype(np.float64, copy=False)


def _windows(depth: np.ndarray, cols: np.ndarray, rows: np.ndarray, r: int) -> np.ndarray:
    """(N, 2r+2, 2r+2) depth windows whose top-left is (rows - r, cols - r): the 3x3-style window around the
    bilinear cell's top-left pixel, widened by one so the whole bilinear support is inside it."""
    off = np.arange(-r, r + 2)
    return depth[(rows[:, None] + off)[:, :, None], (cols[:, None] + off)[:, None, :]]


def _affine_residual(inv: np.ndarray) -> np.ndarray:
    """Inverse-depth windows (N,k,k) minus their least-squares affine fit in (u, v): zero on a plane."""
    k = inv.shape[1]
    v, u = np.mgrid[0:k, 0:k]
    A = np.stack([u.ravel(), v.ravel(), np.ones(k * k)], 1).astype(np.float64)
    y = inv.reshape(len(inv), -1)
    return (y - y @ (A @ np.linalg.pinv(A)).T).reshape(inv.shape)


def sample_depth(uv: np.ndarray, depth: np.ndarray, cam: Intrinsics,
                 limits: DepthLimits | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth at sub-pixel keypoints (bilinear in inverse depth), the DepthReject reason and the relative step.

    Returns (depth (N,) NaN where not OK, reason (N,) uint8, step (N,) NaN where not measured)."""
    limits = limits or DepthLimits()
    uv, d = _check(uv, depth, cam)
    n, r = len(uv), limits.radius
    z = np.full(n, np.nan)
    step = np.full(n, np.nan)
    reason = np.full(n, DepthReject.OK, np.uint8)
    c0, r0 = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    inside = (c0 - r >= 0) & (r0 - r >= 0) & (c0 + r + 1 < cam.width) & (r0 + r + 1 < cam.height)
    reason[~inside] = DepthReject.OUTSIDE
    idx = np.nonzero(inside)[0]
    if len(idx) == 0:
        return z, reason, step
    win = _windows(d, c0[idx], r0[idx], r)
    valid = (np.isfinite(win) & (win > 0)).all(axis=(1, 2))
    reason[idx[~valid]] = DepthReject.INVALID
    idx, win = idx[valid], win[valid]
    inv = 1.0 / win
    fx, fy = uv[idx, 0] - c0[idx], uv[idx, 1] - r0[idx]
    q00, q01, q10, q11 = inv[:, r, r], inv[:, r, r + 1], inv[:, r + 1, r], inv[:, r + 1, r + 1]
    inv_c = (q00 * (1 - fx) * (1 - fy) + q01 * fx * (1 - fy) + q10 * (1 - fx) * fy + q11 * fx * fy)
    zc = 1.0 / inv_c
    in_range = (zc >= limits.min_depth_m) & (zc <= limits.max_depth_m)
    if limits.planar:
        res = _affine_residual(inv)
        rel = (res.max(axis=(1, 2)) - res.min(axis=(1, 2))) / inv_c  # relative to the centre inverse depth
    else:
        rel = (win.max(axis=(1, 2)) - win.min(axis=(1, 2))) / zc
    step[idx] = rel
    reason[idx[~in_range]] = DepthReject.RANGE
    edge = in_range & (rel > limits.max_relative_step)
    reason[idx[edge]] = DepthReject.EDGE
    ok = in_range & ~edge
    z[idx[ok]] = zc[ok]
    return z, reason, step


def backproject(uv: np.ndarray, depth: np.ndarray, cam: Intrinsics, position: np.ndarray, quat: np.ndarray,
                limits: DepthLimits | None = None) -> BackProjection:
    """Keypoints uv (N,2) of a map image (OpenCV pixel centres), its depth (H,W) metres along the optical axis
    (0 = invalid), its intrinsics and stored pose (camera optical frame in the map frame: position, xyzw)
    -> map-frame points for the keypoints whose depth passes `limits`."""
    z, reason, step = sample_depth(uv, depth, cam, limits)
    ok = reason == DepthReject.OK
    points = np.full((len(z), 3), np.nan)
    if ok.any():
        xn = normalized(np.asarray(uv, np.float64)[ok], cam)
        p_cam = np.concatenate([xn, np.ones((len(xn), 1))], 1) * z[ok, None]
        R, t = cam_from_map(position, quat)
        points[ok] = (p_cam - t) @ R  # R^T (p - t), row-wise
    return BackProjection(points, ok, reason, z, step)
