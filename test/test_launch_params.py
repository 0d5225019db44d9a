"""The launch file, config/localizer.yaml and the Python launcher use exactly the parameters the node declares;
every way of getting a parameter wrong at start-up is one line and exit code 2."""
from __future__ import annotations

import ast
import importlib.util
import math
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "localizer.launch.py"
PARAMS_FILE = REPO / "config" / "localizer.yaml"

rclpy = pytest.importorskip("rclpy")
from rclpy.node import Node  # noqa: E402

from disam_ros.ros import launcher  # noqa: E402
from disam_ros.ros import node_params as ln  # noqa: E402
from disam_ros.ros import posegraph_params as pgp  # noqa: E402


@pytest.fixture(scope="module")
def context():
    """A private rclpy context: parameter declaration needs no DDS traffic beyond the node itself."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


def declared(context, cli_args=None) -> Node:
    node = Node(ln.NODE_NAME, context=context, cli_args=cli_args)
    ln.declare_parameters(node)
    return node


def test_node_declaration_list(context):
    bare = Node("bare", context=context)
    builtin = set(bare._parameters)  # use_sim_time, start_type_description_service, ...
    bare.destroy_node()
    node = declared(context)
    try:
        names = set(node._parameters) - builtin
        assert names == set(ln.PARAMETER_NAMES)
        for p in ln.PARAMETERS:
            desc = node.describe_parameter(p.name)
            assert desc.description, p.name
            assert desc.read_only == (not p.dynamic), p.name
        dynamic = {p.name for p in ln.PARAMETERS if p.dynamic}
        assert {"weather", "domain"} <= dynamic
    finally:
        node.destroy_node()


def _yaml_params() -> dict:
    data = yaml.safe_load(PARAMS_FILE.read_text())
    assert list(data) == ["/**"], "params file must apply to the node in any namespace"
    return data["/**"]["ros__parameters"]


def test_params_file_names_match_declarations():
    params = _yaml_params()
    assert set(params) <= set(ln.PARAMETER_NAMES), set(params) - set(ln.PARAMETER_NAMES)
    commented = set(re.findall(r"^\s*#\s*(\w+):", PARAMS_FILE.read_text(), re.M))
    missing = set(ln.PARAMETER_NAMES) - set(params) - commented
    assert not missing, f"declared but not in config/localizer.yaml (not even commented): {missing}"
    defaults = {p.name: p.default for p in ln.PARAMETERS}
    for k, v in params.items():
        if isinstance(defaults[k], float) and math.isnan(defaults[k]):
            continue
        assert v == defaults[k], f"{k}: yaml {v!r} != declared default {defaults[k]!r}"


def test_params_file_loads_with_declared_types(context):
    """rcl parses the file as overrides: a type mismatch would make declare_parameter raise."""
    node = declared(context, cli_args=["--ros-args", "--params-file", str(PARAMS_FILE)])
    try:
        for k, v in _yaml_params().items():
            assert node.get_parameter(k).value == v
    finally:
        node.destroy_node()


def _launch_ast():
    tree = ast.parse(LAUNCH_FILE.read_text())
    args, param_keys, node_kwargs = {}, set(), {}
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        fname = getattr(call.func, "id", getattr(call.func, "attr", ""))
        if fname == "DeclareLaunchArgument":
            name = call.args[0].value
            kw = {k.arg: k.value for k in call.keywords}
            args[name] = kw["default_value"].value if "default_value" in kw else None
            assert "description" in kw, f"launch argument {name} lacks a description"
        elif fname in ("Node", "LifecycleNode"):
            node_kwargs = {k.arg: k.value for k in call.keywords}
            for d in ast.walk(node_kwargs["parameters"]):
                if isinstance(d, ast.Dict):
                    param_keys |= {k.value for k in d.keys}
    return args, param_keys, node_kwargs


def test_launch_file_matches_node_and_launcher():
    args, param_keys, node_kwargs = _launch_ast()
    assert set(args) == set(launcher.LAUNCH_ARGUMENTS)
    for name, default in args.items():
        if default is not None:
            assert default == launcher.LAUNCH_ARGUMENTS[name][0], name
    assert param_keys <= set(ln.PARAMETER_NAMES), param_keys - set(ln.PARAMETER_NAMES)
    assert node_kwargs["name"].value == ln.NODE_NAME
    assert node_kwargs["executable"].value == "disam-localizer"
    setup = (REPO / "setup.py").read_text()
    assert "disam-localizer = disam_ros.ros.localizer_node:main" in setup


def test_launcher_configuration_parses_like_rcl(context, tmp_path):
    """The launcher's command line, fed to rcl, sets the same parameters and remaps as the launch file."""
    argv = launcher.node_arguments(map=tmp_path, image_topic="/cam/front/image_raw", compressed="true",
                                   device="cpu", namespace="robot1",
                                   parameters={"weather": "snow", "max_rate_hz": 5, "domain": "123"})
    ros_args = ln.ros_argv(argv)
    node = declared(context, cli_args=ros_args)
    try:
        assert node.get_namespace() == "/robot1"
        assert node.get_parameter("map").value == str(tmp_path)
        assert node.get_parameter("compressed").value is True
        assert node.get_parameter("device").value == "cpu"
        assert node.get_parameter("weather").value == "snow"
        assert node.get_parameter("domain").value == "123"  # quoted: stays a string
        assert float(node.get_parameter("max_rate_hz").value) == 5.0  # int accepted for a float parameter
        assert node.get_parameter("top_n").value == 3  # from the params file
        assert node.resolve_topic_name("image") == "/cam/front/image_raw"
        assert node.resolve_topic_name("image/compressed") == "/cam/front/image_raw/compressed"
        assert node.resolve_topic_name("~/pose") == "/robot1/disam_localizer/pose"
    finally:
        node.destroy_node()


def test_launcher_rejects_unknown_arguments():
    assert launcher.parse_launch_args(["map:=/m", "compressed:=true"]) == {"map": "/m", "compressed": "true"}
    with pytest.raises(ValueError, match="unknown launch argument 'camera'"):
        launcher.parse_launch_args(["camera:=/x"])
    with pytest.raises(ValueError, match="not name:=value"):
        launcher.parse_launch_args(["map=/x"])


def test_check_value_messages():
    for name, value, pattern in [
        ("map", "", "parameter 'map' is empty"), ("map", "/nonexistent/x", "does not exist"),
        ("device", "gpu", "device 'gpu' is not valid"), ("max_rate_hz", -1.0, "max_rate_hz must be >= 0"),
        ("debug_rate_hz", 0.0, "must be > 0"), ("weather", "hail", "weather 'hail' is not valid"),
        ("log_throttle_s", 0.0, "parameter 'log_throttle_s' must be > 0"),
        ("latitude", 91.0, "latitude 91.0 is out of range"), ("top_n", 0, "must be >= 1"),
        ("mode", "batch", "mode 'batch' is not valid: use one of sequence, single, window"),
        ("min_speed_mps", -1.0, "'min_speed_mps' must be a speed >= 0"),
        ("max_speed_mps", float("inf"), "'max_speed_mps' must be a speed >= 0"),
        ("odom_topic", "odom topic", "odom_topic 'odom topic' is not a ROS topic name"),
        ("loop_closure_min_consecutive", 0, "loop_closure_min_consecutive must be >= 1"),
        ("speed_change_prob", 0.5, "speed_change_prob must be in [0, 0.5)"),
        ("standstill_ratio", -0.1, "standstill_ratio must be in [0, 1)"),
        ("min_confidence", 1.5, "min_confidence must be in [0, 1] or NaN"),
        ("min_heuristic_confidence", float("nan"), "min_heuristic_confidence must be in [0, 1]"),
        ("verify_track_frames", -1, "verify_track_frames must be >= 0 (0 = no map-point tracking), got -1"),
    ]:
        with pytest.raises(ValueError, match=re.escape(pattern)):
            ln.check_value(name, value)
    # NaN is min_confidence's default (the map calibration's own threshold); topics may be absolute or relative
    assert math.isnan(ln.check_value("min_confidence", float("nan")))
    assert ln.check_value("verify_track_frames", 0) == 0  # 0 turns tracking off, it is no error
    assert ln.check_value("odom_topic", "/vehicle/odom") == "/vehicle/odom" and ln.check_value("odom_topic", "") == ""


def test_speed_band_checked_across_parameters(context, tmp_path):
    """min_speed_mps above max_speed_mps is refused at configure with both values in the one line."""
    node = declared(context, cli_args=["--ros-args", "-p", f"map:={tmp_path}", "-p", "min_speed_mps:=5.0",
                                       "-p", "max_speed_mps:=2.0"])
    try:
        with pytest.raises(ValueError, match=r"speed band \[5.0, 2.0\] m/s is empty"):
            ln.read_config(node)
    finally:
        node.destroy_node()
    node = declared(context, cli_args=["--ros-args", "-p", f"map:={tmp_path}", "-p", "mode:=window",
                                       "-p", "odom_topic:=/odom", "-p", "loop_closure_min_consecutive:=5",
                                       "-p", "speed_change_prob:=0.25", "-p", "standstill_ratio:=0.0"])
    try:
        cfg = ln.read_config(node)
        assert (cfg.mode, cfg.odom_topic, cfg.loop_closure_min_consecutive) == ("window", "/odom", 5)
        assert (cfg.speed_change_prob, cfg.standstill_ratio) == (0.25, 0.0)
        assert math.isnan(cfg.min_confidence) and cfg.min_heuristic_confidence == 0.0
    finally:
        node.destroy_node()


def test_condition_source_parameters(context, tmp_path):
    """condition_source and its tuning are validated one line each; `fixed` without a domain is refused at
    configure; the node's list of sources is the relocalizer's."""
    from disam_ros.relocalizer import CONDITION_SOURCES

    assert ln.CONDITION_SOURCES == CONDITION_SOURCES
    for name, value, pattern in [
        ("condition_source", "image", "condition_source 'image' is not valid: use one of clock, auto, fixed"),
        ("condition_hysteresis_margin", 1.5, "condition_hysteresis_margin must be in [0, 1]"),
        ("condition_hysteresis_hold", 0, "condition_hysteresis_hold must be >= 1 frame"),
        ("condition_prior_weight", -0.5, "condition_prior_weight must be >= 0"),
    ]:
        with pytest.raises(ValueError, match=re.escape(pattern)):
            ln.check_value(name, value)
    node = declared(context, cli_args=["--ros-args", "-p", f"map:={tmp_path}", "-p", "condition_source:=fixed"])
    try:
        with pytest.raises(ValueError, match="condition_source 'fixed' needs the model domain"):
            ln.read_config(node)
    finally:
        node.destroy_node()
    node = declared(context, cli_args=["--ros-args", "-p", f"map:={tmp_path}", "-p", "condition_source:=auto",
                                       "-p", "condition_hysteresis_hold:=5", "-p", "condition_prior_weight:=0"])
    try:
        cfg = ln.read_config(node)
        assert (cfg.condition_source, cfg.condition_hysteresis_hold, cfg.condition_prior_weight) == ("auto", 5, 0.0)
        assert cfg.condition_hysteresis_margin == 0.2
    finally:
        node.destroy_node()


def test_node_reference_documents_every_parameter():
    """The node reference (docs/localizer.md) lists exactly the declared parameters, with their defaults."""
    text = (REPO / "docs" / "localizer.md").read_text()
    section = text[text.index("### Parameters"):]
    section = section[: section.index("\n### ", 5)]
    rows = re.findall(r"^\| (`[^|]+`) \| ([^|]+) \|", section, re.M)
    documented = {name.strip("`"): default.strip() for names, default in rows for name in names.split(", ")}
    assert set(documented) - {"Name"} == set(ln.PARAMETER_NAMES), set(documented) ^ set(ln.PARAMETER_NAMES)
    for p in ln.PARAMETERS:
        if isinstance(p.default, float) and math.isnan(p.default):
            assert documented[p.name] == "NaN", p.name
        elif isinstance(p.default, (bool, int, float)):
            text_default = ("true" if p.default else "false") if isinstance(p.default, bool) else repr(p.default)
            assert documented[p.name] == f"`{text_default}`", (p.name, documented[p.name])


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                    reason="launch_ros is not installed (PyPI ROS wheels ship no launch); the AST checks above "
                           "cover the launch file")
def test_launch_file_runs(tmp_path):  # pragma: no cover - needs a full ROS 2 install
    from launch import LaunchContext

    spec = importlib.util.spec_from_file_location("localizer_launch", LAUNCH_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    desc = mod.generate_launch_description()
    assert {a.name for a in desc.get_launch_arguments()} == set(launcher.LAUNCH_ARGUMENTS)
    ctx = LaunchContext()
    ctx.launch_configurations.update({"map": str(tmp_path), "params_file": str(PARAMS_FILE), "image_topic": "/cam",
                                      "compressed": "false", "device": "cpu", "namespace": ""})
    [node] = mod._node(ctx)
    assert node.node_package == "disam_ros" and node.node_executable == "disam-localizer"


def test_launch_file_starts_a_lifecycle_node():
    """A nav2 lifecycle manager can only drive what launch_ros starts as a LifecycleNode."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    called = {getattr(c.func, "id", getattr(c.func, "attr", "")) for c in ast.walk(tree) if isinstance(c, ast.Call)}
    assert "LifecycleNode" in called and "Node" not in called


def test_unknown_parameter_names_are_refused():
    ln.check_unknown(["top_n", "map", "use_sim_time", "qos_overrides./image.subscription.depth"])
    with pytest.raises(ln.ConfigError, match=r"unknown parameter 'top_m' for disam_localizer: did you mean 'top_n'\?"):
        ln.check_unknown(["top_m"])
    with pytest.raises(ln.ConfigError, match="unknown parameter 'nosuch_param' for disam_localizer: known are map, "
                                             "coarse_checkpoint, .*autostart"):
        ln.check_unknown(["nosuch_param"])


def test_wrong_type_override_is_one_line(context):
    node = Node(ln.NODE_NAME, context=context, cli_args=["--ros-args", "-p", "top_n:=abc"])
    try:
        with pytest.raises(ln.ConfigError) as err:
            ln.declare_parameters(node)
        assert str(err.value).startswith("parameter 'top_n' must be an integer (default 3): fix -p top_n:=...")
        assert "\n" not in str(err.value)
    finally:
        node.destroy_node()


@pytest.mark.parametrize("text,pattern", [
    ("a: [b\n", "is not valid YAML at line 2"),
    ("- 1\n- 2\n", "is not '<node>: {ros__parameters: {name: value}}'"),
    ("/**:\n  top_n: 3\n", "is not '<node>: {ros__parameters: {name: value}}'"),
])
def test_params_file_checked_before_rcl(tmp_path, text, pattern):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(ln.ConfigError, match=re.escape(pattern)):
        ln.ros_argv(["--params-file", str(f)])
    with pytest.raises(ln.ConfigError, match=re.escape(pattern)):  # also when given the rcl way
        ln.ros_argv(["--ros-args", "--params-file", str(f)])
    with pytest.raises(ln.ConfigError, match="not found"):
        ln.ros_argv(["--params-file", str(tmp_path / "missing.yaml")])


@pytest.mark.ros
@pytest.mark.parametrize("argv,expect", [
    (["--ros-args", "-p", "top_n:=abc"], "parameter 'top_n' must be an integer (default 3)"),
    (["--ros-args", "-p", "nosuch_param:=1"], "unknown parameter 'nosuch_param' for disam_localizer: known are"),
    (["--params-file", "BAD"], "params file 'BAD' is not valid YAML at line 3"),
    (["--ros-args", "-p", "autostart:=maybe"], "parameter 'autostart' must be a boolean (true/false)"),
])
def test_cli_configuration_errors_exit_2(tmp_path, argv, expect):
    """`disam-localizer` with a bad value, a misspelt name or a broken params file: one error line, exit 2, and
    before torch and the other heavy modules are imported (the mistake is reported in a second, not after three)."""
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("/**:\n  ros__parameters: [top_n\n")
    argv = [str(bad) if a == "BAD" else a for a in argv]
    expect = expect.replace("BAD", str(bad))
    run = ("import sys; from disam_ros.ros.localizer_node import main; rc = main(sys.argv[1:]); "
           "print('heavy modules:', sorted({'torch', 'faiss', 'scipy.spatial'} & set(sys.modules))); "
           "sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", run, *argv], capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and expect in errors[0], text
    assert "Traceback" not in text
    assert "heavy modules: []" in out.stdout, text


@pytest.mark.ros
def test_config_error_exits_2(tmp_path):
    """A bad parameter value found at configure (a missing map) is one line and exit code 2, not a traceback."""
    import os
    import subprocess

    proc = launcher.start(map=tmp_path / "missing", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env={"ROS_LOG_DIR": str(tmp_path)})
    out, _ = proc.communicate(timeout=60)
    text = out.decode(errors="replace")
    assert proc.returncode == 2, text
    assert "does not exist: check parameter 'map'" in text and "Traceback" not in text
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"


# ---------------------------------------------------------------------------------------------- pose-graph node

POSEGRAPH_LAUNCH = REPO / "launch" / "posegraph.launch.py"
POSEGRAPH_PARAMS = REPO / "config" / "posegraph.yaml"


def _launch_file_ast(path: Path) -> tuple[dict, set, dict, list]:
    """(arguments -> default, parameter keys set in the launch file, node keyword arguments, remapped names)
    of a launch file with one (Lifecycle)Node, read from its source (launch_ros is not installed here)."""
    tree = ast.parse(path.read_text())
    args, param_keys, node_kwargs = {}, set(), {}
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        fname = getattr(call.func, "id", getattr(call.func, "attr", ""))
        if fname == "DeclareLaunchArgument":
            kw = {k.arg: k.value for k in call.keywords}
            assert "description" in kw, f"launch argument {call.args[0].value} lacks a description"
            args[call.args[0].value] = kw["default_value"].value if "default_value" in kw else None
        elif fname in ("Node", "LifecycleNode"):
            node_kwargs = {k.arg: k.value for k in call.keywords}
            assert fname == "LifecycleNode", "a lifecycle manager can only drive a LifecycleNode"
            for d in ast.walk(node_kwargs["parameters"]):
                if isinstance(d, ast.Dict):
                    param_keys |= {k.value for k in d.keys}
    remapped = [t.elts[0].value for t in node_kwargs["remappings"].elts]
    return args, param_keys, node_kwargs, remapped


def test_posegraph_launch_file_matches_node():
    args, param_keys, node_kwargs, remapped = _launch_file_ast(POSEGRAPH_LAUNCH)
    assert param_keys <= set(pgp.PARAMETER_NAMES), param_keys - set(pgp.PARAMETER_NAMES)
    for name in param_keys:  # a launch argument per parameter it sets, defaulting to the declared default
        assert args[name] == {p.name: p.default for p in pgp.PARAMETERS}[name], name
    assert node_kwargs["name"].value == pgp.NODE_NAME
    assert node_kwargs["executable"].value == "disam-posegraph"
    assert "disam-posegraph = disam_ros.ros.posegraph_node:main" in (REPO / "setup.py").read_text()
    assert sorted(remapped) == ["loop_closure", "odom"]  # the names the node subscribes to
    assert args["loop_closure_topic"] == f"{ln.NODE_NAME}/loop_closure"  # a localizer in the same namespace


def test_posegraph_params_file_matches_declarations(context):
    data = yaml.safe_load(POSEGRAPH_PARAMS.read_text())
    assert list(data) == ["/**"], "params file must apply to the node in any namespace"
    params = data["/**"]["ros__parameters"]
    assert set(params) == set(pgp.PARAMETER_NAMES), set(params) ^ set(pgp.PARAMETER_NAMES)
    for p in pgp.PARAMETERS:
        assert params[p.name] == p.default, f"{p.name}: yaml {params[p.name]!r} != declared {p.default!r}"
    bare = Node("bare_pg", context=context)
    builtin = set(bare._parameters)
    bare.destroy_node()
    node = Node(pgp.NODE_NAME, context=context, cli_args=["--ros-args", "--params-file", str(POSEGRAPH_PARAMS)])
    try:
        ln.declare_all(node, pgp.PARAMETERS, pgp.FLOAT_PARAMS)  # rcl parses the file as overrides: a mismatch raises
        assert set(node._parameters) - builtin == set(pgp.PARAMETER_NAMES)
        for p in pgp.PARAMETERS:
            assert node.describe_parameter(p.name).description, p.name
        assert pgp.read_config(node).camera_in_base == pgp.IDENTITY
    finally:
        node.destroy_node()


def test_posegraph_reference_documents_every_parameter():
    """docs/posegraph.md lists exactly the declared parameters, with their defaults."""
    text = (REPO / "docs" / "posegraph.md").read_text()
    section = text[text.index("### Parameters"):]
    section = section[: section.index("\n## ", 5)] if "\n## " in section[5:] else section
    rows = re.findall(r"^\| `([^|`]+)` \| ([^|]+) \|", section, re.M)
    documented = {name: default.strip() for name, default in rows}
    assert set(documented) == set(pgp.PARAMETER_NAMES), set(documented) ^ set(pgp.PARAMETER_NAMES)
    for p in pgp.PARAMETERS:
        if isinstance(p.default, (bool, int, float)):
            text_default = ("true" if p.default else "false") if isinstance(p.default, bool) else repr(p.default)
            assert documented[p.name] == f"`{text_default}`", (p.name, documented[p.name])


@pytest.mark.ros
@pytest.mark.parametrize("argv,expect", [
    (["--ros-args", "-p", "max_nodes:=many"], "parameter 'max_nodes' must be an integer (default 2000)"),
    (["--ros-args", "-p", "robustk:=2.0"], "unknown parameter 'robustk' for disam_posegraph: did you mean 'robust_k'?"),
    (["--ros-args", "-p", "camera_in_base:=[1.0, 2.0]"], "camera_in_base must be 7 finite numbers"),
    (["--params-file", "BAD"], "params file 'BAD' is not valid YAML at line 3: fix it (see config/posegraph.yaml)"),
])
def test_posegraph_configuration_errors_exit_2(tmp_path, argv, expect):
    """`disam-posegraph` with a bad value, a misspelt name or a broken params file: one error line, exit 2."""
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("/**:\n  ros__parameters: [max_nodes\n")
    argv = [str(bad) if a == "BAD" else a for a in argv]
    out = subprocess.run([sys.executable, "-m", "disam_ros.ros.posegraph_node", *argv], capture_output=True,
                         text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and expect.replace("BAD", str(bad)) in errors[0], text
    assert "Traceback" not in text
