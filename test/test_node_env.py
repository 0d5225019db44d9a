"""The node's DDS environment: it behaves like any ROS 2 node (ROS_DOMAIN_ID honoured, unset = 0) and keeps
discovery on this host only when ROS_AUTOMATIC_DISCOVERY_RANGE is unset; the package's own runs isolate.

The decision table is checked as a pure function FIRST (with -x a wrong decision stops before any process
starts): the process tests below run a real node with no ROS variables, which must never touch the network.
Domains 0 and 7 are shared with other processes on this machine over loopback, so those tests only start an
unconfigured node (no topics), look it up in the graph, and stop it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from disam_ros.ros import env

CASES = [  # environ -> (domain, domain_from_env, range, range_from_env)
    ({}, (0, False, "LOCALHOST", False)),
    ({"ROS_DOMAIN_ID": "", "ROS_AUTOMATIC_DISCOVERY_RANGE": ""}, (0, False, "LOCALHOST", False)),
    ({"ROS_DOMAIN_ID": "7"}, (7, True, "LOCALHOST", False)),
    ({"ROS_DOMAIN_ID": "0", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}, (0, True, "SUBNET", True)),
    ({"ROS_AUTOMATIC_DISCOVERY_RANGE": "subnet"}, (0, False, "SUBNET", True)),
    ({"ROS_AUTOMATIC_DISCOVERY_RANGE": "OFF", "ROS_DOMAIN_ID": "232"}, (232, True, "OFF", True)),
    ({"ROS_LOCALHOST_ONLY": "0"}, (0, False, "LOCALHOST", False)),
]


@pytest.mark.parametrize("environ,expect", CASES)
def test_decision_table(environ, expect):
    s = env.dds_settings(environ)
    assert (s.domain_id, s.domain_from_env, s.discovery_range, s.range_from_env) == expect


@pytest.mark.parametrize("environ,pattern", [
    ({"ROS_DOMAIN_ID": "abc"}, "ROS_DOMAIN_ID='abc' is not a domain id: export an integer 0-232"),
    ({"ROS_DOMAIN_ID": "233"}, "ROS_DOMAIN_ID='233' is not a domain id"),
    ({"ROS_DOMAIN_ID": "-1"}, "is not a domain id"),
    ({"ROS_AUTOMATIC_DISCOVERY_RANGE": "WAN"}, "ROS_AUTOMATIC_DISCOVERY_RANGE='WAN' is not valid: export one of"),
])
def test_bad_values_are_one_line(environ, pattern):
    with pytest.raises(env.EnvError, match=pattern) as err:
        env.dds_settings(environ)
    assert "\n" not in str(err.value)


def test_apply_ros_defaults_sets_only_the_range():
    """Unset range -> LOCALHOST written (rcl must see it); an unset domain stays unset (rcl's 0); set values and
    the user's SUBNET are left alone."""
    e: dict[str, str] = {"ROS_LOCALHOST_ONLY": "1", "PATH": "/bin"}
    s = env.apply_ros_defaults(e)
    assert e["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and "ROS_DOMAIN_ID" not in e
    assert "ROS_LOCALHOST_ONLY" not in e and e["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"
    assert e["AMENT_PREFIX_PATH"] == sys.prefix and s.domain_id == 0
    user = {"ROS_DOMAIN_ID": "7", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "AMENT_PREFIX_PATH": "/opt/ros/kilted"}
    s = env.apply_ros_defaults(user)
    assert user == {"ROS_DOMAIN_ID": "7", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET",
                    "AMENT_PREFIX_PATH": "/opt/ros/kilted", "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}
    assert (s.domain_id, s.discovery_range) == (7, "SUBNET")
    text = s.describe()
    assert "ROS_DOMAIN_ID=7" in text and "ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET" in text


def test_isolated_env_is_private_and_stable():
    """The package's own runs replace a user's domain, keep the one they chose (children, re-entry)."""
    e = {"ROS_DOMAIN_ID": "0", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}
    s = env.isolated_env(e)
    lo, hi = env.PRIVATE_DOMAINS
    assert lo <= s.domain_id <= hi and e["ROS_DOMAIN_ID"] == str(s.domain_id) != "0"
    assert e["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    again = env.isolated_env(dict(e))
    assert again.domain_id == s.domain_id
    # This test session itself: conftest isolated it, and a child gets exactly that.
    child = env.child_env({"X": "1"})
    assert child["ROS_DOMAIN_ID"] == os.environ["ROS_DOMAIN_ID"] == os.environ[env.PRIVATE_MARKER]
    assert child["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and child["X"] == "1"


def test_importing_the_package_changes_no_environment(tmp_path):
    """No random domain, no forced range at import (cv2 edits LD_LIBRARY_PATH; only DDS variables matter)."""
    code = ("import os, json; ros = lambda: {k: v for k, v in os.environ.items() if k.startswith(('ROS_', 'RMW_', "
            "'AMENT_', 'DISAM_ROS_'))}; import disam_ros.ros, disam_ros.ros.env, disam_ros.ros.launcher, "
            "disam_ros.ros.replay, disam_ros.ros.localizer_node; print(json.dumps(ros()))")
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(tmp_path), capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "{}", out.stderr[-2000:]


# ---------------------------------------------------------------------------------------------- real node


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This environment without any ROS (or disam_ros private-domain) variable."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("ROS_", "RMW_", "AMENT_", "DISAM_ROS_", "FASTDDS_", "FASTRTPS_"))}
    return {**keep, "HOME": str(tmp_path), **extra}


def _start_unconfigured(tmp_path: Path, namespace: str, environ: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"{namespace}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "disam_ros.ros.localizer_node", "--ros-args",
                                 "-r", f"__ns:=/{namespace}", "-p", "autostart:=false"],
                                env=environ, stdout=f, stderr=subprocess.STDOUT)
    return proc, log


def _seen_on_domain(domain: int, namespace: str, timeout: float) -> bool:
    """Look the node up in the ROS graph of `domain` (this process is on loopback discovery: conftest)."""
    import rclpy

    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node(f"probe_{uuid.uuid4().hex[:8]}", context=ctx)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ("disam_localizer", f"/{namespace}") in node.get_node_names_and_namespaces():
                return True
            time.sleep(0.2)
        return False
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def _first_line(log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[0]
        time.sleep(0.1)
    return ""


def _stop(proc: subprocess.Popen, log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(10.0) == 0, log.read_text(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10.0)


@pytest.mark.ros
def test_no_ros_variables_means_domain_0_on_loopback(tmp_path):
    environ = _clean_env(tmp_path)
    assert env.dds_settings(environ).discovery_range == "LOCALHOST"  # guard: never start it on the network
    ns = f"envtest_{uuid.uuid4().hex[:8]}"
    proc, log = _start_unconfigured(tmp_path, ns, environ)
    try:
        first = _first_line(log, 60.0)
        assert f"[{ns}.disam_localizer]: DDS" in first and "domain 0 (ROS_DOMAIN_ID unset: ROS default)" in first, first
        assert "discovery LOCALHOST (ROS_AUTOMATIC_DISCOVERY_RANGE unset" in first, first
        assert "ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET to reach other hosts" in first, first
        assert _seen_on_domain(0, ns, 30.0), log.read_text(errors="replace")[-2000:]
    finally:
        _stop(proc, log)


@pytest.mark.ros
def test_exported_domain_is_honoured(tmp_path):
    ns = f"envtest_{uuid.uuid4().hex[:8]}"
    proc, log = _start_unconfigured(tmp_path, ns, _clean_env(tmp_path, ROS_DOMAIN_ID="7",
                                                             ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST"))
    try:
        first = _first_line(log, 60.0)
        assert "ROS_DOMAIN_ID=7" in first and "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST" in first, first
        assert _seen_on_domain(7, ns, 30.0), log.read_text(errors="replace")[-2000:]
    finally:
        _stop(proc, log)


def test_bad_domain_is_one_line_exit_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "disam_ros.ros.localizer_node"],
                         env=_clean_env(tmp_path, ROS_DOMAIN_ID="seven", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "disam-localizer: error: ROS_DOMAIN_ID='seven' is not a domain id: export an integer 0-232 (the one your "
        "camera driver uses) or unset it for the default 0"]
