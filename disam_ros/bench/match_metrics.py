"""The numbers `disam-bench match` reports, as small pure functions that a test can check by hand.

Why separate: the ground truth differs per data set (identity for a fixed webcam, depth + poses in the synthetic
world, none on Gardens Point), but the scores must be computed alike, so a learned method is compared with
SIFT and ORB on exactly the same definitions:
- mean matching accuracy (MMA@t): the share of putative matches whose keypoint lies within t pixels of where
  the ground truth puts it (Dusmanu et al., D2-Net, on HPatches); a pair with no match scores 0, so a method
  that finds nothing is not rewarded;
- corner error of a homography: the mean distance between where the estimate and the truth send the four
  corner pixels' centres (0, 0), (w-1, 0), (w-1, h-1), (0, h-1) (HPatches' homography accuracy);
- pose error: metres between camera centres and the geodesic angle between rotations, in the product's
  (0.25 m, 2 deg) buckets.
RANSAC calls seed OpenCV's generator first, so a run repeats.
"""
from __future__ import annotations

import cv2
import numpy as np

POSE_BUCKETS = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))


def mma(errors: np.ndarray, thresholds: tuple[float, ...]) -> list[float]:
    """Share of `errors` (pixels, NaN = unknown ground truth: left out) below each threshold; 0 when none."""
    e = np.asarray(errors, np.float64)
    e = e[np.isfinite(e)]
    return [float(np.mean(e < t)) if len(e) else 0.0 for t in thresholds]


def corners(width: int, height: int) -> np.ndarray:
    """(4,2) centres of the corner pixels, clockwise from the top left."""
    return np.array([[0.0, 0.0], [width - 1.0, 0.0], [width - 1.0, height - 1.0], [0.0, height - 1.0]])


def apply_h(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points (N,2) through a 3x3 homography."""
    p = np.concatenate([np.asarray(pts, np.float64), np.ones((len(pts), 1))], 1) @ np.asarray(H, np.float64).T
    return p[:, :2] / p[:, 2:3]


def corner_error(H: np.ndarray, width: int, height: int, H_true: np.ndarray | None = None) -> float:  # noqa: N803
    """Mean pixel distance between the four corners sent by H and by H_true (identity when None)."""
    c = corners(width, height)
    truth = c if H_true is None else apply_h(H_true, c)
    return float(np.linalg.norm(apply_h(H, c) - truth, axis=1).mean())


def fit_homography(src: np.ndarray, dst: np.ndarray, threshold_px: float = 3.0) -> tuple[np.ndarray | None, int]:
    """RANSAC homography src -> dst (cv2.findHomography) and its inlier count; (None, 0) under 4 matches or when
    RANSAC finds none."""
    if len(src) < 4:
        return None, 0
    cv2.setRNGSeed(0)
    H, mask = cv2.findHomography(np.asarray(src, np.float64), np.asarray(dst, np.float64), cv2.RANSAC,
                                 threshold_px, maxIters=2000, confidence=0.999)
    if H is None or mask is None:
        return None, 0
    return H, int(mask.sum())


def fundamental_inliers(src: np.ndarray, dst: np.ndarray, threshold_px: float = 3.0) -> int:
    """Inliers of a RANSAC fundamental matrix (cv2.findFundamentalMat); 0 under 8 matches or on failure."""
    if len(src) < 8:
        return 0
    cv2.setRNGSeed(0)
    F, mask = cv2.findFundamentalMat(np.asarray(src, np.float64), np.asarray(dst, np.float64), cv2.FM_RANSAC,
                                     threshold_px, 0.999, 2000)
    return 0 if F is None or mask is None else int(mask.sum())


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:  # noqa: N803
    """Geodesic angle between two rotation matrices, degrees."""
    c = (np.trace(np.asarray(R_a).T @ np.asarray(R_b)) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def pose_error(R: np.ndarray, t: np.ndarray, R_true: np.ndarray, t_true: np.ndarray) -> tuple[float, float]:  # noqa: N803
    """(metres between camera centres, degrees between rotations) of two camera-from-map poses."""
    centre, centre_true = -np.asarray(R).T @ np.ravel(t), -np.asarray(R_true).T @ np.ravel(t_true)
    return float(np.linalg.norm(centre - centre_true)), rotation_angle_deg(R, R_true)


def within(errors: list[tuple[float, float]], buckets: tuple[tuple[float, float], ...] = POSE_BUCKETS) -> list[float]:
    """Share of (metres, degrees) errors inside each (metres, degrees) bucket; NaN errors (no pose) count as
    outside."""
    if not errors:
        return [0.0 for _ in buckets]
    e = np.asarray(errors, np.float64).reshape(-1, 2)
    return [float(np.mean((e[:, 0] <= m) & (e[:, 1] <= d))) for m, d in buckets]


def median(values: list[float]) -> float:
    """Median, NaN for an empty list (a table shows '-')."""
    return float(np.median(values)) if len(values) else float("nan")
