"""Every command line fails with ONE line on stderr and exit status 2: never a traceback, never a hang.

Each case runs a real entry point (`main(argv)` in this process, or the installed console script) on real
files: a path whose parent is a regular file stands for an unwritable output, because tests run as root and
chmod does not stop root. A case names the words its one line must contain, so the line says what is wrong.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from disam_ros.bench import main as bench_main
from disam_ros.data.bags.cli import main as bag_main
from disam_ros.eval.metrics import DEFAULT_RECALL_NS, QueryResult, per_condition
from disam_ros.eval.offline import build_parser as offline_parser
from disam_ros.eval.offline import main as offline_main
from disam_ros.eval.report import CANDIDATES, markdown_report, report_dict
from disam_ros.ros.demo import main as demo_main
from disam_ros.ros.launcher import main as launch_main
from disam_ros.ros.online_eval import main as online_main
from disam_ros.ros.record import main as record_main
from disam_ros.training.cli import main as train_main

BIN = Path(sys.executable).parent
RECIPES = Path(__file__).resolve().parents[1] / "disam_ros" / "training" / "recipes"


def one_line_error(fn: Callable[[list[str]], int], argv: list[str], capsys) -> str:
    """Run a CLI main; assert exit 2, exactly one non-empty stderr line and no traceback; return that line."""
    try:
        rc = fn(argv)
    except SystemExit as exc:  # argparse errors leave through SystemExit
        rc = exc.code
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1, err
    assert "Traceback" not in out + err
    return lines[0]


@pytest.fixture
def a_file(tmp_path) -> Path:
    """A regular file: paths under it can never be created (ENOTDIR), whoever runs the test."""
    f = tmp_path / "plain_file"
    f.write_text("not a folder\n")
    return f


# ---------------------------------------------------------------------------------------------- disam-launch


@pytest.mark.parametrize("argv, words", [
    ([], "map:= is required"),
    (["map:="], "map:= is required"),
    (["compressed:=maybe", "map:=/maps/town"], "compressed:='maybe' is not a boolean"),
    (["map:=/maps/town", "image_topic:=a b"], "is not a ROS topic name"),
    (["map:=/maps/town", "namespace:=robot 1"], "is not a ROS namespace"),
    (["map:=/maps/town", "params_file:=/nonexistent/params.yaml"], "no such file"),
    (["--nosuch"], "is not name:=value"),
    ([""], "is not name:=value"),
    (["camera:=/x", "map:=/m"], "unknown launch argument 'camera'"),
])
def test_launch_bad_arguments(argv, words, capsys):
    assert words in one_line_error(launch_main, argv, capsys)


def test_launch_console_script_without_map():
    """The installed script, as a user types it: no node is started, one line, status 2."""
    proc = subprocess.run([str(BIN / "disam-launch")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        "disam-launch: error: map:= is required: pass map:=/path/to/map_dir (a folder written by disam-build-map)"]
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.ros
def test_launch_reports_a_signal_death_as_128_plus_n(tiny_eval_world):
    """A node killed by SIGKILL made disam-launch exit with 256 - 9 = 247; shells and supervisors expect 137."""
    proc = subprocess.Popen([str(BIN / "disam-launch"), f"map:={tiny_eval_world['map']}", "device:=cpu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        deadline = time.monotonic() + 30
        while not children.read_text().split() and time.monotonic() < deadline:
            time.sleep(0.05)
        node_pid = int(children.read_text().split()[0])
        os.kill(node_pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == 128 + signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------------ disam-demo


@pytest.mark.parametrize("case, words", [
    ("workdir_under_file", "is a file, so no folder can be made inside it"),
    ("workdir_is_file", "is a file, not a folder"),
    ("unknown_condition", "unknown condition(s) bogus"),
    ("unknown_condition_quick", "unknown condition(s) bogus"),  # --quick used to drop --conditions silently
    ("empty_conditions", "lists nothing"),
    ("size_not_a_number", "'abc' is not WIDTHxHEIGHT in pixels >= 16"),
    ("zero_rate", "'0' is not a number > 0"),
    ("rate_while_paced", "--rate 0.4 sets the real-time replay's speed: add --pace realtime"),  # else ignored
    ("unknown_pace", "invalid choice: 'fast'"),
    ("zero_frame_timeout", "'0' is not a number > 0"),
    ("corrupt_checkpoint", "truncated or corrupt"),
])
def test_demo_bad_arguments(case, words, a_file, tmp_path, capsys):
    work = str(tmp_path / "demo")
    argv = {
        "workdir_under_file": ["--workdir", str(a_file / "demo"), "--quick"],
        "workdir_is_file": ["--workdir", str(a_file), "--quick"],
        "unknown_condition": ["--workdir", work, "--conditions", "night,bogus"],
        "unknown_condition_quick": ["--workdir", work, "--conditions", "bogus", "--quick"],
        "empty_conditions": ["--workdir", work, "--conditions", ","],
        "size_not_a_number": ["--workdir", work, "--size", "abc"],
        "zero_rate": ["--workdir", work, "--rate", "0"],
        "rate_while_paced": ["--workdir", work, "--rate", "0.4"],
        "unknown_pace": ["--workdir", work, "--pace", "fast"],
        "zero_frame_timeout": ["--workdir", work, "--frame-timeout", "0"],
        "corrupt_checkpoint": ["--workdir", work, "--coarse", str(a_file), "--quick"],
    }[case]
    assert words in one_line_error(demo_main, argv, capsys)
    assert not (tmp_path / "demo").exists()  # refused before anything was rendered


# ------------------------------------------------------------------------------------------------- disam-bag


@pytest.fixture(scope="module")
def night_bag(tiny_eval_world, tmp_path_factory) -> Path:
    """The tiny world's night drive as a real rosbag2, written by `disam-bag from-folder` itself."""
    bag = tmp_path_factory.mktemp("bags") / "night"
    assert bag_main(["from-folder", str(tiny_eval_world["world"]), "night", str(bag)]) == 0
    return bag


@pytest.mark.parametrize("case, words", [
    ("to_folder_onto_file", "OUT_ROOT {file} is a file, not a folder"),
    ("to_folder_under_file", "{file} is a file, so no folder can be made inside it"),
    ("empty_condition", "'' is not a folder name"),
    ("nested_condition", "'a/b' is not a folder name"),
    ("parent_condition", "'..' is not a folder name"),
    ("negative_gap", "'-1' is not a number >= 0"),
    ("nan_gap", "'nan' is not a number >= 0"),
    ("from_folder_under_file", "{file} is a file, so no folder can be made inside it"),
    ("jpeg_quality", "'500' is not a JPEG quality"),
    ("no_command", "the following arguments are required"),
    ("info_on_file", "not a rosbag2 directory"),
])
def test_bag_bad_arguments(case, words, night_bag, tiny_eval_world, a_file, tmp_path, capsys):
    out, world = str(tmp_path / "out"), str(tiny_eval_world["world"])
    argv = {
        "to_folder_onto_file": ["to-folder", str(night_bag), str(a_file), "night"],
        "to_folder_under_file": ["to-folder", str(night_bag), str(a_file / "root"), "night"],
        "empty_condition": ["to-folder", str(night_bag), out, ""],
        "nested_condition": ["to-folder", str(night_bag), out, "a/b"],
        "parent_condition": ["to-folder", str(night_bag), out, ".."],
        "negative_gap": ["to-folder", str(night_bag), out, "night", "--max-gap", "-1"],
        "nan_gap": ["to-folder", str(night_bag), out, "night", "--max-gap", "nan"],
        "from_folder_under_file": ["from-folder", world, "night", str(a_file / "bag")],
        "jpeg_quality": ["from-folder", world, "night", out, "--compressed", "jpeg", "--jpeg-quality", "500"],
        "no_command": [],
        "info_on_file": ["info", str(a_file)],
    }[case]
    assert words.format(file=a_file) in one_line_error(bag_main, argv, capsys)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in a_file.parent.iterdir()) == ["plain_file"]  # no temp dir left beside it


# ---------------------------------------------------------------------------------------------- disam-record


@pytest.mark.parametrize("case, words", [
    ("under_file", "OUT_BAG {file}/bag: {file} is a file"),
    ("onto_file", "OUT_BAG {file} is a file, not a folder"),
    ("bad_topic", "'bad topic' is not a ROS topic name"),
    ("negative_duration", "'-1' is not a number > 0"),
    ("qos_not_a_number", "'abc' is not an integer >= 1"),
])
def test_record_bad_arguments(case, words, a_file, tmp_path, capsys):
    typed = ["--types", "/chatter:std_msgs/msg/String", "--duration", "0.5"]
    argv = {
        "under_file": [str(a_file / "bag"), "--topics", "/chatter", *typed],
        "onto_file": [str(a_file), "--topics", "/chatter", *typed],
        "bad_topic": [str(tmp_path / "bag"), "--topics", "bad topic", "--types", "bad topic:std_msgs/msg/String"],
        "negative_duration": [str(tmp_path / "bag"), "--topics", "/chatter", "--duration", "-1"],
        "qos_not_a_number": [str(tmp_path / "bag"), "--topics", "/chatter", "--qos-depth", "abc"],
    }[case]
    assert words.format(file=a_file) in one_line_error(record_main, argv, capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain_file"]  # nothing staged, nothing left


# ----------------------------------------------------------------------------------------------- disam-bench


@pytest.mark.parametrize("argv, words", [
    (["--sizes", "abc"], "argument --sizes: 'abc' is not an integer >= 1"),
    (["--sizes", "0"], "'0' is not an integer >= 1"),
    (["--sizes=-5"], "'-5' is not an integer >= 1"),
    (["--sizes", ""], "lists nothing"),
    (["--modes", "nosuch"], "unknown mode(s) nosuch"),
    (["--content", "1,2"], "is not C,h,w"),
    (["--device", "banana"], "'banana' is not a device"),
    (["--nosuch"], "unrecognized arguments: --nosuch"),
])
def test_bench_retrieval_bad_arguments(argv, words, capsys):
    line = one_line_error(bench_main, ["retrieval", *argv], capsys)
    assert line.startswith("disam-bench retrieval: error:") and words in line


def test_bench_unknown_suite(capsys):
    assert "invalid choice: 'nosuch'" in one_line_error(bench_main, ["nosuch"], capsys)


# ------------------------------------------------------------------------------------------------ disam-eval


@pytest.mark.parametrize("case, words", [
    ("missing_map", "--map {tmp}/nomap: no such map folder"),
    ("missing_dataset", "--dataset {tmp}/nodata: no such folder"),
    ("unknown_condition", "no condition bogus"),
    ("empty_conditions", "lists nothing"),
    ("out_under_file", "is a file, so no folder can be made inside it"),
    ("world_not_a_folder", "--world {file}: no such folder"),
    ("every_zero", "'0' is not an integer >= 1"),
])
def test_eval_offline_bad_inputs(case, words, tiny_eval_world, night_bag, a_file, tmp_path, capsys):
    m, world, out = str(tiny_eval_world["map"]), str(tiny_eval_world["world"]), str(tmp_path / "report")
    argv = {
        "missing_map": ["--map", str(tmp_path / "nomap"), "--dataset", world, "--out", out],
        "missing_dataset": ["--map", m, "--dataset", str(tmp_path / "nodata"), "--out", out],
        "unknown_condition": ["--map", m, "--dataset", world, "--conditions", "bogus", "--out", out],
        "empty_conditions": ["--map", m, "--dataset", world, "--conditions", ",", "--out", out],
        "out_under_file": ["--map", m, "--dataset", world, "--out", str(a_file / "report")],
        "world_not_a_folder": ["--map", m, "--bag", str(night_bag), "--world", str(a_file), "--out", out],
        "every_zero": ["--map", m, "--dataset", world, "--every", "0", "--out", out],
    }[case]
    line = one_line_error(offline_main, [*argv, "--quiet"], capsys)
    assert words.format(tmp=tmp_path, file=a_file) in line
    assert not (tmp_path / "report").exists()


def test_eval_offline_keeps_enough_candidates_for_every_recall():
    """R@10 was R@5 in disguise: 5 candidates were kept. The default now keeps the largest N reported."""
    args = offline_parser().parse_args(["--map", "m", "--dataset", "d", "--out", "o"])
    assert args.top_k == max(DEFAULT_RECALL_NS) == 10


# ----------------------------------------------------------------------------------------- disam-eval-online


@pytest.mark.ros
@pytest.mark.parametrize("case", ["corrupt_map", "missing_map", "node_fails"])
def test_eval_online_fails_fast_when_the_node_cannot_start(case, night_bag, tiny_eval_world, tmp_path, capsys):
    """It used to wait 60 s for a subscriber of a node that had died at start; now a broken map is refused before
    any node starts, and a node that dies at start (here: a CUDA device on a machine without one) is noticed."""
    bad, extra = tmp_path / "map", []
    if case == "corrupt_map":
        bad.mkdir()
        (bad / "manifest.json").write_text("{ not json")
    elif case == "node_fails":
        bad, extra = tiny_eval_world["map"], ["-p", "device:=cuda:7", "--modes", "single"]
    t0 = time.monotonic()
    line = one_line_error(online_main, ["--map", str(bad), "--bag", str(night_bag), "--out", str(tmp_path / "r"),
                                        *extra], capsys)
    assert time.monotonic() - t0 < 20.0
    if case == "corrupt_map":
        assert "manifest.json" in line and "rebuild" in line, line
    elif case == "node_fails":  # the node's own reason, read back from its log
        assert "exited with code 2" in line and "cuda" in line.lower(), line
        assert "[ERROR]" not in line  # the rcl prefix is stripped: one readable line
    else:
        assert "no such map folder" in line


def test_eval_online_checks_top_k_before_starting_a_node(night_bag, tmp_path, capsys):
    """-p top_k:=abc used to reach the node (which ignored it) and print 'candidates per query: abc'."""
    argv = ["--map", str(night_bag), "--bag", str(night_bag), "--out", str(tmp_path / "r"), "-p", "top_k:=abc"]
    assert "-p top_k:=abc: need an integer >= 1" in one_line_error(online_main, argv, capsys)
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------------------- disam-train


def test_train_help_lists_every_shipped_recipe(capsys):
    with pytest.raises(SystemExit) as exc:
        train_main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    shipped = sorted(RECIPES.glob("*.yaml"))
    assert {"demo_coarse", "demo_fine", "demo_translation", "rail_coarse", "rail_translation"} <= {
        p.stem for p in shipped}
    for path in shipped:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# "), f"{path.name}: the first line must be a one-line description comment"
        assert any(ln.split() == [path.stem, *first[2:].split()] for ln in text.splitlines()), (path.stem, text)


@pytest.mark.parametrize("case, words", [
    ("out_under_file", "is a file, not a folder: choose another run directory"),
    ("until_zero", "--until 0: need a step >= 1"),
])
def test_train_bad_arguments(case, words, tiny_eval_world, a_file, capsys):
    world = str(tiny_eval_world["world"])
    argv = {
        "out_under_file": ["--recipe", "coarse", "--data", world, "--out", str(a_file / "run")],
        "until_zero": ["--recipe", "coarse", "--data", world, "--out", str(a_file.parent / "run"), "--until", "0"],
    }[case]
    assert words in one_line_error(train_main, argv, capsys)


# ------------------------------------------------------------------------------------------- garbage sweep


@pytest.mark.parametrize("fn", [demo_main, bag_main, record_main, bench_main, offline_main, online_main, train_main],
                         ids=["demo", "bag", "record", "bench", "eval", "eval-online", "train"])
@pytest.mark.parametrize("argv", [["--nosuch"], [""], ["--rate", "x", "--size", "-1"]], ids=["option", "empty", "nan"])
def test_garbage_is_one_line(fn, argv, capsys):
    """Whatever the garbage, argparse's usage block is not printed: one line naming the problem and --help."""
    assert "(see --help)" in one_line_error(fn, argv, capsys)


# ------------------------------------------------------------------------------------------------ reports R@N


def _result(gt_x: float, candidate_xs: list[float]) -> QueryResult:
    cands = np.array([[x, 0.0, 0.0] for x in candidate_xs])
    return QueryResult("q", "night", np.array([gt_x, 0.0, 0.0]), np.array([0.0, 0.0, 0.0, 1.0]),
                       candidate_positions=cands)


def test_report_does_not_print_recall_beyond_the_candidates_kept():
    """With 5 candidates per query, R@10 cannot be measured: n/a in Markdown (with the reason), null in JSON."""
    # query 1: 4th candidate within 5 m; query 2: none of its 5 within 25 m
    results = [_result(0.0, [100, 90, 80, 3, 70]), _result(0.0, [100, 90, 80, 70, 60])]
    summaries = per_condition(results)
    meta = {CANDIDATES: 5}
    md = markdown_report(summaries, meta=meta)
    recall_section = md.split("## Recall@N", 1)[1]
    row = next(ln for ln in recall_section.splitlines() if ln.startswith("| night |"))
    cells = [c.strip() for c in row.strip().strip("|").split("|")][1:]
    # columns: R@1 (5, 10, 25 m), R@5 (5, 10, 25 m), R@10 (5, 10, 25 m)
    assert cells == ["0.0", "0.0", "0.0", "50.0", "50.0", "50.0", "n/a", "n/a", "n/a"], row
    assert "R@10: n/a, because only the top 5 candidates per query were kept" in md
    doc = json.loads(json.dumps(report_dict(summaries, meta)))
    recall = {(e["n"], e["radius_m"]): e["share"] for e in doc["conditions"]["night"]["recall"]}
    assert recall[(5, 5.0)] == 0.5 and recall[(1, 25.0)] == 0.0
    assert recall[(10, 5.0)] is None and recall[(10, 25.0)] is None
    # with 10 kept, R@10 is a measurement again
    full = markdown_report(summaries, meta={CANDIDATES: 10})
    assert "n/a, because" not in full


# ------------------------------------------------------------------- the other console scripts: parser errors


@pytest.mark.parametrize("script, argv, words", [
    ("disam-build-map", ["--nosuch"], "--out"),
    ("disam-build-map", ["--dataset", "{tmp}", "--condition", "c", "--coarse", "{file}", "--out", "{file}/x"],
     "is a file"),
    ("disam-map-info", ["--nosuch"], "map"),
    ("disam-replay", ["some.bag", "--rate", "abc"], "--rate"),
    ("disam-bench", ["model", "--nosuch"], "--nosuch"),
    ("disam-bench", ["synth", "--frames", "abc"], "--frames"),
    ("disam-bench", ["training", "--nosuch"], "--nosuch"),
])
def test_console_scripts_fail_in_one_line(script, argv, words, tmp_path, a_file):
    """Installed scripts as a user types them: argparse's usage block is not an error message."""
    argv = [a.format(tmp=tmp_path, file=a_file) for a in argv]
    proc = subprocess.run([str(BIN / script), *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("disam-replay: DDS")]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("module", ["depth_eval", "ablation_plot", "export", "evaluate"])
def test_training_helper_tools_fail_in_one_line(module, capsys):
    """The `python -m disam_ros.training.*` tools answer an unknown option like the console scripts do."""
    import importlib

    main = importlib.import_module(f"disam_ros.training.{module}").main
    with pytest.raises(SystemExit) as exc:
        main(["--no-such-option"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err  # plain argparse prints its usage block first
    assert err[0].startswith(f"python -m disam_ros.training.{module}: error:") and err[0].endswith("(see --help)")
