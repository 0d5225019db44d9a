"""Image-space weather and sensor effects: sky, haze, wet-road reflections, rain, snow flakes, glow, noise.

These act on the linear image after surface lighting. Anything random is drawn from a generator seeded
by (world seed, condition, frame), so a frame re-renders to the same bytes in any worker process.
"""
from __future__ import annotations

import cv2
import numpy as np

from disam_ros.data.folders import CameraIntrinsics
from disam_ros.data.synthetic.conditions import Look
from disam_ros.data.synthetic.scene import World, sample_texture


def sky(world: World, dirs: np.ndarray, look: Look, cloud_shift: np.ndarray) -> np.ndarray:
    """Gradient sky with a sun glow and clouds on a plane 600 m up (linear RGB, (M,3))."""
    e = np.clip(dirs[:, 2], 0.0, 1.0)[:, None]
    col = look.horizon_rgb + (look.zenith_rgb - look.horizon_rgb) * (1 - (1 - e) ** 3)
    cos_sun = np.clip(dirs @ look.sun_dir, -1, 1)[:, None]
    if look.sun_rgb.max() > 0:
        col = col + look.sun_rgb * (0.25 * np.exp((cos_sun - 1) * 12) + 3.0 * (cos_sun > 0.99995))
    if look.cloud_cover > 0:
        ez = np.maximum(dirs[:, 2], 0.03)
        cu = (dirs[:, 0] / ez * 600 + cloud_shift[0]) / 40.0
        cv = (dirs[:, 1] / ez * 600 + cloud_shift[1]) / 40.0
        nz = sample_texture(world.noise, cu, cv)[:, None]
        thresh = 1.0 - look.cloud_cover
        a = np.clip((nz - thresh * 0.75) / 0.18, 0, 1) if look.cloud_cover < 1 else 0.55 + 0.45 * nz
        a = a * np.clip(e * 6, 0, 1) if look.cloud_cover < 1 else a
        shade = 0.8 + 0.4 * nz
        col = col * (1 - a) + look.cloud_rgb * shade * a
    return col.astype(np.float32)


def apply_haze(col: np.ndarray, t: np.ndarray, is_sky: np.ndarray, dirs: np.ndarray, look: Look) -> np.ndarray:
    """Aerial perspective: surfaces fade with distance, the sky fades towards the horizon."""
    T = np.exp(-look.haze_beta * np.where(is_sky, 0.0, t))[:, None]
    out = col * T + look.haze_rgb * (1 - T)
    w_sky = np.clip(look.haze_beta * 20.0, 0, 1) + np.exp(-12 * np.clip(dirs[:, 2], 0, 1))
    w_sky = np.clip(w_sky, 0, 1)[:, None] * 0.9
    return np.where(is_sky[:, None], col * (1 - w_sky) + look.haze_rgb * w_sky, out).astype(np.float32)


def wet_reflection(img: np.ndarray, gloss: np.ndarray, dirs: np.ndarray, R: np.ndarray, cam: CameraIntrinsics,
                   fallback: np.ndarray) -> np.ndarray:
    """Mirror the lit image about the ground for glossy pixels (a puddle shows the street and lights)."""
    H, W, _ = img.shape
    m = gloss.reshape(H, W) > 0
    if not m.any():
        return img
    d = dirs.reshape(H, W, 3)[m] * np.array([1, 1, -1], np.float32)
    pc = d @ R.astype(np.float32)
    z = np.maximum(pc[:, 2], 1e-3)
    u = cam.fx * pc[:, 0] / z + cam.cx
    v = cam.fy * pc[:, 1] / z + cam.cy
    blurred = cv2.GaussianBlur(img, (0, 0), max(H / 180.0, 0.7))
    ref = sample_texture(blurred, u, v, wrap=False, border=-1.0)
    ref = np.where(ref[:, :1] < 0, fallback, ref)
    cos = np.clip(-dirs.reshape(H, W, 3)[m][:, 2], 0, 1)[:, None]
    fres = (0.05 + 0.95 * (1 - cos) ** 5) * gloss.reshape(H, W)[m][:, None]
    out = img.copy()
    out[m] = img[m] * (1 - fres) + ref * fres
    return out


def glow(img: np.ndarray, emit_mask: np.ndarray, strength: float) -> np.ndarray:
    """Bloom around bright lamps and windows, as a real lens and sensor show at night."""
    H = img.shape[0]
    bright = np.where(emit_mask[..., None], np.clip(img - 0.3, 0, None), 0.0).astype(np.float32)
    halo = cv2.GaussianBlur(bright, (0, 0), max(H / 90.0, 1.0))
    return img + strength * halo


def rain_streaks(img: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    H, W, _ = img.shape
    layer = np.zeros((H, W), np.float32)
    n = int(count * H * W / 256 ** 2)
    slant = rng.uniform(-0.25, 0.25)
    for _ in range(n):
        x, y = rng.uniform(0, W), rng.uniform(0, H)
        length = rng.uniform(0.03, 0.08) * H
        cv2.line(layer, (int(x), int(y)), (int(x + slant * length), int(y + length)), float(rng.uniform(0.3, 1.0)), 1)
    layer = cv2.GaussianBlur(layer, (0, 0), 0.6)[..., None]
    return img * (1 - 0.25 * layer) + 0.25 * layer * np.array([0.7, 0.72, 0.78], np.float32)


def snow_flakes(img: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    H, W, _ = img.shape
    layer = np.zeros((H, W), np.float32)
    n = int(count * H * W / 256 ** 2)
    for _ in range(n):
        r = rng.uniform(0.3, 1.0) ** 3 * 0.012 * H + 0.5
        cv2.circle(layer, (int(rng.uniform(0, W)), int(rng.uniform(0, H))), int(round(r)), 1.0, -1)
    layer = cv2.GaussianBlur(layer, (0, 0), 0.8)[..., None] * 0.85
    return img * (1 - layer) + layer * np.array([0.95, 0.95, 0.97], np.float32)


def to_srgb8(img: np.ndarray, exposure: float, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Filmic tone curve, gamma, sensor noise (stronger in the dark, as with high gain) and 8-bit rounding."""
    x = 1.0 - np.exp(-np.clip(img, 0, None) * exposure)
    out = np.power(x, 1 / 2.2) * 255.0
    if noise > 0:
        shot = np.sqrt(np.clip(out, 0, 255) / 255.0 + 0.02)
        out = out + rng.standard_normal(out.shape[:2] + (1,), dtype=np.float32) * (noise * 1.2) * shot
        out = out + rng.standard_normal(out.shape, dtype=np.float32) * (noise * 0.35) * shot
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
