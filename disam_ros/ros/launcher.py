"""Start the localizer node from Python with the same configuration as launch/localizer.launch.py.

`launch`/`launch_ros` and the `ros2` CLI are not always installed (they are not on the PyPI ROS wheels), so
this gives the launch file's arguments (`map:=... image_topic:=...`) to a plain subprocess, with the
loopback DDS environment. Tests and the benchmark use it too.

    python -m disam_ros.ros.launcher map:=/maps/town image_topic:=/camera/image_raw compressed:=true
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from disam_ros.cliutil import version_text
from disam_ros.ros.env import child_env

NODE_MODULE = "disam_ros.ros.localizer_node"


def default_params_file() -> Path:
    """config/localizer.yaml of a source checkout, else of the installed share/disam_ros."""
    for p in (Path(__file__).resolve().parents[2] / "config" / "localizer.yaml",
              Path(sys.prefix) / "share" / "disam_ros" / "config" / "localizer.yaml"):
        if p.is_file():
            return p
    return Path(__file__).resolve().parents[2] / "config" / "localizer.yaml"


# name -> (default, description); kept equal to the DeclareLaunchArgument list of the launch file
# (test/test_launch_params.py checks it).
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "map": ("", "Map directory written by disam-build-map (required)."),
    "params_file": ("", "Node parameters YAML; empty = the packaged config/localizer.yaml."),
    "image_topic": ("image", "Camera topic (sensor_msgs/Image); <image_topic>/compressed when compressed."),
    "compressed": ("false", "Subscribe to sensor_msgs/CompressedImage on <image_topic>/compressed."),
    "device": ("auto", "Torch device: auto, cpu, cuda, cuda:N."),
    "namespace": ("", "Namespace of the node (topics become /<namespace>/disam_localizer/...)."),
}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("true", "1", "yes", "on"):
        return True
    if s in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"compressed:={value!r} is not a boolean: use true or false")


def node_arguments(map: str | Path, params_file: str | Path | None = None, image_topic: str = "image",
                   compressed: bool | str = False, device: str = "auto", namespace: str = "",
                   parameters: Mapping[str, Any] | None = None) -> list[str]:
    """Command-line arguments of the node (after the program) for the launch configuration.

    Overrides come after the params file, so they win, as launch_ros orders them. `parameters` adds
    further `-p name:=value` overrides (e.g. for tests).
    """
    params_file = Path(params_file) if params_file else default_params_file()
    args = ["--params-file", str(params_file), "--ros-args"]
    if namespace:
        args += ["-r", f"__ns:=/{namespace.strip('/')}"]
    overrides: dict[str, Any] = {"map": str(map), "compressed": _bool(compressed), "device": device}
    overrides.update(parameters or {})
    for k, v in overrides.items():
        args += ["-p", f"{k}:={_param_text(v)}"]
    if image_topic and image_topic != "image":
        args += ["-r", f"image:={image_topic}", "-r", f"image/compressed:={image_topic.rstrip('/')}/compressed"]
    return args


def _param_text(v: Any) -> str:
    """Value as rcl parses it (YAML): booleans lower-case, floats with a dot, strings that look like
    numbers or booleans quoted so they stay strings."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if v == v else ".nan"
    if isinstance(v, int):
        return str(v)
    s = str(v)
    try:
        stays_string = s != "" and isinstance(yaml.safe_load(s), str)
    except yaml.YAMLError:
        stays_string = False
    return s if stays_string else "'" + s.replace("'", "''") + "'"


def node_command(python: str | None = None, **launch_args: Any) -> list[str]:
    return [python or sys.executable, "-m", NODE_MODULE, *node_arguments(**launch_args)]


def start(env: Mapping[str, str] | None = None, stdout: Any = None, stderr: Any = None,
          **launch_args: Any) -> subprocess.Popen:
    """Start the node as a subprocess with the loopback DDS environment (plus `env`)."""
    return subprocess.Popen(node_command(**launch_args), env=child_env(dict(env or {})), stdout=stdout,
                            stderr=stderr)


_TOKEN = r"[A-Za-z_][A-Za-z0-9_]*"  # one ROS name token (rcl refuses others with a traceback in the node)
_TOPIC = re.compile(rf"(?:~/|/)?{_TOKEN}(?:/{_TOKEN})*")
_NAMESPACE = re.compile(rf"{_TOKEN}(?:/{_TOKEN})*")


def parse_launch_args(tokens: Sequence[str]) -> dict[str, str]:
    """`name:=value` tokens, as `ros2 launch` takes them; unknown names are a one-line error."""
    out = {}
    for tok in tokens:
        name, sep, value = tok.partition(":=")
        if not sep:
            raise ValueError(f"argument {tok!r} is not name:=value (e.g. map:=/maps/town)")
        if name not in LAUNCH_ARGUMENTS:
            raise ValueError(f"unknown launch argument {name!r}: known are {', '.join(LAUNCH_ARGUMENTS)}")
        out[name] = value
    return out


def check_launch_args(args: Mapping[str, str]) -> None:
    """ValueError (one line, naming the fix) for what the launch file would refuse, before a node starts:
    the required map, a non-boolean `compressed`, a missing params file, names rcl cannot parse."""
    if not args.get("map", "").strip():
        raise ValueError("map:= is required: pass map:=/path/to/map_dir (a folder written by disam-build-map)")
    _bool(args.get("compressed", "false"))
    params = args.get("params_file", "")
    if params and not Path(params).is_file():
        raise ValueError(f"params_file:={params}: no such file; pass a node parameters YAML or leave it out")
    topic = args.get("image_topic", "")
    if topic and not _TOPIC.fullmatch(topic):
        raise ValueError(f"image_topic:={topic!r} is not a ROS topic name: use letters, digits, _ and / "
                         "(e.g. image_topic:=/camera/image_raw)")
    namespace = args.get("namespace", "").strip("/")
    if namespace and not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"namespace:={args['namespace']!r} is not a ROS namespace: use letters, digits, _ and / "
                         "(e.g. namespace:=robot1)")


def main(argv: list[str] | None = None) -> int:
    """Run the node in the foreground; SIGINT/SIGTERM are passed on and its exit code returned."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        for k, (d, desc) in LAUNCH_ARGUMENTS.items():
            print(f"  {k}:={d or '<empty>'}\t{desc}")
        return 0
    if "--version" in argv:
        print(version_text("disam-launch"))
        return 0
    try:
        args = parse_launch_args(argv)
        check_launch_args(args)
    except ValueError as exc:
        print(f"disam-launch: error: {exc}", file=sys.stderr)
        return 2
    proc = start(**args)

    def forward(signum: int, _frame: Any) -> None:
        proc.send_signal(signum)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, forward)
    rc = proc.wait()
    return 128 - rc if rc < 0 else rc  # a node ended by a signal: the shell's 128 + N, not 256 - N


if __name__ == "__main__":
    raise SystemExit(main())
