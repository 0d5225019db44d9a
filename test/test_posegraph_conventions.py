"""The ROS <-> GTSAM pose and covariance conventions (disam_ros.posegraph.conventions), checked by sampling: draw
perturbations in one convention, map each one EXACTLY through the other (GTSAM's own Logmap / retract), and compare
the empirical covariance with what the first-order conversion predicts."""
from __future__ import annotations

import gtsam
import numpy as np
import pytest

from disam_ros.geometry import normalize_quat, quat_to_rot
from disam_ros.posegraph.conventions import (
    adjoint_covariance,
    check_covariance,
    from_pose3,
    gtsam_cov_to_ros,
    interpolate,
    pose_at,
    ros_cov_to_gtsam,
    to_pose3,
)

N = 20000
QUAT = normalize_quat(np.array([0.3, -0.5, 0.2, 0.78]))  # a rotation with no special axis
POS = np.array([12.0, -3.0, 1.5])


def correlated_cov(sig: np.ndarray, seed: int) -> np.ndarray:
    """A full-rank covariance with the given sigmas and strong correlations (so a missing rotation or a block swap
    cannot cancel out)."""
    A = np.random.default_rng(seed).normal(size=(6, 6))
    C = A @ A.T + 0.5 * np.eye(6)
    d = 1.0 / np.sqrt(np.diag(C))
    return (d[:, None] * C * d[None, :]) * np.outer(sig, sig)


def so3_exp(w: np.ndarray) -> np.ndarray:
    return gtsam.Rot3.Expmap(w).matrix()


def so3_log(R: np.ndarray) -> np.ndarray:
    return gtsam.Rot3.Logmap(gtsam.Rot3(R))


def normalised_gap(C_emp: np.ndarray, C_pred: np.ndarray) -> float:
    """Largest |difference| in units of the predicted sigmas (a correlation-scale number; sampling noise with
    N = 20000 is ~0.01 per element, ~0.02 for the largest of 36; a wrong convention gives > 1)."""
    d = 1.0 / np.sqrt(np.diag(C_pred))
    return float(np.max(np.abs(d[:, None] * (C_emp - C_pred) * d[None, :])))


def test_ros_to_gtsam_by_sampling():
    """(dp additive in the parent frame, rotation Exp(w_L) on the left) -> GTSAM's T^-1 T' tangent."""
    R = quat_to_rot(QUAT)
    cov_ros = correlated_cov(np.array([0.03, 0.05, 0.02, 0.01, 0.02, 0.015]), seed=1)
    samples = np.random.default_rng(2).multivariate_normal(np.zeros(6), cov_ros, size=N)
    T = to_pose3(POS, QUAT)
    xi = np.array([T.localCoordinates(gtsam.Pose3(gtsam.Rot3(so3_exp(s[3:]) @ R), POS + s[:3])) for s in samples])
    predicted = ros_cov_to_gtsam(cov_ros, R)
    assert normalised_gap(np.cov(xi.T), predicted) < 0.05
    naive = cov_ros[np.ix_([3, 4, 5, 0, 1, 2], [3, 4, 5, 0, 1, 2])]  # reordered only, not rotated: must be caught
    assert normalised_gap(np.cov(xi.T), naive) > 0.3
    assert normalised_gap(np.cov(xi.T), ros_cov_to_gtsam(cov_ros, R.T)) > 0.3  # R where R^T belongs: caught too


def test_gtsam_to_ros_by_sampling():
    """T' = T Exp(xi) read back as (p' - p, Log(R' R^T))."""
    R = quat_to_rot(QUAT)
    cov_g = correlated_cov(np.array([0.02, 0.01, 0.015, 0.04, 0.03, 0.05]), seed=3)
    samples = np.random.default_rng(4).multivariate_normal(np.zeros(6), cov_g, size=N)
    T = to_pose3(POS, QUAT)
    ros = []
    for s in samples:
        Tp = T.retract(s)
        ros.append(np.concatenate([Tp.translation() - POS, so3_log(Tp.rotation().matrix() @ R.T)]))
    assert normalised_gap(np.cov(np.array(ros).T), gtsam_cov_to_ros(cov_g, R)) < 0.05


def test_conversions_are_inverse_and_keep_symmetry():
    R = quat_to_rot(QUAT)
    C = correlated_cov(np.array([1.0, 2.0, 3.0, 0.1, 0.2, 0.3]), seed=5)
    np.testing.assert_allclose(gtsam_cov_to_ros(ros_cov_to_gtsam(C, R), R), C, atol=1e-12)
    G = ros_cov_to_gtsam(C, R)
    np.testing.assert_allclose(G, G.T, atol=1e-12)
    # identity rotation: a pure reorder, position block to the back
    D = np.diag([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    np.testing.assert_allclose(ros_cov_to_gtsam(D, np.eye(3)), np.diag([4.0, 5.0, 6.0, 1.0, 2.0, 3.0]))


def test_pose_round_trip_and_meaning():
    """to_pose3 is T_frame_body: a body-frame point goes to R p_b + p."""
    T = to_pose3(POS, QUAT)
    p, q = from_pose3(T)
    np.testing.assert_allclose(p, POS)
    np.testing.assert_allclose(q, QUAT, atol=1e-12)
    pb = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(T.transformFrom(pb), quat_to_rot(QUAT) @ pb + POS, atol=1e-12)


def test_adjoint_moves_a_right_perturbation_across_a_motion():
    """T Exp(xi) delta == T delta Exp(Ad(delta^-1) xi) exactly, so the covariance maps with that matrix."""
    T, delta = to_pose3(POS, QUAT), to_pose3(np.array([0.4, -0.1, 0.9]), normalize_quat(np.array([0, 0.2, 0, 1.0])))
    xi = np.array([0.01, -0.02, 0.03, 0.05, 0.01, -0.04])
    A = delta.inverse().AdjointMap()
    assert T.retract(xi).compose(delta).equals(T.compose(delta).retract(A @ xi), 1e-12)
    C = correlated_cov(np.ones(6), seed=6)
    np.testing.assert_allclose(adjoint_covariance(C, delta), A @ C @ A.T)


def test_interpolate_linear_position_and_slerp():
    T0 = to_pose3(np.zeros(3), np.array([0, 0, 0, 1.0]))
    T1 = to_pose3(np.array([2.0, 4.0, 0.0]), np.array([0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]))  # 90 deg yaw
    p, q = from_pose3(interpolate(T0, T1, 0.25))
    np.testing.assert_allclose(p, [0.5, 1.0, 0.0])
    np.testing.assert_allclose(q, [0, 0, np.sin(np.pi / 16), np.cos(np.pi / 16)], atol=1e-12)


def test_pose_at_reads_samples_interpolates_between_and_never_extrapolates():
    samples = [(float(i), to_pose3(np.array([2.0 * i, 0.0, 0.0]), np.array([0, 0, 0, 1.0]))) for i in range(3)]
    assert pose_at(samples, 1.0) is samples[1][1] and pose_at(samples, 0.0) is samples[0][1]
    np.testing.assert_allclose(pose_at(samples, 1.75).translation(), [3.5, 0.0, 0.0])
    assert pose_at(samples, -0.1) is None and pose_at(samples, 2.1) is None and pose_at([], 0.0) is None


@pytest.mark.parametrize("bad, words", [(np.eye(5), "36 finite"), (np.full((6, 6), np.nan), "36 finite"),
                                        (-np.eye(6), "not positive definite")])
def test_bad_covariances_are_refused_in_one_line(bad, words):
    with pytest.raises(ValueError, match=words):
        check_covariance(bad, "closure")
    assert check_covariance(np.eye(6).reshape(36), "closure").shape == (6, 6)


def test_bad_positions_are_refused():
    with pytest.raises(ValueError, match="3 finite"):
        to_pose3(np.array([0.0, np.inf, 0.0]), np.array([0, 0, 0, 1.0]))
