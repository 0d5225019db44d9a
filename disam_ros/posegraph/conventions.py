"""Poses and covariances between the project's ROS conventions and GTSAM's, in one place.

Project / ROS side: a pose is (position (3,), quaternion xyzw (4,)) = T_frame_body, and a 6x6 covariance is in ROS
order [x, y, z, rx, ry, rz] with the POSITION perturbation additive in the parent frame (p' = p + dp) and the
ROTATION perturbation on the LEFT in the parent frame (R' = Exp(w_L) R). The localizer's absolute covariances and
the hint's `relative_covariance` (disam_ros.pose.relative) are defined this way.

GTSAM side: Pose3's tangent vector is xi = (w, v) (rotation first) with the perturbation on the RIGHT in the body
frame: T' = T Exp(xi). Priors, between-factors and `ISAM2.marginalCovariance` all use it.

To first order T Exp(xi) = (R Exp(w), p + R v) and R Exp(w) = Exp(R w) R, so w_L = R w and dp = R v. Hence
xi = J (dp, w_L) with J = [[0, R^T], [R^T, 0]] and cov_gtsam = J cov_ros J^T; the inverse map is J^-1 = J^T.
Both are tested by sampling in test/test_posegraph_conventions.py.
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence

import gtsam
import numpy as np

from disam_ros.geometry import quat_to_rot, rot_to_quat

ROBUST_KINDS = ("cauchy", "huber", "none")


def to_pose3(position: np.ndarray, quat: np.ndarray) -> gtsam.Pose3:
    """(position (3,), xyzw (4,)) -> gtsam.Pose3; rejects non-finite input with one line (a NaN in a graph poisons
    every later estimate, so it must stop at the door)."""
    p = np.asarray(position, np.float64).reshape(-1)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise ValueError(f"position must be 3 finite numbers, got {np.asarray(position).tolist()}")
    return gtsam.Pose3(gtsam.Rot3(quat_to_rot(np.asarray(quat, np.float64).reshape(4))), p)


def from_pose3(T: gtsam.Pose3) -> tuple[np.ndarray, np.ndarray]:
    """gtsam.Pose3 -> (position (3,), xyzw (4,)), float64 copies."""
    return np.array(T.translation(), np.float64), rot_to_quat(T.rotation().matrix())


def _swap(R: np.ndarray) -> np.ndarray:
    """The 6x6 [[0, R], [R, 0]]: maps (a, b) to (R b, R a), i.e. rotates each 3-block and swaps the blocks."""
    J = np.zeros((6, 6))
    J[:3, 3:] = J[3:, :3] = R
    return J


def ros_cov_to_gtsam(cov_ros: np.ndarray, R: np.ndarray) -> np.ndarray:
    """A ROS-order covariance ([x y z rx ry rz], additive parent-frame position, left parent-frame rotation) of a
    pose with rotation R (3x3, body -> parent) as GTSAM's Pose3 tangent covariance ((w, v), right body-frame
    perturbation): first order, v = R^T dp and w = R^T w_L, reordered (module docstring)."""
    J = _swap(np.asarray(R, np.float64).T)
    return J @ np.asarray(cov_ros, np.float64) @ J.T


def gtsam_cov_to_ros(cov_gtsam: np.ndarray, R: np.ndarray) -> np.ndarray:
    """The inverse of `ros_cov_to_gtsam`: dp = R v, w_L = R w, back in ROS order."""
    J = _swap(np.asarray(R, np.float64))
    return J @ np.asarray(cov_gtsam, np.float64) @ J.T


def check_covariance(cov: np.ndarray, what: str) -> np.ndarray:
    """A 6x6 (or 36 row-major) covariance as a symmetric float64 matrix, or ValueError in one line: a covariance
    that is not positive definite would make GTSAM's noise model throw deep inside an update, far from the cause."""
    c = np.asarray(cov, np.float64)
    if c.size != 36 or not np.all(np.isfinite(c)):
        raise ValueError(f"{what} covariance must be 36 finite numbers (6x6 row-major, ROS order x y z rx ry rz)")
    c = c.reshape(6, 6)
    c = 0.5 * (c + c.T)
    try:
        np.linalg.cholesky(c)
    except np.linalg.LinAlgError:
        raise ValueError(f"{what} covariance is not positive definite (diagonal {np.diag(c).tolist()})") from None
    return c


def interpolate(T0: gtsam.Pose3, T1: gtsam.Pose3, alpha: float) -> gtsam.Pose3:
    """The pose a fraction alpha (0..1) from T0 to T1: linear in position, slerp in rotation (how odometry is
    read between two samples; exact for straight motion at constant speed and for pure turns)."""
    p = (1.0 - alpha) * np.asarray(T0.translation()) + alpha * np.asarray(T1.translation())
    return gtsam.Pose3(T0.rotation().slerp(alpha, T1.rotation()), p)


def pose_at(samples: Sequence[tuple[float, gtsam.Pose3]], t: float) -> gtsam.Pose3 | None:
    """The pose at time t from (time, pose) samples in increasing time: a sample's own at its stamp, interpolated
    between the two around t, None outside the span they cover (no extrapolation: a guess is not odometry)."""
    j = bisect.bisect_left([s for s, _ in samples], t)
    if j == len(samples) or (j == 0 and samples[0][0] != t):
        return None
    if samples[j][0] == t:
        return samples[j][1]
    (t0, T0), (t1, T1) = samples[j - 1], samples[j]
    return interpolate(T0, T1, (t - t0) / (t1 - t0))


def adjoint_covariance(cov_gtsam: np.ndarray, delta: gtsam.Pose3) -> np.ndarray:
    """The GTSAM-convention covariance of T delta given that of T (delta exact): T Exp(xi) delta =
    T delta Exp(Ad(delta^-1) xi), so cov' = Ad cov Ad^T. Used when a closure's stamp is moved to a node's."""
    A = delta.inverse().AdjointMap()
    return A @ cov_gtsam @ A.T


def noise_models(cov_gtsam: np.ndarray, robust: str, k: float) -> tuple[gtsam.noiseModel.Gaussian,
                                                                         gtsam.noiseModel.Base]:
    """(the Gaussian model of a GTSAM-convention covariance, the same under the robust kernel `robust` of width k).
    GTSAM's robust models weight by the norm of the whole whitened residual, which `robust_weight` reproduces."""
    gauss = gtsam.noiseModel.Gaussian.Covariance(0.5 * (cov_gtsam + cov_gtsam.T))
    if robust == "none":
        return gauss, gauss
    est = gtsam.noiseModel.mEstimator.Cauchy if robust == "cauchy" else gtsam.noiseModel.mEstimator.Huber
    return gauss, gtsam.noiseModel.Robust.Create(est.Create(k), gauss)


def robust_weight(r: float, robust: str, k: float) -> float:
    """The IRLS weight GTSAM's mEstimator gives a whitened residual norm r: Cauchy 1 / (1 + (r/k)^2), Huber
    min(1, k/r), none 1."""
    if robust == "cauchy":
        return 1.0 / (1.0 + (r / k) ** 2)
    if robust == "huber":
        return 1.0 if r <= k else k / r
    return 1.0
