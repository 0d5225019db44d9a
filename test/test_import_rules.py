"""The house rule on imports, checked on the source: ros -> eval -> tracking -> relocalizer -> retrieval / verify
-> maps -> pose -> model/data, never back (training sits on model/data alone; posegraph sits on the base modules
alone, and only eval, ros and bench import it); only `disam_ros/ros/`
imports rclpy; nothing in the runtime imports the benchmarks; no module imports itself through a circle.

Why: training and map building must run on a GPU box with no ROS at all, and the node must not drag
benchmarks or test doubles into a vehicle's process. A new top-level module must be placed in LAYERS.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "disam_ros"
BASE = {"geometry", "conditions", "fsutil", "logs", "cliutil", "heap", "shipped", "threads"}
LAYERS: dict[str, set[str]] = {
    "disam_ros": set(),  # the package's own __init__
    "geometry": set(),
    "fsutil": set(),
    "logs": set(),
    "cliutil": {"disam_ros"},  # the package version, nothing else
    "heap": set(),
    "shipped": set(),
    "threads": set(),
    "conditions": set(),
    "posegraph": BASE,
    "model": BASE,
    "data": BASE,
    "training": BASE | {"model", "data"},
    "pose": BASE | {"model", "data"},
    "maps": BASE | {"pose", "model", "data"},
    "retrieval": BASE | {"maps", "pose", "model", "data"},
    "verify": BASE | {"maps", "pose", "model", "data"},
    "relocalizer": BASE | {"retrieval", "verify", "maps", "pose", "model", "data"},
    "tracking": BASE | {"relocalizer", "verify", "pose", "retrieval", "maps", "model", "data"},
    "eval": BASE | {"posegraph", "tracking", "relocalizer", "verify", "pose", "retrieval", "maps", "model", "data"},
    "ros": BASE | {"posegraph", "eval", "tracking", "relocalizer", "verify", "pose", "retrieval", "maps", "model",
                   "data"},
    "bench": BASE | {"posegraph", "ros", "eval", "tracking", "relocalizer", "verify", "pose", "retrieval", "maps",
                     "model", "data", "training"},
}
ROS_MODULES = ("rclpy", "rcl_interfaces", "sensor_msgs", "geometry_msgs", "std_msgs", "nav_msgs",
               "diagnostic_msgs", "std_srvs", "lifecycle_msgs", "builtin_interfaces", "visualization_msgs",
               "tf2_msgs")


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


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (a name imported from a package counts as the package's
    module of that name when one exists, else as the package)."""
    known = {module_name(p) for p in SOURCES}
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        mod = module_name(path)
        deps = set()
        for _, name in imported(path):
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != mod:
                deps.add(name)
        graph[mod] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle as [a, b, ..., a], or [] (iterative depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    for root in sorted(graph):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(sorted(graph.get(nxt, ())))))
                path.append(nxt)
    return []


def test_no_import_circle():
    """Package __init__ files re-export their modules, so a module importing its own package's __init__ is
    ignored; any other circle (a imports b imports a) is a design knot to untie."""
    graph = import_graph()
    for mod, deps in graph.items():
        deps.difference_update({d for d in deps if mod.startswith(d + ".")})  # own package __init__
    assert find_cycle(graph) == []


def test_the_cycle_finder_finds_a_hand_made_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


MAX_LINES = 400


def test_no_module_over_400_lines():
    """A module a screen or a few long does one job; past 400 lines it is doing several (split it by job)."""
    long = {str(p.relative_to(PKG.parent)): n for p in SOURCES if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by job: {long}"
