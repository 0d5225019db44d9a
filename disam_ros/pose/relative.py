"""The query camera's pose relative to a map keyframe, and its covariance: what a pose-graph back end adds as a
between-factor (loop closure) from the keyframe's node to the query's.

Both poses are stored-pose form (T_map_optical, disam_ros.pose.frames). The relative transform is
T_key_query = T_map_key^-1 T_map_query: the query camera's position and orientation in the keyframe's optical
frame. The map keyframe's pose is the map's (treated as exact), so the relative covariance is the absolute one
expressed in the keyframe's axes: with the absolute covariance in ROS order [x, y, z, rx, ry, rz] over the
camera position in the map frame and a left (map-frame) rotation perturbation, p_rel = R_key^T (p - p_key) and
R_rel = R_key^T R give cov_rel = B cov B^T with B = blockdiag(R_key^T, R_key^T).
"""
from __future__ import annotations

import numpy as np

from disam_ros.geometry import quat_to_rot, rot_to_quat


def relative_pose(key_position: np.ndarray, key_quat: np.ndarray, position: np.ndarray, quat: np.ndarray,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(position (3,), xyzw (4,)) of the query camera in the keyframe's optical frame."""
    R_key = quat_to_rot(np.asarray(key_quat, np.float64))
    R = quat_to_rot(np.asarray(quat, np.float64))
    p = R_key.T @ (np.asarray(position, np.float64) - np.asarray(key_position, np.float64))
    return p, rot_to_quat(R_key.T @ R)


def relative_covariance(covariance: np.ndarray, key_quat: np.ndarray) -> np.ndarray:
    """The (6,6) covariance of `relative_pose`'s result from the absolute pose's (module docstring)."""
    Rt = quat_to_rot(np.asarray(key_quat, np.float64)).T
    B = np.zeros((6, 6))
    B[:3, :3] = B[3:, 3:] = Rt
    return B @ np.asarray(covariance, np.float64) @ B.T
