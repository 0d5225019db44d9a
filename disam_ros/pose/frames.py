"""The two ways a camera pose is written, and the projection that joins them.

Stored poses (TUM files, maps, the synthetic world) are T_map_optical: the camera's *optical* frame (z forward,
x right, y down) in the map frame, as position + xyzw quaternion; the rotation maps optical-frame vectors into
the map frame. See data/synthetic/route.py `traversal_poses` (it composes R_map_body @ R_BODY_OPTICAL),
data/synthetic/generate.py (module docstring: "poses.txt (TUM, optical frame in the map frame)") and
data/bags/__init__.py (PoseStamped = camera optical frame in the map frame). No body-frame rotation
(geometry.R_BODY_OPTICAL) is applied here: the stored pose already is the optical frame.

Solvers (pycolmap's Rigid3d `cam_from_world`, OpenCV's rvec/tvec) use the inverse, camera-from-map:
x_cam = R @ x_map + t, with the same optical axes as COLMAP's camera (x right, y down, z forward), so
R = R_map_optical.T and t = -R @ position.
"""
from __future__ import annotations

import cv2
import numpy as np

from disam_ros.geometry import quat_to_rot, rot_to_quat
from disam_ros.pose.camera import Intrinsics


def cam_from_map(position: np.ndarray, quat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stored pose (T_map_optical: position, xyzw) -> camera-from-map (R (3,3), t (3,))."""
    R_map_cam = quat_to_rot(np.asarray(quat, np.float64))
    R = R_map_cam.T
    return R, -R @ np.asarray(position, np.float64).reshape(3)


def map_from_cam(R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera-from-map (R, t) -> stored pose convention (position (3,), xyzw with w >= 0)."""
    R = np.asarray(R, np.float64)
    return -R.T @ np.asarray(t, np.float64).reshape(3), rot_to_quat(R.T)


def project(points: np.ndarray, R: np.ndarray, t: np.ndarray, cam: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Map-frame points (N,3) -> pixels (N,2) (with the camera's distortion, via cv2.projectPoints) and
    optical-frame depth z (N,). Pixels of points with z <= 0 are meaningless: callers check the depth."""
    X = np.asarray(points, np.float64).reshape(-1, 3)
    z = X @ np.asarray(R, np.float64)[2] + float(np.asarray(t, np.float64).reshape(3)[2])
    if len(X) == 0:
        return np.zeros((0, 2)), z
    rvec = cv2.Rodrigues(np.asarray(R, np.float64))[0]
    uv, _ = cv2.projectPoints(X, rvec, np.asarray(t, np.float64).reshape(3, 1), cam.matrix(), cam.dist())
    return uv.reshape(-1, 2), z


def normalized(uv: np.ndarray, cam: Intrinsics) -> np.ndarray:
    """Pixels (N,2) -> undistorted normalised image coordinates (x/z, y/z) (N,2), via cv2.undistortPoints."""
    uv = np.asarray(uv, np.float64).reshape(-1, 2)
    if len(uv) == 0:
        return np.zeros((0, 2))
    if not cam.has_distortion:
        return np.stack([(uv[:, 0] - cam.cx) / cam.fx, (uv[:, 1] - cam.cy) / cam.fy], 1)
    # OpenCV's default stops after 5 iterations (pixel-level error at strong distortion): iterate to 1e-10
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)
    out = cv2.undistortPoints(uv.reshape(-1, 1, 2), cam.matrix(), cam.dist(), None, None, None, criteria)
    return out.reshape(-1, 2)


def about_y(deg: float) -> np.ndarray:
    """Rotation by `deg` about the y axis (the optical frame's vertical: a camera turning left or right)."""
    a = np.radians(deg)
    return np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
