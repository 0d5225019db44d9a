"""Rigid-body helpers shared by the synthetic world, retrieval and evaluation.

Quaternions are (x, y, z, w) as in TUM files and ROS messages; rotations are 3x3 matrices that map
vectors from the child frame to the parent frame (T_parent_child).
"""
from __future__ import annotations

import numpy as np


def normalize_quat(q: np.ndarray) -> np.ndarray:
    """Unit quaternion(s) with w >= 0, so equal rotations compare equal."""
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(n < 1e-12) or not np.all(np.isfinite(q)):
        raise ValueError("quaternion is zero or not finite: check the pose source")
    q = q / n
    return np.where(q[..., 3:4] < 0, -q, q)


def quat_to_rot(q: np.ndarray) -> np.ndarray:
    """(…,4) xyzw -> (…,3,3)."""
    x, y, z, w = np.moveaxis(normalize_quat(q), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def rot_to_quat(R: np.ndarray) -> np.ndarray:
    """(…,3,3) -> (…,4) xyzw, via the numerically stable largest-diagonal branch."""
    R = np.asarray(R, dtype=np.float64)
    flat = R.reshape(-1, 3, 3)
    out = np.empty((flat.shape[0], 4))
    for i, m in enumerate(flat):
        tr = np.trace(m)
        if tr > 0:
            s = 2.0 * np.sqrt(tr + 1.0)
            out[i] = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
        else:
            k = int(np.argmax(np.diag(m)))
            a, b = (k + 1) % 3, (k + 2) % 3
            s = 2.0 * np.sqrt(1.0 + m[k, k] - m[a, a] - m[b, b])
            v = np.empty(4)
            v[k] = 0.25 * s
            v[a] = (m[a, k] + m[k, a]) / s
            v[b] = (m[b, k] + m[k, b]) / s
            v[3] = (m[b, a] - m[a, b]) / s
            out[i] = v
    return normalize_quat(out).reshape(R.shape[:-2] + (4,))


def quat_angle_deg(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Geodesic angle between rotations in degrees (0..180)."""
    d = np.abs(np.sum(normalize_quat(q1) * normalize_quat(q2), axis=-1))
    return np.degrees(2.0 * np.arccos(np.clip(d, 0.0, 1.0)))


def yaw_pitch_roll_to_quat(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """ZYX Euler angles (radians) of a REP-103 body frame -> xyzw."""
    cy, sy = np.cos(yaw / 2), np.sin(yaw / 2)
    cp, sp = np.cos(pitch / 2), np.sin(pitch / 2)
    cr, sr = np.cos(roll / 2), np.sin(roll / 2)
    return normalize_quat(
        np.array(
            [
                sr * cp * cy - cr * sp * sy,
                cr * sp * cy + sr * cp * sy,
                cr * cp * sy - sr * sp * cy,
                cr * cp * cy + sr * sp * sy,
            ]
        )
    )


# Rotation from the camera optical frame (z forward, x right, y down) to a REP-103 body frame
# (x forward, y left, z up): optical z -> body x, optical x -> -body y, optical y -> -body z.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


# A covariance is used by inverting it (rtabmap's information matrix, GTSAM's noise model): what is not symmetric
# and positive semi-definite has no meaning as a covariance, and a negative eigenvalue turns into a negative
# weight or an exception far from the message that carried it. Round-off of a rotated covariance (J C J^T) is
# ~1e-16 of its largest eigenvalue, so 1e-9 separates round-off from a wrong matrix by seven orders.
COVARIANCE_RTOL = 1e-9


def covariance_problem(cov: np.ndarray) -> str | None:
    """Why a square matrix is not a usable covariance (a phrase), or None: finite, symmetric to COVARIANCE_RTOL of
    its largest entry, every eigenvalue >= -COVARIANCE_RTOL x the largest (positive semi-definite up to round-off).
    The one rule of the package: the hint relay and the pose-graph node refuse the same matrices."""
    c = np.asarray(cov, np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.size == 0:
        return f"is not a square matrix (shape {c.shape})"
    if not np.isfinite(c).all():
        return "holds a value that is not finite (NaN or inf)"
    scale = float(np.abs(c).max())
    if float(np.abs(c - c.T).max()) > COVARIANCE_RTOL * scale:
        return "is not symmetric"
    eig = np.linalg.eigvalsh(0.5 * (c + c.T))
    if eig[0] < -COVARIANCE_RTOL * max(float(eig[-1]), 0.0):
        return f"is not positive semi-definite (smallest eigenvalue {eig[0]:.4g}, largest {eig[-1]:.4g})"
    return None


def checked_covariance(cov: np.ndarray, what: str, n: int = 6) -> np.ndarray:
    """`cov` (n*n values, row-major) as a symmetrised (n, n) float64 covariance, or ValueError in one line naming
    `what` and the rule (`covariance_problem`)."""
    c = np.asarray(cov, np.float64)
    if c.size != n * n:
        raise ValueError(f"{what} must be {n * n} numbers ({n}x{n} row-major), got {c.size}")
    c = c.reshape(n, n)
    if (problem := covariance_problem(c)) is not None:
        raise ValueError(f"{what} {problem}: a covariance must be finite, symmetric and positive semi-definite")
    return 0.5 * (c + c.T)
