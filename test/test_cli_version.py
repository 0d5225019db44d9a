"""Every console script answers `--version` with its name and the package version, and the three places that
state the version (package.xml for colcon, setup.py for pip, `disam_ros.__version__` for the code) agree.

Why: a bug report from a vehicle should name what ran; `--version` answers before anything else is checked (a
command whose other arguments are required answers it too) and before rclpy, torch or a map is touched.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from test_docs import entry_points

REPO = Path(__file__).resolve().parents[1]


def stated_versions() -> dict[str, str]:
    setup_py = re.search(r'version="([^"]+)"', (REPO / "setup.py").read_text())
    init = re.search(r'__version__ = "([^"]+)"', (REPO / "disam_ros" / "__init__.py").read_text())
    return {"package.xml": ET.parse(REPO / "package.xml").getroot().findtext("version"),
            "setup.py": setup_py and setup_py.group(1), "disam_ros.__version__": init and init.group(1)}


def test_the_version_is_stated_once_in_three_places():
    versions = stated_versions()
    assert len(set(versions.values())) == 1 and None not in versions.values(), versions


CODE = """
import importlib, io, sys, contextlib
for name, target in zip(sys.argv[1::2], sys.argv[2::2]):
    module, func = target.split(":")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            rc = getattr(importlib.import_module(module), func)(["--version"])
        except SystemExit as e:
            rc = e.code
    print("RESULT", name, rc or 0, repr(out.getvalue()))
"""


def test_every_console_script_answers_version():
    scripts = entry_points()
    assert len(scripts) >= 20, scripts
    version = stated_versions()["package.xml"]
    args = [x for item in scripts.items() for x in item]
    out = subprocess.run([sys.executable, "-c", CODE, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    results = {}
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            _, name, rc, text = line.split(" ", 3)
            results[name] = (int(rc), ast.literal_eval(text))
    assert set(results) == set(scripts), sorted(set(scripts) - set(results))
    for name, (rc, text) in results.items():
        assert (rc, text) == (0, f"{name} (disam_ros {version})\n"), (name, rc, text)
