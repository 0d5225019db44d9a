"""Folder <-> rosbag round trips (sqlite3/mcap, raw/jpeg/png, ROS 1), time association and error handling.

Every bag here is a real file written by `rosbags` and read back through the same reader the tools use.
"""
from __future__ import annotations

import json
import math
import shutil
import warnings

import cv2
import numpy as np
import pytest
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import Writer as Writer2
from rosbags.typesys import Stores, get_typestore

from disam_ros.data import bags
from disam_ros.data.bags import (
    GAP,
    OK,
    OUTSIDE,
    TYPESTORE,
    BagError,
    BagReader,
    BagWarning,
    BagWriteOptions,
    PoseTrack,
    interpolate_pose,
    slerp,
    stamp_to_ns,
)
from disam_ros.data.bags import cli as bag_cli
from disam_ros.data.folders import CameraIntrinsics, iter_frames, load_condition, read_image
from disam_ros.data.tum import make_trajectory, write_tum
from disam_ros.geometry import quat_angle_deg, yaw_pitch_roll_to_quat

N = 6
CAM = CameraIntrinsics(40, 32, 45.0, 46.0, 19.5, 15.5)
T0 = 1_700_000_000.0


def smooth_image(k: int, h: int = 32, w: int = 40) -> np.ndarray:
    """Gradients and a moving block: JPEG keeps these within a few grey levels."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 6 % 256, yy * 7 % 256, np.full_like(xx, 40 * k % 256)], axis=2).astype(np.uint8)
    img[8:20, 4 + 4 * k: 14 + 4 * k] = (230, 60, 20)
    return img


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    cdir = root / "day" / "images"
    cdir.mkdir(parents=True)
    for k in range(N):
        cv2.imwrite(str(cdir / f"{k:04d}.png"), smooth_image(k)[:, :, ::-1])
    rng = np.random.default_rng(3)
    quats = [yaw_pitch_roll_to_quat(0.3 * k, 0.05, -0.02) for k in range(N)]
    write_tum(root / "day" / "poses.txt", make_trajectory(T0 + 0.1 * np.arange(N), rng.normal(size=(N, 3)) * 10, quats))
    CAM.save(root / "day" / "camera.yaml")
    return root


# ----------------------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("compression", [None, "png", "jpeg"])
def test_folder_bag_round_trip(dataset, tmp_path, storage, compression):
    bag = tmp_path / "bag"
    summary = bags.write_folder_bag(dataset, "day", bag, BagWriteOptions(storage=storage, compression=compression))
    assert summary.frames == N and not list(tmp_path.glob(".bag.*")), "staging dir left behind"
    info = bags.bag_info(bag)
    assert info.storage == storage and info.ros_version == 2
    img_topic = "/camera/image_raw" + ("/compressed" if compression else "")
    assert {t.topic: t.count for t in info.topics} == {img_topic: N, "/camera/camera_info": N, "/ground_truth/pose": N}

    folder = load_condition(dataset, "day")
    with BagReader(bag) as reader:
        assert reader.image_topic == img_topic and reader.camera_info() == CAM
        frames = list(reader.frames())
        assert reader.stats.skipped == 0
    assert len(frames) == N
    for fr, ref in zip(frames, iter_frames(folder)):
        assert fr.stamp_ns == stamp_to_ns(ref.stamp)
        assert np.array_equal(fr.position, ref.position) and np.array_equal(fr.quat, ref.quat)
        if compression == "jpeg":
            diff = np.abs(fr.image.astype(int) - ref.image.astype(int))
            assert fr.image.shape == ref.image.shape and diff.mean() < 4.0, diff.mean()
        else:
            assert np.array_equal(fr.image, ref.image)


def test_bag_to_folder_round_trip(dataset, tmp_path):
    bag = tmp_path / "bag"
    bags.write_folder_bag(dataset, "day", bag)
    out = bags.bag_to_folder(bag, tmp_path / "out", "day_again")
    assert out.frames == N and out.with_poses and not list((tmp_path / "out").glob(".*"))
    back, ref = load_condition(tmp_path / "out", "day_again"), load_condition(dataset, "day")
    assert back.camera == CAM
    assert [p.name for p in back.image_paths] == [f"{stamp_to_ns(s):020d}.png" for s in ref.trajectory.stamps]
    for a, b in zip(iter_frames(back), iter_frames(ref)):
        assert np.array_equal(a.image, b.image)
        assert a.stamp == pytest.approx(b.stamp, abs=1e-6) and np.allclose(a.position, b.position, atol=1e-6)
        assert quat_angle_deg(a.quat, b.quat) < 1e-5
    with pytest.raises(BagError, match="already exists"):
        bags.bag_to_folder(bag, tmp_path / "out", "day_again")


def test_to_folder_overwrite_replaces_only_a_folder_it_made(dataset, tmp_path, capsys):
    bag = bags.write_folder_bag(dataset, "day", tmp_path / "bag").path
    mine = tmp_path / "out" / "mine"
    mine.mkdir(parents=True)
    (mine / "precious.txt").write_text("years of work")
    assert bag_cli.main(["to-folder", str(bag), str(tmp_path / "out"), "mine", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{mine} exists and was not made by disam_ros (no .disam-made)" in err and "remove it" in err
    assert "\n" not in err
    assert [p.name for p in mine.iterdir()] == ["precious.txt"]
    assert (mine / "precious.txt").read_text() == "years of work"
    assert sorted(p.name for p in mine.parent.iterdir()) == ["mine"]  # and no staging folder left behind

    (tmp_path / "out" / "empty").mkdir()
    for _ in range(2):  # an empty folder, then the folder it made itself (marked), are replaced
        assert bag_cli.main(["to-folder", str(bag), str(tmp_path / "out"), "empty", "--overwrite"]) == 0
        assert (tmp_path / "out" / "empty" / ".disam-made").read_text() == "disam-bag to-folder\n"
        assert len(load_condition(tmp_path / "out", "empty")) == N
    assert sorted(p.name for p in mine.parent.iterdir()) == ["empty", "mine"]


def test_real_nordland_frames_through_a_jpeg_mcap_bag(shared_data, tmp_path):
    src = sorted((shared_data / "nordland_trimmed_dev" / "winter").glob("*.png"))[100:108]
    (tmp_path / "ds" / "winter" / "images").mkdir(parents=True)
    for p in src:
        shutil.copy(p, tmp_path / "ds" / "winter" / "images" / p.name)
    with pytest.warns(BagWarning, match="no camera.yaml"):
        bags.write_folder_bag(tmp_path / "ds", "winter", tmp_path / "bag", BagWriteOptions("/cam", storage="mcap",
                                                                                         compression="jpeg"))
    with BagReader(tmp_path / "bag") as reader:
        assert reader.pose_topic is None and reader.info_topic is None
        frames = list(reader.frames())
    assert len(frames) == len(src) and all(f.position is None for f in frames)
    assert [f.stamp for f in frames] == pytest.approx([1.0 + 0.1 * k for k in range(len(src))])
    for f, p in zip(frames, src):
        ref = read_image(p)
        assert f.image.shape == ref.shape and np.abs(f.image.astype(int) - ref).mean() < 6.0


def test_cli_from_folder_info_to_folder(dataset, tmp_path, capsys):
    bag = tmp_path / "cli_bag"
    assert bag_cli.main(["from-folder", str(dataset), "day", str(bag), "--storage", "mcap", "--compressed", "png",
                         "--image-topic", "/cam/image/compressed"]) == 0
    assert bag_cli.main(["info", str(bag), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["storage"] == "mcap" and info["message_count"] == 3 * N
    topics = {t["topic"] for t in info["topics"]}
    assert topics == {"/cam/image/compressed", "/camera/camera_info", "/ground_truth/pose"}
    assert bag_cli.main(["info", str(bag)]) == 0 and "/cam/image/compressed" in capsys.readouterr().out
    assert bag_cli.main(["to-folder", str(bag), str(tmp_path / "out"), "day"]) == 0
    assert "6 of 6 images kept" in capsys.readouterr().out
    assert len(load_condition(tmp_path / "out", "day")) == N


# ----------------------------------------------------------------------------------------------------------
# errors


def test_missing_topic_error_lists_the_topics_present(dataset, tmp_path, capsys):
    bag = tmp_path / "bag"
    bags.write_folder_bag(dataset, "day", bag)
    with pytest.raises(BagError) as exc:
        BagReader(bag, pose_topic="/odom")
    msg = str(exc.value)
    assert "no topic '/odom'" in msg and "--pose-topic" in msg
    for topic in ("/camera/image_raw (sensor_msgs/msg/Image, 6 msgs)", "/camera/camera_info", "/ground_truth/pose"):
        assert topic in msg
    assert "\n" not in msg
    with pytest.raises(BagError, match="is sensor_msgs/msg/CameraInfo, not a image type"):
        BagReader(bag, image_topic="/camera/camera_info")
    assert bag_cli.main(["to-folder", str(bag), str(tmp_path / "o"), "c", "--image-topic", "/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("disam-bag to-folder: error:") and "/ground_truth/pose" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists(), "a failed call must leave no output behind"
    with pytest.raises(BagError, match="bag not found"):
        bags.bag_info(tmp_path / "nope")


# ----------------------------------------------------------------------------------------------------------
# time association


def test_slerp_and_interpolation_hand_computed():
    q0, q90 = yaw_pitch_roll_to_quat(0.0), yaw_pitch_roll_to_quat(math.pi / 2)
    assert np.allclose(slerp(q0, q90, 0.25), [0, 0, math.sin(math.pi / 16), math.cos(math.pi / 16)])
    assert np.allclose(slerp(q0, -q90, 0.5), yaw_pitch_roll_to_quat(math.pi / 4))  # shorter arc despite the sign
    track = PoseTrack(np.array([10_000_000_000, 10_100_000_000, 10_500_000_000]),
                      np.array([[0.0, 0, 0], [1, 2, 0], [5, 5, 5]]), np.stack([q0, q90, q90]))
    status, p, q = interpolate_pose(track, 10_025_000_000, max_gap_s=0.2)
    assert status == OK and np.allclose(p, [0.25, 0.5, 0.0]) and quat_angle_deg(q, q0) == pytest.approx(22.5)
    status, p, q = interpolate_pose(track, 10_100_000_000, 0.2)
    assert status == OK and np.array_equal(p, [1, 2, 0]) and np.array_equal(q, q90)
    assert interpolate_pose(track, 10_300_000_000, 0.2)[0] == GAP  # 0.4 s between the bracketing poses
    assert interpolate_pose(track, 10_300_000_000, 0.4)[0] == OK  # gap equal to max_gap is allowed
    assert interpolate_pose(track, 9_999_999_999, 0.2)[0] == OUTSIDE
    assert interpolate_pose(track, 10_500_000_001, 0.2)[0] == OUTSIDE


def write_bag(path, messages, storage="sqlite3"):
    """messages: (topic, msgtype, log_ns, rosbags message or raw bytes); connections made on first use."""
    with Writer2(path, version=9, storage_plugin=bags.STORAGES[storage]) as w:
        conns = {}
        for topic, typ, log_ns, msg in messages:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, typ, typestore=TYPESTORE)
            raw = msg if isinstance(msg, bytes) else TYPESTORE.serialize_cdr(msg, typ)
            w.write(conns[topic], log_ns, raw)
    return path


def ns(s: float) -> int:
    return stamp_to_ns(s)


def pose(t: float, p, yaw_deg: float, log: float | None = None):
    q = yaw_pitch_roll_to_quat(math.radians(yaw_deg))
    return ("/gt", bags.POSE_STAMPED, ns(log if log is not None else t), bags.pose_message(np.array(p, float), q, ns(t),
                                                                                          "map"))


def image(t: float, k: int = 0):
    return ("/img", bags.IMAGE, ns(t), bags.image_message(smooth_image(k), ns(t), "cam", None))


def test_bag_association_interpolates_and_counts_skips(tmp_path):
    msgs = [pose(10.0, [0, 0, 0], 0), pose(10.1, [1, 2, 0], 90), pose(10.5, [5, 5, 5], 90),
            image(9.9), image(10.025, 1), image(10.1, 2), image(10.3), image(10.6)]
    bag = write_bag(tmp_path / "bag", sorted(msgs, key=lambda m: m[2]))
    with BagReader(bag, max_gap_s=0.2) as reader, pytest.warns(BagWarning) as rec:
        frames = list(reader.frames())
    assert [f.stamp_ns for f in frames] == [ns(10.025), ns(10.1)]
    assert np.allclose(frames[0].position, [0.25, 0.5, 0.0]) and np.array_equal(frames[0].image, smooth_image(1))
    assert quat_angle_deg(frames[0].quat, yaw_pitch_roll_to_quat(0.0)) == pytest.approx(22.5)
    assert (reader.stats.gap, reader.stats.outside, reader.stats.images) == (1, 2, 5)
    text = str(rec[0].message)
    assert "2 of 5 images kept" in text and "1 skipped: pose gap" in text and "2 skipped: stamp outside" in text


def test_unsorted_pose_stamps_are_sorted_with_a_warning_or_fail_in_strict_mode(tmp_path):
    # header stamps go backwards while log times increase (a late ground-truth message), plus a duplicate
    msgs = [pose(10.1, [1, 0, 0], 0, log=10.00), pose(10.0, [0, 0, 0], 0, log=10.01),
            pose(10.0, [9, 9, 9], 0, log=10.02), pose(10.2, [2, 0, 0], 0, log=10.03), image(10.05)]
    bag = write_bag(tmp_path / "bag", msgs)
    with BagReader(bag) as reader, pytest.warns(BagWarning, match="went backwards 1 time"):
        frames = list(reader.frames())
    assert len(frames) == 1 and np.allclose(frames[0].position, [0.5, 0, 0])  # first of the duplicates kept
    assert reader.stats.pose_duplicates == 1
    with BagReader(bag, strict=True) as reader, pytest.raises(BagError, match="go backwards 1 time.*--sort"):
        list(reader.frames())


def test_corrupt_messages_are_skipped_and_counted(tmp_path):
    good = [pose(10.0, [0, 0, 0], 0), pose(11.0, [1, 0, 0], 0)]
    raw_img = bytes(TYPESTORE.serialize_cdr(image(10.2)[3], bags.IMAGE))
    short = image(10.3)[3]
    short.data = short.data[:100]  # CDR is fine, pixels are missing
    nan_pose = pose(10.5, [0, 0, 0], 0)
    nan_pose[3].pose.orientation.w = float("nan")
    msgs = [*good, image(10.1), ("/img", bags.IMAGE, ns(10.2), raw_img[:40]), ("/img", bags.IMAGE, ns(10.3), short),
            image(10.4), nan_pose, ("/gt", bags.POSE_STAMPED, ns(10.6), b"\x00\x01\x00\x00garbage")]
    bag = write_bag(tmp_path / "bag", sorted(msgs, key=lambda m: m[2]), storage="mcap")
    with BagReader(bag, max_gap_s=2.0) as reader, pytest.warns(BagWarning) as rec:
        frames = list(reader.frames())
    assert [f.stamp_ns for f in frames] == [ns(10.1), ns(10.4)]
    assert reader.stats.corrupt == {"/img": 2, "/gt": 2} and reader.stats.images == 4
    text = str(rec[0].message)
    assert "2 corrupt message(s) skipped on /img" in text and "fewer than height*step" in text


# ----------------------------------------------------------------------------------------------------------
# ROS 1


TS1 = get_typestore(Stores.ROS1_NOETIC)


def ros1_msgs(k: int, t: float, quat: np.ndarray) -> dict[str, object]:
    """ROS 1 (noetic) Image (bgr8), CameraInfo (upper-case K) and PoseStamped with a seq'd Header."""
    T = TS1.types
    sec, nsec = divmod(ns(t), 1_000_000_000)
    stamp = T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec)
    hdr = T["std_msgs/msg/Header"](seq=k, stamp=stamp, frame_id="cam")
    q = T["geometry_msgs/msg/Quaternion"](x=quat[0], y=quat[1], z=quat[2], w=quat[3])
    pose = T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=k, y=2.0 * k, z=0.5), orientation=q)
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    bgr = np.ascontiguousarray(smooth_image(k)[:, :, ::-1])
    return {
        "geometry_msgs/msg/PoseStamped": T["geometry_msgs/msg/PoseStamped"](
            header=T["std_msgs/msg/Header"](seq=k, stamp=stamp, frame_id="map"), pose=pose),
        "sensor_msgs/msg/CameraInfo": T["sensor_msgs/msg/CameraInfo"](
            header=hdr, height=32, width=40, distortion_model="plumb_bob", D=np.zeros(5), K=CAM.matrix().reshape(-1),
            R=np.eye(3).reshape(-1), P=np.zeros(12), binning_x=0, binning_y=0, roi=roi),
        "sensor_msgs/msg/Image": T["sensor_msgs/msg/Image"](
            header=hdr, height=32, width=40, encoding="bgr8", is_bigendian=0, step=120, data=bgr.reshape(-1)),
    }


ROS1_TOPICS = {"geometry_msgs/msg/PoseStamped": "/gt", "sensor_msgs/msg/CameraInfo": "/cam/camera_info",
               "sensor_msgs/msg/Image": "/cam/image"}


def write_ros1_bag(path, n: int, t0: float, dt: float) -> list[np.ndarray]:
    """A ROS 1 bag of n frames (pose, camera info, bgr8 image per stamp t0 + k dt); returns the quaternions."""
    quats = [yaw_pitch_roll_to_quat(0.1 * k) for k in range(n)]
    with Writer1(path) as w:
        conns = {typ: w.add_connection(topic, typ, typestore=TS1) for typ, topic in ROS1_TOPICS.items()}
        for k in range(n):
            for typ, msg in ros1_msgs(k, t0 + dt * k, quats[k]).items():
                w.write(conns[typ], ns(t0 + dt * k), TS1.serialize_ros1(msg, typ))
    return quats


def test_ros1_bag_reading(tmp_path):
    path = tmp_path / "old.bag"
    quats = write_ros1_bag(path, 3, 20.0, 0.1)

    info = bags.bag_info(path)
    assert info.ros_version == 1 and info.storage == "rosbag1" and info.message_count == 9
    with BagReader(path) as reader:
        assert reader.camera_info() == CAM
        frames = list(reader.frames())
    assert len(frames) == 3
    for k, f in enumerate(frames):
        assert np.array_equal(f.image, smooth_image(k)) and np.allclose(f.position, [k, 2 * k, 0.5])
        assert quat_angle_deg(f.quat, quats[k]) < 1e-6

    # and the ROS 1 -> ROS 2 CDR conversion replay uses gives rosbags-ROS2-decodable messages
    reader = bags.open_bag(path)
    try:
        conn = next(c for c in reader.connections if c.topic == "/cam/camera_info")
        raw = next(r for _, _, r in reader.messages(connections=[conn]))
        msg = TYPESTORE.deserialize_cdr(bags.cdr_converter(reader, conn.msgtype)(raw), conn.msgtype)
        assert msg.header.frame_id == "cam" and np.allclose(msg.k, CAM.matrix().reshape(-1))
    finally:
        reader.close()


def test_no_warning_for_a_clean_read(dataset, tmp_path):
    bag = tmp_path / "bag"
    bags.write_folder_bag(dataset, "day", bag)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with BagReader(bag) as reader:
            assert len(list(reader.frames())) == N


@pytest.mark.parametrize("condition", ["", ".", "..", "a/b", "../escape"])
def test_bag_to_folder_keeps_the_condition_inside_out_root(tmp_path, condition):
    """The library refuses what the CLI refuses: a condition is one folder name, never a path out of OUT_ROOT."""
    with pytest.raises(bags.BagError, match="not a folder name"):
        bags.bag_to_folder(tmp_path / "no.bag", tmp_path / "out", condition)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape").exists()


def test_camera_info_distortion_survives_folder_bag_folder(tmp_path):
    """A lens with distortion: camera.yaml -> CameraInfo D -> camera.yaml unchanged; D of another lens model is
    refused in one line naming the topic; an empty D is an ideal pinhole."""
    from types import SimpleNamespace

    from disam_ros.data.bags.read import plumb_bob

    root = tmp_path / "ds"
    (root / "day" / "images").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(root / "day" / "images" / f"{i:03d}.png"), np.full((32, 40, 3), 40 * i, np.uint8))
    write_tum(root / "day" / "poses.txt",
              make_trajectory(T0 + 0.1 * np.arange(3), np.eye(3), np.tile([0, 0, 0, 1.0], (3, 1))))
    lens = CameraIntrinsics(40, 32, 45.0, 46.0, 19.5, 15.5, k1=-0.28, k2=0.07, p1=0.001, p2=-0.0005, k3=0.0)
    lens.save(root / "day" / "camera.yaml")
    bags.write_folder_bag(root, "day", tmp_path / "bag", BagWriteOptions())
    with BagReader(tmp_path / "bag") as reader:
        assert reader.camera_info() == lens
    info = SimpleNamespace(distortion_model="equidistant", d=np.array([0.1, 0.01, 0.0, 0.0]))
    with pytest.raises(bags.BagError, match="/cam/info: CameraInfo distortion model 'equidistant'"):
        plumb_bob(info, "/cam/info")
    rational = SimpleNamespace(distortion_model="rational_polynomial", d=np.array([0.1, 0, 0, 0, 0, 0.5, 0, 0]))
    with pytest.raises(bags.BagError, match="not plumb_bob"):
        plumb_bob(rational, "/cam/info")
    assert plumb_bob(SimpleNamespace(distortion_model="", d=np.zeros(0)), "/t") == (0.0,) * 5


@pytest.mark.parametrize("last_s, ok", [(2**31 - 1.5, True), (2**31 + 0.25, False)])
def test_stamps_past_int32_seconds_are_refused_before_anything_is_written(dataset, tmp_path, capsys, last_s, ok):
    """A header's seconds are int32: the last stamp that fits is 2**31 - 1 s (+ 0.999999999); one later made the
    serialiser fail mid-bag with a struct error. Now a one-line error names the stamp and the fix, exit code 2,
    and no bag (nor staging folder) is left behind."""
    root = tmp_path / "late"
    shutil.copytree(dataset / "day", root / "day")
    quats = [yaw_pitch_roll_to_quat(0.0) for _ in range(N)]
    write_tum(root / "day" / "poses.txt", make_trajectory(last_s - 0.1 * np.arange(N)[::-1], np.zeros((N, 3)), quats))
    bag = tmp_path / "bag"
    rc = bag_cli.main(["from-folder", str(root), "day", str(bag)])
    err = capsys.readouterr().err
    if ok:
        with BagReader(bag) as reader:
            assert rc == 0 and reader.poses().stamps_ns[-1] == 2**31 * 10**9 - 1_500_000_000
        return
    assert rc == 2 and "past 2038-01-19" in err and "poses.txt" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late"]
