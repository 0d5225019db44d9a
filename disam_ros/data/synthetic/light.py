"""Light that reaches a surface: sun shadows on the ground, ambient occlusion, street lamps, headlights.

Sun shadows are only cast onto the ground, from a top-down map made once per (world, sun direction,
foliage) by projecting every primitive along the sun ray onto z = 0 and filling the convex outline.
That is cheap, exact for boxes on the ground and gives the long dusk shadows that make the reference
and the query look different.
"""
from __future__ import annotations

import cv2
import numpy as np

from disam_ros.data.synthetic.scene import FRONTAGE, Kind, World, sample_texture

RES = 0.25  # metres per shadow-map texel
SHIFT = 4  # sub-pixel bits for cv2 polygon filling
CANOPY_SHADOW = {"none": 0.35, "mixed": 0.6, "full": 0.85}


def grid_frame(world: World) -> tuple[float, float, int, int]:
    """(x0, y0, width, height) of the ground grid covering the town with a margin."""
    B, (nx, ny) = world.block, world.cells.shape
    m = FRONTAGE + 24.0
    x0, y0 = -B - m, -B - m
    w, h = int(((nx - 1) * B + 2 * m + B) / RES) + 1, int(((ny - 1) * B + 2 * m + B) / RES) + 1
    return x0, y0, w, h


def _fill(img: np.ndarray, xy: np.ndarray, x0: float, y0: float, value: float) -> None:
    px = np.round(((xy - [x0, y0]) / RES) * (1 << SHIFT)).astype(np.int32)
    hull = cv2.convexHull(px)
    cv2.fillConvexPoly(img, hull, float(value), lineType=cv2.LINE_8, shift=SHIFT)


def _ring(x, y, r, n=10):
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([x + r * np.cos(a), y + r * np.sin(a)], -1)


def shadow_map(world: World, sun: np.ndarray, foliage: str) -> np.ndarray:
    """Top-down shadow strength in [0, 1] on the ground grid (cached per sun direction and foliage)."""
    key = ("shadow", tuple(np.round(sun, 5)), foliage)
    if key in world.cache:
        return world.cache[key]
    x0, y0, w, h = grid_frame(world)
    img = np.zeros((h, w), np.float32)
    shift = -np.asarray(sun[:2], np.float64) / max(float(sun[2]), 0.02)  # ground offset per metre of height
    for (x, y, z, r, rz), oid in zip(world.ell, world.ell_id):
        rings = [_ring(x, y, r * s, 8) + (z + rz * c) * shift for s, c in ((0.7, -0.7), (1, 0), (0.7, 0.7))]
        pts = np.concatenate(rings + [np.array([[x, y]]) + (z + rz) * shift])
        cover = 0.85 if world.kind[oid] == Kind.CONIFER else CANOPY_SHADOW[foliage]
        _fill(img, pts, x0, y0, cover)
    for x, y, r, z0, z1 in world.cyl:
        ring = _ring(x, y, max(r, RES / 2), 8)
        _fill(img, np.concatenate([ring + z0 * shift, ring + z1 * shift]), x0, y0, 1.0)
    for lo, hi in zip(world.box_lo, world.box_hi):
        c = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
        _fill(img, np.concatenate([c + lo[2] * shift, c + hi[2] * shift]), x0, y0, 1.0)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    world.cache[key] = img
    return img


def occlusion_map(world: World) -> np.ndarray:
    """Sky visibility on the ground near walls (1 open, lower near building bases)."""
    if "ao" not in world.cache:
        x0, y0, w, h = grid_frame(world)
        img = np.zeros((h, w), np.float32)
        for lo, hi in zip(world.box_lo, world.box_hi):
            if lo[2] < 0.5:
                _fill(img, np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]]), x0, y0, 1.0)
        blur = cv2.GaussianBlur(img, (0, 0), 1.2 / RES)
        world.cache["ao"] = 1.0 - 0.55 * np.clip(blur * 1.6, 0, 1)
    return world.cache["ao"]


def sample_grid(world: World, grid: np.ndarray, x: np.ndarray, y: np.ndarray, outside: float) -> np.ndarray:
    x0, y0, _, _ = grid_frame(world)
    return sample_texture(grid, (x - x0) / RES, (y - y0) / RES, wrap=False, border=outside)


def lamp_light(world: World, p: np.ndarray, n: np.ndarray, origin: np.ndarray, forward: np.ndarray,
               strength: float) -> np.ndarray:
    """Irradiance (linear RGB) from street lamps near the camera and ahead of it, lamps shining downwards."""
    rel = world.lamps[:, :2] - origin[:2]
    near = (np.linalg.norm(rel, axis=1) < 70.0) & (rel @ forward[:2] > -12.0)
    out = np.zeros_like(p)
    lit = np.nonzero(np.linalg.norm(p[:, :2] - origin[:2], axis=1) < 55.0)[0]  # beyond, lamps are specks
    P = [p[lit, k] for k in range(3)]
    N = [n[lit, k] for k in range(3)]
    acc = np.zeros((len(lit), 3), np.float32)
    for lamp, rgb in zip(world.lamps[near].astype(np.float32), world.lamp_rgb[near]):
        lx, ly, lz = lamp[0] - P[0], lamp[1] - P[1], lamp[2] - P[2]
        d2 = lx * lx + ly * ly + lz * lz
        inv = 1.0 / np.sqrt(d2)
        cos = np.clip((N[0] * lx + N[1] * ly + N[2] * lz) * inv, 0, 1)
        cone = np.sqrt(np.clip(lz * inv, 0, 1))
        acc += (cos * cone * (16.0 * strength) / (d2 + 1.0))[:, None] * rgb
    out[lit] = acc
    return out


def headlight(p: np.ndarray, n: np.ndarray, origin: np.ndarray, forward: np.ndarray, strength: float) -> np.ndarray:
    """Irradiance from the car's low beams: a forward cone from 0.7 m above the road."""
    src = np.array([origin[0], origin[1], 0.7], np.float32)
    L = src - p
    d2 = (L * L).sum(-1)
    Lh = L / np.sqrt(d2)[:, None]
    f = np.array([forward[0], forward[1], -0.05], np.float32)
    f /= np.linalg.norm(f)
    cone = np.exp(-(1.0 + Lh @ f) / 0.03)
    cos = np.clip((n * Lh).sum(-1), 0, 1)
    return (strength * 70.0 * cone * cos / (d2 + 1.0))[:, None] * np.array([1.0, 0.95, 0.85], np.float32)
