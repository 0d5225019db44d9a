"""Drifting odometry from ground truth: what a wheel or visual odometry would report along a known trajectory, for
testing and evaluating the pose graph on drives whose truth is known (synthetic world, TUM files).

Model, per step between consecutive ground-truth poses (motion expressed in the body frame at the step's start):
  - scale: the translation is multiplied by (1 + scale_bias) (wheel radius, visual scale);
  - yaw bias: an extra turn of yaw_bias_deg_per_m per metre about the body's up axis (a gyro bias integrated
    over time, proportional to distance at constant speed). It builds up steadily over the step, so the step's
    translation leaves at HALF the step's extra turn (midpoint rule) and the rotation gets all of it: a straight
    drive becomes a polygon inscribed in the arc the biased odometry believes;
  - noise: Gaussian, sigma proportional to the step's length (sigma_m_per_m per axis on translation,
    sigma_deg_per_m per axis on rotation, applied in the body frame).
The result is integrated from the first ground-truth pose: odometry starts where the truth does.

Body frames here are camera OPTICAL frames (x right, y down, z forward), so "up" is -y: `up_axis` says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from disam_ros.geometry import quat_to_rot, rot_to_quat

OPTICAL_UP = (0.0, -1.0, 0.0)


@dataclass
class OdometryNoise:
    """How wrong the odometry is: noise sigmas and systematic biases, all per metre travelled."""

    sigma_m_per_m: float = 0.01
    sigma_deg_per_m: float = 0.1
    yaw_bias_deg_per_m: float = 0.5
    scale_bias: float = 0.02
    seed: int = 0


def so3_exp(w: np.ndarray) -> np.ndarray:
    """Rotation vector -> rotation matrix (Rodrigues), exact to rounding also near zero."""
    w = np.asarray(w, np.float64)
    theta = float(np.linalg.norm(w))
    K = np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])
    if theta < 1e-8:
        return np.eye(3) + K + 0.5 * K @ K
    return np.eye(3) + (math.sin(theta) / theta) * K + ((1.0 - math.cos(theta)) / theta**2) * K @ K


def _check_trajectory(positions: np.ndarray, quats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, q = np.asarray(positions, np.float64), np.asarray(quats, np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or q.shape != (len(p), 4) or len(p) == 0:
        raise ValueError(f"need positions (N, 3) and xyzw quats (N, 4) with N >= 1, got {p.shape} and {q.shape}")
    return p, quat_to_rot(q)


def drifting_odometry(positions: np.ndarray, quats: np.ndarray, noise: OdometryNoise,
                      up_axis: tuple[float, float, float] = OPTICAL_UP) -> tuple[np.ndarray, np.ndarray]:
    """(positions (N, 3), xyzw (N, 4)) of the odometry along ground-truth body poses (module docstring)."""
    p, R = _check_trajectory(positions, quats)
    up = np.asarray(up_axis, np.float64)
    up = up / np.linalg.norm(up)
    rng = np.random.default_rng(noise.seed)
    yaw_rad_per_m, sig_rad_per_m = math.radians(noise.yaw_bias_deg_per_m), math.radians(noise.sigma_deg_per_m)
    out_p, out_R = [p[0].copy()], [R[0].copy()]
    for i in range(len(p) - 1):
        dp = R[i].T @ (p[i + 1] - p[i])
        dR = R[i].T @ R[i + 1]
        d = float(np.linalg.norm(dp))
        turn = yaw_rad_per_m * d * up
        dp_odom = so3_exp(0.5 * turn) @ ((1.0 + noise.scale_bias) * dp) + rng.normal(0.0, noise.sigma_m_per_m * d, 3)
        dR_odom = so3_exp(turn) @ dR @ so3_exp(rng.normal(0.0, sig_rad_per_m * d, 3))
        out_p.append(out_p[-1] + out_R[-1] @ dp_odom)
        out_R.append(out_R[-1] @ dR_odom)
    return np.array(out_p), rot_to_quat(np.array(out_R))


def drift_fraction(gt_positions: np.ndarray, odom_positions: np.ndarray) -> float:
    """Final position error / ground-truth path length: the usual one-number odometry drift (0.01 = 1 %)."""
    gt, od = np.asarray(gt_positions, np.float64), np.asarray(odom_positions, np.float64)
    if gt.shape != od.shape or gt.ndim != 2 or gt.shape[1] != 3:
        raise ValueError(f"need two (N, 3) position arrays of the same shape, got {gt.shape} and {od.shape}")
    length = float(np.sum(np.linalg.norm(np.diff(gt, axis=0), axis=1)))
    if length <= 0.0:
        raise ValueError("the ground-truth path has zero length: drift per distance travelled is undefined")
    return float(np.linalg.norm(od[-1] - gt[-1])) / length
