"""The command line every node of the package shares: our `--params-file` flag turned into rcl's arguments, the
params file checked first (rcl's own error for a broken file is a multi-line traceback), and `ConfigError`, the
one-line error a bad parameter or file ends in."""
from __future__ import annotations

from pathlib import Path

import yaml

from disam_ros.cliutil import OneLineParser


class ConfigError(ValueError):
    """A configuration mistake the user fixes at the command line (message: one line with the fix)."""


def check_params_file(path: str, example: str = "config/localizer.yaml") -> None:
    """The checks rcl would fail with a multi-line error: exists, parses as YAML, `node: {ros__parameters: {}}`.
    (Unknown names are refused later, from what rcl actually matched to this node: check_overrides.)"""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"params file '{path}' not found: give an existing YAML file (e.g. {example})")
    try:
        doc = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"params file '{path}' is not valid YAML{at}: fix it (see {example})") from None
    if not isinstance(doc, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("ros__parameters"), dict) for v in doc.values()):
        raise ConfigError(f"params file '{path}' is not '<node>: {{ros__parameters: {{name: value}}}}': "
                          f"fix it (see {example})")


def ros_argv(argv: list[str], prog: str = "disam-localizer",
             description: str = "DISAM localizer node (a ROS 2 lifecycle node).",
             example: str = "config/localizer.yaml") -> list[str]:
    """`--params-file F` (our flag, before --ros-args) -> rcl's `--ros-args --params-file F`, checked first (rcl's
    own error for a broken file is a multi-line traceback). Every node of the package parses its command line so.

    Raises ConfigError for a params file that rcl could not parse; argparse exits 2 for unknown flags."""
    cut = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    own, ros = argv[:cut], argv[cut:]
    parser = OneLineParser(prog=prog, description=description)  # --version and one-line errors, as every tool
    parser.add_argument("--params-file", help=f"ROS 2 parameters YAML (e.g. {example})")
    args = parser.parse_args(own)
    files = [ros[i + 1] for i, a in enumerate(ros[:-1]) if a == "--params-file"]
    if args.params_file:
        files.insert(0, args.params_file)
        ros = ["--ros-args", "--params-file", args.params_file, *ros]
    for f in files:
        check_params_file(f, example)
    return ros
