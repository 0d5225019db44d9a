"""`disam-bench model` smoke test on the micro preset (the real numbers go in reports, not here)."""
from __future__ import annotations

import json

import pytest

from disam_ros.bench import model as bench

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


def test_dispatcher_routes_suite_and_its_options(tmp_path, capsys):
    from disam_ros import bench as dispatcher

    out = tmp_path / "via_dispatcher.json"
    assert dispatcher.main(["model", "--presets", "micro", "--device", "cpu", "--reps", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["results"][0]["preset"] == "micro"
    with pytest.raises(SystemExit) as exc:  # the suite's own help, not the dispatcher's
        dispatcher.main(["model", "--help"])
    assert exc.value.code == 0 and "--presets" in capsys.readouterr().out
