"""Hint relay: the localizer's loop-closure hints in, the pose message another SLAM back end takes out
(docs/posegraph.md, "Feeding other back ends").

* `target: rtabmap` (default): per verified hint a geometry_msgs/PoseWithCovarianceStamped on `global_pose`
  (rtabmap's global pose prior): stamp = the hint's `query_stamp_ns`, frame_id = `camera_frame` (the camera's
  optical frame in your TF tree; rtabmap applies camera -> base from TF), pose = the solved camera pose in the
  map frame, covariance = `relative_covariance` rotated from the keyframe's optical frame into the map frame.
* `target: slam_toolbox`: per verified hint, at most once per `min_period_s` of hint stamps, the BASE pose in the
  map frame (camera pose composed with `camera_in_base`^-1) on `initialpose`, frame_id = `map_frame`: a
  relocalization trigger for slam_toolbox's localization mode, which restarts its scan matching on each.

A plain rclpy node (nothing expensive to configure, so no lifecycle): the parameters are checked at start (one
line and exit 2 for a bad one). A hint that does not parse is counted and logged (throttled) and skipped; the node
publishes only poses taken from a hint and never dies on a message. SIGINT/SIGTERM stop it cleanly.

Usage::

    disam-hint-relay --params-file config/hint_relay.yaml --ros-args -p camera_frame:=camera_optical_frame \
        -r loop_closure:=/disam_localizer/loop_closure -r global_pose:=/rtabmap/global_pose
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header, String

from disam_ros.logs import clip
from disam_ros.ros import env
from disam_ros.ros import hint_parse as H
from disam_ros.ros import hint_relay_math as RM
from disam_ros.ros import node_stats as S
from disam_ros.ros.messages import make_pose
from disam_ros.ros.node_main import NodeProcess, run_node
from disam_ros.ros.node_params import TOPIC_RE, ConfigError, Param, declare_all, one_line, refuse_unknown
from disam_ros.ros.node_params import ros_argv as node_ros_argv

NODE_NAME = "disam_hint_relay"
PROG = "disam-hint-relay"
TARGETS = ("rtabmap", "slam_toolbox")
TOPICS = {"rtabmap": "global_pose", "slam_toolbox": "initialpose"}  # relative: remap with -r NAME:=/ns/NAME
IDENTITY = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
COUNTERS = ("hints_received", "hints_rejected", "hints_unverified_skipped", "hints_throttled", "poses_published")

PARAMETERS: tuple[Param, ...] = (
    Param("target", "rtabmap", "Back end fed: rtabmap (PoseWithCovarianceStamped on global_pose per verified hint, "
          "camera optical frame) or slam_toolbox (base pose on initialpose, a throttled relocalization trigger).",
          constraints=", ".join(TARGETS)),
    Param("camera_frame", "", "rtabmap: header.frame_id of global_pose, the camera's optical frame in your TF tree "
          "(rtabmap looks up camera -> base itself). Required for target rtabmap.",
          constraints="a frame name (rtabmap)"),
    Param("map_frame", "map", "The localizer's map frame: hints in another frame are refused; slam_toolbox: "
          "header.frame_id of initialpose (slam_toolbox's map frame must be this one)."),
    Param("camera_in_base", IDENTITY, "slam_toolbox: T_base_camera [x, y, z, qx, qy, qz, qw] of the localizer's "
          "camera optical frame (as the pose-graph node's camera_in_base); identity = the base is the camera.",
          constraints="7 numbers, non-zero quaternion"),
    Param("verified_only", True, "Relay verified hints only; false (rtabmap only) = unverified hints too, with the "
          "diagonal covariance below (their JSON carries none)."),
    Param("unverified_sigma_m", 5.0, "rtabmap with verified_only false: position standard deviation of an "
          "unverified hint (m).", constraints="> 0"),
    Param("unverified_sigma_deg", 10.0, "rtabmap with verified_only false: rotation standard deviation of an "
          "unverified hint (deg).", constraints="> 0"),
    Param("min_period_s", 5.0, "slam_toolbox: at most one initialpose per this many seconds of hint stamps (each "
          "one restarts slam_toolbox's scan matching); 0 = every verified hint.", constraints=">= 0"),
    Param("log_throttle_s", 5.0, "Warnings of one kind (hints refused, ...) are logged at most once per this period; "
          "the next line says how many were held back (all are counted).", constraints="> 0"),
)
PARAMETER_NAMES = tuple(p.name for p in PARAMETERS)
FLOAT_PARAMS = frozenset(p.name for p in PARAMETERS if isinstance(p.default, float))


@dataclass(frozen=True)
class RelayConfig:
    """Validated parameter values."""

    target: str
    camera_frame: str
    map_frame: str
    camera_in_base: list
    verified_only: bool
    unverified_sigma_m: float
    unverified_sigma_deg: float
    min_period_s: float
    log_throttle_s: float


assert {f.name for f in fields(RelayConfig)} == set(PARAMETER_NAMES)


def check_value(name: str, value: Any) -> Any:
    """Validate one value (ValueError, one line); returns it normalised (floats as float)."""
    if name in FLOAT_PARAMS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"parameter '{name}' must be a finite number, got {value!r}")
        value = float(value)
    if name == "target" and value not in TARGETS:
        raise ValueError(f"target {value!r} is not valid: use one of {', '.join(TARGETS)}")
    if name in ("map_frame", "camera_frame") and value and not TOPIC_RE.fullmatch(value):
        raise ValueError(f"{name} {value!r} is not a frame name: use letters, digits, _ and /")
    if name == "map_frame" and not value:
        raise ValueError("map_frame is empty: give the localizer's map frame (default 'map')")
    if name == "camera_in_base":
        H.parse_camera_in_base(value)  # the pose-graph node's parser: same format, same one-line errors
        value = [float(v) for v in value]
    elif name in ("unverified_sigma_m", "unverified_sigma_deg", "log_throttle_s") and value <= 0.0:
        raise ValueError(f"parameter '{name}' must be > 0, got {value}")
    elif name == "min_period_s" and value < 0.0:
        raise ValueError(f"min_period_s must be >= 0 (0 = every verified hint), got {value}")
    return value


def check_config(values: dict[str, Any]) -> RelayConfig:
    """Per-value checks, then the ones between values; ValueError (one line) naming the fix."""
    values = {name: check_value(name, values[name]) for name in PARAMETER_NAMES}
    if values["target"] == "rtabmap" and not values["camera_frame"]:
        raise ValueError("camera_frame is empty: target rtabmap needs the camera's optical frame name in your TF "
                         "tree, e.g. -p camera_frame:=camera_color_optical_frame")
    if values["target"] == "slam_toolbox" and not values["verified_only"]:
        raise ValueError("verified_only false does not apply to target slam_toolbox (an unverified hint is no "
                         "relocalization trigger): set verified_only true")
    return RelayConfig(**values)


def read_config(node: Node) -> RelayConfig:
    return check_config({name: node.get_parameter(name).value for name in PARAMETER_NAMES})


def ros_argv(argv: list[str]) -> list[str]:
    """`--params-file F` (before --ros-args) -> rcl's `--ros-args --params-file F`, checked as the other nodes'."""
    return node_ros_argv(argv, PROG, "Relays the localizer's loop-closure hints to rtabmap (global_pose) or "
                         "slam_toolbox (initialpose).", "config/hint_relay.yaml")


# ---------------------------------------------------------------------------------------------- node


def pose_message(ns: int, frame_id: str, pose: H.Pose, cov: Any) -> PoseWithCovarianceStamped:
    """PoseWithCovarianceStamped stamped with integer nanoseconds (exact), covariance row-major x y z rx ry rz."""
    sec, nanosec = divmod(int(ns), RM.NS_PER_S)
    msg = PoseWithCovarianceStamped(header=Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id))
    msg.pose.pose = make_pose(pose.position, pose.quat)
    msg.pose.covariance = [float(v) for v in np.asarray(cov, np.float64).reshape(36)]
    return msg


class HintRelayNode(Node):
    """Subscribes to `loop_closure` (std_msgs/String, the localizer's hints) and publishes `global_pose`
    (rtabmap) or `initialpose` (slam_toolbox). ConfigError (one line) at construction for a bad parameter."""

    def __init__(self, dds: env.DdsSettings | None = None, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.get_logger().info(self._dds_line(dds))
        declare_all(self, PARAMETERS, FLOAT_PARAMS)  # ConfigError for an override of the wrong type
        refuse_unknown(tuple(getattr(self, "_parameter_overrides", {}) or {}), PARAMETER_NAMES, NODE_NAME)
        try:
            cfg = self.cfg = read_config(self)
        except ValueError as exc:
            raise ConfigError(one_line(exc)) from None
        self.base_camera = H.parse_camera_in_base(cfg.camera_in_base)
        self.unverified_cov = (None if cfg.verified_only
                               else H.diagonal_covariance(cfg.unverified_sigma_m, cfg.unverified_sigma_deg))
        self.gate = RM.TriggerGate(cfg.min_period_s)
        self.counts = dict.fromkeys(COUNTERS, 0)
        self._log_warn = S.LogThrottle(lambda text: self.get_logger().warning(text), cfg.log_throttle_s)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.create_publisher(PoseWithCovarianceStamped, TOPICS[cfg.target], qos)
        self.sub = self.create_subscription(String, "loop_closure", self._on_hint, qos)
        what = (f"frame_id {cfg.camera_frame}, {'verified hints only' if cfg.verified_only else 'unverified too'}"
                if cfg.target == "rtabmap" else
                f"base pose in {cfg.map_frame}, camera_in_base {cfg.camera_in_base}, at most every "
                f"{cfg.min_period_s:g} s")
        self.get_logger().info(f"relaying hints on {self.sub.topic_name} to {cfg.target} on {self.pub.topic_name} "
                               f"({what})")

    def _dds_line(self, dds: env.DdsSettings | None) -> str:
        try:
            dds = dds or env.dds_settings(os.environ)
        except env.EnvError as exc:
            return f"DDS: {exc}"
        return replace(dds, domain_id=self.context.get_domain_id()).describe()

    def _reject(self, counter: str, text: str) -> None:
        self.counts[counter] += 1
        self._log_warn(text)

    def _on_hint(self, msg: String) -> None:
        """One hint -> at most one pose message; nothing raised out of here (a bad hint is counted and logged)."""
        try:
            self.relay(msg.data)
        except Exception as exc:  # noqa: BLE001  (a bug on one message must not end the node)
            self._reject("hints_rejected", f"hint relay failed: {type(exc).__name__}: {one_line(exc)}")

    def relay(self, text: str) -> PoseWithCovarianceStamped | None:
        """The message published for hint `text`, or None (refused, unverified, throttled)."""
        cfg = self.cfg
        self.counts["hints_received"] += 1
        try:
            hint = H.parse_hint(text)
        except H.HintError as exc:
            self._reject("hints_rejected", f"{exc}: skipped")
            return None
        if hint.frame_id and hint.frame_id != cfg.map_frame:
            self._reject("hints_rejected", f"loop-closure hint in frame {clip(hint.frame_id)}, not map_frame "
                         f"'{cfg.map_frame}': skipped; set parameter map_frame")
            return None
        if not hint.verified and (cfg.verified_only or cfg.target != "rtabmap"):
            self.counts["hints_unverified_skipped"] += 1
            return None
        ns = RM.stamp_ns(text, hint)
        if cfg.target == "rtabmap":
            pose, cov = RM.camera_pose(hint, self.unverified_cov)
            frame_id = cfg.camera_frame
        else:
            pose, cov = RM.base_pose(hint, self.base_camera)
            frame_id = cfg.map_frame
        if not RM.is_finite(pose, cov):
            self._reject("hints_rejected", f"hint at {hint.stamp:.3f} s gave a non-finite pose: skipped")
            return None
        if cfg.target == "slam_toolbox" and not self.gate.allow(ns):
            self.counts["hints_throttled"] += 1
            return None
        out = pose_message(ns, frame_id, pose, cov)
        self.pub.publish(out)
        self.counts["poses_published"] += 1
        if cfg.target == "slam_toolbox":
            p = pose.position
            self.get_logger().info(f"initialpose sent: base at ({p[0]:.2f}, {p[1]:.2f}, {p[2]:.2f}) in "
                                   f"{frame_id}, hint stamp {hint.stamp:.3f} s")
        return out

    def summary(self) -> str:
        c = self.counts
        return (f"{c['poses_published']} poses published from {c['hints_received']} hints ({c['hints_rejected']} "
                f"refused, {c['hints_unverified_skipped']} unverified skipped, {c['hints_throttled']} throttled)")


# ---------------------------------------------------------------------------------------------- main


PROCESS = NodeProcess(PROG, NODE_NAME, ros_argv, lambda dds: HintRelayNode(dds=dds),
                      farewell=lambda node: f"shutting down: {node.summary()}")


def main(argv: list[str] | None = None) -> int:
    """Run the relay until SIGINT/SIGTERM; 0 on a clean stop, 2 on a configuration error (one line)."""
    return run_node(PROCESS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
