"""Hostile frames against the real localizer node (a subprocess on loopback DDS): a 30000x30000 PNG bomb and
black / white / grey / noise frames get no pose and cost no memory, and the node keeps serving real frames.
Also the debug picture, whose size no longer follows the camera's (a 1x2000 frame made a 346 MB image)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_image_codec import png_bomb

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError(f"no VmRSS for process {pid}")


def _start(world: dict, tmp: Path, namespace: str, compressed: bool) -> tuple[subprocess.Popen, Path]:
    """`python -m disam_ros.ros.localizer_node` with the test session's DDS environment (loopback, private
    domain: inherited from os.environ, set by conftest)."""
    log = tmp / f"{namespace}.log"
    cmd = [sys.executable, "-m", "disam_ros.ros.localizer_node", "--ros-args", "-r", f"__ns:=/{namespace}",
           "-p", f"map:={world['map']}", "-p", f"compressed:={'true' if compressed else 'false'}",
           "-p", "device:=cpu", "-p", "diagnostics_period_s:=0.3", "-p", "weather:=sunny"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ))
    return proc, log


@pytest.fixture(scope="module")
def hostile_nodes(tiny_eval_world, tmp_path_factory):
    from disam_ros.ros.client import LocalizerClient

    tmp = tmp_path_factory.mktemp("hostile")
    procs = {ns: _start(tiny_eval_world, tmp, ns, ns == "hostile_comp") for ns in ("hostile_comp", "hostile_raw")}
    clients = {}
    try:
        for ns in procs:
            clients[ns] = LocalizerClient(namespace=ns)
        for ns, (proc, log) in procs.items():
            if not clients[ns].wait_for_node(ns == "hostile_comp", timeout=90.0):
                pytest.fail(f"node {ns} did not come up (rc {proc.poll()}):\n{log.read_text(errors='replace')[-3000:]}")
        yield {ns: (procs[ns][0], procs[ns][1], clients[ns]) for ns in procs}
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for client in clients.values():
            client.close()


def _real_frames(world: dict) -> list[tuple[np.ndarray, float]]:
    from disam_ros.data.folders import read_image

    cond = world["world"] / "sunny_repeat"
    stamps = [float(line.split()[0]) for line in (cond / "poses.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    return [(read_image(p), s) for p, s in zip(sorted((cond / "images").iterdir()), stamps)]


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _first_pose(client, send, stamp: float, timeout: float = 30.0) -> bool:
    """A first real frame answered: sent again (1 ms later each time) every 5 s until a pose comes back. Why: on a
    busy machine the node's pose writer may match this client's reader after the first pose went out (discovery
    is per topic and per direction), and a volatile pose is not sent again; the frames after it are what is tested."""
    deadline = time.monotonic() + timeout
    k = 0
    while time.monotonic() < deadline:
        if client.wait_pose(send(stamp + 0.001 * k), timeout=min(5.0, deadline - time.monotonic())) is not None:
            return True
        k += 1
    return False


def test_png_bomb_refused_without_memory_and_node_keeps_serving(tiny_eval_world, hostile_nodes):
    proc, log, client = hostile_nodes["hostile_comp"]
    frames = _real_frames(tiny_eval_world)
    rgb, stamp = frames[2]
    assert _first_pose(client, lambda t: client.publish_compressed(rgb, t, fmt="png"), stamp + 0.0005), \
        f"no pose for a real frame:\n{_tail(log)}"
    time.sleep(0.5)  # let the node's memory settle after its first answers
    rss0 = _rss_mb(proc.pid)
    t0 = time.monotonic()
    bomb = client.publish_compressed(None, stamp + 0.002, fmt="png", data=png_bomb())
    errors = client.wait(lambda: [e for e in client.errors(after=t0) if "30000x30000" in e], 30.0)
    assert errors and "above the cap" in errors[0], f"bomb not refused:\n{_tail(log)}"
    rss1 = _rss_mb(proc.pid)
    print(f"\nnode RSS {rss0:.0f} MB -> {rss1:.0f} MB over a {len(png_bomb())} B 30000x30000 PNG")
    assert rss1 - rss0 < 50.0, f"node RSS grew {rss1 - rss0:.0f} MB on a refused bomb"
    good = client.publish_compressed(rgb, stamp + 0.003, fmt="jpeg")
    assert client.wait_pose(good, timeout=30.0) is not None, f"node stopped serving after the bomb:\n{_tail(log)}"
    assert bomb not in client.rx.pose and bomb not in client.rx.loop and proc.poll() is None


def test_junk_frames_get_no_pose_and_are_counted(tiny_eval_world, hostile_nodes):
    proc, log, client = hostile_nodes["hostile_raw"]
    frames = _real_frames(tiny_eval_world)
    rgb, stamp = frames[4]
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(3)
    junk = {"black": np.zeros_like(rgb), "white": np.full_like(rgb, 255), "grey": np.full_like(rgb, 128),
            "grey+-2": np.repeat((128 + rng.integers(-2, 3, (h, w, 1))).astype(np.uint8), 3, axis=2),
            "uniform noise": rng.integers(0, 256, rgb.shape, dtype=np.uint8),
            "gaussian noise": np.clip(rng.normal(128, 40, rgb.shape), 0, 255).astype(np.uint8)}
    assert _first_pose(client, lambda t: client.publish_raw(rgb, t), stamp + 0.01), \
        f"no pose for a real frame:\n{_tail(log)}"
    before = client.wait_diagnostics(lambda d: True, 5.0, after=time.monotonic())
    assert before is not None
    keys = {}
    for k, (name, frame) in enumerate(junk.items()):
        t = time.monotonic()
        keys[name] = client.publish_raw(frame, stamp + 0.02 + 0.001 * k)
        # one at a time: each is processed (not replaced in the node's one-frame mailbox) before the next
        assert client.wait_diagnostics(lambda d, n=k + 1: int(d["junk_frames"]) - int(before["junk_frames"]) >= n,
                                       15.0, after=t), f"{name} was not counted as a junk frame:\n{_tail(log)}"
    good = client.publish_raw(rgb, stamp + 0.05)
    assert client.wait_pose(good, timeout=30.0) is not None, f"node stopped serving after junk:\n{_tail(log)}"
    time.sleep(0.3)
    for name, key in keys.items():
        assert key not in client.rx.pose and key not in client.rx.pose_cov and key not in client.rx.loop, name
    d = client.wait_diagnostics(lambda d: True, 5.0, after=time.monotonic())
    assert int(d["junk_frames"]) - int(before["junk_frames"]) == len(junk)
    assert proc.poll() is None


# ------------------------------------------------------------------------------------------ debug picture


@pytest.mark.parametrize("shape", [(2000, 1, 3), (1, 2000, 3), (3000, 4000, 3), (5, 7, 3)])
def test_debug_image_has_a_bounded_size(shape):
    from std_msgs.msg import Header

    from disam_ros.ros.messages import debug_image_msg, render_debug

    rng = np.random.default_rng(0)
    query = rng.integers(0, 256, shape, dtype=np.uint8)
    heat = rng.random((16, 16)).astype(np.float32)
    want = (240, 2 * 320 + 4, 3)
    for map_rgb, map_heat in ((query, heat), (None, heat), (None, None), (np.zeros((480, 640, 3), np.uint8), None)):
        out = render_debug(query, heat, map_rgb, map_heat, "caption " * 30)
        assert out.shape == want and out.dtype == np.uint8
    # still the picture: a 1-px wide frame is a full-height line in the middle of its panel, black around it
    tall = render_debug(np.full((2000, 1, 3), 200, np.uint8), None, None, None, "")
    assert (tall[:, 159] == 200).all() and tall[:, :159].max() == 0 and tall[:, 160:320].max() == 0
    assert len(debug_image_msg(out, Header()).data) == np.prod(want)


def test_inliers_land_where_the_panel_put_their_pixels():
    """Hand-worked: a 640x480 frame in a 320x240 panel is halved, so pixel (100, 50) is panel (50, 25); a 480x640
    (portrait) frame is scaled by 240/640 = 0.375 to 180x240 and centred 70 px in, so (100, 200) is (107, 75).
    Non-finite rows are left out and at most DEBUG_POINTS are drawn."""
    from disam_ros.ros.messages import DEBUG_POINTS, panel_points

    box = (320, 240)
    assert panel_points(np.array([[100.0, 50.0]]), (480, 640, 3), box).tolist() == [[50, 25]]
    assert panel_points(np.array([[100.0, 200.0], [np.nan, 1.0]]), (640, 480, 3), box).tolist() == [[107, 75]]
    assert len(panel_points(np.zeros((DEBUG_POINTS + 7, 2)), (480, 640, 3), box)) == DEBUG_POINTS


def test_the_picture_draws_inliers_and_the_verification_line():
    from disam_ros.ros.messages import INLIER_RGB, render_debug

    black = np.zeros((480, 640, 3), np.uint8)
    plain = render_debug(black, None, None, None, "")
    dots = render_debug(black, None, None, None, "", points=np.array([[100.0, 50.0], [600.0, 400.0]]))
    assert plain[:, :320].max() == 0 and (dots[25, 50] == INLIER_RGB).all() and (dots[200, 300] == INLIER_RGB).all()
    assert (dots == INLIER_RGB).all(axis=2)[:, 320:].sum() == 0  # the map's panel stays as it was
    noted = render_debug(black, None, None, None, "", note="not verified: too_few_inliers")[:, :320]
    assert noted[-20:].max() == 255 and noted[:-20].max() == 0  # the line sits at the bottom


def test_the_verification_line_says_what_verified_or_why_not():
    from disam_ros.ros.messages import verification_caption
    from disam_ros.verify.result import Verification

    sift = Verification("verified", index=3, inliers=87, reprojection_px=0.64)
    assert verification_caption(sift) == "verified #3: 87 inliers, 0.6 px (SIFT)"
    assert verification_caption(Verification("verified", index=5, inliers=40, reprojection_px=1.25, dense=True)) \
        == "verified #5: 40 inliers, 1.2 px (dense search)"
    assert verification_caption(Verification("verified", index=5, inliers=30, reprojection_px=2.0, flow=True)) \
        .endswith("(flow)")
    assert verification_caption(Verification("verified", index=5, inliers=30, reprojection_px=2.0, hops=2)) \
        .endswith("(tracked 2 frames)")
    assert verification_caption(Verification("too_few_inliers", inliers=12)) == \
        "not verified: too_few_inliers (best 12 inliers)"
    assert verification_caption(Verification("no_features")) == "not verified: no_features"
    assert verification_caption(None) == "not verified: verification off"
    assert verification_caption(sift, late=True) == "late keyframe, verified #3: 87 inliers, 0.6 px (SIFT)"
    pending = verification_caption(Verification("pending", inliers=3))  # the knob that lets a frame wait is named
    assert pending.startswith("not verified: pending (") and "verify_wait_ms" in pending and len(pending) <= 80


def test_a_waiting_late_keyframe_takes_the_next_debug_slot_before_a_frame():
    """The debug picture's rate slot: a late keyframe's picture (drawn on its own image, at its own frame's stamp)
    goes before the frame in hand, one slot each; nothing goes out before the slot is due, or with the picture off;
    a late answer without its image or whose frame is forgotten draws nothing."""
    from types import SimpleNamespace

    from builtin_interfaces.msg import Time

    from disam_ros.ros.node_worker import FrameWorker
    from disam_ros.tracking.tracker_config import LateAnswer

    node = SimpleNamespace(dyn={"publish_debug_image": True, "debug_rate_hz": 1.0}, last_debug=-1e9, frame_id="map")
    worker, drawn = FrameWorker(node), []
    worker._publish_debug = lambda rgb, res, header, domain, late=False: drawn.append((rgb, header, domain, late))
    image = np.zeros((4, 4, 3), np.uint8)
    worker.late.remember(12.5, Time(sec=12, nanosec=500_000_001), "night")
    worker._keep_late_picture((LateAnswer(11.0, "old", True, image), LateAnswer(12.5, "kf", False, image),
                               LateAnswer(13.0, "no image", True)))
    worker._picture(("frame", "res", "header", "sunny"))
    assert len(drawn) == 1 and drawn[0][0] is image and drawn[0][3] is True and drawn[0][2] == "night"
    assert (drawn[0][1].stamp.sec, drawn[0][1].stamp.nanosec) == (12, 500_000_001)
    node.last_debug = -1e9  # the next slot due
    worker._picture(("frame", "res", "header", "sunny"))
    assert drawn[-1] == ("frame", "header", "sunny", False)
    worker._picture(None)  # nothing waiting, no frame
    node.last_debug = 1e12  # the slot is not due
    worker._keep_late_picture((LateAnswer(12.5, "kf", False, image),))
    worker._picture(("frame", "res", "header", "sunny"))
    assert len(drawn) == 2 and worker._late_picture is not None  # still waiting for its slot
    node.last_debug = -1e9
    worker.late = type(worker.late)()  # its frame forgotten: no encoder to draw its maps with
    worker._picture(None)
    assert len(drawn) == 2 and worker._late_picture is None
    worker._keep_late_picture((LateAnswer(12.5, "kf", False, image),))
    node.dyn["publish_debug_image"], node.last_debug = False, -1e9  # switched off while one waits: let go of it
    worker._picture(("frame", "res", "header", "sunny"))
    assert len(drawn) == 2 and worker._late_picture is None
    worker._keep_late_picture((LateAnswer(12.5, "kf", False, image),))
    assert worker._late_picture is None
