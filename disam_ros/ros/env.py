"""Loopback-only DDS environment, applied before rclpy is imported (import this module first).

rclpy reads the discovery settings when its context is created, so every entry point (node `main()`,
launcher, benchmark) imports this module before anything imports rclpy. On these machines DDS must never
leave loopback: Kilted ignores ROS_LOCALHOST_ONLY, and without ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
discovery multicasts on the network interface.
"""
from __future__ import annotations

import os
import random
import sys
from collections.abc import MutableMapping

DISCOVERY_RANGE = "LOCALHOST"


def loopback_env(environ: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Set the loopback DDS variables in `environ` (default: os.environ) and return it.

    * ROS_AUTOMATIC_DISCOVERY_RANGE is forced to LOCALHOST (never left to the caller);
    * ROS_DOMAIN_ID is kept when set (so a node and its camera driver share it), else a random private
      domain is chosen, so parallel sessions on one machine never hear each other;
    * AMENT_PREFIX_PATH defaults to this interpreter's prefix (the virtualenv holding the ROS wheels),
      RMW_IMPLEMENTATION to rmw_fastrtps_cpp (the one the wheels ship).
    """
    env = os.environ if environ is None else environ
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = DISCOVERY_RANGE
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; mixing both makes rcl warn on every start
    if not env.get("ROS_DOMAIN_ID"):
        env["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 101))
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    return env


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of this process's (loopback) environment for a subprocess, with `extra` on top."""
    env = dict(loopback_env())
    env.update(extra or {})
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = DISCOVERY_RANGE
    return env


loopback_env()
