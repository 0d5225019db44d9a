"""Declaring a node's parameters from a table and refusing the ones it does not declare, shared by every node of
the package: an override of the wrong type or a misspelt name ends in one line naming the fix, not a traceback."""
from __future__ import annotations

import difflib
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.node import Node

from disam_ros.ros.node_cli import ConfigError

# Parameters every rclpy node may be given besides ours (rclpy declares or reads them itself).
BUILTIN_PARAMS = ("use_sim_time", "start_type_description_service")
BUILTIN_PREFIXES = ("qos_overrides.",)
_TYPE_NAMES = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string",
               list: "a list of numbers"}


def declare_all(node: Node, parameters: tuple, float_params: frozenset) -> None:
    """Declare `parameters` (Param) on `node`: read-only unless dynamic, float ones and lists dynamically typed.

    An override of the wrong type (`-p top_n:=abc`) becomes a ConfigError naming the expected type, instead of
    rclpy's InvalidParameterTypeException traceback. Shared by every node of the package."""
    for p in parameters:
        desc = ParameterDescriptor(description=p.description, read_only=not p.dynamic,
                                   additional_constraints=p.constraints,
                                   dynamic_typing=p.name in float_params or isinstance(p.default, list))
        try:
            node.declare_parameter(p.name, p.default, desc)
        except ParameterException as exc:
            raise ConfigError(f"parameter '{p.name}' must be {_TYPE_NAMES[type(p.default)]} "
                              f"(default {_text(p.default)}): fix -p {p.name}:=... or its params file entry "
                              f"({str(exc).split(':')[0]})") from None


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else repr(value)


def refuse_unknown(names: list[str] | tuple[str, ...], known: tuple[str, ...], node_name: str) -> None:
    """Refuse parameters a node does not declare (rclpy silently ignores them), naming the closest or all."""
    unknown = sorted(n for n in names if n not in known and n not in BUILTIN_PARAMS
                     and not n.startswith(BUILTIN_PREFIXES))
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known are {', '.join(known)}"
    more = f" (and {len(unknown) - 1} more unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
    raise ConfigError(f"unknown parameter '{name}' for {node_name}: {hint}{more}")


def one_line(exc: BaseException) -> str:
    """Our errors are already one line naming the fix; others get their type and first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, ValueError) else f"{type(exc).__name__}: {text}"
