"""What `disam-hint-relay` sends for one loop-closure hint, without ROS: the pose, its covariance and its stamp
for rtabmap's `global_pose` and for slam_toolbox's `initialpose`, and the gate that keeps the latter a trigger.

Pure functions on `disam_ros.ros.hint_parse.Hint` (the parsed, checked hint the pose-graph node reads too), so
the geometry is tested on its own (test/test_hint_relay.py) and the node stays about topics and parameters.

Conventions (docs/conventions.md): poses (position, quaternion xyzw) = T_parent_child; covariances 6x6 in ROS order
[x y z rx ry rz], position perturbation additive in the parent frame, rotation perturbation on the left in the
parent frame. The hint's `relative_covariance` is of that form in the map keyframe's optical frame.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from disam_ros.geometry import quat_to_rot
from disam_ros.ros import hint_parse as H

NS_PER_S = 1_000_000_000


def keyframe_to_map_covariance(cov_key: Any, key_quat: Any) -> np.ndarray:
    """The relative pose's covariance (keyframe optical frame) as the camera pose's covariance in the map frame:
    T_map_cam = T_map_key T_key_cam with the keyframe's pose exact, so dp_map = R dp_key and w_map = R w_key
    (R = the keyframe's rotation, keyframe -> map): cov_map = diag(R, R) cov_key diag(R, R)^T. The inverse of
    `disam_ros.pose.relative.relative_covariance`, which the localizer used to make the hint's covariance."""
    R = quat_to_rot(np.asarray(key_quat, np.float64))
    B = np.zeros((6, 6))
    B[:3, :3] = B[3:, 3:] = R
    cov = B @ np.asarray(cov_key, np.float64).reshape(6, 6) @ B.T
    return 0.5 * (cov + cov.T)


def camera_pose(hint: H.Hint, unverified_cov: np.ndarray | None = None) -> tuple[H.Pose, np.ndarray] | None:
    """The camera's optical-frame pose in the map frame with its covariance (what rtabmap's `global_pose` takes):
    a verified hint's solved pose with `relative_covariance` rotated into the map frame; an unverified hint's
    (retrieval) pose with `unverified_cov` (its JSON carries no covariance), or None when that is None."""
    if hint.verified:
        return hint.pose, keyframe_to_map_covariance(hint.relative_cov, hint.keyframe.quat)
    if unverified_cov is None:
        return None
    return hint.pose, np.asarray(unverified_cov, np.float64).reshape(6, 6)


def base_pose(hint: H.Hint, base_camera: H.Pose) -> tuple[H.Pose, np.ndarray]:
    """A verified hint as the BASE pose in the map frame (what slam_toolbox's `initialpose` takes): the camera pose
    composed with T_base_camera^-1 (`camera_in_base`), its covariance moved with it, exactly as the pose-graph node
    moves hints to the base (hint_parse.to_base). ValueError for an unverified hint (no covariance, no trigger)."""
    if not hint.verified:
        raise ValueError("an unverified hint is not a relocalization trigger")
    pose, cov = camera_pose(hint)
    return H.to_base(pose, cov, base_camera)


def stamp_ns(text: str, hint: H.Hint) -> int:
    """The hint's stamp in integer nanoseconds: `query_stamp_ns` exactly when the JSON has it (parse_hint prefers it
    too but keeps float seconds, which lose ~100 ns at today's epoch), else `query_stamp` rounded as
    messages.sec_to_stamp rounds it."""
    try:
        ns = json.loads(text).get("query_stamp_ns")
    except (ValueError, AttributeError, RecursionError):
        ns = None
    if isinstance(ns, int) and not isinstance(ns, bool) and ns > 0:
        return ns
    sec = math.floor(hint.stamp)
    return sec * NS_PER_S + min(int(round((hint.stamp - sec) * 1e9)), NS_PER_S - 1)


def is_finite(pose: H.Pose, cov: np.ndarray) -> bool:
    """A pose and covariance worth publishing: every number finite (parse_hint checked the inputs; this checks
    what the arithmetic made of them)."""
    return bool(np.isfinite(pose.position).all() and np.isfinite(pose.quat).all() and np.isfinite(cov).all())


class TriggerGate:
    """At most one trigger per `min_period_s` of hint stamps (the camera's clock, so a bag replayed at any speed
    or sim time behaves the same; 0 = every one). A stamp more than a period before the last trigger (a bag
    restarted, a new drive) re-arms the gate; a slightly older one (reordering) does not."""

    def __init__(self, min_period_s: float) -> None:
        self.period_ns = int(round(float(min_period_s) * 1e9))
        self.last_ns: int | None = None

    def allow(self, ns: int) -> bool:
        """True (and remember `ns`) when a trigger at stamp `ns` may go out now."""
        last = self.last_ns
        if last is None or ns - last >= self.period_ns or ns < last - self.period_ns:
            self.last_ns = int(ns)
            return True
        return False
