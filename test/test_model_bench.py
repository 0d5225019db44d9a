"""`disam-bench model` smoke test on the micro preset (the real numbers go in reports, not here)."""
from __future__ import annotations

import json

import pytest

from disam_ros.model import bench

pytestmark = pytest.mark.usefixtures("one_thread")  # smoke test only: timings here are not the report's


def test_bench_micro_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "model.json"
    assert bench.main(["--presets", "micro", "--device", "cpu", "--reps", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "b1 ms/img" in text.splitlines()[0]
    rows = json.loads(out.read_text())["results"]
    assert [r["preset"] for r in rows] == ["micro"]
    row = rows[0]
    assert row["content_shape"] == [32, 8, 8]
    assert row["total_2_domains"] == 2 * (row["encoder"] + row["decoder"] + row["discriminator"])
    assert row["b1_ms_per_image"] > 0 and row["b8_ms_per_image"] > 0


def test_bench_rejects_unknown_preset():
    with pytest.raises(SystemExit):
        bench.main(["--presets", "huge"])
