"""RetrievalResult -> standard ROS messages, plus the debug picture (Grad-SAM maps, the verification's inliers).

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
from disam_ros.logs import one_line

LOOP_CLOSURE_SCHEMA = "disam_ros/loop_closure/2"
DIAG_VALUE_CHARS = 512  # our one-line errors are shorter; a value built from sender text is cut here


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


def loop_closure(res: Any, query_stamp: Time, domain: str, frame_id: str, loc_map: Any = None,
                 late: bool = False) -> String:
    """JSON loop-closure hint; schema in docs/localizer.md (key `schema` versions it). `position` is the published
    pose (the verified metric pose when verified); `place_*` the answered map place's pose (retrieval only);
    the verification keys (`verified_keys`) need the map for the keyframe's pose. `late`: a keyframe verified
    after its frame was answered (`verify_keyframes`), sent when it was solved, at its frame's stamp."""
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
        "late": bool(late),
    }
    if loc_map is not None:
        doc.update(verified_keys(res, loc_map))
    return String(data=json.dumps(doc, allow_nan=False))


VERIFIED_KEYS = ("keyframe_index", "keyframe_name", "keyframe_position", "keyframe_orientation_xyzw",
                 "relative_position", "relative_orientation_xyzw", "relative_covariance", "inliers", "inlier_ratio",
                 "reprojection_px")


def verified_keys(res: Any, loc_map: Any) -> dict[str, Any]:
    """The hint's verification part (schema 2): the answered place's map pose, the outcome, and when verified the
    map keyframe the pose was solved against with the query camera relative to it (a pose-graph between-factor
    from the keyframe: position, xyzw and 6x6 covariance row-major in ROS order x y z rx ry rz, all in the
    keyframe's optical frame); the keyframe keys are null when not verified."""
    v = getattr(res, "verification", None)
    i = int(res.index)
    out: dict[str, Any] = {"place_position": _nums(loc_map.positions[i]),
                           "place_orientation_xyzw": _nums(loc_map.quats[i]),
                           "verified": bool(v is not None and v.verified),
                           "verification": str(v.outcome) if v is not None else None,
                           "refine_ms": _num(v.ms) if v is not None else None,
                           **dict.fromkeys(VERIFIED_KEYS)}
    if out["verified"]:
        k = int(v.index)
        key_pos, key_quat = np.asarray(loc_map.positions[k], np.float64), np.asarray(loc_map.quats[k], np.float64)
        rel_p, rel_q, rel_cov = v.relative(key_pos, key_quat)
        out.update(keyframe_index=k, keyframe_name=str(loc_map.names[k]), keyframe_position=_nums(key_pos),
                   keyframe_orientation_xyzw=_nums(key_quat), relative_position=_nums(rel_p),
                   relative_orientation_xyzw=_nums(rel_q), relative_covariance=_nums(np.reshape(rel_cov, 36)),
                   inliers=int(v.inliers), inlier_ratio=_num(v.inlier_ratio), reprojection_px=_num(v.reprojection_px))
    return out


def _nums(values: Any) -> list[float | None]:
    return [_num(x) for x in np.asarray(values, np.float64).reshape(-1)]


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
    """A diagnostics value as text: floats to 3 decimals; other text (last errors quote sender values) one
    line of at most DIAG_VALUE_CHARS."""
    if isinstance(v, float):
        return f"{v:.3f}" if math.isfinite(v) else str(v)
    return one_line(v, DIAG_VALUE_CHARS)


# ------------------------------------------------------------------------------------------ debug image


DEBUG_PANEL = (320, 240)  # (width, height) box each debug panel is fitted into
CAPTION_CHARS = 80
DEBUG_POINTS = 500  # inliers drawn at most: a bound on the picture's cost whatever the solve kept
INLIER_RGB = (0, 255, 0)


def _heat_overlay(rgb: np.ndarray, heat: np.ndarray | None, alpha: float = 0.5) -> np.ndarray:
    """Heat map (any size; NaN/inf read as 0) resized onto `rgb` and blended in JET colours."""
    h, w = rgb.shape[:2]
    if heat is None or np.asarray(heat).size == 0:
        return rgb
    heat = np.nan_to_num(np.asarray(heat, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(heat.min()), float(heat.max())
    norm = np.zeros_like(heat) if hi <= lo else (heat - lo) / (hi - lo)
    norm = cv2.resize(norm, (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.uint8(norm * 255), cv2.COLORMAP_JET)[:, :, ::-1]
    return cv2.addWeighted(rgb, 1.0 - alpha, colour, alpha, 0.0)


def _fitted(h: int, w: int, box: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of an h x w image scaled to fit inside box (width, height): aspect kept, >= 1 px."""
    s = min(box[0] / w, box[1] / h)
    return min(box[0], max(1, round(w * s))), min(box[1], max(1, round(h * s)))


def _placed(h: int, w: int, box: tuple[int, int]) -> tuple[int, int, int, int]:
    """(width, height, left, top) of an h x w image fitted into box and centred there: where a panel puts it."""
    nw, nh = _fitted(h, w, box)
    return nw, nh, (box[0] - nw) // 2, (box[1] - nh) // 2


def verification_caption(v: Any, late: bool = False) -> str:
    """One line on what the frame's verification found, for the debug picture: what a user tuning a camera wants to
    see beside the inliers (how many, how well they fit, which step found them), or why nothing verified. `late`:
    a keyframe solved after its frame went out (`verify_keyframes`), drawn on its own image."""
    if v is None:
        return "not verified: verification off"
    if v.outcome == "pending":  # verify_keyframes: the frame went out before its keyframe was solved
        return "not verified: pending (keyframe late or thread busy: verify_wait_ms)"
    if not v.verified:
        return f"not verified: {v.outcome}" + (f" (best {v.inliers} inliers)" if v.inliers else "")
    how = "flow" if v.flow else "dense search" if v.dense else f"tracked {v.hops} frames" if v.hops else "SIFT"
    text = f"verified #{v.index}: {v.inliers} inliers, {v.reprojection_px:.1f} px ({how})"
    return f"late keyframe, {text}" if late else text


def panel_points(points: np.ndarray, shape: tuple[int, ...], box: tuple[int, int]) -> np.ndarray:
    """(N, 2) int pixel positions in a `fit_panel` of `box` of image pixels (x, y) of an image of `shape`: scaled as
    the image was and shifted by its centring; at most DEBUG_POINTS of them, non-finite ones left out."""
    h, w = shape[:2]
    nw, nh, x, y = _placed(h, w, box)
    pts = np.asarray(points, np.float64).reshape(-1, 2)[:DEBUG_POINTS]
    pts = pts[np.isfinite(pts).all(axis=1)]
    return np.floor(pts * np.array([nw / w, nh / h]) + np.array([x, y], np.float64)).astype(np.int64)


def fit_panel(img: np.ndarray | None, heat: np.ndarray | None, box: tuple[int, int], shape: tuple[int, ...] = (),
              alpha: float = 0.5) -> np.ndarray:
    """One debug panel of exactly box (width, height): `img` (or a black image of `shape` when None) scaled
    to fit, aspect kept, its heat map blended in, centred on black. Whatever the camera sends (2000x1,
    1x2000, 4000x3000), a panel costs width*height*3 bytes."""
    h, w = (img.shape if img is not None else shape)[:2]
    nw, nh, x, y = _placed(h, w, box)
    if img is None:
        small = np.zeros((nh, nw, 3), np.uint8)
    else:
        interp = cv2.INTER_AREA if nw < w or nh < h else cv2.INTER_LINEAR
        small = cv2.resize(np.ascontiguousarray(img), (nw, nh), interpolation=interp).reshape(nh, nw, -1)[:, :, :3]
    panel = np.zeros((box[1], box[0], 3), np.uint8)
    panel[y:y + nh, x:x + nw] = _heat_overlay(np.ascontiguousarray(small), heat, alpha)
    return panel


def render_debug(query_rgb: np.ndarray, query_heat: np.ndarray | None, map_rgb: np.ndarray | None,
                 map_heat: np.ndarray | None, caption: str, height: int = DEBUG_PANEL[1],
                 width: int = DEBUG_PANEL[0], points: np.ndarray | None = None, note: str = "") -> np.ndarray:
    """Query with its Grad-SAM map beside the matched map image with its map (heatmap alone when the
    map image file is not available), with a one-line caption; `points`: the verification's inliers (query
    pixels, x y) as green dots on the query, `note` a second line at the bottom (`verification_caption`).

    Always height x (2*width + 4) x 3 (240 x 644 by default, 464 KB): each image is scaled into its panel
    before the heat map is blended in, so neither a huge nor a degenerate frame costs memory here (a 1x2000
    frame used to make a 346 MB picture)."""
    box = (max(1, int(width)), max(1, int(height)))
    left = fit_panel(query_rgb, query_heat, box)
    if points is not None:
        for x, y in panel_points(points, query_rgb.shape, box):
            cv2.circle(left, (int(x), int(y)), 2, INLIER_RGB, -1, cv2.LINE_AA)
    if map_rgb is not None:
        right = fit_panel(map_rgb, map_heat, box)
    elif map_heat is not None:
        right = fit_panel(None, map_heat, box, shape=query_rgb.shape, alpha=1.0)
    else:
        right = np.zeros_like(left)
    out = np.ascontiguousarray(np.concatenate([left, np.full((box[1], 4, 3), 255, np.uint8), right], axis=1))
    for text, y in ((caption, 14), (note, box[1] - 6)):
        if text:
            cv2.putText(out, text[:CAPTION_CHARS], (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                        cv2.LINE_AA)
    return out


def debug_image_msg(rgb: np.ndarray, header: Header) -> Image:
    return image_msg(encode_image(rgb, "rgb8"), header)
