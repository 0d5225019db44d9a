"""The localizer as a ROS 2 lifecycle node, driven over real DDS (loopback, private domain) the way a nav2
lifecycle manager drives it: ~/change_state and ~/get_state from a separate client node.

Also: a second Ctrl-C ends the process at once without a traceback; in-process with a private rclpy context, a
configure failure leaves the node unconfigured with the reason, subscription-queue losses are counted from
publisher sequence numbers, and shutting down never waits for a worker stuck in a long decode; and the ROS-free
bookkeeping the node relies on (throttled logs, sequence gaps, drop rate) stays bounded.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _frames(world: Path, n: int) -> list[tuple[np.ndarray, float]]:
    from disam_ros.data.folders import iter_frames, load_condition

    frames = list(iter_frames(load_condition(world, "sunny_repeat")))[:n]
    return [(f.image, float(f.stamp)) for f in frames]


class Lifecycle:
    """ChangeState / GetState clients on the LocalizerClient's node (its executor thread answers futures)."""

    def __init__(self, client) -> None:
        from lifecycle_msgs.srv import ChangeState, GetState

        self.client = client
        self.change = client.node.create_client(ChangeState, f"{client.fqn}/change_state")
        self.get = client.node.create_client(GetState, f"{client.fqn}/get_state")

    def _call(self, cli, req, timeout: float = 60.0, resend_every: float | None = None):
        """One request; with `resend_every`, the request is sent again while unanswered (idempotent calls only).

        Why resend: `wait_for_service` returns once the server's request reader is matched, which can come before
        the server has matched our response reader; a reply sent in that window is lost (seen once under full CI
        load). Only GetState is resent, and the first GetState answer proves the reply path before any ChangeState.
        """
        assert cli.wait_for_service(timeout_sec=timeout), f"no service {cli.srv_name}"
        deadline = time.monotonic() + timeout
        while True:
            fut = cli.call_async(req)
            wait = min(resend_every or timeout, max(0.0, deadline - time.monotonic()))
            if self.client.wait(fut.done, wait):
                return fut.result()
            cli.remove_pending_request(fut)
            assert resend_every is not None and time.monotonic() < deadline, \
                f"{cli.srv_name} did not answer in {timeout} s"

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self._call(self.get, GetState.Request(), resend_every=2.0).current_state.label

    def transition(self, label: str) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        ids = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP,
               "shutdown": Transition.TRANSITION_UNCONFIGURED_SHUTDOWN}
        return self._call(self.change, ChangeState.Request(transition=Transition(id=ids[label]))).success


def test_lifecycle_transitions_over_dds(tiny_eval_world, tmp_path):
    from disam_ros.ros import launcher
    from disam_ros.ros.client import LocalizerClient

    frames = _frames(tiny_eval_world["world"], 3)
    log = tmp_path / "node.log"
    with open(log, "wb") as f:
        proc = launcher.start(map=tiny_eval_world["map"], device="cpu", namespace="lc", stdout=f,
                              stderr=subprocess.STDOUT, parameters={"autostart": False, "diagnostics_period_s": 0.3},
                              env={"OMP_NUM_THREADS": "1"})
    client = LocalizerClient(namespace="lc")
    lc = Lifecycle(client)
    tail = lambda: log.read_text(errors="replace")[-3000:]  # noqa: E731

    def frame_answered(k: int, timeout: float) -> bool:
        rgb, stamp = frames[k % len(frames)]
        key = client.publish_raw(rgb, float(int(stamp) + 0.001 * (k + 1)))
        return client.wait_pose(key, timeout) is not None

    try:
        assert lc.state() == "unconfigured", tail()  # autostart false: waits for a manager
        assert client.pub_image.get_subscription_count() == 0
        assert lc.transition("configure"), tail()
        assert lc.state() == "inactive"
        inactive = client.wait_diagnostics(lambda d: d["state"] == "inactive", 10.0)
        assert inactive, "no diagnostics while inactive"
        version = ET.parse(REPO / "package.xml").getroot().findtext("version")  # what colcon installs
        assert inactive["software"] == f"disam-localizer (disam_ros {version})", inactive.get("software")
        assert lc.transition("activate")
        assert lc.state() == "active"
        assert client.wait_for_node(compressed=False, timeout=30.0)
        assert frame_answered(0, 30.0), tail()
        assert not lc.transition("cleanup")  # not a transition from active (the standard state machine)
        assert lc.state() == "active"
        assert lc.transition("deactivate")
        assert lc.state() == "inactive"
        assert client.wait(lambda: client.pub_image.get_subscription_count() == 0, 10.0), "still subscribed"
        assert not frame_answered(1, 2.0), "a deactivated node published a pose"
        assert lc.transition("activate")
        assert lc.state() == "active"
        assert client.wait_for_node(compressed=False, timeout=30.0)
        assert frame_answered(2, 30.0), "no pose after re-activation"
        assert lc.transition("deactivate") and lc.state() == "inactive"
        assert lc.transition("cleanup")
        assert lc.state() == "unconfigured"
        assert lc.transition("shutdown")
        assert lc.state() == "finalized"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10.0) == 0, tail()
        text = log.read_text(errors="replace")
        assert "Traceback" not in text and "map and models released" in text
        assert f"configured: disam-localizer (disam_ros {version}); map " in text  # the log names what ran
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10.0)
        client.close()


def test_second_sigint_exits_at_once_without_traceback(tmp_path):
    """Ctrl-C twice (an impatient user, or launch escalating): the second one ends the process immediately,
    with one line and no KeyboardInterrupt traceback."""
    log = tmp_path / "node.log"
    with open(log, "wb") as f:  # unconfigured (no map needed): the signal path is the same in every state
        proc = subprocess.Popen([sys.executable, "-m", "disam_ros.ros.localizer_node", "--ros-args",
                                 "-r", "__ns:=/sigint2", "-p", "autostart:=false"], stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60.0
        while "DDS" not in log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(5.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10.0)
    text = log.read_text(errors="replace")
    assert rc in (0, 130, -signal.SIGINT), text  # clean stop, our second-signal exit, or killed in teardown
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    # The mechanism, deterministically: after the first signal, a second one exits at once (130), one line.
    code = ("import os, signal, time; from disam_ros.ros.node_params import StopSignals; s = StopSignals(); "
            "os.kill(os.getpid(), signal.SIGINT); assert s.event.wait(5); os.kill(os.getpid(), signal.SIGINT); "
            "time.sleep(10); print('still running')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 130 and "still running" not in out.stdout, out
    assert out.stderr.strip() == "[disam_localizer] second SIGINT: exiting now"


# ---------------------------------------------------------------------------------------------- in-process


@pytest.fixture
def context():
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    if ctx.ok():
        rclpy.shutdown(context=ctx)


def _node(context, namespace: str, **params):
    from rclpy.parameter import Parameter

    from disam_ros.ros.localizer_node import LocalizerNode

    overrides = [Parameter(k, value=v) for k, v in {"device": "cpu", **params}.items()]
    return LocalizerNode(context=context, namespace=namespace, parameter_overrides=overrides)


def test_configure_failure_stays_unconfigured(context, tmp_path):
    node = _node(context, "cf", map=str(tmp_path / "missing"))
    try:
        with pytest.raises(ValueError, match="does not exist: check parameter 'map'"):
            node.start()
        assert node.state == "unconfigured"
        assert node.config_error == f"map directory '{tmp_path / 'missing'}' does not exist: check parameter 'map'"
    finally:
        node.close()
        node.destroy_node()


def test_queue_losses_counted_from_sequence_numbers(tiny_eval_world, context, one_thread):
    """Frames replaced in the subscription queue never reach the callback; their sequence gaps are counted."""
    from rclpy.executors import SingleThreadedExecutor

    from disam_ros.ros.client import LocalizerClient

    node = _node(context, "qd", map=str(tiny_eval_world["map"]))
    node.start()
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    client = LocalizerClient(namespace="qd")
    rgb, stamp = _frames(tiny_eval_world["world"], 1)[0]

    def spin(seconds: float, until=lambda: False) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            executor.spin_once(timeout_sec=0.05)

    try:
        assert client.wait(lambda: client.pub_image.get_subscription_count() > 0, 30.0)
        client.publish_raw(rgb, stamp)  # the first message of a publisher: its sequence number is the base
        spin(10.0, until=lambda: node.stats.snapshot()["received"] == 1)
        assert node.stats.snapshot()["received"] == 1
        for k in range(10):  # nobody spins the node: the KEEP_LAST(2) queue keeps only the newest
            client.publish_raw(rgb, stamp + 0.01 * (k + 1))
        time.sleep(1.0)  # let DDS deliver everything into the subscription queue
        spin(1.0)
        s = node.stats.snapshot()
        assert s["received"] + s["dropped_in_queue"] == 11, s
        assert s["dropped_in_queue"] >= 7, s  # 10 sent into a queue of 2 while nobody took them
        assert s["drop_rate"] >= 7 / 11
        assert node.diagnostics_values()["sequence_numbers"] == "yes"
    finally:
        client.close()
        node.close()
        executor.shutdown()
        node.destroy_node()


def test_shutdown_does_not_wait_for_a_long_decode(tiny_eval_world, context, one_thread):
    """A worker inside a long decode (here: a decoder that takes up to 30 s, as a decompression bomb did) is
    left behind: close() returns within ~1 s, and when the decode ends the frame is neither localized nor
    published (the worker sees its stop event first)."""
    from sensor_msgs.msg import Image

    from disam_ros.ros.messages import make_header, sec_to_stamp

    node = _node(context, "sd", map=str(tiny_eval_world["map"]))
    node.start()
    entered, release = threading.Event(), threading.Event()
    rgb = _frames(tiny_eval_world["world"], 1)[0][0]

    def long_decode(_msg):
        entered.set()
        release.wait(30.0)
        return rgb

    worker = node._worker
    try:
        node._enqueue(Image(header=make_header(sec_to_stamp(1.0), "camera")), long_decode)
        assert entered.wait(10.0), "the worker never picked the frame up"
        before = node.stats.snapshot()
        t0 = time.monotonic()
        clean = node.close()
        elapsed = time.monotonic() - t0
        assert elapsed < 2.0, f"close() waited {elapsed:.1f} s for the worker"
        assert not clean and node.state == "finalized"
    finally:
        release.set()
        worker.thread.join(10.0)
        node.destroy_node()
    assert not worker.thread.is_alive()
    after = node.stats.snapshot()
    assert (after["localized"], after["not_localized"], after["errors"]) == \
        (before["localized"], before["not_localized"], before["errors"])


# ---------------------------------------------------------------------------------------------- bookkeeping


def test_log_throttle_is_per_kind_and_bounded():
    from disam_ros.ros.node_stats import LogThrottle, log_kind

    lines, now = [], [0.0]
    throttle = LogThrottle(lines.append, period_s=5.0, max_kinds=8, clock=lambda: now[0])
    assert log_kind("dropping frame 12.5: encoding 'yuv422' step 30") == "dropping frame #: encoding '…' step #"
    for k in range(20):  # one kind: one line
        throttle(f"dropping frame {k}.0: unsupported image encoding 'x{k}'")
    assert len(lines) == 1
    throttle("image step 3 is smaller than width*bytes_per_pixel")  # another kind passes at once
    assert len(lines) == 2
    now[0] = 6.0
    throttle("dropping frame 99.0: unsupported image encoding 'zz'")
    assert lines[-1].endswith("(19 similar line(s) suppressed in the last 6 s)")
    for k in range(1000):  # texts the normaliser cannot merge still cannot grow memory
        throttle("x", kind=f"kind{k}")
    assert len(throttle) == 8


def test_sequence_gaps_count_losses_per_publisher_bounded():
    from disam_ros.ros.node_stats import SequenceGaps

    gaps = SequenceGaps(max_publishers=4)
    info = lambda seq, pub=b"a": {"publication_sequence_number": seq, "publisher_gid": {"data": pub}}  # noqa: E731
    assert gaps.gap({"publication_sequence_number": None}) == 0 and not gaps.available
    assert [gaps.gap(info(s)) for s in (5, 6, 9, 10)] == [0, 0, 2, 0]  # 5 = first seen: earlier ones are not ours
    assert [gaps.gap(info(s, b"b")) for s in (1, 4)] == [0, 2]  # per publisher
    assert gaps.gap(info(12)) == 1 and gaps.available
    for k in range(100):
        gaps.gap(info(1, bytes([k])))
    assert len(gaps) == 4
    gaps.reset()
    assert gaps.gap(info(50)) == 0  # after re-activation nothing published meanwhile counts as lost


def test_drop_rate_counts_both_losses():
    from disam_ros.ros.node_stats import Stats

    st = Stats()
    st.add("received", 6)
    st.add("dropped_in_queue", 4)
    st.add("dropped_by_node", 2)
    assert st.snapshot()["drop_rate"] == pytest.approx(6 / 10)


def test_status_warns_on_a_failed_map_check_before_anything_else():
    from disam_ros.ros.node_stats import status_summary

    ok = dict(state="active", processed=5, localized=5, errors=0, bad_input=0, domain="sunny", last_reason="ok")
    assert status_summary({**ok, "map_problem": ""}, True) == (False, "localizing with encoder 'sunny'")
    warn, msg = status_summary({**ok, "map_problem": "coarse.npy bytes 0-33554432: sha256 mismatch"}, False)
    assert warn and "integrity" in msg and "coarse.npy" in msg


def test_odometry_distance_sums_steps_between_frames_and_refuses_jumps():
    """Distances by hand: a 3-4-5 step, a standing still step, a 97 m 'step' in 0.1 s (an odometry reset: no
    distance, the chain restarts), a stamp going back, a NaN; take() empties, restore() gives back."""
    from disam_ros.ros.node_stats import OdometryDistance

    odo = OdometryDistance(max_step_speed_mps=10.0)
    assert odo.take() is None  # nothing arrived: the filter uses its speed band
    assert odo.add(0.0, (0.0, 0.0, 0.0))  # the first position starts the chain, no distance yet
    assert odo.take() is None
    assert odo.add(1.0, (3.0, 4.0, 0.0)) and odo.add(2.0, (3.0, 4.0, 0.0))
    assert odo.take() == pytest.approx(5.0)
    assert odo.take() is None
    assert not odo.add(2.1, (100.0, 4.0, 0.0))  # 97 m in 0.1 s at most 10 m/s: a reset of the odometry
    assert odo.add(2.2, (101.0, 4.0, 0.0))  # the chain goes on from the jumped-to position
    assert not odo.add(2.0, (0.0, 0.0, 0.0))  # stamp went back: restart, no distance
    assert not odo.add(3.0, (float("nan"), 0.0, 0.0))
    assert odo.add(4.0, (0.0, 0.0, 0.0)) and odo.add(5.0, (0.0, 2.0, 0.0))
    assert odo.take() == pytest.approx(1.0 + 2.0)
    odo.restore(2.5)  # a junk frame could not use it: the next frame gets it
    assert odo.take() == pytest.approx(2.5)
    odo.reset()
    assert odo.add(6.0, (9.0, 9.0, 9.0)) and odo.take() is None


def test_prior_cache_converts_once_per_message_and_expires():
    """Every frame within the timeout gets the SAME SpatialPrior object for one message (the tracker restarts its
    belief per prior, not per frame); a new message or radius converts anew; a stale one is None."""
    import time as _time

    from geometry_msgs.msg import PoseWithCovarianceStamped

    from disam_ros.ros.prior_cache import PriorCache

    cache = PriorCache()
    assert cache.get(2.0, 1.0) is None
    msg = PoseWithCovarianceStamped()
    msg.pose.pose.position.x, msg.pose.pose.position.y = 3.0, -1.0
    msg.pose.covariance = [0.25 if i in (0, 7, 14) else 0.0 for i in range(36)]
    cache.put(msg)
    a = cache.get(2.0, 1.0)
    assert a is cache.get(2.0, 1.0) and a.radius == 1.0 and list(a.position) == [3.0, -1.0, 0.0]
    b = cache.get(2.0, 0.0)  # radius 0: the gate comes from the covariance
    assert b is not a and b.covariance is not None and np.allclose(b.covariance, 0.25 * np.eye(3))
    cache.put(msg)
    assert cache.get(2.0, 0.0) is not b  # a new message, even with the same content
    _time.sleep(0.05)
    assert cache.get(0.01, 0.0) is None


def test_confidence_gate_words_and_numbers():
    """Calibrated: min_confidence, NaN = the calibration's own threshold (none reached it: inf, nothing
    published); heuristic: min_heuristic_confidence whatever min_confidence says."""
    import math

    from disam_ros.ros.node_worker import confidence_gate

    dyn = {"min_confidence": float("nan"), "min_heuristic_confidence": 0.25}
    assert confidence_gate(dyn, False, 0.8) == (0.25, "min_heuristic_confidence 0.25 (heuristic: the map has no "
                                                      "calibration for this mode)")
    assert confidence_gate(dyn, True, 0.8) == (0.8, "min_confidence 0.8 (calibrated; the map calibration's "
                                                    "threshold)")
    t, why = confidence_gate(dyn, True, None)
    assert math.isinf(t) and "none reached" in why and "set min_confidence" in why
    dyn["min_confidence"] = 0.95
    assert confidence_gate(dyn, True, 0.8) == (0.95, "min_confidence 0.95 (calibrated)")
    assert confidence_gate(dyn, False, 0.8)[0] == 0.25


def test_selection_values_name_the_choice_and_its_condition():
    from types import SimpleNamespace as Ns

    from disam_ros.ros.node_stats import selection_values

    sel = Ns(domain="night", reason="best match (cost 0)",
             query=Ns(weather="rain", daylight="night", foliage="none", season="winter", elevation_deg=None))
    v = selection_values(sel, Ns(override="", table=Ns(name="synthetic")))
    assert (v["domain"], v["weather"], v["daylight"], v["condition_table"]) == ("night", "rain", "night", "synthetic")
    assert v["solar_elevation_deg"] != v["solar_elevation_deg"]  # NaN: no usable stamp
