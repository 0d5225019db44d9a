"""Absolute camera pose from 2D-3D correspondences: LO-RANSAC with the P3P minimal solver, then a robust
non-linear refinement on the inliers, by one maintained library call: PoseLib's `estimate_absolute_pose`
(default) or pycolmap's `estimate_and_refine_absolute_pose` (`SolverConfig.backend`).

Why PoseLib by default: on the development town's guided matches (440 solves, the same options) it takes 10.6 ms
a solve where pycolmap takes 24.5 ms, and with retrieval's candidates replaced by ground truth it put more frames
within (0.25 m, 2 deg) (142 of 280 against 136; fog 13 against 8), the same frames verified (docs/pose.md).
pycolmap stays selectable for comparison. Our code checks the inputs, chooses the options, converts the result to
the repository's pose convention and adds the covariance (disam_ros.pose.covariance) and the statistics a
verifier needs.

Conventions (see disam_ros.pose.frames): points2d are pixels in OpenCV's convention (centre of the top-left
pixel = (0, 0), as SIFT keypoints and the repository's intrinsics), points3d are map-frame metres. The result
holds camera-from-map (R, t) (pycolmap's `cam_from_world`, PoseLib's CameraPose; x_cam = R x_map + t) and the
stored-pose form, T_map_optical: camera optical-frame (z forward, x right, y down) position + xyzw quaternion in
the map frame, exactly what poses.txt and maps hold. The covariance is 6x6 in ROS PoseWithCovariance order
[x, y, z, rx, ry, rz]: camera position in the map frame, then a small rotation about the map axes (left
perturbation).

A solve that does not produce enough inliers returns None (a normal outcome on a wrong retrieval);
malformed inputs raise a one-line ValueError.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import poselib

from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.covariance import pose_covariance, residual_sigma
from disam_ros.pose.frames import map_from_cam, project

if TYPE_CHECKING:  # pycolmap (38 MB) is imported where its backend is chosen, not with the module
    import pycolmap

BACKENDS = ("poselib", "pycolmap")


@dataclass(frozen=True)
class SolverConfig:
    """Options of the robust solve. max_error_px is the RANSAC inlier threshold in pixels (COLMAP's default,
    12 px, is meant for megapixel images; 8 px suits 640x480); loss_scale_px is the Cauchy loss scale of the
    refinement (COLMAP's default 1 px). random_seed >= 0 makes RANSAC repeatable (-1: random)."""

    max_error_px: float = 8.0
    min_inliers: int = 15
    min_inlier_ratio: float = 0.1
    confidence: float = 0.99999
    min_trials: int = 100
    max_trials: int = 10000
    random_seed: int = 0
    loss_scale_px: float = 1.0
    max_refine_iterations: int = 100
    sigma_floor_px: float = 0.0  # lower bound of the noise estimate that scales the covariance
    backend: str = "poselib"  # or "pycolmap" (module docstring); min_inlier_ratio is pycolmap's alone

    def __post_init__(self) -> None:
        for name in ("max_error_px", "loss_scale_px", "confidence"):
            v = float(getattr(self, name))
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"SolverConfig.{name}={v!r} must be finite and > 0")
        if self.min_inliers < 4 or self.min_trials < 1 or self.max_trials < self.min_trials:
            raise ValueError(f"SolverConfig: min_inliers={self.min_inliers} must be >= 4 (P3P + 1 check) and "
                             f"1 <= min_trials={self.min_trials} <= max_trials={self.max_trials}")
        if self.backend not in BACKENDS:
            raise ValueError(f"SolverConfig.backend={self.backend!r}: use one of {', '.join(BACKENDS)}")
        if not 0.0 <= self.min_inlier_ratio <= 1.0 or not self.sigma_floor_px >= 0.0:
            raise ValueError(f"SolverConfig: min_inlier_ratio={self.min_inlier_ratio} must be in [0, 1] and "
                             f"sigma_floor_px={self.sigma_floor_px} >= 0")

    def colmap_options(self) -> tuple[pycolmap.AbsolutePoseEstimationOptions, pycolmap.AbsolutePoseRefinementOptions]:
        import pycolmap

        est = pycolmap.AbsolutePoseEstimationOptions()
        est.estimate_focal_length = False
        est.ransac.max_error = float(self.max_error_px)
        est.ransac.min_inlier_ratio = float(self.min_inlier_ratio)
        est.ransac.confidence = float(self.confidence)
        est.ransac.min_num_trials = int(self.min_trials)
        est.ransac.max_num_trials = int(self.max_trials)
        est.ransac.random_seed = int(self.random_seed)
        ref = pycolmap.AbsolutePoseRefinementOptions()
        ref.loss_function_scale = float(self.loss_scale_px)
        ref.max_num_iterations = int(self.max_refine_iterations)
        ref.refine_focal_length = False
        ref.refine_extra_params = False
        ref.print_summary = False
        return est, ref


@dataclass(frozen=True)
class PoseSolution:
    """A solved pose. R, t: camera-from-map (pycolmap cam_from_world). position, quat: the camera optical
    frame in the map frame (the stored-pose convention). errors_px: reprojection error of every input
    correspondence under the refined pose (inf behind the camera); the statistics are over the inliers."""

    R: np.ndarray
    t: np.ndarray
    position: np.ndarray
    quat: np.ndarray
    inlier_mask: np.ndarray
    num_inliers: int
    inlier_ratio: float
    median_error_px: float
    mean_error_px: float
    errors_px: np.ndarray
    sigma_px: float
    covariance: np.ndarray  # (6,6), order disam_ros.pose.covariance.COVARIANCE_ORDER
    solve_ms: float
    inlier_points2d: np.ndarray | None = None  # (K,2) the inliers' pixels and (K,3) map points: what a next
    inlier_points3d: np.ndarray | None = None  # frame's optical-flow tracking starts from (verify/flow.py)

    @property
    def position_std(self) -> np.ndarray:
        """1-sigma of the position (metres, map axes)."""
        return np.sqrt(np.diag(self.covariance)[:3])

    @property
    def rotation_std_deg(self) -> np.ndarray:
        """1-sigma of the small rotation about the map axes (degrees)."""
        return np.degrees(np.sqrt(np.diag(self.covariance)[3:]))

    def to_pycolmap(self) -> pycolmap.Rigid3d:
        import pycolmap

        return pycolmap.Rigid3d(pycolmap.Rotation3d(self.R), self.t)


def check_correspondences(points2d: np.ndarray, points3d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 (N,2) and (N,3) arrays, or a one-line ValueError naming what is wrong."""
    p2 = np.asarray(points2d, dtype=np.float64)
    p3 = np.asarray(points3d, dtype=np.float64)
    if p2.ndim != 2 or p2.shape[1] != 2 or p3.ndim != 2 or p3.shape[1] != 3 or len(p2) != len(p3):
        raise ValueError(f"pose solve needs points2d (N,2) pixels and points3d (N,3) map points of equal N, "
                         f"got {p2.shape} and {p3.shape}")
    if not (np.all(np.isfinite(p2)) and np.all(np.isfinite(p3))):
        raise ValueError(f"pose solve got {int(np.sum(~np.isfinite(p2).all(1) | ~np.isfinite(p3).all(1)))} "
                         "correspondences with NaN/inf: drop invalid depth or unmatched points first")
    return np.ascontiguousarray(p2), np.ascontiguousarray(p3)


def solve_absolute_pose(points2d: np.ndarray, points3d: np.ndarray, intrinsics: Intrinsics,
                        config: SolverConfig | None = None) -> PoseSolution | None:
    """Robust absolute pose of a camera from pixel <-> map point correspondences; None when the solver fails
    or finds fewer than config.min_inliers inliers (or the inliers do not determine the pose)."""
    config = config or SolverConfig()
    p2, p3 = check_correspondences(points2d, points3d)
    start = time.perf_counter()
    if len(p2) < config.min_inliers:
        return None
    config = replace(config, max_trials=ransac_trials(config, len(p2)))
    solved = _poselib(p2, p3, intrinsics, config) if config.backend == "poselib" else _pycolmap(p2, p3, intrinsics,
                                                                                                 config)
    if solved is None or int(solved[2].sum()) < config.min_inliers:
        return None
    return _solution(p2, p3, intrinsics, config, *solved, start)


def ransac_trials(config: SolverConfig, n: int) -> int:
    """RANSAC's iteration cap for `n` correspondences: `max_trials`, lowered to the number of minimal samples after
    which a pose with `min_inliers` inliers (the fewest a solve may keep) would have been sampled all-inlier with
    probability `confidence`: log(1 - confidence) / log(1 - q), q = C(g, 3) / C(n, 3), g = min_inliers (P3P's three
    points drawn without replacement); never below `min_trials`. Why: a candidate with no pose among its matches ran
    all 10,000 iterations (15-20 ms a failed candidate, a sixth of a night or fog keyframe), where its own adaptive
    stop needs a good pose found first; 50 matches need at most ~1,900 to rule a 10-inlier pose out."""
    g = config.min_inliers
    if n < g:
        return config.max_trials
    q = g * (g - 1) * (g - 2) / (n * (n - 1) * (n - 2))
    bound = math.ceil(math.log1p(-config.confidence) / math.log1p(-q)) if q < 1.0 else 1
    return int(min(config.max_trials, max(config.min_trials, bound)))


def _poselib(p2: np.ndarray, p3: np.ndarray, cam: Intrinsics, config: SolverConfig
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(R, t, inlier mask) from PoseLib's LO-RANSAC + Cauchy-loss refinement."""
    model, params = cam.colmap_model()  # PoseLib names its models as COLMAP does, and projects as OpenCV does
    seed = config.random_seed if config.random_seed >= 0 else int(np.random.default_rng().integers(2**31))
    ransac = {"max_reproj_error": float(config.max_error_px), "success_prob": float(config.confidence),
              "min_iterations": int(config.min_trials), "max_iterations": int(config.max_trials), "seed": seed}
    bundle = {"loss_type": "CAUCHY", "loss_scale": float(config.loss_scale_px),
              "max_iterations": int(config.max_refine_iterations)}
    camera = {"model": model, "width": int(cam.width), "height": int(cam.height), "params": list(params)}
    pose, info = poselib.estimate_absolute_pose(p2, p3, camera, ransac, bundle)
    mask = np.asarray(info.get("inliers", []), dtype=bool).reshape(-1)
    if len(mask) != len(p2):
        return None
    return np.asarray(pose.R, np.float64), np.asarray(pose.t, np.float64).reshape(3), mask


def _pycolmap(p2: np.ndarray, p3: np.ndarray, cam: Intrinsics, config: SolverConfig
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(R, t, inlier mask) from pycolmap's LO-RANSAC + Ceres refinement."""
    import pycolmap

    est, ref = config.colmap_options()
    out = pycolmap.estimate_and_refine_absolute_pose(p2, p3, cam.to_pycolmap(), est, ref, False)
    if out is None:
        return None
    pose = out["cam_from_world"]
    return (np.asarray(pose.rotation.matrix(), np.float64), np.asarray(pose.translation, np.float64).reshape(3),
            np.asarray(out["inlier_mask"], dtype=bool).reshape(-1))


def _solution(p2: np.ndarray, p3: np.ndarray, cam: Intrinsics, config: SolverConfig, R: np.ndarray,
              t: np.ndarray, mask: np.ndarray, start: float) -> PoseSolution | None:
    """Statistics and covariance of a refined pose; None when its inliers leave it undetermined."""
    uv, z = project(p3, R, t, cam)
    mask = mask & (z > 0)  # COLMAP's cheirality check already holds; this keeps the statistics finite
    if int(mask.sum()) < config.min_inliers:
        return None
    residuals = uv - p2
    errors = np.where(z > 0, np.linalg.norm(residuals, axis=1), np.inf)
    sigma = max(residual_sigma(residuals[mask]), config.sigma_floor_px)
    cov = pose_covariance(p3[mask], R, t, cam, sigma)
    if cov is None or not np.isfinite(sigma):
        return None
    position, quat = map_from_cam(R, t)
    inl = errors[mask]
    return PoseSolution(R=R, t=t, position=position, quat=quat, inlier_mask=mask, num_inliers=int(mask.sum()),
                        inlier_ratio=float(mask.mean()), median_error_px=float(np.median(inl)),
                        mean_error_px=float(np.mean(inl)), errors_px=errors, sigma_px=float(sigma),
                        covariance=cov, solve_ms=1000.0 * (time.perf_counter() - start),
                        inlier_points2d=p2[mask], inlier_points3d=p3[mask])
