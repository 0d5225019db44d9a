"""DDS environment: what the node does on a user's system, and what the package's own self-contained runs do.

rclpy reads ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE when its context is created, so each entry point
calls ONE of these explicitly before `rclpy.init` (nothing happens at import):

* `apply_ros_defaults()` — the localizer node and the user tools that talk to a user's ROS graph
  (`disam-localizer`, `disam-replay`, `disam-record`; `disam-launch` passes the user's environment on to the
  node unchanged). It behaves like any ROS 2 program: ROS_DOMAIN_ID is honoured (unset = ROS's default, 0),
  and only when ROS_AUTOMATIC_DISCOVERY_RANGE is unset does the package apply its documented default,
  LOCALHOST (a user who sets SUBNET gets SUBNET).
* `isolated_env()` — the package's own demo, tests, benchmarks and `disam-eval-online`: loopback discovery
  and a private random domain, so they never hear (or disturb) a real robot or each other.
"""
from __future__ import annotations

import os
import random
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

DOMAIN_VAR = "ROS_DOMAIN_ID"
RANGE_VAR = "ROS_AUTOMATIC_DISCOVERY_RANGE"
PRIVATE_MARKER = "DISAM_ROS_PRIVATE_DOMAIN"  # set with a private domain, so children and re-entry keep it
ROS_DEFAULT_DOMAIN = 0
MAX_DOMAIN = 232  # highest domain id DDS can map to ports on Linux (ROS 2 docs: "domain ID")
PACKAGE_DEFAULT_RANGE = "LOCALHOST"
RANGES = ("LOCALHOST", "SUBNET", "OFF", "SYSTEM_DEFAULT")
PRIVATE_DOMAINS = (10, 101)  # private picks avoid 0-9, the ids people choose by hand


class EnvError(ValueError):
    """A ROS variable holds a value rcl would refuse (message: one line naming the variable and the fix)."""


@dataclass(frozen=True)
class DdsSettings:
    """What the process will run with, and whether each value came from the user or from a default."""

    domain_id: int
    domain_from_env: bool
    discovery_range: str
    range_from_env: bool

    def describe(self) -> str:
        """One line for the start of a log: the values, where they came from, how to change them."""
        dom = (f"ROS_DOMAIN_ID={self.domain_id}" if self.domain_from_env
               else f"domain {self.domain_id} (ROS_DOMAIN_ID unset: ROS default)")
        rng = (f"ROS_AUTOMATIC_DISCOVERY_RANGE={self.discovery_range}" if self.range_from_env
               else f"discovery {self.discovery_range} (ROS_AUTOMATIC_DISCOVERY_RANGE unset: disam_ros default, "
                    "this host only)")
        return (f"DDS {dom}, {rng}; to change: export ROS_DOMAIN_ID=<0-{MAX_DOMAIN}> to match your camera "
                "driver, ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET to reach other hosts")


def dds_settings(environ: Mapping[str, str]) -> DdsSettings:
    """The decision table of `apply_ros_defaults`, without side effects.

    ROS_DOMAIN_ID: unset or empty -> 0 (what rcl does); an integer 0..232 -> itself; anything else -> EnvError.
    ROS_AUTOMATIC_DISCOVERY_RANGE: unset or empty -> LOCALHOST (package default, where rcl would use SUBNET);
    one of LOCALHOST/SUBNET/OFF/SYSTEM_DEFAULT (any case) -> itself; anything else -> EnvError.
    """
    raw_domain = environ.get(DOMAIN_VAR, "").strip()
    if raw_domain:
        if not raw_domain.isdigit() or int(raw_domain) > MAX_DOMAIN:
            raise EnvError(f"{DOMAIN_VAR}={raw_domain!r} is not a domain id: export an integer 0-{MAX_DOMAIN} "
                           f"(the one your camera driver uses) or unset it for the default {ROS_DEFAULT_DOMAIN}")
        domain = int(raw_domain)
    else:
        domain = ROS_DEFAULT_DOMAIN
    raw_range = environ.get(RANGE_VAR, "").strip()
    if raw_range and raw_range.upper() not in RANGES:
        raise EnvError(f"{RANGE_VAR}={raw_range!r} is not valid: export one of {', '.join(RANGES)} "
                       f"or unset it for the disam_ros default {PACKAGE_DEFAULT_RANGE}")
    return DdsSettings(domain_id=domain, domain_from_env=bool(raw_domain),
                       discovery_range=raw_range.upper() if raw_range else PACKAGE_DEFAULT_RANGE,
                       range_from_env=bool(raw_range))


def _tool_defaults(env: MutableMapping[str, str]) -> None:
    """Where the PyPI ROS wheels live (this interpreter's prefix) and the RMW they ship."""
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


def apply_ros_defaults(environ: MutableMapping[str, str] | None = None) -> DdsSettings:
    """Honour the user's ROS variables; fill in only what is unset (see the module docstring).

    Writes the default discovery range into `environ` (default os.environ) so rcl sees it, never a domain:
    an unset ROS_DOMAIN_ID stays unset and rcl uses 0, exactly like any other ROS 2 node. Raises EnvError.
    """
    env = os.environ if environ is None else environ
    settings = dds_settings(env)
    if not settings.range_from_env:
        env[RANGE_VAR] = settings.discovery_range
        env.pop("ROS_LOCALHOST_ONLY", None)  # ignored by Kilted; beside the range it only makes rcl warn
    _tool_defaults(env)
    return settings


def isolated_env(environ: MutableMapping[str, str] | None = None) -> DdsSettings:
    """Loopback discovery and a private random domain, for the package's own self-contained runs.

    A domain this function chose earlier (in this process or a parent, recorded in DISAM_ROS_PRIVATE_DOMAIN)
    is kept, so a test session, the nodes it starts and a tool called in-process all share one; a domain the
    user exported is replaced, because these runs must not talk to their robot.
    """
    env = os.environ if environ is None else environ
    current = env.get(DOMAIN_VAR, "")
    if not current or env.get(PRIVATE_MARKER) != current:
        current = str(random.SystemRandom().randint(*PRIVATE_DOMAINS))
        env[DOMAIN_VAR] = env[PRIVATE_MARKER] = current
    env[RANGE_VAR] = PACKAGE_DEFAULT_RANGE
    env.pop("ROS_LOCALHOST_ONLY", None)
    _tool_defaults(env)
    return DdsSettings(int(current), True, PACKAGE_DEFAULT_RANGE, True)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a subprocess (with `extra` on top): children see exactly what the
    parent decided (a user's settings, or the private domain of an isolated run)."""
    env = dict(os.environ)
    _tool_defaults(env)
    env.update(extra or {})
    return env
