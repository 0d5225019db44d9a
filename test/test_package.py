"""The repository is a valid ament_python package: package.xml is sane and `colcon build` installs it."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_package_xml_format3_with_real_maintainer_and_deps():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "disam_ros"
    email = root.find("maintainer").get("email")
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", email), email
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "geometry_msgs", "diagnostic_msgs", "std_msgs"} <= deps
    assert root.find("export/build_type").text == "ament_python"
    assert (REPO / "resource" / "disam_ros").is_file()


def test_requirements_pin_cpu_torch_exactly():
    reqs = (REPO / "requirements.txt").read_text().splitlines()
    torch_lines = [r for r in reqs if re.match(r"^torch\b", r)]
    assert torch_lines == ["torch==2.13.0"]


@pytest.mark.slow
def test_colcon_build_installs_package(tmp_path):
    colcon = shutil.which("colcon", path=str(Path(sys.executable).parent)) or shutil.which("colcon")
    if colcon is None:
        pytest.skip("colcon not installed (it comes with requirements.txt: colcon-common-extensions)")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(
        [colcon, "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(REPO),
         "--packages-select", "disam_ros", "--build-base", str(tmp_path / "build"),
         "--install-base", str(tmp_path / "install")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    prefix = tmp_path / "install" / "disam_ros"
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "disam_ros").is_file()
    assert (prefix / "share" / "disam_ros" / "package.xml").is_file()
    # ament_python convention: executables under lib/<pkg> so `ros2 run disam_ros <exe>` finds them
    assert (prefix / "lib" / "disam_ros" / "disam-bench").is_file()
    for folder in ("launch", "config"):
        for src in (REPO / folder).glob("*.*"):
            if src.suffix in (".py", ".yaml"):
                assert (prefix / "share" / "disam_ros" / folder / src.name).is_file(), src.name
