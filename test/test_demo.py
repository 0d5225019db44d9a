"""`make demo` in miniature: the same entry point with --quick (320x240 px, 3 drives) and 8 frames a drive instead
of its 12 (the same steps; the replay through two nodes on one core is most of the time), the shipped weights, real
node processes and DDS replay. CI runs this reduced version; `make demo` runs the full one."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ASSETS = Path(__file__).resolve().parents[1] / "disam_ros" / "assets"
FRAMES = 8


@pytest.mark.long
def test_quick_demo_from_nothing(tmp_path):
    for name in ("demo_coarse.pt", "demo_fine.pt"):
        assert (ASSETS / name).is_file(), f"shipped demo weights missing: {ASSETS / name}"
    proc = subprocess.run([sys.executable, "-m", "disam_ros.ros.demo", "--quick", "--frames", str(FRAMES),
                           "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for n in range(1, 7):
        assert f"{n}/6" in out
    assert "report:" in out and "night" in out and "sunny_repeat" in out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    conds = report["conditions"]
    assert set(conds) == {"sunny_repeat", "night", "snow", "all"}
    assert all(conds[c]["queries"] == FRAMES for c in ("sunny_repeat", "night", "snow"))
    assert conds["all"]["queries"] == 3 * FRAMES
    # replay paced by the nodes' answers (the default): no frame dropped however busy the machine, so the node
    # answered every frame of the reference-condition drive
    assert report["meta"]["frames lost"] == ("sequence 0 dropped, 0 past the timeout; "
                                             "single 0 dropped, 0 past the timeout")
    assert conds["sunny_repeat"]["answered"] == FRAMES
    for f in ("report.md", "error_cdf.png", "trajectory.png", "examples.png", "visloc_submission.txt",
              "slam/report.md", "slam/trajectories.png", "slam/trajectories/night/corrected.tum"):
        assert (tmp_path / "report" / f).is_file(), f
    # the back-end step read the sequence node's hints: every drive, each with its odometry drift stated
    slam = json.loads((tmp_path / "report" / "slam" / "report.json").read_text())
    assert {d["condition"] for d in slam["drives"]} == {"sunny_repeat", "night", "snow"}
    assert all(d["frames"] == FRAMES and d["drift_pct"] > 0 for d in slam["drives"])
    # a second run reuses world, map and bags (steps whose output exists are not redone): called as a one-drive run
    # on this workdir calls them, the first three steps return what is there and write nothing, and a drive the
    # world was not rendered with is refused in one line. (Steps 4-6 reuse nothing: a second whole run, 17 s alone,
    # only repeated the first run's replay and scoring.)
    from disam_ros.ros import demo

    reused = sorted(p for d in ("world", "map", "bags") for p in (tmp_path / d).rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in reused}
    world = demo.make_world(tmp_path / "world", (320, 240), FRAMES, ("night",))
    demo.check_world(world, ("night",))
    with pytest.raises(ValueError, match="rendered without fog: use a fresh --workdir"):
        demo.check_world(world, ("night", "fog"))
    assert demo.build_map(world, tmp_path / "map", ASSETS / "demo_coarse.pt", ASSETS / "demo_fine.pt") == \
        tmp_path / "map"
    assert demo.write_bags(world, tmp_path / "bags", ("night",)) == [tmp_path / "bags" / "night"]
    assert {p: p.stat().st_mtime_ns for p in reused} == stamps
    assert sorted(p for d in ("world", "map", "bags") for p in (tmp_path / d).rglob("*") if p.is_file()) == reused
