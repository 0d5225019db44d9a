"""The package logger: levels and format of `setup`, and library code that logs instead of printing."""
from __future__ import annotations

import io
import logging

import pytest
from test_training_utils import make_world, micro_recipe

from disam_ros import logs
from disam_ros.model import load_checkpoint, save_checkpoint
from disam_ros.training.trainer import Trainer


@pytest.fixture
def package_logger():
    """Leave the `disam_ros` logger as the test found it (handlers and level), whatever the test sets up."""
    log = logging.getLogger("disam_ros")
    handlers, level = list(log.handlers), log.level
    yield log
    log.handlers[:] = handlers
    log.setLevel(level)


def emit_all(name: str = "disam_ros.data.example") -> None:
    child = logging.getLogger(name)
    child.debug("d-line")
    child.info("i-line")
    child.warning("w-line")


@pytest.mark.parametrize("verbosity,shown", [(-1, ["w-line"]), (0, ["i-line", "w-line"]),
                                             (1, ["d-line", "i-line", "w-line"]), (3, ["d-line", "i-line", "w-line"])])
def test_verbosity_selects_the_levels_a_cli_shows(package_logger, verbosity, shown):
    out = io.StringIO()
    assert logs.setup(verbosity, stream=out) is package_logger
    emit_all()
    lines = out.getvalue().splitlines()
    assert [ln.rsplit("] ", 1)[1] for ln in lines] == shown
    assert all(" disam_ros.data.example " in ln and ln.startswith("[") for ln in lines)  # hloc-style prefix


def test_setup_twice_replaces_its_handler_instead_of_doubling_lines(package_logger):
    first, second = io.StringIO(), io.StringIO()
    logs.setup(0, stream=first)
    logs.setup(0, stream=second)
    logging.getLogger("disam_ros.x").info("once")
    assert first.getvalue() == "" and second.getvalue().count("once") == 1
    assert sum(isinstance(h, logs._SetupHandler) for h in package_logger.handlers) == 1


def test_default_stream_is_the_stderr_of_each_record(package_logger, monkeypatch):
    """A CLI's main() run in-process sets up logging on the stderr of that moment; when that stream is swapped
    and closed (pytest's capsys between tests), later records go to the new stderr, not to a closed file."""
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    logs.setup(0)
    logging.getLogger("disam_ros.x").info("one")
    first.close()
    monkeypatch.setattr("sys.stderr", second)
    logging.getLogger("disam_ros.x").info("two")
    assert second.getvalue().count("two") == 1 and "Logging error" not in second.getvalue()


def test_other_loggers_are_left_alone(package_logger):
    out = io.StringIO()
    logs.setup(1, stream=out)
    logging.getLogger("somebody.else").warning("not ours")
    assert "not ours" not in out.getvalue()


def test_resuming_on_another_rank_count_is_a_logged_warning_not_a_print(tmp_path, caplog, capsys, package_logger):
    world = make_world(tmp_path / "world")
    recipe = micro_recipe("translation", "steps=2")
    Trainer(recipe, world, tmp_path / "run").fit(until=1)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    net, cfg, meta = load_checkpoint(last, map_location="cpu")
    extra = meta["extra"]
    extra["trainer"]["ranks"] = extra["trainer"]["ranks"] * 2  # as if a 2-rank torchrun had written it
    save_checkpoint(last, net, cfg, extra)
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="disam_ros"):
        resumed = Trainer(recipe, world, tmp_path / "run", resume=True)
    assert resumed.step == 1
    hits = [r for r in caplog.records if r.name == "disam_ros.training.trainer" and r.levelno == logging.WARNING]
    assert len(hits) == 1 and "resuming a 2-rank run on 1 rank(s)" in hits[0].getMessage()
    assert capsys.readouterr().out == ""  # library code no longer prints


def test_no_module_configures_the_root_logger():
    """Root logging belongs to whatever program embeds the package: CLIs call `logs.setup`, never basicConfig."""
    from pathlib import Path

    import disam_ros

    pkg = Path(disam_ros.__file__).parent
    offenders = [str(p.relative_to(pkg)) for p in pkg.rglob("*.py") if "logging.basicConfig(" in p.read_text()]
    assert offenders == []


def test_a_cli_sets_up_the_package_logger_and_leaves_the_root_alone(tmp_path, package_logger, capsys):
    from disam_ros.maps.build_map import main

    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    (tmp_path / "taken").write_text("a file, not a map folder")
    assert main(["--dataset", str(tmp_path), "--condition", "sunny", "--out", str(tmp_path / "taken")]) == 2
    assert (list(root.handlers), root.level) == before
    assert any(type(h).__name__ == "_SetupHandler" for h in package_logger.handlers)
    assert package_logger.level == logging.INFO
    assert "disam-build-map: error:" in capsys.readouterr().err
