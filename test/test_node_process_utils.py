"""Shared helpers of the ROS node tests that run a node as its own process (no tests here): start a package node
module with a params file, a namespace and -p overrides, its output to a log; stop it with a signal."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from disam_ros.ros.env import child_env


def start_node_process(module: str, params_file: Path, ns: str, log: Path, params: dict[str, str]) -> subprocess.Popen:
    """`python -m module --params-file F --ros-args -r __ns:=/ns -p k:=v ...`, stdout and stderr to `log`, in the
    loopback-only child environment with its ROS log directory beside `log`."""
    args = ["--params-file", str(params_file), "--ros-args", "-r", f"__ns:=/{ns}"]
    for k, v in params.items():
        args += ["-p", f"{k}:={v}"]
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", module, *args], stdout=f, stderr=subprocess.STDOUT,
                                env=child_env({"ROS_LOG_DIR": str(log.parent)}))


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    """Signal the process and return its exit code (killed after 10 s)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()
