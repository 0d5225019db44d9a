"""disam_ros.fsutil: atomic files, staged folders, leftovers of killed writers, and the made-by-us marker.

Real files and real processes: a child that is killed with SIGKILL in the middle of a write, as a user's
kill -9 (or the OOM killer) would, and a second write to the same place afterwards.
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from disam_ros.fsutil import (
    MARKER,
    TMP_TAG,
    StagedDir,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    clean_stale,
    owner_pid,
    pid_alive,
    replaceable,
)


def listing(path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "report.md"
    assert atomic_write_text(target, "one\n") == target and target.read_text() == "one\n"
    atomic_write_bytes(target, b"two\n", mode=0o640, fsync=True)
    assert target.read_bytes() == b"two\n" and stat.S_IMODE(target.stat().st_mode) == 0o640
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target, suffix=".png") as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".png" and tmp.name.startswith(f".report.md{TMP_TAG}")
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"two\n" and listing(target.parent) == ["report.md"]


def test_staged_dir_swaps_in_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out"
    with StagedDir(target, marker="disam-test") as stage:
        (stage.path / "a").write_text("1")
        assert not target.exists()  # nobody sees it before it is complete
    assert listing(target) == [MARKER, "a"] and (target / MARKER).read_text() == "disam-test\n"
    with pytest.raises(KeyError), StagedDir(target) as stage:
        (stage.path / "b").write_text("2")
        raise KeyError("failed half way")
    assert listing(target) == [MARKER, "a"] and listing(tmp_path) == ["out"]
    stage = StagedDir(target, nested=True)  # the writer creates `TEMP/out` itself (rosbags names files after it)
    assert stage.path.name == "out" and not stage.path.exists()
    stage.path.mkdir()
    (stage.path / "c").write_text("3")
    assert stage.commit() == target and listing(target) == ["c"] and listing(tmp_path) == ["out"]


def test_temp_names_carry_the_owner_and_match_only_their_target():
    assert owner_pid(f".m{TMP_TAG}123-0a1b", "m") == 123
    assert owner_pid(f".m{TMP_TAG}123-0a1b.png", "m") == 123
    for name in (f".mm{TMP_TAG}123-0a1b", f".m{TMP_TAG}x-0a1b", f".m{TMP_TAG}123", "m", ".m.tmp-123"):
        assert owner_pid(name, "m") is None, name
    assert pid_alive(os.getpid()) and not pid_alive(0)


def writer_child(target, how: str) -> subprocess.Popen:
    """A python process that starts writing `target` (staged folder or atomic file), says so, and hangs."""
    code = textwrap.dedent(f"""
        import sys, time
        from disam_ros.fsutil import StagedDir, atomic_path
        if {how!r} == "dir":
            stage = StagedDir({str(target)!r})
            (stage.path / "half.png").write_bytes(b"x" * 1000)
        else:
            ctx = atomic_path({str(target)!r})
            ctx.__enter__().write_text("half")
        print("writing", flush=True)
        time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    return child


@pytest.mark.parametrize("how", ["dir", "file"])
def test_leftovers_of_a_killed_writer_go_on_the_next_write_and_live_ones_stay(tmp_path, how):
    target = tmp_path / ("map" if how == "dir" else "poses.txt")
    killed, alive = writer_child(target, how), writer_child(target, how)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        pids = sorted(owner_pid(n, target.name) for n in listing(tmp_path))
        assert pids == sorted([killed.pid, alive.pid]), "kill -9 leaves the temp behind; nothing can prevent that"
        mine = StagedDir(target)  # this process is writing there too, and is alive
        if how == "dir":
            with StagedDir(target) as stage:
                (stage.path / "whole").write_text("done")
            assert listing(target) == ["whole"]
        else:
            atomic_write_text(target, "whole\n")
            assert target.read_text() == "whole\n"
        owners = sorted(owner_pid(n, target.name) for n in listing(tmp_path) if n != target.name)
        assert owners == sorted([alive.pid, os.getpid()]), "only the dead writer's temp may be removed"
        mine.abort()
    finally:
        alive.kill()
        alive.wait(10)
    assert [p.name for p in clean_stale(target)] and listing(tmp_path) == [target.name]


def test_replaceable_is_only_what_we_made_or_empty(tmp_path):
    assert replaceable(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    assert replaceable(tmp_path / "empty")
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / MARKER).write_text("disam-synth\n")
    (tmp_path / "ours" / "data").write_text("x")
    assert replaceable(tmp_path / "ours")
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "precious.txt").write_text("x")
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "ours")
    assert not any(replaceable(tmp_path / n) for n in ("users", "file", "link"))
