"""Depth from a bag's depth-image topic into ROOT/<condition>/depth (seed 002 training data for bag users)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Writer

from disam_ros.data.bags import cli
from disam_ros.data.bags.common import IMAGE, POSE_STAMPED, TYPESTORE
from disam_ros.data.bags.depth import decode_depth, depth_message, nearest_within
from disam_ros.data.bags.write import _header, image_message, pose_message
from disam_ros.data.depth import depth_path, read_depth
from disam_ros.data.folders import iter_frames, load_condition
from disam_ros.data.stamps import stamp_to_ns
from disam_ros.data.synthetic import WorldConfig, make_world

DEPTH_TOPIC = "/camera/depth/image_raw"


def test_decode_depth_by_hand_padding_byte_order_and_float_metres():
    # 2x2 16UC1 in millimetres, little endian, rows padded to 6 bytes: [[1000, 0], [2500, 65535]]
    data = bytes([0xE8, 0x03, 0x00, 0x00, 0xAA, 0xBB, 0xC4, 0x09, 0xFF, 0xFF, 0xCC, 0xDD])
    d = decode_depth(2, 2, "16UC1", 6, 0, data)
    assert d.dtype == np.float32 and np.allclose(d, [[1.0, 0.0], [2.5, 65.535]])
    big = bytes([0x03, 0xE8, 0x00, 0x00])  # 1000, 0 big endian
    assert np.allclose(decode_depth(1, 2, "mono16", 4, 1, big), [[1.0, 0.0]])
    f = np.array([[1.25, np.nan, -1.0, np.inf]], "<f4")
    assert np.array_equal(decode_depth(1, 4, "32FC1", 16, 0, f.tobytes()), np.array([[1.25, 0, 0, 0]], np.float32))
    with pytest.raises(ValueError, match="'rgb8' is not supported.*16UC1"):
        decode_depth(1, 1, "rgb8", 3, 0, b"\0\0\0")
    with pytest.raises(ValueError, match="truncated"):
        decode_depth(2, 2, "16UC1", 4, 0, b"\0" * 6)


def test_nearest_within_by_hand():
    depth = np.array([300, 100, 200], np.int64)  # unsorted on purpose: indices refer to this order
    images = np.array([90, 150, 260, 420, 1000], np.int64)
    # 90 -> 100 (idx 1); 150 ties 100/200 -> the earlier, 100 (idx 1); 260 -> 300 (idx 0); 420 -> 300 is 120 away
    assert nearest_within(images, depth, 60).tolist() == [1, 1, 0, -1, -1]
    assert nearest_within(images, np.array([], np.int64), 60).tolist() == [-1] * 5
    assert nearest_within(np.array([5]), np.array([7]), 1).tolist() == [-1]


@pytest.fixture(scope="module")
def depth_bag(tmp_path_factory) -> tuple[Path, Path, list]:
    tmp = tmp_path_factory.mktemp("depth_bag")
    world = make_world(WorldConfig(seed=2, image_size=32, frames=8, blocks=3, conditions=("sunny", "night"),
                                   workers=1, sheet_places=2), tmp / "world", progress=False)
    frames = list(iter_frames(load_condition(world, "sunny", require_poses=True)))
    bag = tmp / "bag"
    with Writer(bag, version=9) as w:
        c_img = w.add_connection("/camera/image_raw", IMAGE, typestore=TYPESTORE)
        c_pose = w.add_connection("/ground_truth/pose", POSE_STAMPED, typestore=TYPESTORE)
        c_depth = w.add_connection(DEPTH_TOPIC, IMAGE, typestore=TYPESTORE)
        for k, f in enumerate(frames):
            t = stamp_to_ns(f.stamp)
            w.write(c_pose, t, TYPESTORE.serialize_cdr(pose_message(f.position, f.quat, t, "map"), POSE_STAMPED))
            w.write(c_img, t, TYPESTORE.serialize_cdr(image_message(f.image, t, "cam", None), IMAGE))
            depth = read_depth(depth_path(f.path))
            td = t + 10_000_000  # the depth stream lags the camera by 10 ms
            if k == 3:
                continue  # a dropped depth frame: image 3 must get no depth file
            if k == 5:  # a 32FC1 (metres) message among the 16UC1 ones
                h, wd = depth.shape
                msg = TYPESTORE.types[IMAGE](header=_header(td, "cam"), height=h, width=wd, encoding="32FC1",
                                             is_bigendian=0, step=4 * wd,
                                             data=np.frombuffer(depth.astype("<f4").tobytes(), np.uint8))
            else:
                msg = depth_message(depth, td, "cam")
            w.write(c_depth, td, TYPESTORE.serialize_cdr(msg, IMAGE))
    return world, bag, frames


def test_to_folder_writes_the_nearest_depth_of_each_image(depth_bag, tmp_path, capsys):
    world, bag, frames = depth_bag
    out = tmp_path / "out"
    rc = cli.main(["to-folder", str(bag), str(out), "sunny", "--image-topic", "/camera/image_raw",
                   "--depth-topic", DEPTH_TOPIC])
    assert rc == 0, capsys.readouterr().err
    assert f"depth: {len(frames) - 1} images with depth, 1 without" in capsys.readouterr().out
    folder = load_condition(out, "sunny", require_poses=True)
    assert len(folder) == len(frames)
    for k, f in enumerate(frames):
        got = folder.depth(k)
        if k == 3:
            assert got is None
        else:
            assert np.array_equal(got, read_depth(depth_path(f.path)))  # millimetre-exact, both encodings


def test_a_missing_depth_topic_is_one_line(depth_bag, tmp_path, capsys):
    _, bag, _ = depth_bag
    rc = cli.main(["to-folder", str(bag), str(tmp_path / "o"), "sunny", "--image-topic", "/camera/image_raw",
                   "--depth-topic", "/nope"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "/nope" in err and "--depth-topic" in err
    assert not (tmp_path / "o").exists()  # refused before any image was written
