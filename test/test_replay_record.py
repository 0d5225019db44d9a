"""Replay and record over real DDS on loopback: `disam-replay` and `disam-record` as separate processes, and the
player/recorder classes in threads of this process (ROS 1 bag in, ROS 2 bag out)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from test_bags import CAM, ROS1_TOPICS, smooth_image, write_ros1_bag

from disam_ros.data import bags
from disam_ros.data.bags import BagError, BagReader, BagWriteOptions
from disam_ros.data.folders import CameraIntrinsics
from disam_ros.data.tum import make_trajectory, write_tum
from disam_ros.geometry import quat_angle_deg, yaw_pitch_roll_to_quat

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy", reason="rclpy wheels not installed (pip install ros-rclpy ros-rmw-fastrtps-cpp)")
from disam_ros.ros.record import BagRecorder, RecordError, discover_types  # noqa: E402
from disam_ros.ros.replay import BagPlayer, ReplayError, message_class  # noqa: E402

FRAMES = 8
TOPICS = ["/camera/image_raw", "/camera/camera_info", "/ground_truth/pose"]


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """8 frames of 160x120 rgb8 at 10 Hz with CameraInfo and ground truth (sqlite3)."""
    root = tmp_path_factory.mktemp("replay")
    (root / "c" / "images").mkdir(parents=True)
    import cv2

    for k in range(FRAMES):
        cv2.imwrite(str(root / "c" / "images" / f"{k:03d}.png"), smooth_image(k, 120, 160)[:, :, ::-1])
    quats = [yaw_pitch_roll_to_quat(0.2 * k) for k in range(FRAMES)]
    write_tum(root / "c" / "poses.txt", make_trajectory(100.0 + 0.1 * np.arange(FRAMES),
                                                        np.arange(3 * FRAMES).reshape(-1, 3), quats))
    CameraIntrinsics(160, 120, 100.0, 100.0, 80.0, 60.0).save(root / "c" / "camera.yaml")
    return bags.write_folder_bag(root, "c", root / "bag", BagWriteOptions()).path


def raw_by_topic(path) -> dict[str, list[tuple[int, bytes]]]:
    reader = bags.open_bag(path)
    try:
        out: dict[str, list[tuple[int, bytes]]] = {}
        for conn, log_ns, raw in reader.messages():
            out.setdefault(conn.topic, []).append((log_ns, bytes(raw)))
        return out
    finally:
        reader.close()


def test_replay_and_record_processes_over_dds(bag, tmp_path):
    out = tmp_path / "recorded"
    expected = 2 * 3 * FRAMES  # three topics plus one /clock message per message
    env = dict(os.environ)  # conftest set a private ROS_DOMAIN_ID and loopback discovery: both children share them
    rec = subprocess.Popen([sys.executable, "-m", "disam_ros.ros.record", str(out), "--topics", *TOPICS, "/clock",
                            "--max-messages", str(expected), "--duration", "45"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rep = subprocess.run([sys.executable, "-m", "disam_ros.ros.replay", str(bag), "--rate", "2", "--wait-for",
                              *TOPICS, "/clock", "--wait-timeout", "40"],
                             env=env, capture_output=True, text=True, timeout=60)
        rec_out, rec_err = rec.communicate(timeout=30)
    finally:
        if rec.poll() is None:
            rec.kill()
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert rec.returncode == 0, rec_err[-2000:]
    assert f"published {3 * FRAMES} messages" in rep.stdout
    wall = float(rep.stdout.split(" in ")[1].split(" s")[0])
    assert wall >= 0.7 / 2 * 0.9, rep.stdout  # 0.7 s of bag at rate 2

    original, recorded = raw_by_topic(bag), raw_by_topic(out)
    assert {t: len(v) for t, v in recorded.items()} == {**{t: FRAMES for t in TOPICS}, "/clock": 3 * FRAMES}
    for topic in TOPICS:  # byte-identical CDR, in order (DDS pads the payload to a multiple of 4 with zeros)
        for (_, got), (_, sent) in zip(recorded[topic], original[topic]):
            assert got[: len(sent)] == sent and got[len(sent):] == bytes(len(got) - len(sent)) and len(got) % 4 == 0
    clock = [bags.TYPESTORE.deserialize_cdr(raw, "rosgraph_msgs/msg/Clock").clock for _, raw in recorded["/clock"]]
    clock_ns = [c.sec * 1_000_000_000 + c.nanosec for c in clock]
    assert clock_ns == sorted(log for t in TOPICS for log, _ in original[t])
    with BagReader(out) as reader:  # and the recorded bag is a normal input again
        assert len(list(reader.frames())) == FRAMES


@pytest.fixture()
def ros_context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    nodes = []

    def make(name):
        nodes.append(rclpy.create_node(name, context=ctx))
        return nodes[-1]

    yield ctx, make
    for n in nodes:
        n.destroy_node()
    rclpy.shutdown(context=ctx)


def test_ros1_bag_replayed_and_recorded_in_threads(tmp_path, ros_context):
    from rclpy.executors import SingleThreadedExecutor

    ctx, make = ros_context
    src = tmp_path / "old.bag"
    quats = write_ros1_bag(src, 4, 20.0, 0.05)

    player = BagPlayer(make("player"), src, rate=float("inf"), clock=False)
    recorder = BagRecorder(make("recorder"), tmp_path / "new", {t: typ for typ, t in ROS1_TOPICS.items()}, "mcap")
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(recorder.node)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [executor.spin_once(0.05) for _ in iter(stop.is_set, True)])
    spinner.start()
    try:
        player.wait_for_subscribers(timeout_s=20)
        stats = player.play()
        deadline = time.monotonic() + 20
        while recorder.total < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        spinner.join()
        executor.shutdown()
        player.close()
    assert stats.published == {"/gt": 4, "/cam/camera_info": 4, "/cam/image": 4}
    with BagReader(recorder.close()) as reader:
        assert reader.camera_info() == CAM
        frames = list(reader.frames())
    assert len(frames) == 4
    for k, f in enumerate(frames):
        assert np.array_equal(f.image, smooth_image(k)) and np.allclose(f.position, [k, 2 * k, 0.5])
        assert quat_angle_deg(f.quat, quats[k]) < 1e-6


def test_recorder_serialises_rclpy_messages_and_player_errors_are_clear(bag, tmp_path, ros_context):
    from geometry_msgs.msg import PoseStamped

    _, make = ros_context
    node = make("errors")
    rec = BagRecorder(node, tmp_path / "own", {"/localizer/pose": "geometry_msgs/msg/PoseStamped"}, subscribe=False)
    msg = PoseStamped()
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = 5, 250_000_000, "map"
    msg.pose.position.x, msg.pose.orientation.z, msg.pose.orientation.w = 3.5, 1.0, 0.0
    rec.add("/localizer/pose", msg, stamp_ns=5_250_000_000)
    stored = raw_by_topic(rec.close())["/localizer/pose"]
    back = bags.TYPESTORE.deserialize_cdr(stored[0][1], bags.POSE_STAMPED)
    assert stored[0][0] == 5_250_000_000 and back.header.frame_id == "map" and back.header.stamp.nanosec == 250_000_000
    assert (back.pose.position.x, back.pose.orientation.z, back.pose.orientation.w) == (3.5, 1.0, 0.0)

    with pytest.raises(BagError, match="no topic /nope; topics present: /camera/camera_info"):
        BagPlayer(node, bag, topics=["/nope"])
    player = BagPlayer(node, bag, topics=["/ground_truth/pose"])
    try:
        with pytest.raises(ReplayError, match=r"no subscriber on /ground_truth/pose after 0.2 s.*--wait-for"):
            player.wait_for_subscribers(timeout_s=0.2)
    finally:
        player.close()
    with pytest.raises(ReplayError, match="rate must be > 0"):
        BagPlayer(node, bag, rate=0)
    with pytest.raises(RecordError, match="not seen after 0.1 s"):
        discover_types(node, ["/never"], timeout_s=0.1)
    with pytest.raises(RecordError, match="unknown to the rosbags typestore"):
        BagRecorder(node, tmp_path / "x", {"/a": "my_pkg/msg/Thing"}, subscribe=False)


def test_replay_skips_and_never_imports_message_types_it_does_not_know(bag, tmp_path, ros_context, monkeypatch):
    """A bag's type name is a module to import: a crafted one must neither run code nor stop the replay."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    pkg = f"pwn_{os.getpid()}"  # an importable package whose import leaves a trace
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    (tmp_path / pkg / "msg.py").write_text("class Thing: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    store = get_typestore(Stores.ROS2_KILTED)
    for typ in ("os/msg/system", f"{pkg}/msg/Thing"):
        store.register(get_types_from_msg("string data", typ))
    crafted = tmp_path / "crafted"
    with Writer(crafted, version=9) as w:
        img = raw_by_topic(bag)["/camera/image_raw"][0]
        w.write(w.add_connection("/camera/image_raw", bags.IMAGE, typestore=bags.TYPESTORE), img[0], img[1])
        for topic, typ in (("/evil", "os/msg/system"), ("/pwn", f"{pkg}/msg/Thing")):
            w.write(w.add_connection(topic, typ, typestore=store), img[0], store.serialize_cdr(
                store.types[typ](data="rm -rf"), typ))

    _, make = ros_context
    node = make("whitelist")
    player = BagPlayer(node, crafted, rate=float("inf"), clock=False)
    try:
        assert player.topics == ["/camera/image_raw"]
        assert player.skipped == {"/evil": "os/msg/system", "/pwn": f"{pkg}/msg/Thing"}
        assert player.play().published == {"/camera/image_raw": 1}
    finally:
        player.close()
    with pytest.raises(ReplayError, match=rf"cannot replay: /pwn \({pkg}/msg/Thing\); replay publishes only"):
        BagPlayer(node, crafted, topics=["/camera/image_raw", "/pwn"])
    for typ in ("os/msg/system", f"{pkg}/msg/Thing", "sensor_msgs/msg/Image/x", "sensor_msgs/srv/Image"):
        with pytest.raises(ReplayError, match=f"{typ} is not a standard ROS message type"):
            message_class(typ)
    assert not (tmp_path / "imported").exists() and pkg not in sys.modules


def test_replay_of_a_missing_bag_is_one_line_exit_2(tmp_path):
    """The error comes alone: the DDS summary line is printed only once the bag opened."""
    out = subprocess.run([sys.executable, "-m", "disam_ros.ros.replay", str(tmp_path / "no_such_bag")],
                         capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert out.returncode == 2, out.stderr
    missing = tmp_path / "no_such_bag"
    assert out.stderr.strip().splitlines() == [
        f"disam-replay: error: {missing}: bag not found; pass a rosbag2 directory or a ROS 1 .bag file"]


def test_paced_replay_waits_at_each_frame_and_keeps_the_bag_order(bag, ros_context):
    """A gate on the image topic (what `--pace answer` uses): the player stops after each frame until the gate
    returns, and by then the consumer has every message logged up to that frame (CameraInfo and poses included)
    and none after it; every topic arrives in the bag's order."""
    from rclpy.executors import SingleThreadedExecutor

    from disam_ros.ros.replay import reliable_qos

    ctx, make = ros_context
    reader = bags.open_bag(bag)
    try:
        order = [(c.topic, log_ns) for c, log_ns, _ in reader.messages()]
    finally:
        reader.close()
    player = BagPlayer(make("paced_player"), bag, rate=float("inf"), clock=False)
    consumer, received, cv = make("paced_consumer"), [], threading.Condition()

    def listen(topic: str):
        def on_message(msg) -> None:
            with cv:
                received.append((topic, msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec))
                cv.notify_all()
        return on_message

    types = {c.topic: c.msgtype for c in player.connections}
    for topic in TOPICS:
        consumer.create_subscription(message_class(types[topic]), topic, listen(topic), reliable_qos())

    class Gate:
        def __init__(self) -> None:
            self.topics, self.seen = ("/camera/image_raw",), []

        def __call__(self, topic: str, log_ns: int) -> None:
            upto = order.index((topic, log_ns)) + 1
            with cv:  # the consumer's own messages are the event: no fixed sleep
                assert cv.wait_for(lambda: len(received) >= upto, timeout=20), (upto, received)
                self.seen.append(list(received))

    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(consumer)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [executor.spin_once(0.05) for _ in iter(stop.is_set, True)])
    spinner.start()
    gate = Gate()
    try:
        player.wait_for_subscribers(timeout_s=20)
        stats = player.play(gate=gate)
        with cv:
            assert cv.wait_for(lambda: len(received) == len(order), timeout=20), received
    finally:
        stop.set()
        spinner.join()
        executor.shutdown()
        player.close()
    assert stats.published == dict.fromkeys(TOPICS, FRAMES)
    images = [i for i, (t, _) in enumerate(order) if t == "/camera/image_raw"]
    assert len(gate.seen) == FRAMES
    for k, snapshot in zip(images, gate.seen):  # exactly the bag up to this frame: the player waited at it
        assert sorted(snapshot) == sorted(order[: k + 1])
    for topic in TOPICS:
        assert [m for m in received if m[0] == topic] == [m for m in order if m[0] == topic]
