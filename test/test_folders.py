"""Dataset-folder convention: images paired with TUM poses by sorted name; bad folders fail clearly."""
import cv2
import numpy as np
import pytest

from disam_ros.data.folders import CameraIntrinsics, iter_frames, list_conditions, load_condition, read_image
from disam_ros.data.tum import make_trajectory, write_tum


def _write_condition(root, name, n, poses=True):
    idir = root / name / "images"
    idir.mkdir(parents=True)
    for i in range(n):
        img = np.full((4, 6, 3), i * 10, np.uint8)
        img[0, 0] = (255, 0, 0)  # BGR blue on disk -> RGB (0,0,255) in memory
        cv2.imwrite(str(idir / f"{i:03d}.png"), img)
    if poses:
        write_tum(root / name / "poses.txt", make_trajectory(np.arange(n), np.arange(3 * n).reshape(n, 3),
                                                             np.tile([0, 0, 0, 1.0], (n, 1))))


def test_load_condition_pairs_images_with_poses(tmp_path):
    _write_condition(tmp_path, "sunny", 3)
    _write_condition(tmp_path, "night", 2, poses=False)
    (tmp_path / "notacondition").mkdir()
    assert list_conditions(tmp_path) == ["night", "sunny"]
    folder = load_condition(tmp_path, "sunny")
    frames = list(iter_frames(folder))
    assert [f.path.name for f in frames] == ["000.png", "001.png", "002.png"]
    np.testing.assert_allclose(frames[2].position, [6, 7, 8])
    assert frames[1].image.shape == (4, 6, 3) and tuple(frames[1].image[0, 0]) == (0, 0, 255)
    assert load_condition(tmp_path, "night").trajectory is None
    with pytest.raises(FileNotFoundError, match="poses required"):
        load_condition(tmp_path, "night", require_poses=True)


def test_pose_count_mismatch_and_unreadable_image(tmp_path):
    _write_condition(tmp_path, "sunny", 3)
    (tmp_path / "sunny" / "images" / "003.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="3 poses for 4 images"):
        load_condition(tmp_path, "sunny")
    with pytest.raises(ValueError, match="003.png: unreadable"):
        read_image(tmp_path / "sunny" / "images" / "003.png")


def test_camera_yaml_round_trip(tmp_path):
    cam = CameraIntrinsics(64, 48, 50.0, 51.0, 31.5, 23.5)
    cam.save(tmp_path / "camera.yaml")
    assert CameraIntrinsics.load(tmp_path / "camera.yaml") == cam
    np.testing.assert_allclose(cam.matrix()[0], [50, 0, 31.5])
    (tmp_path / "bad.yaml").write_text("width: 3\n")
    with pytest.raises(ValueError, match="bad.yaml: unreadable camera intrinsics"):
        CameraIntrinsics.load(tmp_path / "bad.yaml")


def test_camera_yaml_carries_lens_distortion_to_the_geometry(tmp_path):
    """A real lens: k1 k2 p1 p2 k3 in camera.yaml reach the geometry's camera, and a point projects where the
    plumb_bob formula, worked by hand, puts it; an ideal pinhole's camera.yaml keeps its six keys."""
    import yaml

    from disam_ros.pose.camera import Intrinsics
    from disam_ros.pose.frames import project

    ideal = CameraIntrinsics(64, 48, 50.0, 51.0, 31.5, 23.5)
    ideal.save(tmp_path / "ideal.yaml")
    assert set(yaml.safe_load((tmp_path / "ideal.yaml").read_text())) == {"width", "height", "fx", "fy", "cx", "cy"}
    lens = CameraIntrinsics(640, 480, 520.0, 515.0, 319.5, 239.5, k1=0.26, k2=-0.9, p1=-0.004, p2=0.001, k3=1.2)
    lens.save(tmp_path / "camera.yaml")
    assert CameraIntrinsics.load(tmp_path / "camera.yaml") == lens
    cam = Intrinsics.load(tmp_path / "camera.yaml")
    assert cam.has_distortion and cam.colmap_model()[0] == "FULL_OPENCV"
    X = np.array([[0.8, -0.5, 4.0]])
    x, y = 0.2, -0.125
    r2 = x * x + y * y
    radial = 1 + 0.26 * r2 - 0.9 * r2 ** 2 + 1.2 * r2 ** 3
    xd = x * radial + 2 * -0.004 * x * y + 0.001 * (r2 + 2 * x * x)
    yd = y * radial + -0.004 * (r2 + 2 * y * y) + 2 * 0.001 * x * y
    uv, z = project(X, np.eye(3), np.zeros(3), cam)
    np.testing.assert_allclose(uv[0], [520.0 * xd + 319.5, 515.0 * yd + 239.5], atol=1e-9)
    (tmp_path / "half.yaml").write_text("width: 64\nheight: 48\nfx: 50\nfy: 50\ncx: 31.5\ncy: 23.5\nk1: -0.1\n")
    assert CameraIntrinsics.load(tmp_path / "half.yaml").dist().tolist() == [-0.1, 0.0, 0.0, 0.0, 0.0]
    (tmp_path / "bad_k.yaml").write_text("width: 64\nheight: 48\nfx: 50\nfy: 50\ncx: 31.5\ncy: 23.5\nk1: [1]\n")
    with pytest.raises(ValueError, match="optionally k1 k2 p1 p2 k3"):
        CameraIntrinsics.load(tmp_path / "bad_k.yaml")


ROS_CALIBRATION = """image_width: 752
image_height: 480
camera_name: front
camera_matrix:
  rows: 3
  cols: 3
  data: [461.6, 0.0, 363.0, 0.0, 460.3, 248.1, 0.0, 0.0, 1.0]
distortion_model: {model}
distortion_coefficients:
  rows: 1
  cols: {n}
  data: [{dist}]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1, 0, 0, 0, 1, 0, 0, 0, 1]
projection_matrix:
  rows: 3
  cols: 4
  data: [461.6, 0.0, 363.0, 0.0, 0.0, 460.3, 248.1, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


def test_a_ros_camera_calibration_file_is_read_as_camera_yaml(tmp_path):
    """The file ROS's camera_calibration writes (a EuRoC-like camera, values typed in by hand): K's fx, fy, cx, cy
    at data[0], [4], [2], [5], plumb_bob D as k1 k2 p1 p2 k3; trailing zero terms of a longer D are harmless, a
    model other than plumb_bob with distortion is refused in one line naming the fix."""
    path = tmp_path / "camera.yaml"
    path.write_text(ROS_CALIBRATION.format(model="plumb_bob", n=5, dist="-0.283, 0.074, 0.0002, 1.8e-05, 0.0"))
    assert CameraIntrinsics.load(path) == CameraIntrinsics(752, 480, 461.6, 460.3, 363.0, 248.1, k1=-0.283,
                                                           k2=0.074, p1=0.0002, p2=1.8e-05, k3=0.0)
    path.write_text(ROS_CALIBRATION.format(model="rational_polynomial", n=8, dist="0, 0, 0, 0, 0, 0, 0, 0"))
    assert CameraIntrinsics.load(path).dist().tolist() == [0.0] * 5  # a rectified camera's all-zero D
    path.write_text(ROS_CALIBRATION.format(model="equidistant", n=4, dist="-0.01, 0.02, 0.0, 0.0"))
    with pytest.raises(ValueError, match="equidistant.*rectify the images"):
        CameraIntrinsics.load(path)
    path.write_text(ROS_CALIBRATION.format(model="plumb_bob", n=5, dist="0, 0, 0, 0, 0").replace("image_width", "w"))
    with pytest.raises(ValueError, match="unreadable camera intrinsics.*ROS camera_calibration file"):
        CameraIntrinsics.load(path)


def test_stamp_named_images_take_the_ground_truth_interpolated_at_their_stamps(tmp_path, caplog):
    """TUM RGB-D style: poses.txt is a 100 Hz ground-truth log (a straight 1 m/s drive turning 10 deg/s about z)
    with a 0.5 s hole; images are named by their stamps, between and off the pose samples. Each image must get
    the pose at its own stamp (closed form: x = t - t0, yaw = 10 deg/s), images in the hole or before the log are
    left out (and logged), and a folder whose stamps miss the log entirely is refused in one line."""
    import logging

    from disam_ros.data.folders import POSE_MAX_GAP_S
    from disam_ros.geometry import quat_angle_deg

    t0 = 1305031102.0
    ts = t0 + np.round(np.arange(0.0, 3.0, 0.01), 2)
    ts = ts[(ts < t0 + 1.2) | (ts > t0 + 1.7)]  # the hole: 1.2 .. 1.7 s, wider than POSE_MAX_GAP_S
    assert POSE_MAX_GAP_S < 0.5

    def yaw_quat(t):
        a = np.radians(10.0 * (t - t0)) / 2.0
        return np.c_[np.zeros_like(a), np.zeros_like(a), np.sin(a), np.cos(a)]

    cdir = tmp_path / "sunny"
    (cdir / "images").mkdir(parents=True)
    write_tum(cdir / "poses.txt", make_trajectory(ts[::-1], np.c_[ts - t0, 0 * ts, 0 * ts][::-1], yaw_quat(ts)[::-1]))
    image_t = [t0 - 0.2, t0 + 0.0333, t0 + 0.5004, t0 + 1.45, t0 + 2.2667]  # before the log, 2 inside, hole, inside
    img = np.zeros((4, 6, 3), np.uint8)
    for t in image_t:
        cv2.imwrite(str(cdir / "images" / f"{t:.4f}.png"), img)
    with caplog.at_level(logging.WARNING, logger="disam_ros"):
        folder = load_condition(tmp_path, "sunny")
    assert "2 of 5 images have no ground-truth pose" in caplog.text
    want = np.array(image_t)[[1, 2, 4]]
    assert [p.name for p in folder.image_paths] == [f"{t:.4f}.png" for t in want]
    np.testing.assert_allclose(folder.trajectory.stamps, want, atol=1e-6)
    np.testing.assert_allclose(folder.trajectory.positions[:, 0], want - t0, atol=1e-6)  # linear between samples
    for q, t in zip(folder.trajectory.quats, want):
        assert quat_angle_deg(q, yaw_quat(np.array([t]))[0]) < 1e-4
    frames = list(iter_frames(folder))
    assert [f.stamp for f in frames] == pytest.approx(list(want), abs=1e-6)

    late = tmp_path / "late"
    (late / "images").mkdir(parents=True)
    write_tum(late / "poses.txt", make_trajectory(ts, np.c_[ts, 0 * ts, 0 * ts], yaw_quat(ts)))
    for t in (t0 + 100.0, t0 + 101.0):
        cv2.imwrite(str(late / "images" / f"{t:.4f}.png"), img)
    with pytest.raises(ValueError, match="no image stamp .* falls inside the pose track"):
        load_condition(tmp_path, "late")
