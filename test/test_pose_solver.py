"""Absolute pose: a known camera in a synthetic point cloud, projected by this file's own pinhole, is recovered
through gross outliers; the covariance matches the spread over noise draws, its Jacobian matches finite
differences, and it equals pycolmap's own covariance once converted to our frame; bad input is refused."""
from __future__ import annotations

import numpy as np
import pytest

from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.covariance import COVARIANCE_ORDER, pose_covariance, pose_jacobian
from disam_ros.pose.solver import BACKENDS, SolverConfig, solve_absolute_pose

FX, FY, CX, CY, W, H = 520.0, 515.0, 319.5, 239.5, 640, 480
CAM = Intrinsics(FX, FY, CX, CY, W, H)
# camera optical frame in the map frame (the stored-pose convention): a car heading 30 degrees left of map x,
# camera looking forward; optical z = body x, optical x = -body y, optical y = -body z, written out by hand
YAW = np.radians(30.0)
R_MAP_BODY = np.array([[np.cos(YAW), -np.sin(YAW), 0.0], [np.sin(YAW), np.cos(YAW), 0.0], [0.0, 0.0, 1.0]])
R_MAP_CAM = R_MAP_BODY @ np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
CENTRE = np.array([12.3, -4.5, 1.6])


def pinhole(X: np.ndarray, R_map_cam: np.ndarray, centre: np.ndarray, dist=(0.0, 0.0, 0.0, 0.0, 0.0)):
    """Map points -> pixels with plumb_bob distortion (k1 k2 p1 p2 k3), written out independently of OpenCV."""
    p = (X - centre) @ R_map_cam  # optical frame
    x, y = p[:, 0] / p[:, 2], p[:, 1] / p[:, 2]
    k1, k2, p1, p2, k3 = dist
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([FX * xd + CX, FY * yd + CY], 1)


def scene(rng: np.random.Generator, n: int) -> np.ndarray:
    """n map points in view: a random pixel pushed out to a random depth of 3..30 m."""
    u, v = rng.uniform(0, W - 1, n), rng.uniform(0, H - 1, n)
    d = rng.uniform(3.0, 30.0, n)
    p_cam = np.stack([(u - CX) / FX * d, (v - CY) / FY * d, d], 1)
    return p_cam @ R_MAP_CAM.T + CENTRE


def rotation_angle_deg(R1: np.ndarray, R2: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R1.T @ R2) - 1) / 2, -1.0, 1.0))))


def rotation_vector(R: np.ndarray) -> np.ndarray:
    """Log map of a small rotation (axis * angle), by hand."""
    angle = np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / 2
    return w * (angle / np.sin(angle) if angle > 1e-12 else 1.0)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_pose_through_20_percent_gross_outliers(backend):
    rng = np.random.default_rng(7)
    X = scene(rng, 150)
    uv = pinhole(X, R_MAP_CAM, CENTRE)
    outlier = np.zeros(len(X), bool)
    outlier[rng.choice(len(X), 30, replace=False)] = True
    angle = rng.uniform(0, 2 * np.pi, 30)
    uv[outlier] += np.stack([np.cos(angle), np.sin(angle)], 1) * rng.uniform(30, 150, (30, 1))
    sol = solve_absolute_pose(uv, X, CAM, SolverConfig(backend=backend))
    assert sol is not None
    assert np.linalg.norm(sol.position - CENTRE) < 1e-3
    assert rotation_angle_deg(quat_to_matrix(sol.quat), R_MAP_CAM) < 0.01
    np.testing.assert_array_equal(sol.inlier_mask, ~outlier)
    assert (sol.num_inliers, sol.inlier_ratio) == (120, 0.8)
    assert sol.median_error_px < 1e-3 and sol.mean_error_px < 1e-3
    assert np.all(sol.errors_px[outlier] >= 29.0)
    # camera-from-map (pycolmap's cam_from_world, PoseLib's CameraPose) is the inverse of the stored pose
    np.testing.assert_allclose(sol.R, R_MAP_CAM.T, atol=1e-6)
    np.testing.assert_allclose(sol.t, -R_MAP_CAM.T @ CENTRE, atol=1e-5)
    assert sol.quat[3] >= 0 and abs(np.linalg.norm(sol.quat) - 1) < 1e-12
    assert sol.covariance.shape == (6, 6) and sol.solve_ms > 0
    assert COVARIANCE_ORDER == ("x", "y", "z", "rx", "ry", "rz")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dist", [(-0.15, 0.04, 0.001, -0.0015, 0.0), (-0.15, 0.04, 0.001, -0.0015, 0.005)])
def test_exact_pose_through_lens_distortion(backend, dist):
    """Pixels distorted by this file's own plumb_bob (OPENCV without k3, FULL_OPENCV with it): both libraries
    must undistort as OpenCV does, so the pose comes back exact."""
    X = scene(np.random.default_rng(11), 100)
    uv = pinhole(X, R_MAP_CAM, CENTRE, dist)
    sol = solve_absolute_pose(uv, X, Intrinsics(FX, FY, CX, CY, W, H, *dist), SolverConfig(backend=backend))
    assert sol is not None and sol.num_inliers == len(X)
    assert np.linalg.norm(sol.position - CENTRE) < 1e-3
    assert rotation_angle_deg(quat_to_matrix(sol.quat), R_MAP_CAM) < 0.01


@pytest.mark.parametrize("backend", BACKENDS)
def test_covariance_agrees_with_the_spread_over_noise_draws(backend):
    X = scene(np.random.default_rng(3), 80)
    clean = pinhole(X, R_MAP_CAM, CENTRE)
    positions, rotations, predicted = [], [], []
    for seed in range(30):
        uv = clean + np.random.default_rng(100 + seed).normal(0.0, 0.5, clean.shape)
        sol = solve_absolute_pose(uv, X, CAM, SolverConfig(max_error_px=4.0, backend=backend))
        assert sol is not None and sol.num_inliers == len(X)
        positions.append(sol.position)
        # the rotation error about the map axes, left of the true pose: R_est = Exp(r) R_true
        rotations.append(rotation_vector(quat_to_matrix(sol.quat) @ R_MAP_CAM.T))
        predicted.append(np.sqrt(np.diag(sol.covariance)))
        assert 0.35 < sol.sigma_px < 0.65
    empirical = np.concatenate([np.std(positions, axis=0, ddof=1), np.std(rotations, axis=0, ddof=1)])
    ratio = np.mean(predicted, axis=0) / empirical
    assert np.all((ratio > 0.5) & (ratio < 2.0)), (ratio, empirical)


def test_jacobian_matches_finite_differences_with_distortion():
    dist = (-0.15, 0.04, 0.001, -0.0015, 0.005)
    cam = Intrinsics(FX, FY, CX, CY, W, H, *dist)
    X = scene(np.random.default_rng(5), 12)
    R, t = R_MAP_CAM.T, -R_MAP_CAM.T @ CENTRE
    J = pose_jacobian(X, R, t, cam)
    eps = 1e-6
    for k in range(6):
        d = np.zeros(6)
        d[k] = eps
        cols = []
        for sign in (1.0, -1.0):
            phi = sign * d[3:]
            angle = np.linalg.norm(phi)
            K = np.array([[0, -phi[2], phi[1]], [phi[2], 0, -phi[0]], [-phi[1], phi[0], 0]]) / max(angle, 1e-300)
            Exp = np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K  # Rodrigues, by hand
            cols.append(pinhole(X, Exp @ R_MAP_CAM, CENTRE + sign * d[:3], dist).reshape(-1))
        numeric = (cols[0] - cols[1]) / (2 * eps)
        np.testing.assert_allclose(J[:, k], numeric, rtol=1e-5, atol=1e-4 * np.abs(numeric).max())


def test_covariance_equals_pycolmaps_after_conversion():
    """pycolmap's covariance: tangent of cam_from_world's quaternion (half the rotation vector, left) then its
    translation, unit pixel noise. Converted to [position, rotation] of the camera in the map frame it must
    equal ours at sigma = 1 (with the Cauchy loss made inert so both describe plain least squares)."""
    import pycolmap

    X = scene(np.random.default_rng(11), 60)
    uv = pinhole(X, R_MAP_CAM, CENTRE) + np.random.default_rng(12).normal(0, 0.5, (60, 2))
    est = pycolmap.AbsolutePoseEstimationOptions()
    est.ransac.max_error = 4.0
    ref = pycolmap.AbsolutePoseRefinementOptions()
    ref.loss_function_scale = 1e6
    out = pycolmap.estimate_and_refine_absolute_pose(uv, X, CAM.to_pycolmap(), est, ref, True)
    R, t = out["cam_from_world"].rotation.matrix(), out["cam_from_world"].translation
    Rwc = R.T
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    # rotation vector a = 2 d; R_map_cam' = Exp(-Rwc a) R_map_cam; c' = c - Rwc [t]x a - Rwc b
    A = np.block([[-2 * Rwc @ tx, -Rwc], [-2 * Rwc, np.zeros((3, 3))]])
    ours = pose_covariance(X, R, t, CAM, sigma_px=1.0)
    np.testing.assert_allclose(ours, A @ out["covariance"] @ A.T, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_garbage_and_too_few_points_give_none(backend):
    rng = np.random.default_rng(2)
    X = scene(rng, 60)
    uv = rng.uniform([0, 0], [W, H], (60, 2))  # no relation to X
    assert solve_absolute_pose(uv, X, CAM, SolverConfig(max_trials=2000, backend=backend)) is None
    good = pinhole(X, R_MAP_CAM, CENTRE)
    assert solve_absolute_pose(good[:10], X[:10], CAM, SolverConfig(min_inliers=15, backend=backend)) is None
    assert solve_absolute_pose(good[:10], X[:10], CAM, SolverConfig(min_inliers=6, backend=backend)) is not None


@pytest.mark.parametrize("p2, p3, what", [
    (np.zeros((5, 3)), np.zeros((5, 3)), "points2d (N,2)"),
    (np.zeros((5, 2)), np.zeros((4, 3)), "equal N"),
    (np.full((5, 2), np.nan), np.ones((5, 3)), "NaN/inf"),
])
def test_malformed_inputs_raise_one_line(p2, p3, what):
    with pytest.raises(ValueError, match=what.replace("(", r"\(").replace(")", r"\)")) as err:
        solve_absolute_pose(p2, p3, CAM)
    assert "\n" not in str(err.value)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="max_error_px"):
        SolverConfig(max_error_px=0.0)
    with pytest.raises(ValueError, match="min_inliers"):
        SolverConfig(min_inliers=3)
    with pytest.raises(ValueError, match="backend='opengv'"):
        SolverConfig(backend="opengv")


def test_pycolmap_loads_only_where_its_backend_is_chosen():
    """`disam-eval`, map building and the relocalizer import without pycolmap (PoseLib is the default solver):
    a machine that carries only PoseLib (a lent GPU box) still evaluates and localises."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['pycolmap'] = None\n"  # any `import pycolmap` now raises ImportError
            "import disam_ros.eval.offline, disam_ros.maps.build_map, disam_ros.relocalizer, disam_ros.pose.solver\n"
            "print('imported')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "imported" in out.stdout, out.stderr[-2000:]


def test_ransac_cap_is_the_sampling_bound_worked_by_hand():
    """g = 10 inliers among n = 50 correspondences: a P3P sample is all-inlier with q = 10*9*8 / (50*49*48) = 720 /
    117600; at confidence 0.99999 that needs ceil(log(1e-5) / log(1 - q)) = 1875 samples. Below min_trials it
    stays there; where the bound passes max_trials (n = 100: 15,544) max_trials holds."""
    import math

    from disam_ros.pose.solver import ransac_trials

    cfg = SolverConfig(min_inliers=10, confidence=0.99999, min_trials=100, max_trials=10000)
    q = 720 / 117600
    assert ransac_trials(cfg, 50) == math.ceil(math.log(1e-5) / math.log(1 - q)) == 1875
    assert ransac_trials(cfg, 10) == 100  # every sample is all-inlier: one would do, min_trials runs
    assert ransac_trials(cfg, 100) == 10000 and ransac_trials(cfg, 9) == 10000


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_fewest_inliers_are_still_found_under_the_cap(backend):
    """12 true correspondences among 60 (48 gross outliers, w = 0.2): the capped RANSAC (1,966 iterations for
    min_inliers 10) still finds the exact pose with exactly those 12 inliers, for several seeds."""
    rng = np.random.default_rng(3)
    X = scene(rng, 60)
    uv = pinhole(X, R_MAP_CAM, CENTRE)
    outlier = np.ones(len(X), bool)
    outlier[rng.choice(len(X), 12, replace=False)] = False
    uv[outlier] = np.stack([rng.uniform(0, W - 1, 48), rng.uniform(0, H - 1, 48)], 1)
    for seed in range(5):
        sol = solve_absolute_pose(uv, X, CAM, SolverConfig(backend=backend, min_inliers=10, random_seed=seed))
        assert sol is not None and np.linalg.norm(sol.position - CENTRE) < 1e-3, seed
        np.testing.assert_array_equal(sol.inlier_mask, ~outlier)
