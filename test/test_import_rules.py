"""The house rule on imports, checked on the source: ros -> eval -> relocalizer -> retrieval -> model/data,
never back; only `disam_ros/ros/` imports rclpy; nothing in the runtime imports the benchmarks.

Why: training and map building must run on a GPU box with no ROS at all, and the node must not drag
benchmarks or test doubles into a vehicle's process. A new top-level module must be placed in LAYERS.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "disam_ros"
BASE = {"geometry", "conditions", "fsutil", "logs", "cliutil", "heap"}
LAYERS: dict[str, set[str]] = {
    "disam_ros": set(),  # the package's own __init__
    "geometry": set(),
    "fsutil": set(),
    "logs": set(),
    "cliutil": set(),
    "heap": set(),
    "conditions": set(),
    "model": BASE,
    "data": BASE,
    "training": BASE | {"model", "data"},
    "retrieval": BASE | {"model", "data"},
    "relocalizer": BASE | {"retrieval", "model", "data"},
    "tracking": BASE | {"relocalizer", "retrieval", "model", "data"},
    "eval": BASE | {"tracking", "relocalizer", "retrieval", "model", "data"},
    "ros": BASE | {"eval", "tracking", "relocalizer", "retrieval", "model", "data"},
    "bench": BASE | {"ros", "eval", "tracking", "relocalizer", "retrieval", "model", "data", "training"},
}
ROS_MODULES = ("rclpy", "rcl_interfaces", "sensor_msgs", "geometry_msgs", "std_msgs", "nav_msgs",
               "diagnostic_msgs", "std_srvs", "lifecycle_msgs", "builtin_interfaces")


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imported(path: Path, mod: str = "") -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, relative ones resolved, `from disam_ros import
    x` counted as importing disam_ros.x (lazy imports inside functions included: they run too)."""
    mod = mod or module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "disam_ros":
                out += [(node.lineno, f"disam_ros.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, base))
    return out


SOURCES = sorted(PKG.rglob("*.py"))


def test_every_module_has_a_layer():
    unknown = sorted({layer_of(module_name(p)) for p in SOURCES} - set(LAYERS))
    assert not unknown, f"place these top-level modules in LAYERS: {unknown}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PKG.parent)))
def test_imports_follow_the_layers(path: Path):
    here = layer_of(module_name(path))
    bad = []
    for line, name in imported(path):
        top = name.split(".")[0]
        if top in ROS_MODULES and here not in ("ros",):
            bad.append(f"line {line}: {name} (only disam_ros/ros imports ROS)")
        if top == "disam_ros" and "." in name:
            there = layer_of(name)
            if there != here and there not in LAYERS.get(here, set()):
                bad.append(f"line {line}: {name} ({here} may import {sorted(LAYERS.get(here, set()))})")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path):
    """The rule above must be able to fail: a retrieval module importing rclpy and the node is caught."""
    fake = tmp_path / "probe.py"
    fake.write_text("import rclpy\nfrom disam_ros.ros import localizer_node\nfrom ..eval import metrics\n")
    names = [n for _, n in imported(fake, "disam_ros.retrieval.probe")]
    assert names == ["rclpy", "disam_ros.ros", "disam_ros.eval"]
    assert "ros" not in LAYERS["retrieval"] and "eval" not in LAYERS["retrieval"]
