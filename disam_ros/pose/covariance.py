"""First-order covariance of a solved camera pose, in the frame a ROS consumer reads it.

Why our own and not pycolmap's: `estimate_and_refine_absolute_pose(..., return_covariance=True)` returns the
Ceres covariance of `cam_from_world` in the quaternion manifold's tangent space (measured with pycolmap 4.2.1:
left perturbation R' = Exp(2 d) R, i.e. half the rotation vector, then the cam_from_world translation), for
residuals of unit standard deviation (1 px) and weighted by the refinement's Cauchy loss. A consumer needs the
*camera pose in the map frame*, scaled by the noise actually seen. We compute it directly there:

    covariance = sigma^2 (J^T J)^-1,  sigma^2 = sum of squared inlier residuals / (2 N - 6)

with J the Jacobian of the inlier reprojections (pixels) with respect to the 6 pose parameters below. The
projection's derivative with respect to the camera-frame point comes from cv2.projectPoints (so lens
distortion is included); the chain to the pose parameters is ours and is checked by finite differences in
test/test_pose_solver.py, and against pycolmap's own covariance after conversion.

Parameter order and frame (ROS geometry_msgs/PoseWithCovariance order): [x, y, z, rx, ry, rz], where
(x, y, z) is a change of the camera position in the map frame (metres) and (rx, ry, rz) a small rotation
about the fixed map axes (radians) applied on the left: R_map_cam' = Exp(r) R_map_cam.

What it does not hold: the uncertainty of the map's 3D points (depth noise, triangulation error) beyond what
the residuals show, and any correlation between correspondences; it is a lower bound on the real error when
the map points are noisy or the inliers include near-misses.
"""
from __future__ import annotations

import cv2
import numpy as np

from disam_ros.pose.camera import Intrinsics

COVARIANCE_ORDER = ("x", "y", "z", "rx", "ry", "rz")


def skew(v: np.ndarray) -> np.ndarray:
    """(N,3) -> (N,3,3) cross-product matrices: skew(a) @ b == cross(a, b)."""
    v = np.asarray(v, np.float64).reshape(-1, 3)
    z = np.zeros(len(v))
    return np.stack([np.stack([z, -v[:, 2], v[:, 1]], -1),
                     np.stack([v[:, 2], z, -v[:, 0]], -1),
                     np.stack([-v[:, 1], v[:, 0], z], -1)], -2)


def projection_jacobian(points_cam: np.ndarray, cam: Intrinsics) -> np.ndarray:
    """d(pixel)/d(camera-frame point), (N,2,3), distortion included: cv2.projectPoints at the identity pose,
    where the derivative with respect to tvec is the derivative with respect to the point itself."""
    p = np.asarray(points_cam, np.float64).reshape(-1, 3)
    if len(p) == 0:
        return np.zeros((0, 2, 3))
    _, jac = cv2.projectPoints(p, np.zeros(3), np.zeros(3), cam.matrix(), cam.dist())
    return jac[:, 3:6].reshape(-1, 2, 3)  # rows are u0, v0, u1, v1, ...


def pose_jacobian(points3d: np.ndarray, R: np.ndarray, t: np.ndarray, cam: Intrinsics) -> np.ndarray:
    """(2N, 6) Jacobian of the pixels of map points under the pose camera-from-map (R, t), with respect to
    [position (map frame), rotation (map axes, left)] as in COVARIANCE_ORDER.

    With c = -R^T t the camera position, a point's camera coordinates are p = R (X - c). Perturbing the pose,
    R_map_cam' = Exp(r) R_map_cam and c' = c + dc, gives p' = R Exp(-r) (X - c - dc), so to first order
    dp/dc = -R and dp/dr = R [X - c]_x.
    """
    X = np.asarray(points3d, np.float64).reshape(-1, 3)
    R = np.asarray(R, np.float64)
    t = np.asarray(t, np.float64).reshape(3)
    c = -R.T @ t
    d_pix_d_p = projection_jacobian(X @ R.T + t, cam)  # (N,2,3)
    d_p_d_c = np.broadcast_to(-R, (len(X), 3, 3))
    d_p_d_r = R @ skew(X - c)  # (N,3,3)
    J = np.concatenate([d_pix_d_p @ d_p_d_c, d_pix_d_p @ d_p_d_r], axis=2)  # (N,2,6)
    return J.reshape(-1, 6)


def residual_sigma(residuals: np.ndarray) -> float:
    """Pixel noise estimate from (N,2) residuals of a 6-parameter fit: sqrt(sum r^2 / (2N - 6))."""
    r = np.asarray(residuals, np.float64).reshape(-1, 2)
    dof = 2 * len(r) - 6
    return float(np.sqrt(np.sum(r * r) / dof)) if dof > 0 else float("nan")


def pose_covariance(points3d: np.ndarray, R: np.ndarray, t: np.ndarray, cam: Intrinsics,
                    sigma_px: float) -> np.ndarray | None:
    """sigma^2 (J^T J)^-1 over the given (inlier) points, or None when the pose is not determined by them
    (J^T J numerically singular: too few points, or all of them on one ray / line through the camera)."""
    J = pose_jacobian(points3d, R, t, cam)
    JtJ = J.T @ J
    if len(J) < 6 or not np.all(np.isfinite(JtJ)) or np.linalg.cond(JtJ) > 1e14:
        return None
    cov = sigma_px**2 * np.linalg.inv(JtJ)
    return 0.5 * (cov + cov.T)
