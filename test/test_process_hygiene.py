"""A killed `disam-synth` leaves no process and, after the next run to the same place, no staging folder.

Real processes and a real kill -9: the tool runs in its own process group, so "nothing survives" is checked
on /proc for that group, and the group is killed in `finally` so a failing test never leaves strays behind.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from disam_ros.data.synthetic import WorldConfig, make_world
from disam_ros.fsutil import TMP_TAG

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

SYNTH = "import sys; from disam_ros.data.synthetic.generate import main; sys.exit(main())"


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live (non-zombie) process in process group `pgid`."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue  # it ended while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append((int(d.name), cmd[:120]))
    return out


def wait_until(cond, timeout_s: float, period_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(period_s)
    return bool(cond())


def test_killed_synth_leaves_no_process_and_the_next_run_removes_its_staging_folder(tmp_path):
    out = tmp_path / "world"
    # 1280 px frames take seconds each and a worker takes 4 per chunk: a worker that outlived its parent would
    # still be rendering (and writing into the staging folder) long after the 3 s allowed below.
    cmd = [sys.executable, "-c", SYNTH, "--out", str(out), "--size", "1280", "--frames", "16",
           "--conditions", "sunny", "--workers", "2", "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pgid = proc.pid
    staged = f".{out.name}{TMP_TAG}{proc.pid}-"
    try:
        def rendering() -> bool:
            return any(tmp_path.glob(f"{staged}*/sunny/images/*.png")) and len(group_members(pgid)) >= 4

        assert wait_until(rendering, 120), f"the pool never started rendering: {group_members(pgid)}"
        before = group_members(pgid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_until(lambda: not group_members(pgid), 3.0), \
            f"outlived disam-synth: {group_members(pgid)} (group before the kill: {before})"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait(10)

    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(staged)]
    assert len(leftovers) == 1, "kill -9 leaves the staging folder (nothing can clean up after SIGKILL)"
    make_world(WorldConfig(seed=2, image_size=32, frames=2, conditions=("sunny",), workers=1), out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"], "the dead run's staging folder is still there"
