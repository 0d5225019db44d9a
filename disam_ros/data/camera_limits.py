"""What counts as a camera: the one plausibility rule for pinhole + plumb_bob intrinsics, wherever they come from
(camera.yaml, a bag's or the node's CameraInfo, a map's stored geometry).

Why a rule beyond "finite and > 0": fx = 1e300, cx = -1e9 or k1 = 1e6 are finite, and with them every 3D point
projects outside the image, triangulation gives none and verification stops, with nothing saying why. Real
lenses are far inside these bounds, so the rule refuses only numbers no camera has:

* image size in whole pixels, 1..MAX_SIDE;
* focal lengths giving a field of view of MIN_FOV_DEG..MAX_FOV_DEG along each axis (fx for the width, fy for
  the height): a 640 px wide image needs fx in 28..366,693 px; a 2000 mm lens on a full-frame sensor sees ~1 deg;
* the principal point within the image widened by PRINCIPAL_MARGIN of its size on each side (a decentred or
  cropped lens moves it, never a quarter of the image beyond the edge);
* plumb_bob coefficients (on normalised coordinates, so independent of the image size) with |k1|, |k2|, |k3| <=
  MAX_RADIAL and |p1|, |p2| <= MAX_TANGENTIAL: real calibrations have |k| of 0.01..a few and |p| below 0.01.

Base of the data layer: imports nothing from disam_ros.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

MAX_SIDE = 1 << 16  # CameraInfo sizes are uint32; no camera has a side near 65536 px
MIN_FOV_DEG, MAX_FOV_DEG = 0.1, 170.0
PRINCIPAL_MARGIN = 0.25
MAX_RADIAL, MAX_TANGENTIAL = 100.0, 1.0
DISTORTION_NAMES = ("k1", "k2", "p1", "p2", "k3")


def intrinsics_problem(width: float, height: float, fx: float, fy: float, cx: float, cy: float,
                       dist: Sequence[float] = ()) -> str | None:
    """Why these intrinsics are no camera's (one phrase starting 'camera intrinsics'), or None when they pass the
    module's rule. `dist` is plumb_bob k1 k2 p1 p2 k3 (shorter = the rest 0)."""
    named = {"width": width, "height": height, "fx": fx, "fy": fy, "cx": cx, "cy": cy,
             **dict(zip(DISTORTION_NAMES, dist))}
    for name, value in named.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"camera intrinsics {name}={value!r} must be a number"
    v = {name: float(value) for name, value in named.items()}  # numpy scalars print as plain numbers below
    if not all(math.isfinite(v[k]) and v[k] == int(v[k]) and 1 <= v[k] <= MAX_SIDE for k in ("width", "height")):
        return f"camera intrinsics width={v['width']:g} height={v['height']:g} must be whole pixels in 1..{MAX_SIDE}"
    for name in ("fx", "fy"):
        if not (math.isfinite(v[name]) and v[name] > 0):
            return f"camera intrinsics {name}={v[name]!r} must be finite and > 0"
    for name in ("cx", "cy", *DISTORTION_NAMES[:len(dist)]):
        if not math.isfinite(v[name]):
            return f"camera intrinsics {name}={v[name]!r} must be finite"
    return (_focal_problem("fx", v["fx"], v["width"], "horizontal")
            or _focal_problem("fy", v["fy"], v["height"], "vertical")
            or _principal_problem("cx", v["cx"], v["width"]) or _principal_problem("cy", v["cy"], v["height"])
            or _distortion_problem([v[k] for k in DISTORTION_NAMES[:len(dist)]]))


def focal_range(side: float) -> tuple[float, float]:
    """(least, largest) focal length in pixels for an image `side` pixels across (MAX_FOV_DEG..MIN_FOV_DEG)."""
    return (side / 2.0 / math.tan(math.radians(MAX_FOV_DEG) / 2.0),
            side / 2.0 / math.tan(math.radians(MIN_FOV_DEG) / 2.0))


def _focal_problem(name: str, f: float, side: float, axis: str) -> str | None:
    lo, hi = focal_range(side)
    if lo <= f <= hi:
        return None
    fov = math.degrees(2.0 * math.atan(side / 2.0 / f))
    return (f"camera intrinsics {name}={f!r} gives a {axis} field of view of {fov:.3g} deg over {side:g} px: a "
            f"camera sees {MIN_FOV_DEG:g}..{MAX_FOV_DEG:g} deg ({name} {lo:.4g}..{hi:.4g} px)")


def _principal_problem(name: str, c: float, side: float) -> str | None:
    lo, hi = -PRINCIPAL_MARGIN * side - 0.5, (1.0 + PRINCIPAL_MARGIN) * side - 0.5
    if lo <= c <= hi:
        return None
    return (f"camera intrinsics {name}={c!r} puts the principal point outside the {side:g} px image (allowed "
            f"{lo:g}..{hi:g} px; the image centre is {(side - 1) / 2:g})")


def _distortion_problem(dist: Sequence[float]) -> str | None:
    for name, value in zip(DISTORTION_NAMES, dist):
        bound = MAX_TANGENTIAL if name.startswith("p") else MAX_RADIAL
        if abs(value) > bound:
            return (f"camera intrinsics {name}={value!r} is beyond +-{bound:g} (plumb_bob: real lenses have |k| "
                    "up to a few, |p| below 0.01)")
    return None
