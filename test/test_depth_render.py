"""Depth maps of the synthetic world and the depth file format.

The geometric check is independent of the ray caster: a known scene point (the centre of a landmark box's
face that looks at the camera, from world.yaml) is projected with camera.yaml and the TUM pose from
poses.txt; the depth PNG at that pixel must equal the optical-axis distance of the face plane along that
pixel's ray (plain pinhole algebra), to the file's millimetre resolution.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from disam_ros.data.depth import MAX_DEPTH_M, depth_path, metres_to_mm, mm_to_metres, read_depth, write_depth
from disam_ros.data.folders import CameraIntrinsics, load_condition
from disam_ros.data.synthetic import WorldConfig, load_world, make_world
from disam_ros.data.synthetic.shade import render
from disam_ros.data.tum import read_tum
from disam_ros.geometry import quat_to_rot

SMALL = dict(seed=3, image_size=64, frames=24, conditions=("sunny", "night"), workers=1, sheet_places=2)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    return make_world(WorldConfig(**SMALL), tmp_path_factory.mktemp("synth_depth") / "world", progress=False)


def test_millimetre_encoding_by_hand(tmp_path):
    d = np.array([[0.0, 1.2344, 1.2346, np.inf], [70.0, np.nan, -1.0, MAX_DEPTH_M]])
    mm = metres_to_mm(d)
    assert mm.dtype == np.uint16
    np.testing.assert_array_equal(mm, [[0, 1234, 1235, 0], [0, 0, 0, 65535]])
    np.testing.assert_allclose(mm_to_metres(mm), [[0, 1.234, 1.235, 0], [0, 0, 0, 65.535]], atol=1e-6)
    path = write_depth(tmp_path / "d" / "x.png", d)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw[0, 1] == 1234  # a plain 16-bit PNG any tool reads
    np.testing.assert_allclose(read_depth(path), mm_to_metres(mm))
    assert depth_path(tmp_path / "c" / "images" / "000007.jpg") == tmp_path / "c" / "depth" / "000007.png"


def test_unreadable_or_wrong_depth_files_are_named(tmp_path):
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="rgb.png: depth must be a single-channel 16-bit PNG"):
        read_depth(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="missing.png: unreadable"):
        read_depth(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="single-channel"):
        write_depth(tmp_path / "bad.png", np.zeros((4, 4, 3)))


def test_every_frame_has_a_depth_map_read_by_the_dataset_folder(world_dir):
    for cond in SMALL["conditions"]:
        folder = load_condition(world_dir, cond)
        assert folder.has_depth and len(folder.depth_paths) == len(folder) == SMALL["frames"]
        assert [p.name for p in folder.depth_paths] == [p.name for p in folder.image_paths]
        assert all(p.parent == world_dir / cond / "depth" for p in folder.depth_paths)
        d = folder.depth(0)
        assert d.shape == (64, 64) and d.dtype == np.float32
        assert (d == 0).any() and (d > 0).mean() > 0.4  # sky is invalid; road and buildings are not
        assert d[d > 0].min() > 0.05 and d.max() <= MAX_DEPTH_M
        assert (d[-1] > 0).all() and d[-1].max() < 6.0  # the bottom row sees the road just ahead (camera at 1.5 m)


def test_depth_can_be_turned_off(tmp_path):
    root = make_world(WorldConfig(**{**SMALL, "frames": 2, "conditions": ("sunny",)}, depth=False),
                      tmp_path / "w", progress=False)
    assert not (root / "sunny" / "depth").exists()
    folder = load_condition(root, "sunny")
    assert not folder.has_depth and folder.depth(0) is None


def facing_face_centres(part: dict, pos: np.ndarray):
    """(centre, normal axis, plane coordinate) of each box face whose outside the camera is on."""
    lo, hi = np.array(part["lo"]), np.array(part["hi"])
    for axis in range(3):
        for plane, outside in ((lo[axis], pos[axis] < lo[axis]), (hi[axis], pos[axis] > hi[axis])):
            if outside:
                c = (lo + hi) / 2.0
                c[axis] = plane
                yield c, axis, plane


def test_landmark_depth_at_its_projected_pixel_is_its_optical_axis_distance(world_dir):
    desc = yaml.safe_load((world_dir / "world.yaml").read_text())
    cam = CameraIntrinsics.load(world_dir / "sunny" / "camera.yaml")
    traj = read_tum(world_dir / "sunny" / "poses.txt")
    world, _ = load_world(world_dir)
    checked, off_axis = 0, 0.0
    for k in range(len(traj)):
        pos, R = traj.positions[k], quat_to_rot(traj.quats[k])  # R: map <- optical
        depth = read_depth(world_dir / "sunny" / "depth" / f"{k:06d}.png")
        ids = None
        for mark in desc["landmarks"]:
            for part in (p for p in mark["parts"] if p["shape"] == "box"):
                for centre, axis, plane in facing_face_centres(part, pos):
                    x, y, z = (centre - pos) @ R  # the scene point in the optical frame
                    if not 1.0 < z < MAX_DEPTH_M - 1:
                        continue
                    iu, iv = round(cam.fx * x / z + cam.cx), round(cam.fy * y / z + cam.cy)
                    if not (0 <= iu < cam.width and 0 <= iv < cam.height):
                        continue
                    if ids is None:
                        ids = render(world, (pos, traj.quats[k]), cam, "sunny", buffers=True)[1]
                    if ids[iv, iu] != part["id"]:
                        continue  # occluded from here, or the pixel centre falls on a neighbouring face
                    ray = R @ np.array([(iu - cam.cx) / cam.fx, (iv - cam.cy) / cam.fy, 1.0])  # z_optical = 1
                    z_exact = (plane - pos[axis]) / ray[axis]  # optical-axis distance of the face along this pixel
                    hit = pos + z_exact * ray
                    lo, hi = np.array(part["lo"]), np.array(part["hi"])
                    if not np.all((hit >= lo - 1e-6) & (hit <= hi + 1e-6)):
                        continue  # the pixel's ray meets the plane outside this face
                    assert depth[iv, iu] == pytest.approx(z_exact, abs=6e-4), (k, mark["name"])
                    # the projected point itself: its z within the face's slope over half a pixel
                    assert abs(depth[iv, iu] - z) < 0.03 * z, (k, mark["name"])
                    off_axis = max(off_axis, float(np.linalg.norm(ray)) - 1.0)
                    checked += 1
    assert checked >= 5, f"only {checked} landmark faces seen; did the layout change?"
    assert off_axis > 0.01  # some checks are off-axis, where ray length and optical z differ
