"""Numpy ray caster for the synthetic town: per-pixel hit distance and object id (a G-buffer).

Rays are cast for all pixels at once against the ground plane, then object by object inside each
object's projected screen rectangle only, nearest objects first; an object whose rectangle is
already covered by nearer surfaces is skipped. That keeps the cost near the number of visible
pixels instead of pixels x objects. Pixel (u, v) looks along ((u - cx)/fx, (v - cy)/fy, 1) in the
optical frame (OpenCV convention: pixel centres at integer coordinates).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from disam_ros.data.folders import CameraIntrinsics
from disam_ros.data.synthetic.scene import Kind, World, sample_texture

NEAR = 0.05
MAX_DIST = 260.0
MIN_PIXELS = 0.6  # objects projecting smaller than this are not drawn (level of detail)
SKY, GROUND = -1, 0
COVERAGE = {"none": 0.28, "mixed": 0.62, "full": 0.9}


@dataclass
class GBuffer:
    """What the shader needs: ray directions, distances, ids; depth is the optical-frame z."""

    origin: np.ndarray  # (3,)
    R: np.ndarray  # (3,3) map <- optical
    dirs: np.ndarray  # (H, W, 3) float32 unit rays in the map frame
    t: np.ndarray  # (H, W) float32 ray length, inf for sky
    ids: np.ndarray  # (H, W) int32, -1 sky, 0 ground, >0 object id

    @property
    def depth(self) -> np.ndarray:
        z_cam = self.dirs @ self.R[:, 2].astype(np.float32)
        return self.t * z_cam

    @property
    def points(self) -> np.ndarray:
        t = np.where(np.isfinite(self.t), self.t, 0.0)[..., None]
        return (self.origin + t * self.dirs).astype(np.float32)


def ray_dirs(cam: CameraIntrinsics, R: np.ndarray) -> np.ndarray:
    u, v = np.meshgrid(np.arange(cam.width, dtype=np.float64), np.arange(cam.height, dtype=np.float64))
    d = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], -1)
    d = d @ R.T
    return (d / np.linalg.norm(d, axis=-1, keepdims=True)).astype(np.float32)


def shape_tables(world: World) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per object (index id-1): shape code (0 box, 1 cylinder, 2 ellipsoid), row in its array, bounds."""
    if "shapes" not in world.cache:
        n = world.n_objects
        shape, row = np.zeros(n, np.int8), np.zeros(n, np.int64)
        for code, ids in enumerate((world.box_id, world.cyl_id, world.ell_id)):
            shape[ids - 1], row[ids - 1] = code, np.arange(len(ids))
        lo, hi = world.bounds()
        world.cache["shapes"] = (shape, row, lo, hi)
    return world.cache["shapes"]


def visible_objects(world: World, origin: np.ndarray, R: np.ndarray, cam: CameraIntrinsics):
    """Ids (nearest first), near distances and pixel rectangles of objects that may be in view."""
    shape, row, lo, hi = shape_tables(world)
    near = np.linalg.norm(np.maximum(np.maximum(lo - origin, origin - hi), 0.0), axis=1)
    size = np.linalg.norm(hi - lo, axis=1)
    keep = np.nonzero((near < MAX_DIST) & (size * cam.fx > MIN_PIXELS * np.maximum(near, 1e-3)))[0]
    corners = np.stack([np.where(np.array(m, bool), hi[keep, None, :][:, 0], lo[keep]) for m in
                        np.array(np.meshgrid([0, 1], [0, 1], [0, 1])).T.reshape(-1, 3)], 1)
    pc = (corners - origin) @ R  # optical frame
    z = pc[..., 2]
    front = z > NEAR
    all_front = front.all(1)
    zz = np.where(front, z, 1.0)
    u = cam.fx * pc[..., 0] / zz + cam.cx
    v = cam.fy * pc[..., 1] / zz + cam.cy
    big = 1e9
    u0 = np.where(all_front, u.min(1), -big)
    u1 = np.where(all_front, u.max(1), big)
    v0 = np.where(all_front, v.min(1), -big)
    v1 = np.where(all_front, v.max(1), big)
    ok = front.any(1) & (u1 >= -1) & (u0 <= cam.width) & (v1 >= -1) & (v0 <= cam.height)
    keep, near = keep[ok], near[keep[ok]]
    rect = np.stack([np.floor(u0[ok]), np.ceil(u1[ok]) + 1, np.floor(v0[ok]), np.ceil(v1[ok]) + 1], 1)
    rect = np.clip(rect, 0, [cam.width, cam.width, cam.height, cam.height]).astype(np.int64)
    order = np.argsort(near, kind="stable")
    return keep[order] + 1, near[order], rect[order]


def cover_threshold(world: World, cover: float) -> float:
    key = f"q{cover}"
    if key not in world.cache:
        world.cache[key] = float(np.quantile(world.noise, cover))
    return world.cache[key]


def hit_box(o, inv, lo, hi):
    """Slab test; `inv` are the three reciprocal direction components (camera outside the box)."""
    t0 = (lo[0] - o[0]) * inv[0]
    t1 = (hi[0] - o[0]) * inv[0]
    tn, tf = np.minimum(t0, t1), np.maximum(t0, t1)
    for k in (1, 2):
        t0 = (lo[k] - o[k]) * inv[k]
        t1 = (hi[k] - o[k]) * inv[k]
        tn = np.maximum(tn, np.minimum(t0, t1))
        tf = np.minimum(tf, np.maximum(t0, t1))
    return np.where((tn <= tf) & (tn > NEAR), tn, np.inf)


def hit_cylinder(o, d, c):
    x, y, r, z0, z1 = c
    ox, oy = o[0] - x, o[1] - y
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = ox * d[..., 0] + oy * d[..., 1]
    disc = b * b - a * (ox * ox + oy * oy - r * r)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    z = o[2] + t * d[..., 2]
    t = np.where((disc > 0) & (t > NEAR) & (z >= z0) & (z <= z1), t, np.inf)
    if o[2] > z1:  # the top disc is visible from above
        with np.errstate(divide="ignore", invalid="ignore"):
            tc = (z1 - o[2]) / d[..., 2]
        px, py = ox + tc * d[..., 0], oy + tc * d[..., 1]
        t = np.where((tc > NEAR) & (px * px + py * py <= r * r), np.minimum(t, tc), t)
    return t


def hit_ellipsoid(o, d, e):
    x, y, z, r, rz = e
    k = r / rz
    ox, oy, oz = o[0] - x, o[1] - y, (o[2] - z) * k
    dz = d[..., 2] * k
    a = d[..., 0] ** 2 + d[..., 1] ** 2 + dz * dz
    b = ox * d[..., 0] + oy * d[..., 1] + oz * dz
    disc = b * b - a * (ox * ox + oy * oy + oz * oz - r * r)
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    return np.where((disc > 0) & (t > NEAR), t, np.inf)


def cast(world: World, origin: np.ndarray, R: np.ndarray, cam: CameraIntrinsics, foliage: str = "none") -> GBuffer:
    """Nearest surface along every pixel's ray; R maps optical-frame vectors into the map frame."""
    origin = np.asarray(origin, np.float64)
    dirs = ray_dirs(cam, np.asarray(R, np.float64))
    with np.errstate(divide="ignore"):
        t = np.where(dirs[..., 2] < -1e-6, -origin[2] / dirs[..., 2], np.inf).astype(np.float32)
    ids = np.where(np.isfinite(t), GROUND, SKY).astype(np.int32)
    shape, row, _, _ = shape_tables(world)
    o32 = origin.astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = [np.ascontiguousarray(1.0 / dirs[..., k]) for k in range(3)]
    for oid, near, (u0, u1, v0, v1) in zip(*visible_objects(world, origin, R, cam)):
        tsub = t[v0:v1, u0:u1]
        if tsub.size == 0 or tsub.max() < near:
            continue  # everything in its rectangle is already nearer: occluded
        d = dirs[v0:v1, u0:u1]
        code, k = shape[oid - 1], row[oid - 1]
        if code == 0:
            th = hit_box(origin, [c[v0:v1, u0:u1] for c in inv], world.box_lo[k], world.box_hi[k])
        elif code == 1:
            th = hit_cylinder(o32, d, world.cyl[k])
        else:
            th = hit_ellipsoid(o32, d, world.ell[k])
            if world.kind[oid] in (Kind.CANOPY, Kind.CONIFER):
                rows, cols = np.nonzero(np.isfinite(th))
                if len(rows):
                    p = o32 + th[rows, cols][:, None] * d[rows, cols]
                    cover = 0.95 if world.kind[oid] == Kind.CONIFER else COVERAGE[foliage]
                    keep = leafy(world, oid, p, world.ell[k, :3], foliage, cover_threshold(world, cover))
                    th[rows[~keep], cols[~keep]] = np.inf  # a gap between leaves: the ray goes on
        better = th < tsub
        if better.any():
            tsub[better] = th[better]
            ids[v0:v1, u0:u1][better] = oid
    return GBuffer(origin, np.asarray(R, np.float64), dirs, t, ids)


def leafy(world: World, oid: int, p: np.ndarray, centre: np.ndarray, foliage: str, thresh: float) -> np.ndarray:
    """Leaf/twig (True) or gap (False) at crown points p, from the world's tileable noise."""
    q = p - centre
    az = np.arctan2(q[:, 1], q[:, 0])
    el = np.arctan2(q[:, 2], np.hypot(q[:, 0], q[:, 1]))
    seed = int(world.style[oid, 0])
    fine = 30.0 if world.kind[oid] == Kind.CONIFER else (90.0 if foliage == "none" else 45.0)
    n = sample_texture(world.noise, az * fine + seed % 256, el * fine + (seed // 256) % 256)
    return n < thresh


def project(points: np.ndarray, origin: np.ndarray, R: np.ndarray, cam: CameraIntrinsics) -> np.ndarray:
    """Map-frame points (N,3) -> pixel coordinates (N,2) and optical depth (N,) as (N,3)."""
    pc = (np.asarray(points, np.float64) - origin) @ np.asarray(R, np.float64)
    return np.stack([cam.fx * pc[:, 0] / pc[:, 2] + cam.cx, cam.fy * pc[:, 1] / pc[:, 2] + cam.cy, pc[:, 2]], 1)
