"""tools/gpu_check: the script a lent GPU runs in one call. Its steps run on the device; here the driver's own
logic: the shell entry parses, a step that outlives the budget becomes a row (not the end of the check), and the
summary names the device and every step."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_driver():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "tools" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_shell_entry_parses_and_refuses_to_run_without_out(tmp_path):
    assert subprocess.run(["bash", "-n", str(REPO / "tools" / "gpu_check.sh")]).returncode == 0
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    p = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh")], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=60)
    assert p.returncode != 0 and "gpu_check" in p.stderr and "\n" not in p.stderr.strip(), p.stderr


def test_a_step_past_the_budget_is_a_row_and_the_summary_lists_every_step(tmp_path):
    g = load_driver()
    c = g.Check("cuda", tmp_path, tmp_path / "out", quick=True, deadline=time.monotonic() + 2.5, min_step_s=2.0)
    ok, text, _ = c.run("slow", [sys.executable, "-c", "print('started', flush=True); import time; time.sleep(60)"], 60)
    assert not ok and "started" in text and "TIMEOUT after" in text
    c.add("slow step", ok, 2.5, "timed out")
    ok, text, s = c.run("late", [sys.executable, "-c", "print(1)"], 60)
    assert (ok, s) == (False, 0.0) and text.startswith("SKIPPED")
    c.add("late step", ok, s, text)
    (tmp_path / "out").mkdir(exist_ok=True)
    table = g.write_summary(c, {"gpu": "NVIDIA H200", "torch": "2.11.0+cu130", "cpus": 16, "python": "3.12.3"})
    assert table.startswith("device: NVIDIA H200;")
    assert "| slow step | FAIL |" in table and "| late step | FAIL |" in table
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["step"] for r in saved["rows"]] == ["slow step", "late step"]
    assert all(r["device"] == "cuda" for r in saved["rows"])
    assert (tmp_path / "out" / "logs" / "slow.log").read_text().startswith("started")
