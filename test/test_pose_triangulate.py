"""Triangulation: hand-made two-view geometry (cameras 1 m apart along x, both looking down +z), projected by
this file's own pinhole; points recovered exactly, and far, behind and mismatched points refused with the
right reason; n views with distortion; bad input refused."""
from __future__ import annotations

import numpy as np
import pytest

from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.triangulate import (
    Reject,
    TriangulationLimits,
    View,
    triangulate,
    triangulate_track,
    triangulate_two_view,
)

CAM = Intrinsics(fx=500.0, fy=500.0, cx=319.5, cy=239.5, width=640, height=480)
IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])  # optical frame axes = map axes: looking down map +z
LEFT = View.from_pose(CAM, np.array([0.0, 0.0, 0.0]), IDENTITY)
RIGHT = View.from_pose(CAM, np.array([1.0, 0.0, 0.0]), IDENTITY)


def pix(X: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Pinhole of a camera at `centre` with identity rotation, by hand."""
    p = np.atleast_2d(X) - centre
    return np.stack([500.0 * p[:, 0] / p[:, 2] + 319.5, 500.0 * p[:, 1] / p[:, 2] + 239.5], 1)


def two_view(X: np.ndarray, limits: TriangulationLimits | None = None):
    return triangulate_two_view(LEFT, RIGHT, pix(X, np.zeros(3)), pix(X, np.array([1.0, 0.0, 0.0])), limits)


def test_hand_made_point_is_recovered():
    X = np.array([[0.5, 0.2, 5.0]])
    tri = two_view(X)
    np.testing.assert_allclose(tri.points, X, atol=1e-6)
    assert tri.ok.tolist() == [True] and tri.reasons() == ["OK"]
    # the rays from (0,0,0) and (1,0,0) to the point: both 0.5 m off the point's x over 5 m depth
    expected = np.degrees(np.arccos((-0.25 + 0.04 + 25.0) / (0.25 + 0.04 + 25.0)))
    np.testing.assert_allclose(tri.angle_deg, [expected], rtol=1e-9)
    assert tri.max_error_px[0] < 1e-6


def test_far_behind_and_mismatched_points_are_refused_with_their_reason():
    X = np.array([[0.5, 0.2, 5.0], [0.5, 0.2, 10_000.0], [0.5, 0.2, -5.0], [2.0, -1.0, 8.0]])
    uv1, uv2 = pix(X, np.zeros(3)), pix(X, np.array([1.0, 0.0, 0.0]))
    uv2[3] += [0.0, 25.0]  # a wrong match: off the epipolar line by 25 px
    tri = triangulate_two_view(LEFT, RIGHT, uv1, uv2, TriangulationLimits(max_error_px=2.0, min_angle_deg=1.0))
    assert tri.reasons() == ["OK", "PARALLAX", "BEHIND", "REPROJECTION"]
    assert tri.ok.tolist() == [True, False, False, False]
    assert tri.angle_deg[1] < 0.01  # 1 m baseline at 10 km: 0.0057 degrees
    np.testing.assert_allclose(tri.points[1], X[1], rtol=1e-6)  # found, only not trusted
    np.testing.assert_allclose(tri.points[2], X[2], atol=1e-6)


def test_many_tracks_at_once():
    rng = np.random.default_rng(0)
    X = np.stack([rng.uniform(-4, 5, 500), rng.uniform(-2, 2, 500), rng.uniform(3, 30, 500)], 1)
    tri = two_view(X, TriangulationLimits(min_angle_deg=0.5))
    r1, r2 = X, X - [1.0, 0.0, 0.0]
    angle = np.degrees(np.arccos(np.sum(r1 * r2, 1) / np.linalg.norm(r1, axis=1) / np.linalg.norm(r2, axis=1)))
    np.testing.assert_allclose(tri.angle_deg, angle, atol=1e-6)
    expected_ok = angle >= 0.5
    assert expected_ok.sum() > 400
    np.testing.assert_array_equal(tri.ok, expected_ok)
    np.testing.assert_allclose(tri.points, X, atol=1e-6 * 30)


def test_three_rotated_views_with_distortion():
    cam = Intrinsics(480.0, 485.0, 320.0, 240.0, 640, 480, k1=-0.12, k2=0.03, p1=0.0005, p2=-0.0008)
    X = np.array([[3.0, 1.0, 20.0]])
    views, uvs = [], []
    for yaw_deg, centre in ((0.0, [0.0, 0.0, 0.0]), (5.0, [2.0, 0.0, 0.5]), (-8.0, [-1.5, 0.3, 1.0])):
        a = np.radians(yaw_deg) / 2  # a rotation about the map y axis (down in the optical frame)
        quat = np.array([0.0, np.sin(a), 0.0, np.cos(a)])
        v = View.from_pose(cam, np.array(centre), quat)
        p = v.R @ X[0] + v.t
        x, y = p[0] / p[2], p[1] / p[2]
        r2 = x * x + y * y
        rad = 1 - 0.12 * r2 + 0.03 * r2 * r2
        xd, yd = x * rad + 2 * 0.0005 * x * y - 0.0008 * (r2 + 2 * x * x), y * rad + 0.0005 * (r2 + 2 * y * y) \
            + 2 * -0.0008 * x * y
        views.append(v)
        uvs.append([480.0 * xd + 320.0, 485.0 * yd + 240.0])
    tri = triangulate_track(views, np.array(uvs))
    assert tri.reasons() == ["OK"]
    np.testing.assert_allclose(tri.points[0], X[0], atol=1e-6)


def test_map_far_from_the_origin_keeps_precision():
    offset = np.array([4.0e5, -3.0e5, 120.0])  # UTM-sized coordinates
    left = View.from_pose(CAM, offset, IDENTITY)
    right = View.from_pose(CAM, offset + [1.0, 0.0, 0.0], IDENTITY)
    X = np.array([[0.5, 0.2, 5.0]])
    tri = triangulate_two_view(left, right, pix(X, np.zeros(3)), pix(X, np.array([1.0, 0.0, 0.0])))
    np.testing.assert_allclose(tri.points - offset, X, atol=1e-6)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"\(N,2\) and \(N,2\)"):
        triangulate_two_view(LEFT, RIGHT, np.zeros((3, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=">= 2 views"):
        triangulate([LEFT], np.zeros((1, 1, 2)))
    with pytest.raises(ValueError, match="NaN/inf"):
        triangulate_two_view(LEFT, RIGHT, np.full((1, 2), np.nan), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="min_angle_deg"):
        TriangulationLimits(min_angle_deg=-1.0)
    empty = triangulate_two_view(LEFT, RIGHT, np.zeros((0, 2)), np.zeros((0, 2)))
    assert empty.points.shape == (0, 3) and empty.ok.shape == (0,)
    assert Reject.OK == 0
