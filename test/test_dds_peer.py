"""DdsPeer, the other side of every node test and evaluation: its spin thread keeps a failing callback's error and
goes on listening, but rclpy's InvalidHandle race (an entity this process destroyed from another thread, such as a
replay's publisher, while the executor waited on it) is not a callback's failure and must not fail a run."""
from __future__ import annotations

import time

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.exceptions import InvalidHandle  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from disam_ros.ros.client import DdsPeer  # noqa: E402


def test_spin_keeps_callback_errors_but_not_the_destroy_race(monkeypatch):
    raised = iter([InvalidHandle("cannot use Destroyable because destruction was requested"),
                   RuntimeError("callback broke")])
    calls = []

    def spin_once(self, timeout_sec=None):
        calls.append(timeout_sec)
        exc = next(raised, None)
        if exc is not None:
            raise exc
        time.sleep(0.005)

    monkeypatch.setattr(SingleThreadedExecutor, "spin_once", spin_once)
    peer = DdsPeer("spin_test")
    peer.start()
    try:
        deadline = time.monotonic() + 10.0
        while len(calls) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(calls) >= 5, "the spin thread stopped after an exception"
        assert peer.callback_errors == ["RuntimeError: callback broke"]
    finally:
        peer.close()
