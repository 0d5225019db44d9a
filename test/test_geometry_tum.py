"""Pose helpers against closed forms and hand-worked cases."""
import numpy as np
import pytest

from disam_ros.data.tum import make_trajectory, read_tum, write_tum
from disam_ros.geometry import (
    R_BODY_OPTICAL,
    normalize_quat,
    quat_angle_deg,
    quat_to_rot,
    rot_to_quat,
    yaw_pitch_roll_to_quat,
)


def test_yaw_90_rotates_x_to_y():
    R = quat_to_rot(yaw_pitch_roll_to_quat(np.pi / 2))
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(yaw_pitch_roll_to_quat(np.pi / 2), [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-12)


def test_rot_quat_round_trip_random():
    rng = np.random.default_rng(0)
    q = normalize_quat(rng.normal(size=(50, 4)))
    np.testing.assert_allclose(rot_to_quat(quat_to_rot(q)), q, atol=1e-10)
    # 180 degree rotations take the non-trace branch
    for axis in np.eye(3):
        qq = normalize_quat(np.r_[axis, 0.0])
        np.testing.assert_allclose(quat_to_rot(rot_to_quat(quat_to_rot(qq))), quat_to_rot(qq), atol=1e-12)


def test_quat_angle_known_values():
    q0 = np.array([0, 0, 0, 1.0])
    assert quat_angle_deg(q0, yaw_pitch_roll_to_quat(np.radians(30))) == pytest.approx(30.0)
    assert quat_angle_deg(q0, -q0) == pytest.approx(0.0)  # q and -q are one rotation


def test_optical_frame_axes():
    # optical z (forward) is body x, optical x (right) is body -y, optical y (down) is body -z
    np.testing.assert_allclose(R_BODY_OPTICAL @ [0, 0, 1], [1, 0, 0])
    np.testing.assert_allclose(R_BODY_OPTICAL @ [1, 0, 0], [0, -1, 0])
    np.testing.assert_allclose(R_BODY_OPTICAL @ [0, 1, 0], [0, 0, -1])
    assert np.linalg.det(R_BODY_OPTICAL) == pytest.approx(1.0)


def test_tum_round_trip_and_errors(tmp_path):
    traj = make_trajectory([1.5, 2.5], [[0, 1, 2], [3, 4, 5]], [[0, 0, 0, 2.0], [0, 0, 1, 1]])
    write_tum(tmp_path / "p.txt", traj)
    back = read_tum(tmp_path / "p.txt")
    np.testing.assert_allclose(back.positions, traj.positions)
    np.testing.assert_allclose(back.quats, [[0, 0, 0, 1], [0, 0, np.sqrt(0.5), np.sqrt(0.5)]], atol=1e-9)
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected 8 numbers"):
        read_tum(tmp_path / "bad.txt")
    (tmp_path / "nan.txt").write_text("1 nan 0 0 0 0 0 1\n")
    with pytest.raises(ValueError, match="NaN"):
        read_tum(tmp_path / "nan.txt")


def test_a_binary_tum_file_is_an_error_naming_it(tmp_path):
    """T2: a poses file of binary bytes gave UnicodeDecodeError's text, which names no file."""
    for name, data in (("random.txt", bytes(range(128, 256)) * 8), ("nul.txt", b"0 1 2 3 0 0 0 1\n\0\0\0\n")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError) as err:
            read_tum(path)
        msg = str(err.value)
        assert msg.startswith(f"{path}: not a text file") and "check that this is the poses file" in msg
        assert "\n" not in msg
