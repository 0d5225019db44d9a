"""Pose-graph state <-> standard ROS messages: odometry in; corrected pose, path, map->odom transform and RViz
markers out.

Small pure converters (no node state) so the node stays about lifecycle, topics and timing, and so the message
formats documented in docs/posegraph.md live in one place. `TFMessage` is tf2_msgs/TFMessage where it imports
(a ROS install, or a venv after `make venv`, which generates it: tools/build_tf2_msgs.py), else None.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, PoseStamped, PoseWithCovarianceStamped, TransformStamped
from nav_msgs.msg import Odometry, Path
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from disam_ros.ros.messages import make_pose, pose_is_finite, sec_to_stamp, stamp_to_sec

try:
    from tf2_msgs.msg import TFMessage
except ImportError:  # no tf2_msgs wheel on PyPI; the node then publishes ~/map_to_odom only
    TFMessage = None

MARKER_NS = ("keyframes", "closures_accepted", "closures_rejected")  # one marker each, ids 0, 1, 2: stable
GREEN, RED, BLUE = (0.1, 0.8, 0.2, 1.0), (0.9, 0.1, 0.1, 1.0), (0.2, 0.4, 1.0, 0.8)


def odometry_pose(msg: Odometry) -> tuple[float, np.ndarray, np.ndarray]:
    """(stamp, position, quat xyzw) of T_odom_base; ValueError (one line) for an unusable message."""
    t = stamp_to_sec(msg.header.stamp)
    p, o = msg.pose.pose.position, msg.pose.pose.orientation
    pos = np.array([p.x, p.y, p.z], np.float64)
    quat = np.array([o.x, o.y, o.z, o.w], np.float64)
    if t <= 0.0:
        raise ValueError("odometry without a stamp (header.stamp is 0): the graph orders nodes by stamp")
    if not (np.isfinite(pos).all() and np.isfinite(quat).all()):
        raise ValueError(f"odometry at {t:.3f} s holds NaN or inf: skipped")
    n = float(np.linalg.norm(quat))
    if abs(n - 1.0) > 1e-2:
        raise ValueError(f"odometry at {t:.3f} s has a quaternion of norm {n:.3g}, not a rotation: skipped")
    return t, pos, quat / n


def pose_with_covariance(t: float, frame_id: str, position: Any, quat: Any, cov: Any) -> PoseWithCovarianceStamped:
    """The corrected latest pose (map frame) with its 6x6 covariance, row-major, ROS order x y z rx ry rz."""
    msg = PoseWithCovarianceStamped(header=Header(stamp=sec_to_stamp(t), frame_id=frame_id))
    msg.pose.pose = make_pose(position, quat)
    msg.pose.covariance = [float(v) for v in np.asarray(cov, np.float64).reshape(36)]
    return msg


def path(frame_id: str, times: np.ndarray, positions: np.ndarray, quats: np.ndarray, max_poses: int) -> Path:
    """The corrected trajectory, its newest `max_poses` nodes (a message stays bounded however long the drive);
    each pose stamped with its node's odometry stamp, the header with the newest."""
    keep = slice(max(0, len(times) - int(max_poses)), len(times))
    times, positions, quats = times[keep], positions[keep], quats[keep]
    stamp = sec_to_stamp(float(times[-1])) if len(times) else Time()
    out = Path(header=Header(stamp=stamp, frame_id=frame_id))
    out.poses = [PoseStamped(header=Header(stamp=sec_to_stamp(float(t)), frame_id=frame_id), pose=make_pose(p, q))
                 for t, p, q in zip(times, positions, quats)]
    return out


def transform(t: float, parent: str, child: str, position: Any, quat: Any) -> TransformStamped:
    """T_parent_child as a TransformStamped (for map->odom: parent = map_frame, child = odom_frame)."""
    msg = TransformStamped(header=Header(stamp=sec_to_stamp(t), frame_id=parent), child_frame_id=child)
    tr = msg.transform
    tr.translation.x, tr.translation.y, tr.translation.z = (float(v) for v in position)
    tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w = (float(v) for v in quat)
    return msg


def tf_message(transforms: Sequence[TransformStamped]) -> Any:
    """A tf2_msgs/TFMessage (for /tf); RuntimeError where tf2_msgs is not installed."""
    if TFMessage is None:
        raise RuntimeError("tf2_msgs is not installed: run `make venv` (tools/build_tf2_msgs.py generates it)")
    return TFMessage(transforms=list(transforms))


def closure_node_positions(closures: Sequence[Any], times: np.ndarray, positions: np.ndarray,
                           max_dt_s: float) -> np.ndarray:
    """Corrected position of the graph node each closure is attached to, found by stamp (the node with the
    nearest odometry stamp, at most max_dt_s away), so it holds whatever indexing the graph uses; NaN rows for
    closures whose node the graph no longer holds (dropped at max_nodes). (N, 3)."""
    out = np.full((len(closures), 3), np.nan)
    if not len(closures) or not len(times):
        return out
    t = np.array([float(c.t) for c in closures])
    j = np.searchsorted(times, t)
    lo, hi = np.clip(j - 1, 0, len(times) - 1), np.clip(j, 0, len(times) - 1)
    i = np.where(np.abs(times[lo] - t) <= np.abs(times[hi] - t), lo, hi)
    near = np.abs(times[i] - t) <= max_dt_s
    out[near] = positions[i[near]]
    return out


def markers(t: float, frame_id: str, closures: Sequence[Any], node_positions: np.ndarray,
            max_closures: int) -> MarkerArray:
    """RViz view of the newest `max_closures` closures: map keyframes that received a closure as spheres (ns
    keyframes), accepted closures as green lines keyframe -> corrected node, rejected ones (`Closure.rejected`:
    robust weight below disam_ros.posegraph.REJECTED_WEIGHT) as red. Three markers with fixed ids (0, 1, 2),
    so RViz replaces them in place; an empty one is sent as DELETE. Absolute closures (unverified hints) draw
    from their measured position."""
    start = max(0, len(closures) - int(max_closures))
    closures, node_positions = list(closures)[start:], node_positions[start:]
    stamp = sec_to_stamp(t)
    keyframes: dict[Any, Point] = {}
    lines: dict[bool, list[Point]] = {True: [], False: []}
    for c, node in zip(closures, node_positions):
        src = c.keyframe_position if c.keyframe_position is not None else c.measured_position
        if src is None or not (np.isfinite(np.asarray(src, np.float64)).all() and np.isfinite(node).all()):
            continue  # its node left the graph
        a, b = _point(src), _point(node)
        if c.keyframe_id is not None:
            keyframes[c.keyframe_id] = a
        lines[not c.rejected] += [a, b]
    out = MarkerArray()
    out.markers = [
        _marker(stamp, frame_id, 0, Marker.SPHERE_LIST, list(keyframes.values()), 0.6, BLUE),
        _marker(stamp, frame_id, 1, Marker.LINE_LIST, lines[True], 0.08, GREEN),
        _marker(stamp, frame_id, 2, Marker.LINE_LIST, lines[False], 0.08, RED),
    ]
    return out


def _point(v: Any) -> Point:
    x, y, z = (float(c) for c in v)
    return Point(x=x, y=y, z=z)


def _marker(stamp: Time, frame_id: str, mid: int, kind: int, points: list[Point], size: float,
            rgba: tuple[float, float, float, float]) -> Marker:
    m = Marker(header=Header(stamp=stamp, frame_id=frame_id), ns=MARKER_NS[mid], id=mid, type=kind)
    m.action = Marker.ADD if points else Marker.DELETE
    m.points = points
    m.pose.orientation.w = 1.0
    m.scale.x = m.scale.y = m.scale.z = size
    m.color = ColorRGBA(r=rgba[0], g=rgba[1], b=rgba[2], a=rgba[3])
    return m


def non_finite_output(position: Any, quat: Any, cov: Any, mo_position: Any, mo_quat: Any) -> str:
    """'' when the corrected pose, its covariance and map->odom may be published, else what is not finite (a
    NaN covariance with a finite pose was published before this check existed)."""
    if not pose_is_finite(position, quat):
        return "pose"
    if not np.isfinite(np.asarray(cov, np.float64)).all():
        return "covariance"
    if not pose_is_finite(mo_position, mo_quat):
        return "map->odom transform"
    return ""


def translation_norm(position: Any) -> float:
    """|t| of a transform (the map->odom drift correction, for /diagnostics); NaN when not finite."""
    n = float(np.linalg.norm(np.asarray(position, np.float64)))
    return n if math.isfinite(n) else float("nan")
