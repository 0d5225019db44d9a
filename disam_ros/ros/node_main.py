"""The process around every node of the package: command line, rclpy start-up, spin until SIGINT/SIGTERM, and a
teardown that never hangs. One copy, so that the localizer, the pose-graph node and the hint relay exit the same
way (0 on a clean stop, 2 on a configuration error, one line and no traceback)."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import RCLError

from disam_ros.ros import env
from disam_ros.ros.node_cli import ConfigError
from disam_ros.ros.node_signals import StopSignals, fail
from disam_ros.ros.param_decl import one_line


@dataclass(frozen=True)
class NodeProcess:
    """What differs between the package's node processes.

    ros_argv: the node's command line -> rcl's arguments (ConfigError for a bad one); make: the node, given the
    DDS settings applied; start: what runs once the node exists (a lifecycle node's autostart), before spinning;
    farewell: the last log line."""

    prog: str
    node_name: str
    ros_argv: Callable[[list[str]], list[str]]
    make: Callable[[dict], Any]
    start: Callable[[Any], None] | None = None
    farewell: Callable[[Any], str] = lambda node: "shutting down"


def autostart(node: Any) -> None:
    """A lifecycle node's `autostart` parameter: configure and activate at once (ConfigError on failure)."""
    if node.autostart:
        node.start()


def run_node(process: NodeProcess, argv: list[str] | None = None) -> int:
    """Run one node until SIGINT/SIGTERM; the exit status (0 clean, 2 configuration error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        ros = process.ros_argv(argv)
        dds = env.apply_ros_defaults()  # honour ROS_DOMAIN_ID; LOCALHOST only when no range is exported
        rclpy.init(args=[process.prog, *ros], signal_handler_options=SignalHandlerOptions.NO)
    except (ConfigError, env.EnvError) as exc:
        return fail(str(exc), process.prog)
    except RCLError as exc:  # e.g. a remap or --ros-args flag rcl cannot parse
        return fail(f"{one_line(exc)} (check the --ros-args)", process.prog)
    stop, node, rc = StopSignals(process.node_name), None, 0
    executor = SingleThreadedExecutor()
    try:
        node = process.make(dds)  # a misspelt or mistyped parameter fails here
        if process.start is not None:
            process.start(node)
        stop.install()  # again after the start-up imports: one may take SIGTERM over (pycolmap's glog)
        executor.add_node(node)
        while not stop.event.is_set() and rclpy.ok():  # finalized too, like rclcpp nodes, until a signal
            executor.spin_once(timeout_sec=0.1)
        node.get_logger().info(process.farewell(node))
    except ConfigError as exc:  # already logged by the node's configure step, or raised before it could log
        if node is None:
            rclpy.logging.get_logger(process.node_name).error(str(exc))
        rc = 2
    finally:
        close = getattr(node, "close", None)
        clean = close is None or close() is not False  # the localizer's False: a worker was left running
        executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    if not clean:  # a worker still inside a long decode/inference: interpreter teardown must not wait on it
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc
