"""The localizer node's side of geometric verification: the query camera's intrinsics from
sensor_msgs/CameraInfo, the publish decision for verified and unverified frames, and the verification's
/diagnostics keys. The verification itself is ROS-free and runs inside `Tracker.step` (disam_ros/verify).

CameraInfo: the callback (executor thread) turns a message into `Intrinsics` and hands them to the tracker's
verifier under the tracking lock, only when K, size or distortion changed (a camera publishes the same
CameraInfo with every frame: no lock is taken for those). A message that cannot be used (K all zeros: an
uncalibrated camera; a fisheye or rational distortion model; binning or a region of interest; numbers no camera
has, such as fx 1e300 or k1 1e6: the package's one intrinsics rule, disam_ros.data.camera_limits) is counted
(`camera_info_rejected`), logged once per distinct content (throttled), and ignored: the intrinsics in force
stay (the last good CameraInfo's, else the map camera's, which `Verification.camera` says). No message ever
stops the node.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo

from disam_ros.pose.camera import Intrinsics

PLUMB_BOB_MODELS = ("plumb_bob", "rational_polynomial")  # the latter only with k4..k6 = 0 (Intrinsics.from_K)
NO_DISTORTION_MODELS = ("", "none")
MAP_CAMERA = "map camera (assumed: no CameraInfo received)"


def intrinsics_from_camera_info(msg: CameraInfo) -> Intrinsics:
    """The pinhole + plumb_bob intrinsics of a CameraInfo; ValueError (one line naming the fix) when unusable."""
    model = str(msg.distortion_model).strip().lower()
    d = np.asarray(msg.d, np.float64).reshape(-1)
    if model in NO_DISTORTION_MODELS and np.any(d != 0):
        raise ValueError(f"CameraInfo has distortion coefficients but distortion_model {msg.distortion_model!r}: "
                         "set it to plumb_bob")
    if model not in PLUMB_BOB_MODELS + NO_DISTORTION_MODELS:
        raise ValueError(f"CameraInfo distortion_model {str(msg.distortion_model)[:40]!r} is not supported: only "
                         "plumb_bob (k1 k2 p1 p2 k3); recalibrate with plumb_bob or publish rectified images")
    if max(msg.binning_x, msg.binning_y) > 1 or msg.roi.width or msg.roi.height or msg.roi.x_offset \
            or msg.roi.y_offset:
        raise ValueError("CameraInfo with binning or a region of interest is not supported: publish the full "
                         "image's CameraInfo")
    K = np.asarray(msg.k, np.float64).reshape(3, 3)
    if not np.any(K):
        raise ValueError("CameraInfo K is all zeros (an uncalibrated camera): calibrate it (camera_calibration) "
                         "or set camera_info_topic to '' to assume the map camera")
    return Intrinsics.from_K(K, int(msg.width), int(msg.height), d if d.size else None)


def _content(msg: CameraInfo) -> tuple:
    """What in a CameraInfo matters for the intrinsics (the stamp does not)."""
    roi = msg.roi
    return (tuple(msg.k), int(msg.width), int(msg.height), str(msg.distortion_model), tuple(msg.d),
            int(msg.binning_x), int(msg.binning_y), (roi.x_offset, roi.y_offset, roi.width, roi.height))


class CameraInfoListener:
    """The CameraInfo callback of one activation (module docstring)."""

    def __init__(self, node: Any, topic: str) -> None:
        self.node, self.topic = node, topic
        self._good: tuple | None = None  # content of the CameraInfo in force
        self._bad: tuple | None = None  # content of the last rejected one (logged once)

    def on_message(self, msg: CameraInfo) -> None:
        node, content = self.node, None
        try:
            content = _content(msg)
            if content == self._good:
                return
            cam = intrinsics_from_camera_info(msg)
        except Exception as exc:  # noqa: BLE001  (a message must never stop the node)
            node.stats.add("camera_info_rejected")
            if content is None or content != self._bad:
                self._bad = content
                keep = "keeping the previous CameraInfo" if self._good is not None else "assuming the map camera"
                node._log_warn(f"ignoring CameraInfo on {self.topic}: {_one_line(exc)} ({keep})", kind="camera_info")
            return
        tracking = node.tracking
        if tracking is None:
            return
        tracking.set_camera(cam, f"CameraInfo {self.topic}")
        self._good, self._bad = content, None
        node.get_logger().info(f"camera intrinsics from CameraInfo on {self.topic}: {cam.width}x{cam.height}, "
                               f"fx {cam.fx:.1f} fy {cam.fy:.1f} cx {cam.cx:.1f} cy {cam.cy:.1f}"
                               + (", plumb_bob distortion" if cam.has_distortion else ""))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, ValueError) else f"{type(exc).__name__}: {text}"


def camera_info_topic(node: Any, name: str, image_topic: str) -> str:
    """The CameraInfo topic to subscribe: '' = none; an absolute or `~/` name as rcl resolves it; a relative
    name remapped by a `-r name:=...` rule goes there, else it sits beside the (resolved) image topic, as
    image_transport places `camera_info` next to `image_raw` (/cam/image_raw -> /cam/camera_info)."""
    if not name:
        return ""
    remapped = node.resolve_topic_name(name)
    if name.startswith(("/", "~")) or remapped != node.resolve_topic_name(name, only_expand=True):
        return remapped
    base = image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") else image_topic
    return f"{base.rpartition('/')[0]}/{name}"


def subscribe_camera_info(node: Any, image_topic: str) -> Any:
    """The CameraInfo subscription of an activation (the image's reliability: drivers publish both alike), or
    None when verification is not active or `camera_info_topic` is empty."""
    tracking, name = node.tracking, node.cfg.camera_info_topic
    if tracking is None or not tracking.verifying or not name:
        if tracking is not None:
            tracking.camera_info_topic = ""
        return None
    topic = camera_info_topic(node, name, image_topic)
    tracking.camera_info_topic = topic
    rel = ReliabilityPolicy.RELIABLE if node.cfg.image_qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
    qos = QoSProfile(depth=2, history=HistoryPolicy.KEEP_LAST, reliability=rel)
    return node.create_subscription(CameraInfo, topic, CameraInfoListener(node, topic).on_message, qos)


def publish_decision(res: Any, passes_gate: bool, gate: str, verifying: bool, policy: str) -> tuple[bool, str]:
    """(publish?, why not) for an answered frame. unverified_policy `publish`: the confidence gate OR a verified
    pose; `withhold` (while verifying): only a verified pose. Without verification the gate alone decides."""
    v = getattr(res, "verification", None)
    verified = v is not None and v.verified
    outcome = v.outcome if v is not None else "not attempted"
    if verifying and policy == "withhold":
        return verified, "" if verified else f"not verified ({outcome}): unverified_policy withhold"
    if passes_gate or verified:
        return True, ""
    return False, f"confidence {float(res.confidence):.3f} below {gate}" + (
        f"; not verified ({outcome})" if verifying else "")


def count(stats: Any, res: Any) -> None:
    """verified_frames / unverified_frames: answered frames the verifier saw."""
    v = getattr(res, "verification", None)
    if v is not None:
        stats.add("verified_frames" if v.verified else "unverified_frames")


def verify_state(tracking: Any, cfg: Any) -> str:
    if not cfg.verify:
        return "off (parameter verify is false): retrieval-only poses"
    if not tracking.verifying:
        note = tracking.tracker.reloc.map.geometry_note or "map has no geometry"
        return f"inactive: {note}"
    verifier = tracking.tracker.verifier
    dense = verifier.config.gradient_candidates if verifier is not None else 0
    single = tracking.tracker.dense_needs_prior
    if not dense or (single and not verifier.config.gradient_with_prior):
        dense_note = "no dense search" + (" in single mode" if dense else "")
    elif tracking.tracker.reloc.map.map_geometry.gradients is None:
        dense_note = "no dense search: the map was built before its descriptors, rebuild it for rain, snow and fog"
    else:
        dense_note = f"dense search on {dense} candidates" + (
            ", single mode: only on frames a prior gated" if single else "")
    return f"active ({cfg.verify_candidates} candidates, >= {cfg.verify_min_inliers} inliers; {dense_note})"


def diagnostics(tracking: Any, cfg: Any, dyn: dict[str, Any]) -> dict[str, Any]:
    """/diagnostics keys of verification: state, policy in force, where intrinsics come from, the last frame's."""
    policy = dyn["unverified_policy"]
    out: dict[str, Any] = {"verify_state": verify_state(tracking, cfg),
                           "unverified_policy": policy if tracking.verifying else
                           f"{policy} (no effect: verification inactive)"}
    if tracking.verifying:
        source = tracking.tracker.verifier.camera_source
        out["camera_info_topic"] = tracking.camera_info_topic or "none (camera_info_topic empty)"
        out["intrinsics_source"] = source or MAP_CAMERA
        if tracking.last_verification is not None:
            out.update(tracking.last_verification.diagnostics())
    return out
