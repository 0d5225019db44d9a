"""Turn a G-buffer into an image under one condition: surfaces, sun, sky, lamps, weather, sensor.

`render` is the public entry point: pose in, RGB image out (plus ids and depth on request), with
all randomness keyed by (world seed, condition name, frame index).
"""
from __future__ import annotations

import zlib

import cv2
import numpy as np

from disam_ros.data.folders import CameraIntrinsics
from disam_ros.data.synthetic.conditions import Condition, Look, get_condition, make_look
from disam_ros.data.synthetic.light import headlight, lamp_light, occlusion_map, sample_grid, shadow_map
from disam_ros.data.synthetic.materials import ground_surface, object_surface
from disam_ros.data.synthetic.render import GBuffer, cast
from disam_ros.data.synthetic.scene import World
from disam_ros.data.synthetic.sun import local_zone
from disam_ros.data.synthetic.weather import (
    apply_haze,
    glow,
    rain_streaks,
    sky,
    snow_flakes,
    to_srgb8,
    wet_reflection,
)
from disam_ros.geometry import quat_to_rot


def condition_key(name: str) -> int:
    return zlib.crc32(name.encode())


def look_for(world: World, cond: Condition, utc: float | None = None) -> Look:
    """The condition's light at `utc` (default: its capture start time at the world's site)."""
    if utc is None:
        utc = cond.start_utc(world.latitude, world.longitude, local_zone(world.timezone, world.longitude))
    return make_look(cond, utc, world.latitude, world.longitude)


def light_surfaces(world: World, gb: GBuffer, cond: Condition, look: Look) -> tuple[np.ndarray, np.ndarray]:
    """Linear colour of every hit pixel and its glossiness (for wet reflections), flattened."""
    ids, p = gb.ids.ravel(), gb.points.reshape(-1, 3)
    n_pix = len(ids)
    col = np.zeros((n_pix, 3), np.float32)
    gloss = np.zeros(n_pix, np.float32)
    for sel in (ids == 0, ids > 0):
        if not sel.any():
            continue
        q = p[sel]
        if ids[sel][0] == 0:
            s = ground_surface(world, q[:, 0], q[:, 1], cond.foliage, look)
            vis = sample_grid(world, occlusion_map(world), q[:, 0], q[:, 1], 1.0)
            shade = 1.0 - look.shadow * sample_grid(world, shadow_map(world, look.sun_dir, cond.foliage),
                                                    q[:, 0], q[:, 1], 0.0)
        else:
            s = object_surface(world, ids[sel], q, cond.foliage, look, condition_key(cond.name))
            vis = 0.6 + 0.4 * np.clip(s.normal[:, 2], -0.5, 1)
            shade = np.ones(len(q), np.float32)
        irr = look.ambient_rgb * vis[:, None]
        irr = irr + look.sun_rgb * (np.clip(s.normal @ look.sun_dir, 0, 1) * shade)[:, None]
        if look.lamps > 0:
            irr = irr + lamp_light(world, q, s.normal, gb.origin, gb.R[:, 2], look.lamps)
        if look.headlights > 0:
            irr = irr + headlight(q, s.normal, gb.origin, gb.R[:, 2], look.headlights)
        col[sel] = s.albedo * irr + s.emit
        if ids[sel][0] == 0:
            gloss[sel] = s.gloss  # wet ground: mirrored later in image space
        else:  # window glass reflects the sky
            col[sel] += s.gloss[:, None] * (0.7 * look.horizon_rgb + 0.3 * look.zenith_rgb)
    return col, gloss


def shade(world: World, gb: GBuffer, cam: CameraIntrinsics, cond: Condition, look: Look, frame: int) -> np.ndarray:
    H, W = gb.t.shape
    key = condition_key(cond.name)
    rng = np.random.default_rng([world.seed, key, frame])
    dirs, t, ids = gb.dirs.reshape(-1, 3), gb.t.ravel(), gb.ids.ravel()
    col, gloss = light_surfaces(world, gb, cond, look)
    is_sky = ids < 0
    shift = np.random.default_rng([world.seed, key]).uniform(0, 10000, 2) + frame * np.array([0.4, 0.1])
    sky_col = sky(world, dirs, look, shift)
    col[is_sky] = sky_col[is_sky]
    img = col.reshape(H, W, 3)
    if look.wet > 0:
        img = wet_reflection(img, gloss * look.wet, dirs, gb.R, cam, sky_col.reshape(-1, 3)[gloss > 0])
    if look.lamps > 0 or look.lit_windows > 0:
        img = glow(img, (img.max(-1) > 0.6) & ~is_sky.reshape(H, W), 0.5 + 0.5 * look.lamps)
    img = apply_haze(img.reshape(-1, 3), t, is_sky, dirs, look).reshape(H, W, 3)
    if look.rain_streaks:
        img = rain_streaks(img, rng, look.rain_streaks)
    if look.flakes:
        img = snow_flakes(img, rng, look.flakes)
    img = cv2.GaussianBlur(img, (0, 0), 0.55)
    return to_srgb8(img, look.exposure, rng, look.noise)


def pose_matrix(pose) -> tuple[np.ndarray, np.ndarray]:
    """(position, R map<-optical) from a 4x4 matrix or a (position, xyzw quaternion) pair."""
    if isinstance(pose, np.ndarray) and pose.shape == (4, 4):
        return pose[:3, 3].astype(np.float64), pose[:3, :3].astype(np.float64)
    position, quat = pose
    return np.asarray(position, np.float64), quat_to_rot(np.asarray(quat, np.float64))


def render(world: World, pose, camera: CameraIntrinsics, condition: Condition | str, *, frame: int = 0,
           utc: float | None = None, look: Look | None = None, buffers: bool = False):
    """RGB uint8 (H, W, 3) of the world seen from `pose` (optical frame in the map frame).

    With buffers=True returns (image, ids, depth): ids int32 (-1 sky, 0 ground, >0 object id) and
    depth float32 = optical-frame z in metres (inf for sky), for geometric tests.
    """
    cond = get_condition(condition) if isinstance(condition, str) else condition
    look = look or look_for(world, cond, utc)
    origin, R = pose_matrix(pose)
    gb = cast(world, origin, R, camera, cond.foliage)
    img = shade(world, gb, camera, cond, look, frame)
    if buffers:
        return img, gb.ids, gb.depth.astype(np.float32)
    return img
