"""Depth back-projection: a hand-made plane at a known distance gives exact points (also slanted, at sub-pixel
keypoints), the points reproject onto their keypoints under the map image's pose, and invalid depths, far
depths, image borders and an object edge are refused with their reason."""
from __future__ import annotations

import numpy as np
import pytest

from disam_ros.geometry import yaw_pitch_roll_to_quat
from disam_ros.pose.backproject import DepthLimits, DepthReject, backproject, sample_depth
from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.frames import cam_from_map, project

CAM = Intrinsics(fx=200.0, fy=190.0, cx=79.5, cy=59.5, width=160, height=120)
POSITION = np.array([12.0, -3.0, 1.5])
QUAT = yaw_pitch_roll_to_quat(0.7, 0.1, -0.05)


def pixel_rays() -> tuple[np.ndarray, np.ndarray]:
    v, u = np.mgrid[0:CAM.height, 0:CAM.width].astype(np.float64)
    return (u - CAM.cx) / CAM.fx, (v - CAM.cy) / CAM.fy


def plane_depth(normal: np.ndarray, offset: float) -> np.ndarray:
    """z-depth of the plane n . X = offset (optical frame) at every pixel centre."""
    xn, yn = pixel_rays()
    return offset / (normal[0] * xn + normal[1] * yn + normal[2])


def test_fronto_parallel_plane_gives_exact_points_in_the_map_frame():
    depth = np.full((CAM.height, CAM.width), 7.25, np.float32)
    uv = np.array([[10.0, 10.0], [79.5, 59.5], [150.25, 100.75], [33.3, 88.8]])
    bp = backproject(uv, depth, CAM, POSITION, QUAT)
    assert bp.ok.all() and (bp.reason == DepthReject.OK).all()
    R, t = cam_from_map(POSITION, QUAT)
    p_cam = bp.points @ R.T + t
    expected = np.stack([(uv[:, 0] - CAM.cx) / CAM.fx, (uv[:, 1] - CAM.cy) / CAM.fy, np.ones(4)], 1) * 7.25
    np.testing.assert_allclose(p_cam, expected, atol=1e-9)
    back, z = project(bp.points, R, t, CAM)
    np.testing.assert_allclose(back, uv, atol=1e-9)
    np.testing.assert_allclose(z, 7.25, atol=1e-9)
    # the principal point lies on the optical axis: 7.25 m along the camera's z axis from its position
    R_map_cam = R.T
    np.testing.assert_allclose(bp.points[1], POSITION + 7.25 * R_map_cam[:, 2], atol=1e-9)


def test_slanted_plane_is_exact_at_subpixel_keypoints_and_kept_by_the_planar_test():
    n = np.array([2.0, 0.5, 1.0])  # steep: depth 1..41 m across the image
    depth = plane_depth(n, 2.0)
    rng = np.random.default_rng(1)
    uv = rng.uniform([5, 5], [CAM.width - 6, CAM.height - 6], (200, 2))
    bp = backproject(uv, depth, CAM, POSITION, QUAT, DepthLimits(radius=3, planar=True, max_relative_step=1e-6))
    assert bp.ok.all(), bp.counts()
    R, t = cam_from_map(POSITION, QUAT)
    p_cam = bp.points @ R.T + t
    np.testing.assert_allclose(p_cam @ n, 2.0, atol=1e-9)  # on the plane: bilinear inverse depth is exact
    np.testing.assert_allclose(project(bp.points, R, t, CAM)[0], uv, atol=1e-9)  # and on the keypoint's ray
    # the plain range test sees the slant as a step: a steep plane with a wide window fails it
    plain = backproject(uv, depth, CAM, POSITION, QUAT, DepthLimits(radius=3, max_relative_step=0.05))
    assert (plain.reason == DepthReject.EDGE).any()


def test_edge_pixel_is_rejected_and_the_surfaces_either_side_are_kept():
    depth = np.full((CAM.height, CAM.width), 20.0, np.float32)
    depth[:, :80] = 5.0  # a pole in front of a facade: columns 0..79 at 5 m, 80.. at 20 m
    uv = np.array([[79.0, 60.0], [80.0, 60.0], [78.6, 30.0], [40.0, 60.0], [120.0, 60.0]])
    bp = backproject(uv, depth, CAM, POSITION, QUAT)
    assert bp.reason.tolist() == [DepthReject.EDGE] * 3 + [DepthReject.OK] * 2
    assert np.isnan(bp.points[:3]).all() and np.isfinite(bp.points[3:]).all()
    assert bp.depth[3] == pytest.approx(5.0) and bp.depth[4] == pytest.approx(20.0)
    assert bp.step[0] == pytest.approx(3.0)  # (20 - 5) / 5
    # the planar test still rejects it: a step is not a plane
    assert backproject(uv[:1], depth, CAM, POSITION, QUAT, DepthLimits(planar=True)).reason[0] == DepthReject.EDGE


def test_invalid_far_and_outside_depths_are_refused_with_their_reason():
    depth = np.full((CAM.height, CAM.width), 10.0)
    depth[20, 20] = 0.0  # sky / no return
    depth[20, 60] = np.nan
    depth[20, 100] = np.inf
    depth[60:70, 60:70] = 80.0  # beyond max_depth_m
    uv = np.array([[20.2, 20.2], [60.0, 20.0], [99.5, 19.5], [64.0, 64.0], [0.3, 50.0], [159.5, 50.0],
                   [-3.0, 50.0]])
    z, reason, _ = sample_depth(uv, depth, CAM)
    assert reason.tolist() == [DepthReject.INVALID] * 3 + [DepthReject.RANGE] + [DepthReject.OUTSIDE] * 3
    assert np.isnan(z).all()
    assert backproject(uv, depth, CAM, POSITION, QUAT).counts() == {"OK": 0, "OUTSIDE": 3, "INVALID": 3,
                                                                      "RANGE": 1, "EDGE": 0}
    assert len(backproject(np.zeros((0, 2)), depth, CAM, POSITION, QUAT).points) == 0


def test_bad_inputs_are_one_line_errors():
    depth = np.ones((CAM.height, CAM.width))
    with pytest.raises(ValueError, match="depth map shape"):
        backproject(np.zeros((1, 2)), np.ones((10, 10)), CAM, POSITION, QUAT)
    with pytest.raises(ValueError, match=r"keypoints \(N,2\)"):
        backproject(np.zeros((3,)), depth, CAM, POSITION, QUAT)
    with pytest.raises(ValueError, match="NaN"):
        backproject(np.array([[np.nan, 1.0]]), depth, CAM, POSITION, QUAT)
    with pytest.raises(ValueError, match="radius"):
        DepthLimits(radius=-1)
    with pytest.raises(ValueError, match="min_depth_m"):
        DepthLimits(min_depth_m=5.0, max_depth_m=1.0)
