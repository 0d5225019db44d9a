"""Every benchmark suite refuses an unwritable --json (and `real` an unwritable --plot) before it runs, with one
line and exit 2, and writes its JSON through a temp file, so a run of minutes never ends in a traceback or leaves
half a file."""
from __future__ import annotations

from pathlib import Path

import pytest

from disam_ros.bench import SUITES, main

BENCH = Path(__file__).resolve().parents[1] / "disam_ros" / "bench"


def refusal(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_a_json_path_inside_a_file_is_refused_before_the_run(suite, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("a file")
    line = refusal([suite, "--json", str(tmp_path / "notes.txt" / "out.json")], capsys)
    assert "--json" in line and "notes.txt is a file" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("suite", ["model", "real", "verify"])
def test_a_json_path_that_is_a_folder_is_refused(suite, tmp_path, capsys):
    line = refusal([suite, "--json", str(tmp_path)], capsys)
    assert "is a folder" in line and "out.json" in line


def test_real_refuses_an_unwritable_plot_before_scoring(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    line = refusal(["real", "--plot", str(tmp_path / "f" / "bars.png")], capsys)
    assert "the folder of --plot" in line and "is a file, not a folder" in line


def test_no_suite_writes_its_json_in_place():
    """A killed run must leave the old file or none: JSON goes through fsutil's atomic writes (bench/output.py)."""
    offenders = [p.name for p in BENCH.glob("*.py") if "write_text(json.dumps" in p.read_text()]
    assert offenders == []
