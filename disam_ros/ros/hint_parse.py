"""The localizer's loop-closure hint (JSON, schema `disam_ros/loop_closure/2`) -> a checked `Hint`, and the
camera-to-base change of a pose with its covariance.

Pure functions, no node state: the pose-graph node gets hints from a topic anyone can publish on, so every
field is checked here (type, length, finiteness, a usable quaternion and covariance) and a bad hint becomes a
`HintError` whose message is one line naming the key and what was wrong; the node counts it and goes on.

Pose conventions (docs/conventions.md): (position, quaternion xyzw); covariances 6x6 in ROS order
[x y z rx ry rz], position in the parent frame, rotation perturbation on the left (parent frame).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from disam_ros.data.stamps import MAX_ROS_TIME_NS, MAX_ROS_TIME_S
from disam_ros.geometry import covariance_problem, normalize_quat, quat_to_rot, rot_to_quat
from disam_ros.ros.messages import LOOP_CLOSURE_SCHEMA

MAX_HINT_CHARS = 65536  # a schema-2 hint with top_k 5 is ~2 kB; anything far larger is not one of ours
QUAT_NORM_TOLERANCE = 1e-2  # the localizer writes unit quaternions; a sloppy one is normalised, a wrong one refused


class HintError(ValueError):
    """A hint the graph cannot use: one line naming the key and the problem."""


@dataclass(frozen=True)
class Pose:
    """A rigid transform T_parent_child: position (3,) and unit quaternion xyzw (4,)."""

    position: np.ndarray
    quat: np.ndarray


@dataclass(frozen=True)
class Hint:
    """What the graph needs from one hint. `pose` is the camera's published map pose; for a verified hint
    `keyframe` is the map keyframe camera's pose, `relative` the query camera in the keyframe's optical frame
    and `relative_cov` its 6x6 covariance; all three are None when not verified."""

    stamp: float
    verified: bool
    frame_id: str
    pose: Pose
    keyframe_index: int | None = None
    keyframe: Pose | None = None
    relative: Pose | None = None
    relative_cov: np.ndarray | None = None


def parse_hint(text: str) -> Hint:
    """A schema-2 hint JSON -> Hint; HintError (one line) for anything the graph could not use."""
    doc = _load(text)
    verified = doc.get("verified")
    if not isinstance(verified, bool):
        raise HintError(f"loop-closure hint: key 'verified' must be true or false, got {_show(verified)}")
    frame_id = doc.get("frame_id", "")
    if not isinstance(frame_id, str):
        raise HintError(f"loop-closure hint: key 'frame_id' must be a string, got {_show(frame_id)}")
    hint = Hint(stamp=_stamp(doc), verified=verified, frame_id=frame_id,
                pose=_pose(doc, "position", "orientation_xyzw"))
    if not verified:
        return hint
    index = doc.get("keyframe_index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise HintError(f"loop-closure hint: verified but key 'keyframe_index' is not an index >= 0, got "
                        f"{_show(index)}")
    return Hint(stamp=hint.stamp, verified=True, frame_id=frame_id, pose=hint.pose, keyframe_index=index,
                keyframe=_pose(doc, "keyframe_position", "keyframe_orientation_xyzw"),
                relative=_pose(doc, "relative_position", "relative_orientation_xyzw"),
                relative_cov=covariance(doc.get("relative_covariance"), "relative_covariance"))


def _load(text: str) -> dict[str, Any]:
    if not isinstance(text, str) or len(text) > MAX_HINT_CHARS:
        raise HintError(f"loop-closure hint: {len(text) if isinstance(text, str) else 0} characters, more than "
                        f"{MAX_HINT_CHARS}: not a hint of schema '{LOOP_CLOSURE_SCHEMA}'")
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        msg = getattr(exc, "msg", type(exc).__name__)
        raise HintError(f"loop-closure hint is not JSON ({msg}): publish the localizer's ~/loop_closure "
                        "string") from None
    if not isinstance(doc, dict):
        raise HintError(f"loop-closure hint is a JSON {type(doc).__name__}, not an object")
    schema = doc.get("schema")
    if schema != LOOP_CLOSURE_SCHEMA:
        raise HintError(f"loop-closure hint of schema {_show(schema)}: this node reads '{LOOP_CLOSURE_SCHEMA}' "
                        "(update the localizer or this node)")
    return doc


def _stamp(doc: dict[str, Any]) -> float:
    """query_stamp_ns (exact integer) when present, else query_stamp (seconds); > 0 and within what a ROS
    builtin_interfaces/Time holds (int32 seconds: up to 2038-01-19), so a relayed stamp is the hint's own and
    never a wrapped one. Seconds are formed as messages.stamp_to_sec forms them from a header, so a hint and the
    odometry of the same image stamp compare equal to the last bit."""
    ns = doc.get("query_stamp_ns")
    if isinstance(ns, int) and not isinstance(ns, bool) and ns > 0:
        if ns > MAX_ROS_TIME_NS:
            raise HintError(f"loop-closure hint: key 'query_stamp_ns' {_show(ns)} is past the largest ROS time "
                            f"({MAX_ROS_TIME_NS} ns, int32 seconds): publish the camera's stamp in nanoseconds")
        sec, nanosec = divmod(ns, 1_000_000_000)
        return float(sec) + 1e-9 * float(nanosec)
    t = doc.get("query_stamp")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0.0:
        raise HintError(f"loop-closure hint: key 'query_stamp' must be a stamp > 0 in seconds, got {_show(t)}")
    if t >= MAX_ROS_TIME_S:
        raise HintError(f"loop-closure hint: key 'query_stamp' {_show(t)} is past the largest ROS time "
                        f"({MAX_ROS_TIME_S} s, int32 seconds): publish the camera's stamp in seconds")
    return float(t)


def _pose(doc: dict[str, Any], pos_key: str, quat_key: str) -> Pose:
    p = vector(doc.get(pos_key), 3, pos_key)
    q = vector(doc.get(quat_key), 4, quat_key)
    n = float(np.linalg.norm(q))
    if abs(n - 1.0) > QUAT_NORM_TOLERANCE:
        raise HintError(f"loop-closure hint: key '{quat_key}' is not a unit quaternion (norm {n:.4g})")
    return Pose(p, normalize_quat(q))


def vector(value: Any, n: int, key: str) -> np.ndarray:
    """`n` finite numbers (a JSON list) as float64, else HintError naming `key`."""
    if not isinstance(value, list) or len(value) != n:
        got = f"{len(value)} values" if isinstance(value, list) else _show(value)
        raise HintError(f"loop-closure hint: key '{key}' must be a list of {n} numbers, got {got}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value):
        raise HintError(f"loop-closure hint: key '{key}' holds a value that is not a finite number "
                        "(null, NaN or text)")
    return np.asarray(value, np.float64)


def covariance(value: Any, key: str) -> np.ndarray:
    """36 finite numbers, row-major -> (6, 6): the package's one covariance rule (geometry.covariance_problem:
    symmetric, positive semi-definite up to round-off) and every variance > 0 (a hint's pose is never exact)."""
    c = vector(value, 36, key).reshape(6, 6)
    if (problem := covariance_problem(c)) is not None:
        raise HintError(f"loop-closure hint: key '{key}' {problem}: publish the localizer's own hint")
    if not (np.diag(c) > 0.0).all():
        raise HintError(f"loop-closure hint: key '{key}' has a diagonal entry <= 0 (every variance must be > 0)")
    return 0.5 * (c + c.T)


def _show(value: Any) -> str:
    text = json.dumps(value) if value is None or isinstance(value, (bool, int, float, str)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------------------------------------- camera -> base


def parse_camera_in_base(values: Any) -> Pose:
    """The `camera_in_base` parameter [x, y, z, qx, qy, qz, qw] (T_base_camera) -> Pose; ValueError (one line)."""
    v = list(values) if isinstance(values, (list, tuple, np.ndarray)) else []
    if len(v) != 7 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v):
        raise ValueError(f"camera_in_base must be 7 finite numbers [x, y, z, qx, qy, qz, qw] (T_base_camera), got "
                         f"{v if v else _show(values)}")
    q = np.asarray(v[3:], np.float64)
    if np.linalg.norm(q) < 1e-6:
        raise ValueError("camera_in_base: the quaternion [qx, qy, qz, qw] is zero; identity is [0, 0, 0, 1]")
    return Pose(np.asarray(v[:3], np.float64), normalize_quat(q))


def skew(v: np.ndarray) -> np.ndarray:
    """[v]x, the matrix of the cross product v x ."""
    x, y, z = v
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def to_base(pose: Pose, cov: np.ndarray, base_camera: Pose) -> tuple[Pose, np.ndarray]:
    """A pose of the camera, T_parent_cam with covariance `cov`, as the pose of the base: T_parent_base =
    T_parent_cam * T_base_cam^-1, and its covariance to first order.

    Why: the localizer measures the camera's optical frame, the odometry (and so the graph's nodes) is of the
    base. With a left perturbation in the parent frame, T = Exp(d) T0 with d = [dp; dth], right-multiplying by a
    constant C = (Rc, pc) keeps dth and moves the position by dth x (R0 pc): J = [[I, -[R0 pc]x], [0, I]], and
    the covariance becomes J cov J^T (a rotation uncertainty grows the position uncertainty by the lever arm).
    """
    R_bc = quat_to_rot(base_camera.quat)
    R_cb = R_bc.T
    p_cb = -R_cb @ base_camera.position  # T_cam_base = T_base_cam^-1
    R0 = quat_to_rot(pose.quat)
    lever = R0 @ p_cb
    J = np.eye(6)
    J[:3, 3:] = -skew(lever)
    out = Pose(pose.position + lever, rot_to_quat(R0 @ R_cb))
    return out, J @ np.asarray(cov, np.float64) @ J.T


def diagonal_covariance(sigma_m: float, sigma_deg: float) -> np.ndarray:
    """6x6 diagonal covariance from one position and one angle standard deviation (for unverified hints,
    whose JSON carries no covariance of their own)."""
    return np.diag([sigma_m**2] * 3 + [math.radians(sigma_deg) ** 2] * 3)
