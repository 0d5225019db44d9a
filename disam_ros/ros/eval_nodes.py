"""The localizer node processes of an online evaluation: why one died (its own error line), waiting for them
to subscribe while watching that none died, and stopping them together. Used by `disam-eval-online` and the
demo, which start their nodes through `launcher.start`."""
from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from disam_ros.ros.replay import BagPlayer, ReplayError

NODE_LOG_LINE = re.compile(r"^\[(?:ERROR|FATAL)\] \[[\d.]+\] \[[^\]]*\]: ")  # rcl console format


def node_error_line(log: Any) -> str:
    """The node's own reason, from the log file it writes into: its last ERROR/FATAL (or `error:`) line without
    the rcl prefix, else its last line. The caller's one-line error then says what the node said."""
    path = getattr(log, "name", None)
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except (TypeError, OSError):  # no log file: the node wrote to this process's terminal
        return "see its output above"
    logged = [ln for ln in lines if NODE_LOG_LINE.match(ln)]
    raised = [ln for ln in lines if "error:" in ln.lower()]  # argparse usage errors, a Python exception's last line
    last = (logged or raised or lines or ["(no output)"])[-1]
    return NODE_LOG_LINE.sub("", last)


def check_nodes(procs: list[subprocess.Popen], log: Any = None) -> None:
    """RuntimeError with the node's own error line as soon as one node process has exited."""
    for proc in procs:
        if proc.poll() is not None:
            raise RuntimeError(f"the localizer node exited with code {proc.returncode}: {node_error_line(log)}")


def wait_for_nodes(player: BagPlayer, procs: list[subprocess.Popen], log: Any = None, timeout_s: float = 60.0) -> None:
    """Until every node subscribes (once its map and models are loaded), polling their processes meanwhile: a
    node that dies at start (missing or corrupt map, bad parameter) fails this in a fraction of a second, not
    after the whole timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        check_nodes(procs, log)
        try:
            player.wait_for_subscribers(count=len(procs), timeout_s=0.2)
            return
        except ReplayError:
            if time.monotonic() > deadline:
                raise ReplayError(f"the localizer node did not subscribe to the camera topic within {timeout_s:g} s"
                                  f": see its log ({getattr(log, 'name', 'its output')})") from None


def stop_nodes(procs: list[subprocess.Popen], timeout: float = 20.0) -> None:
    """SIGINT to every node first, then wait for each (they shut down in parallel); kill what hangs."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGINT)
    for proc in running:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
