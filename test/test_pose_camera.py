"""Intrinsics for geometry: hand-computed resizing, refusal of bad calibrations, and the pycolmap camera
projecting exactly like OpenCV (same pixel convention, same distortion order)."""
from __future__ import annotations

import numpy as np
import pytest

from disam_ros.data.folders import CameraIntrinsics
from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.frames import project


def test_scaled_by_hand():
    cam = Intrinsics(fx=500.0, fy=510.0, cx=319.5, cy=239.5, width=640, height=480, k1=-0.1)
    half = cam.scaled(320, 240)
    # pixel centres: the image centre (319.5 of 0..639) stays the centre (159.5 of 0..319)
    assert (half.fx, half.fy, half.cx, half.cy, half.width, half.height) == (250.0, 255.0, 159.5, 119.5, 320, 240)
    assert half.k1 == -0.1  # distortion lives in normalised coordinates
    odd = Intrinsics(400.0, 400.0, 300.0, 200.0, 600, 400).scaled(1200, 100)
    assert (odd.fx, odd.cx) == (800.0, (300.0 + 0.5) * 2 - 0.5)
    assert (odd.fy, odd.cy) == (100.0, (200.0 + 0.5) / 4 - 0.5)


def test_from_k_reads_fx_fy_cx_cy_and_plumb_bob():
    K = np.array([[525.0, 0.0, 319.5], [0.0, 526.0, 239.5], [0.0, 0.0, 1.0]])
    cam = Intrinsics.from_K(K, 640, 480, dist=[-0.2, 0.05, 0.001, -0.002, 0.0])
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (525.0, 526.0, 319.5, 239.5)
    np.testing.assert_array_equal(cam.dist(), [-0.2, 0.05, 0.001, -0.002, 0.0])
    np.testing.assert_array_equal(cam.matrix(), K)


@pytest.mark.parametrize("K, name", [
    ([[0.0, 0, 320], [0, 500, 240], [0, 0, 1]], "fx=0.0"),
    ([[500, 0, 320], [0, float("nan"), 240], [0, 0, 1]], "fy=nan"),
    ([[-500, 0, 320], [0, 500, 240], [0, 0, 1]], "fx=-500.0"),
])
def test_bad_k_is_refused_in_one_line(K, name):
    with pytest.raises(ValueError) as err:
        Intrinsics.from_K(np.array(K, float), 640, 480)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"camera intrinsics {name} must be finite and > 0: fix camera.yaml or the CameraInfo K" in msg


@pytest.mark.parametrize("K", [np.eye(2), [[500, 1.0, 320], [0, 500, 240], [0, 0, 1]],
                               [[500, 0, 320], [0, 500, float("inf")], [0, 0, 1]]])
def test_malformed_k_is_refused(K):
    with pytest.raises(ValueError, match="fix camera.yaml or the CameraInfo K"):
        Intrinsics.from_K(np.asarray(K, float), 640, 480)


def test_zero_size_and_rational_distortion_are_refused():
    with pytest.raises(ValueError, match="width=0"):
        Intrinsics(500.0, 500.0, 320.0, 240.0, 0, 480)
    with pytest.raises(ValueError, match="plumb_bob"):
        Intrinsics.from_K(np.diag([500.0, 500.0, 1.0]), 640, 480, dist=[0, 0, 0, 0, 0, 0.1, 0, 0])


def test_camera_yaml_goes_through_the_dataset_reader(tmp_path):
    CameraIntrinsics(64, 48, 45.7, 45.7, 31.5, 23.5).save(tmp_path / "camera.yaml")
    cam = Intrinsics.load(tmp_path / "camera.yaml")
    assert (cam.fx, cam.cx, cam.width, cam.height, cam.has_distortion) == (45.7, 31.5, 64, 48, False)
    CameraIntrinsics(64, 48, -1.0, 45.7, 31.5, 23.5).save(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match=r"bad.yaml: camera intrinsics fx=-1.0 must be finite and > 0"):
        Intrinsics.load(tmp_path / "bad.yaml")


@pytest.mark.parametrize("dist, model", [(None, "PINHOLE"), ([-0.2, 0.05, 0.001, -0.002], "OPENCV"),
                                         ([-0.2, 0.05, 0.001, -0.002, 0.01], "FULL_OPENCV")])
def test_pycolmap_camera_projects_like_opencv(dist, model):
    cam = Intrinsics.from_K(np.array([[500.0, 0, 320.5], [0, 510.0, 240.25], [0, 0, 1]]), 640, 480, dist)
    colmap = cam.to_pycolmap()
    assert colmap.model.name == model
    pts = np.array([[1.0, 0.8, 2.0], [0.1, 0.2, 3.0], [-0.6, 0.3, 1.5]])
    uv, z = project(pts, np.eye(3), np.zeros(3), cam)
    np.testing.assert_allclose(colmap.img_from_cam(pts), uv, atol=1e-9)
    np.testing.assert_array_equal(z, pts[:, 2])
    if dist is None:  # the plain pinhole, written out
        np.testing.assert_allclose(uv[:, 0], 500.0 * pts[:, 0] / pts[:, 2] + 320.5)


# ------------------------------------------------------------------ one intrinsics rule (reliability C2, C3)
GOOD_CAMERAS = [  # (width, height, fx, fy, cx, cy, dist): real calibrations and the synthetic world's camera
    (640, 480, 525.0, 525.0, 319.5, 239.5, ()),  # Kinect v1 (TUM RGB-D's default)
    (1920, 1080, 1400.0, 1400.0, 960.0, 540.0, (-0.25, 0.07, 0.0005, -0.0003, -0.01)),  # GoPro-like barrel, plumb_bob
    (64, 32, 45.7, 45.7, 31.5, 15.5, ()),  # a tiny test camera
    (256, 256, 256 / 2 / np.tan(np.radians(150 / 2)), 34.3, 127.5, 127.5, ()),  # disam-synth's widest (150 deg)
    (4000, 3000, 100000.0, 100000.0, 2000.0, 1500.0, ()),  # a long telephoto: 2.3 deg
]


@pytest.mark.parametrize("cam", GOOD_CAMERAS)
def test_real_cameras_pass_the_rule_and_stay_valid_when_resized(cam):
    w, h, fx, fy, cx, cy, dist = cam
    c = Intrinsics(fx, fy, cx, cy, w, h, *dist)
    assert c.scaled(max(1, w // 4), max(1, h // 4)).fx == pytest.approx(fx * max(1, w // 4) / w)


# Bounds computed here by hand: fov = 2 atan(w / 2 / fx); 640 px at 170 deg -> fx = 320 / tan(85 deg) = 27.9964
@pytest.mark.parametrize("values, expect", [
    ((640, 480, 1e300, 500.0, 319.5, 239.5, ()), "camera intrinsics fx=1e+300 gives a horizontal field of view of "
                                                 "3.67e-296 deg over 640 px: a camera sees 0.1..170 deg (fx 28"),
    ((640, 480, 27.99, 500.0, 319.5, 239.5, ()), "fx=27.99 gives a horizontal field of view of 170 deg"),
    ((640, 480, 500.0, 500.0, -1e9, 239.5, ()),
     "camera intrinsics cx=-1000000000.0 puts the principal point outside the 640 px image (allowed -160.5..799.5 px; "
     "the image centre is 319.5)"),
    ((640, 480, 500.0, 500.0, 319.5, 601.0, ()), "cy=601.0 puts the principal point outside the 480 px image (allowed "
                                                 "-120.5..599.5 px"),
    ((640, 480, 500.0, 500.0, 319.5, 239.5, (1e6,)), "camera intrinsics k1=1000000.0 is beyond +-100"),
    ((640, 480, 500.0, 500.0, 319.5, 239.5, (0.0, 0.0, 1.5)), "camera intrinsics p1=1.5 is beyond +-1"),
    ((640, 480, 500.0, 500.0, 319.5, 239.5, (0.1, 0.0, 0.0, 0.0, float("inf"))), "camera intrinsics k3=inf must be "
                                                                                  "finite"),
])
def test_numbers_no_camera_has_are_refused_in_one_line(values, expect):
    w, h, fx, fy, cx, cy, dist = values
    assert 320 / np.tan(np.radians(85.0)) == pytest.approx(27.9964, abs=1e-4)
    with pytest.raises(ValueError) as err:
        Intrinsics(fx, fy, cx, cy, w, h, *dist)
    assert expect in str(err.value) and str(err.value).endswith("fix camera.yaml or the CameraInfo K")
    assert "\n" not in str(err.value)
    record = CameraIntrinsics(w, h, fx, fy, cx, cy, *dist, *[0.0] * (5 - len(dist)))  # camera.yaml's record
    assert str(err.value) == f"{record.problem()}: fix camera.yaml or the CameraInfo K"  # the same rule


def test_camera_yaml_with_absurd_numbers_is_refused_naming_the_file(tmp_path):
    """C2: camera.yaml fx 1e300 / cx -1e9 / k1 1e6 loaded and built a map with 0 3D points (a warning only)."""
    for name, cam in (("fx.yaml", CameraIntrinsics(640, 480, 1e300, 500.0, 319.5, 239.5)),
                      ("cx.yaml", CameraIntrinsics(640, 480, 500.0, 500.0, -1e9, 239.5)),
                      ("k1.yaml", CameraIntrinsics(640, 480, 500.0, 500.0, 319.5, 239.5, k1=1e6))):
        cam.save(tmp_path / name)
        with pytest.raises(ValueError) as err:
            CameraIntrinsics.load(tmp_path / name)
        msg = str(err.value)
        assert msg.startswith(f"{tmp_path / name}: camera intrinsics {name[:2]}=") and "fix the file" in msg
        assert "\n" not in msg
