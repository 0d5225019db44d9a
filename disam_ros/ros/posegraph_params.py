"""The pose-graph node's parameters: one table (name, default, description), their validation, and the command
line that feeds them to rcl.

Kept apart from the node so launch/posegraph.launch.py, config/posegraph.yaml and docs/posegraph.md are checked
against one list (test/test_launch_params.py). Every way of getting a parameter wrong ends in one line naming
the fix, as for the localizer (disam_ros/ros/node_params.py, whose Param and ConfigError this reuses).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from rclpy.node import Node

from disam_ros.ros.hint_parse import parse_camera_in_base
from disam_ros.ros.node_params import TOPIC_RE, Param
from disam_ros.ros.node_params import ros_argv as node_ros_argv

NODE_NAME = "disam_posegraph"
PROG = "disam-posegraph"
ROBUST = ("cauchy", "huber", "none")
QOS = ("reliable", "best_effort")
IDENTITY = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]

# The PoseGraphConfig fields passed through unchanged (disam_ros.posegraph.graph.PoseGraphConfig). All start at the
# graph's defaults except max_nodes (NODE_MAX_NODES): the node adds a node per odometry message, at up to 100 Hz.
GRAPH_FIELDS = ("robust", "robust_k", "odom_sigma_m_per_m", "odom_sigma_deg_per_m", "keyframe_m", "keyframe_deg",
                "keyframe_s", "closure_max_dt_s", "max_nodes", "anchor_agree", "max_odom_position_m")

PARAMETERS: tuple[Param, ...] = (
    Param("map_frame", "map", "Frame of the corrected pose, path and markers, and parent of the published "
          "map->odom transform (the localizer's map frame: hints in another frame are refused)."),
    Param("odom_frame", "odom", "Frame of the odometry (header.frame_id of nav_msgs/Odometry; others are refused) "
          "and child of the map->odom transform."),
    Param("camera_in_base", IDENTITY, "T_base_camera [x, y, z, qx, qy, qz, qw]: the localizer's camera optical "
          "frame in the odometry's base frame; identity = the odometry is of the camera itself.",
          constraints="7 numbers, non-zero quaternion"),
    Param("odom_qos", "reliable", "Odometry subscription reliability: reliable, or best_effort for sensor-data "
          "publishers (a reliable subscription does not hear a best-effort publisher).",
          constraints="reliable, best_effort"),
    Param("use_unverified", False, "Also add unverified hints (retrieval only, no keyframe geometry) as absolute "
          "pose factors with the covariance below; false = verified hints only."),
    Param("unverified_sigma_m", 5.0, "Position standard deviation of an unverified hint.", constraints="> 0"),
    Param("unverified_sigma_deg", 10.0, "Rotation standard deviation of an unverified hint.", constraints="> 0"),
    Param("publish_tf", True, "Publish map->odom on /tf (tf2_msgs/TFMessage, where tf2_msgs is installed); "
          "~/map_to_odom (geometry_msgs/TransformStamped) is published either way."),
    Param("max_path_poses", 5000, "~/path carries at most this many poses, the newest.", constraints=">= 1"),
    Param("path_period_s", 1.0, "~/path at most once per this period (0 = after every update; each refresh reads "
          "the newest max_path_poses nodes and rewrites the poses that moved).", constraints=">= 0"),
    Param("markers_period_s", 1.0, "~/markers at most once per this period (0 = after every update).",
          constraints=">= 0"),
    Param("max_marker_closures", 2000, "~/markers draws the newest this many closures.", constraints=">= 1"),
    Param("pending_hints", 32, "Hints newer than the latest odometry wait for it, at most this many (the oldest "
          "is dropped and counted).", constraints=">= 0"),
    Param("diagnostics_period_s", 1.0, "Period of the /diagnostics status.", constraints="> 0"),
    Param("log_throttle_s", 5.0, "Warnings and errors of one kind (refused odometry or hints, ...) are logged at "
          "most once per this period; the next line says how many were held back (all are counted in "
          "/diagnostics).", constraints="> 0"),
    Param("robust", "cauchy", "Robust kernel of closure factors (a wrong closure is down-weighted, not obeyed).",
          constraints=", ".join(ROBUST)),
    Param("robust_k", 3.0, "Kernel width in sigmas of the whole 6-D whitened residual (3: a typical correct "
          "closure keeps a weight of ~0.6, one 9 sigma off drops to 0.1).", constraints="> 0"),
    Param("odom_sigma_m_per_m", 0.02, "Odometry position noise per metre travelled.", constraints="> 0"),
    Param("odom_sigma_deg_per_m", 0.3, "Odometry rotation noise (deg) per metre travelled.", constraints="> 0"),
    Param("keyframe_m", 0.0, "A new graph node after this distance (0 = every odometry message).",
          constraints=">= 0"),
    Param("keyframe_deg", 0.0, "... or this rotation (0 = off).", constraints=">= 0"),
    Param("keyframe_s", 0.0, "... or this time (0 = off).", constraints=">= 0"),
    Param("closure_max_dt_s", 0.5, "A hint attaches to the graph node within this time of its stamp, else it is "
          "refused and counted (hints_unmatched).", constraints="> 0"),
    Param("max_nodes", 2000, "Graph nodes kept: past it the graph restarts at its newest node (its marginal "
          "covariance as prior); bounded memory and a per-message cost that stays flat on long drives (iSAM2's "
          "update grows with the graph: 20 s of 100 Hz odometry at 2000).", constraints=">= 2"),
    Param("anchor_agree", 2, "Hints from different map keyframes that must agree on map->odom before the graph "
          "trusts the map frame (1: the first hint does; one wrong first hint then moves the whole trajectory).",
          constraints=">= 1"),
    Param("max_odom_position_m", 1e7, "Odometry farther than this from the odometry origin is refused "
          "(odometry_rejected): not a physical pose, and it would overflow the chain.", constraints="> 0"),
    Param("max_odom_speed_mps", 100.0, "Odometry that moved faster than this since the previous message is "
          "refused as a jump, unless 3 messages in a row continue it (then the odometry chain is reset: "
          "odometry_resets).", constraints="> 0"),
    Param("max_odom_gap_s", 10.0, "A stamp more than this after the previous one (a clock jump) is refused, "
          "unless 3 messages in a row continue it; a stamp before the previous one is refused the same way.",
          constraints="> 0"),
    Param("autostart", True, "disam-posegraph configures and activates itself at start; false = stay "
          "unconfigured until a lifecycle manager drives it."),
)
PARAMETER_NAMES = tuple(p.name for p in PARAMETERS)
FLOAT_PARAMS = frozenset(p.name for p in PARAMETERS if isinstance(p.default, float))


@dataclass(frozen=True)
class PoseGraphNodeConfig:
    """Validated parameter values."""

    map_frame: str
    odom_frame: str
    camera_in_base: list
    odom_qos: str
    use_unverified: bool
    unverified_sigma_m: float
    unverified_sigma_deg: float
    publish_tf: bool
    max_path_poses: int
    path_period_s: float
    markers_period_s: float
    max_marker_closures: int
    pending_hints: int
    diagnostics_period_s: float
    log_throttle_s: float
    robust: str
    robust_k: float
    odom_sigma_m_per_m: float
    odom_sigma_deg_per_m: float
    keyframe_m: float
    keyframe_deg: float
    keyframe_s: float
    closure_max_dt_s: float
    max_nodes: int
    anchor_agree: int
    max_odom_position_m: float
    max_odom_speed_mps: float
    max_odom_gap_s: float
    autostart: bool

    def graph_kwargs(self) -> dict[str, Any]:
        """The PoseGraphConfig keyword arguments these parameters set."""
        return {k: getattr(self, k) for k in GRAPH_FIELDS}


assert {f.name for f in fields(PoseGraphNodeConfig)} == set(PARAMETER_NAMES)


def check_value(name: str, value: Any) -> Any:
    """Validate one value (ValueError, one line); returns it normalised (floats as float)."""
    if name in FLOAT_PARAMS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"parameter '{name}' must be a finite number, got {value!r}")
        value = float(value)
    if name in ("map_frame", "odom_frame") and not TOPIC_RE.fullmatch(value or "-"):
        raise ValueError(f"{name} {value!r} is not a frame name: use letters, digits, _ and /")
    if name == "camera_in_base":
        parse_camera_in_base(value)
        value = [float(v) for v in value]
    elif name == "odom_qos" and value not in QOS:
        raise ValueError(f"odom_qos {value!r} is not valid: use one of {', '.join(QOS)}")
    elif name == "robust" and value not in ROBUST:
        raise ValueError(f"robust {value!r} is not valid: use one of {', '.join(ROBUST)}")
    elif name in ("unverified_sigma_m", "unverified_sigma_deg", "robust_k", "odom_sigma_m_per_m",
                  "odom_sigma_deg_per_m", "closure_max_dt_s", "diagnostics_period_s", "log_throttle_s",
                  "max_odom_position_m", "max_odom_speed_mps", "max_odom_gap_s") and value <= 0.0:
        raise ValueError(f"parameter '{name}' must be > 0, got {value}")
    elif name in ("keyframe_m", "keyframe_deg", "keyframe_s", "path_period_s", "markers_period_s") and value < 0.0:
        raise ValueError(f"parameter '{name}' must be >= 0 (0 = off), got {value}")
    elif name in ("max_path_poses", "max_marker_closures") and value < 1:
        raise ValueError(f"parameter '{name}' must be >= 1, got {value}")
    elif name == "pending_hints" and value < 0:
        raise ValueError(f"pending_hints must be >= 0, got {value}")
    elif name == "anchor_agree" and value < 1:
        raise ValueError(f"anchor_agree must be >= 1 (hints that must agree before the map frame is trusted), "
                         f"got {value}")
    elif name == "max_nodes" and value < 2:
        raise ValueError(f"max_nodes must be >= 2 (a graph needs two nodes to correct anything), got {value}")
    return value


def read_config(node: Node) -> PoseGraphNodeConfig:
    return PoseGraphNodeConfig(**{p.name: check_value(p.name, node.get_parameter(p.name).value)
                                  for p in PARAMETERS})


def ros_argv(argv: list[str]) -> list[str]:
    """`--params-file F` (before --ros-args) -> rcl's `--ros-args --params-file F`, checked as the localizer's."""
    return node_ros_argv(argv, PROG, "Pose-graph node (a ROS 2 lifecycle node).", "config/posegraph.yaml")
