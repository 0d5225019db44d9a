"""RetrievalResult -> standard ROS messages, plus the Grad-SAM debug picture.

Small pure converters (no node state) so the node stays about threading and parameters, and so the
message formats documented in docs/localizer.md live in one place.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Pose, PoseArray, PoseStamped, PoseWithCovarianceStamped
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from disam_ros.data.image_codec import ImageFields, encode_image

LOOP_CLOSURE_SCHEMA = "disam_ros/loop_closure/1"


def stamp_to_sec(stamp: Time) -> float:
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def sec_to_stamp(t: float) -> Time:
    sec = math.floor(t)
    return Time(sec=int(sec), nanosec=min(int(round((t - sec) * 1e9)), 999_999_999))


def make_header(stamp: Time, frame_id: str) -> Header:
    return Header(stamp=stamp, frame_id=frame_id)


def make_pose(position: Sequence[float], quat: Sequence[float]) -> Pose:
    p = Pose()
    p.position.x, p.position.y, p.position.z = (float(v) for v in position)
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (float(v) for v in quat)
    return p


def pose_is_finite(position: Any, quat: Any) -> bool:
    """A pose we may publish: finite numbers and a non-degenerate quaternion."""
    p, q = np.asarray(position, np.float64), np.asarray(quat, np.float64)
    return p.shape == (3,) and q.shape == (4,) and bool(np.isfinite(p).all() and np.isfinite(q).all()) \
        and abs(float(np.linalg.norm(q)) - 1.0) < 1e-3


def pose_stamped(res: Any, header: Header) -> PoseStamped:
    """The relocalization prior: the matched map image's pose (the paper's answer: query pose = map pose)."""
    return PoseStamped(header=header, pose=make_pose(res.position, res.quat))


def pose_with_covariance(res: Any, header: Header) -> PoseWithCovarianceStamped:
    """Same pose with the retrieval covariance (6x6 row-major, x y z roll pitch yaw), e.g. for /initialpose."""
    msg = PoseWithCovarianceStamped(header=header)
    msg.pose.pose = make_pose(res.position, res.quat)
    cov = np.asarray(res.covariance, np.float64).reshape(36)
    msg.pose.covariance = [float(v) for v in cov]
    return msg


def candidates(res: Any, positions: np.ndarray, quats: np.ndarray, header: Header) -> PoseArray:
    """Map poses of the scored top-k, best first (scores are in the loop-closure JSON)."""
    msg = PoseArray(header=header)
    msg.poses = [make_pose(positions[int(i)], quats[int(i)]) for i, _ in res.topk]
    return msg


def loop_closure(res: Any, query_stamp: Time, domain: str, frame_id: str) -> String:
    """JSON loop-closure hint; schema in docs/localizer.md (key `schema` versions it)."""
    score = _num(res.topk[0][1]) if len(res.topk) else None
    doc = {
        "schema": LOOP_CLOSURE_SCHEMA,
        "query_stamp": stamp_to_sec(query_stamp),
        "query_stamp_ns": int(query_stamp.sec) * 1_000_000_000 + int(query_stamp.nanosec),
        "map_index": int(res.index),
        "map_name": str(res.name),
        "map_stamp": _num(res.stamp),
        "score": score,
        "confidence": _num(res.confidence),
        "domain": domain,
        "frame_id": frame_id,
        "position": [float(v) for v in res.position],
        "orientation_xyzw": [float(v) for v in res.quat],
        "candidates": [{"map_index": int(i), "score": _num(s)} for i, s in res.topk],
    }
    return String(data=json.dumps(doc, allow_nan=False))


def _num(v: Any) -> float | None:
    """JSON has no NaN: unknown or non-finite numbers become null."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def image_msg(fields: ImageFields, header: Header) -> Image:
    return Image(header=header, height=fields.height, width=fields.width, encoding=fields.encoding,
                 is_bigendian=fields.is_bigendian, step=fields.step, data=fields.data)


def diagnostic_array(stamp: Time, name: str, hardware_id: str, level: bytes, message: str,
                     values: Mapping[str, Any]) -> DiagnosticArray:
    """One DiagnosticStatus; `level` is a DiagnosticStatus constant (OK, WARN, ERROR: bytes in rclpy)."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=str(k), value=_kv(v)) for k, v in values.items()]
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])


def _kv(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if math.isfinite(v) else str(v)
    return str(v)


# ------------------------------------------------------------------------------------------ debug image


def _heat_overlay(rgb: np.ndarray, heat: np.ndarray | None, alpha: float = 0.5) -> np.ndarray:
    h, w = rgb.shape[:2]
    if heat is None:
        return rgb
    heat = np.asarray(heat, np.float32)
    lo, hi = float(heat.min()), float(heat.max())
    norm = np.zeros_like(heat) if hi <= lo else (heat - lo) / (hi - lo)
    norm = cv2.resize(norm, (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.uint8(norm * 255), cv2.COLORMAP_JET)[:, :, ::-1]
    return cv2.addWeighted(rgb, 1.0 - alpha, colour, alpha, 0.0)


def render_debug(query_rgb: np.ndarray, query_heat: np.ndarray | None, map_rgb: np.ndarray | None,
                 map_heat: np.ndarray | None, caption: str, height: int = 240) -> np.ndarray:
    """Query with its Grad-SAM map beside the matched map image with its map (heatmap alone when the
    map image file is not available), scaled to `height` rows, with a one-line caption."""
    def fit(img: np.ndarray) -> np.ndarray:
        s = height / img.shape[0]
        return cv2.resize(img, (max(1, round(img.shape[1] * s)), height), interpolation=cv2.INTER_AREA)

    left = fit(_heat_overlay(query_rgb, query_heat))
    if map_rgb is not None:
        right = fit(_heat_overlay(map_rgb, map_heat))
    elif map_heat is not None:
        blank = np.zeros((query_rgb.shape[0], query_rgb.shape[1], 3), np.uint8)
        right = fit(_heat_overlay(blank, map_heat, alpha=1.0))
    else:
        right = np.zeros_like(left)
    out = np.ascontiguousarray(np.concatenate([left, np.full((height, 4, 3), 255, np.uint8), right], axis=1))
    cv2.putText(out, caption[:80], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def debug_image_msg(rgb: np.ndarray, header: Header) -> Image:
    return image_msg(encode_image(rgb, "rgb8"), header)
