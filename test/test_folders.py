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
