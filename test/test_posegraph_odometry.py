"""Drifting odometry (disam_ros.posegraph.odometry) against hand-worked results: no error reproduces the truth,
a scale bias stretches a straight line by exactly scale * length, a yaw bias bends it onto a closed-form arc."""
from __future__ import annotations

import math

import numpy as np
import pytest

from disam_ros.geometry import normalize_quat, quat_angle_deg, quat_to_rot, rot_to_quat
from disam_ros.posegraph.odometry import OdometryNoise, drift_fraction, drifting_odometry, so3_exp

EXACT = OdometryNoise(sigma_m_per_m=0.0, sigma_deg_per_m=0.0, yaw_bias_deg_per_m=0.0, scale_bias=0.0)
R0 = quat_to_rot(normalize_quat(np.array([0.1, 0.7, -0.2, 0.6])))  # a camera looking in no special direction


def straight_line(n: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """n + 1 poses of a camera driving forward (optical z) in steps of `step` metres, orientation R0 throughout."""
    positions = np.array([R0 @ np.array([0.0, 0.0, i * step]) for i in range(n + 1)]) + np.array([5.0, -2.0, 1.0])
    return positions, np.tile(rot_to_quat(R0), (n + 1, 1))


def wiggly_drive(n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """A 3-D drive with turns, pitch and uneven steps."""
    s = np.linspace(0.0, 6.0, n)
    positions = np.stack([10 * np.sin(s), 0.3 * np.sin(3 * s), 8 * s + np.cos(2 * s)], axis=1)
    rots = [R0 @ so3_exp(np.array([0.05 * math.sin(4 * x), 0.4 * x, 0.1 * math.cos(x)])) for x in s]
    return positions, rot_to_quat(np.array(rots))


def test_no_noise_no_bias_reproduces_the_truth():
    p, q = wiggly_drive()
    op, oq = drifting_odometry(p, q, EXACT)
    np.testing.assert_allclose(op, p, atol=1e-9)
    np.testing.assert_allclose(quat_to_rot(oq), quat_to_rot(q), atol=1e-9)  # (arccos in angles loses digits)


def test_scale_bias_on_a_straight_line_overshoots_by_scale_times_length():
    """Every 1 m step becomes 1.02 m along the same line: the end is 0.02 * 50 = 1.0 m too far."""
    p, q = straight_line(50, 1.0)
    op, _ = drifting_odometry(p, q, OdometryNoise(0.0, 0.0, 0.0, scale_bias=0.02))
    assert np.linalg.norm(op[-1] - p[-1]) == pytest.approx(1.0, abs=1e-9)
    assert drift_fraction(p, op) == pytest.approx(0.02, abs=1e-12)
    np.testing.assert_allclose((op[-1] - p[0]) / np.linalg.norm(op[-1] - p[0]), R0 @ [0, 0, 1.0], atol=1e-12)


def test_yaw_bias_on_a_straight_line_ends_on_the_hand_worked_arc():
    """100 steps of 1 m, 0.5 deg/m: each step turns theta = 0.5 deg and leaves at half its turn, so step k heads
    (k + 1/2) theta to the left and the sum of the steps is a chord of length C = sin(n theta / 2) / sin(theta / 2)
    = sin(25 deg) / sin(0.25 deg) = 96.857 m at 25 deg: end (forward, left) = (87.783, 40.934) m, 42.718 m from
    the true end (100, 0). The continuous arc of radius 1 / (0.5 deg/m) = 114.59 m ends at 114.59 (sin 50, 1 - cos 50)
    deg = (87.782, 40.934): the same point within a millimetre."""
    n, theta = 100, math.radians(0.5)
    p, q = straight_line(n, 1.0)
    op, oq = drifting_odometry(p, q, OdometryNoise(0.0, 0.0, yaw_bias_deg_per_m=0.5, scale_bias=0.0))
    C = math.sin(n * theta / 2) / math.sin(theta / 2)
    forward, left = C * math.cos(n * theta / 2), C * math.sin(n * theta / 2)
    assert (forward, left) == pytest.approx((87.7825, 40.9337), abs=1e-4)
    in_start_frame = R0.T @ (op[-1] - p[0])  # optical: z forward, x right, so left is -x
    np.testing.assert_allclose(in_start_frame, [-left, 0.0, forward], atol=1e-9)
    assert np.linalg.norm(op[-1] - p[-1]) == pytest.approx(math.hypot(n - forward, left), abs=1e-9)
    assert math.hypot(n - forward, left) == pytest.approx(42.718, abs=1e-3)
    rho, turn = 1.0 / theta, n * theta
    assert abs(forward - rho * math.sin(turn)) < 1e-3 and abs(left - rho * (1 - math.cos(turn))) < 1e-3
    assert quat_angle_deg(oq[-1], q[-1]) == pytest.approx(50.0, abs=1e-6)


def test_noise_is_proportional_to_step_length():
    """2 m steps at 0.01 m per metre: each step's translation error in the body frame has sigma 0.02 m per axis."""
    p, q = straight_line(3000, 2.0)
    op, oq = drifting_odometry(p, q, OdometryNoise(sigma_m_per_m=0.01, sigma_deg_per_m=0.0, yaw_bias_deg_per_m=0.0,
                                                   scale_bias=0.0, seed=3))
    steps = np.einsum("nji,nj->ni", quat_to_rot(oq[:-1]), np.diff(op, axis=0))  # R_i^T (p_i+1 - p_i)
    err = steps - np.array([0.0, 0.0, 2.0])
    np.testing.assert_allclose(err.std(axis=0), 0.02, rtol=0.06)


def test_same_seed_same_output_other_seed_other_output():
    p, q = wiggly_drive()
    noise = OdometryNoise(seed=7)
    a, b = drifting_odometry(p, q, noise), drifting_odometry(p, q, OdometryNoise(seed=7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(drifting_odometry(p, q, OdometryNoise(seed=8))[0], a[0])


def test_bad_input_is_refused_in_one_line():
    with pytest.raises(ValueError, match="zero length"):
        drift_fraction(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="same shape"):
        drift_fraction(np.zeros((3, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        drifting_odometry(np.zeros((3, 2)), np.zeros((3, 4)), EXACT)
