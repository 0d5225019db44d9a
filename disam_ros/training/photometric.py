"""Photometric augmentation of training images: night, weather, optics and sensor changes drawn per image.

Why: a model trained on two real conditions (Nordland summer / winter) learns to ignore what differs between
those two drives and nothing else; at night (Gardens Point) it met appearance changes it never saw and scored
below its untrained start. Training images that are darkened, tinted, hazed, blurred and noised at random,
independently of their partner, ask the encoders for codes that do not move with these changes either, without
one labelled night image.

Every function but `augment` is pure and deterministic: float32 HxWx3 RGB in [0, 1] in, the same shape out, no
clipping (so each can be checked in closed form); the random quantities (noise fields, speckle masks) are
arguments. `augment` draws the parameters from the generator it is given (the dataset's keyed generator, so a
sample stays a pure function of its key) and applies the functions in the order light meets the camera: the
scene's contrast, weather in the air, the illumination, the lens, the sensor.
"""
from __future__ import annotations

import cv2
import numpy as np

# Colour casts of artificial night light (RGB gains): cool LED / moonlight, and sodium-vapour street lamps.
NIGHT_TINTS = ((0.75, 0.85, 1.1), (1.1, 0.85, 0.55))


def to_unit(img: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]: the functions below work in linear units where gamma and gains are closed form."""
    return img.astype(np.float32) / 255.0


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float in [0, 1] (clipped) -> uint8 with rounding, the dataset's image type."""
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def adjust_gamma(x: np.ndarray, gamma: float) -> np.ndarray:
    """x ** gamma: > 1 crushes shadows (dusk, under-exposure), < 1 lifts them (over-exposure, flat snow light)."""
    return np.power(np.maximum(x, 0.0), gamma, dtype=np.float32)


def contrast_brightness(x: np.ndarray, contrast: float, brightness: float) -> np.ndarray:
    """Scale around the image mean, then shift: exposure and auto-gain differ between drives and cameras."""
    mean = float(x.mean())
    return ((x - mean) * contrast + mean + brightness).astype(np.float32)


def darken_to_night(x: np.ndarray, gamma: float, level: float, tint: tuple[float, float, float]) -> np.ndarray:
    """level * x ** gamma * tint: night keeps the bright (lit) parts and loses the dim ones, under coloured light.

    Why not a plain gain: a camera at night raises exposure, so what is lit stays visible while shadows go black
    (the gamma), and street or LED lighting casts a colour (the per-channel tint)."""
    return (level * adjust_gamma(x, gamma) * np.asarray(tint, np.float32)).astype(np.float32)


def haze(x: np.ndarray, amount: float, airlight: float) -> np.ndarray:
    """(1 - amount) * x + amount * airlight: fog, rain and falling snow wash contrast toward a grey veil."""
    return ((1.0 - amount) * x + amount * airlight).astype(np.float32)


def speckle(x: np.ndarray, mask: np.ndarray, value: float) -> np.ndarray:
    """Pixels where `mask` (HxW bool) is set become `value` in every channel: snowflakes and rain drops seen
    against the scene, which a place code must not count as structure."""
    out = x.copy()
    out[mask] = value
    return out


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of standard deviation `sigma` pixels: motion, defocus and the long exposures of night."""
    if sigma <= 0:
        return x
    return cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def add_noise(x: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """x + noise (the caller draws it): sensor noise, strongest in the high-gain images of night."""
    return (x + noise).astype(np.float32)


def augment(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """One random photometric change of an HxWx3 uint8 RGB image; same shape, uint8.

    Each effect is drawn with its own probability, magnitudes scaled by `strength` (1 = the ranges below). All
    parameters come from `rng`, so the result is a pure function of the generator's state."""
    h, w = img.shape[:2]
    s = strength
    x = to_unit(img)
    if rng.random() < 0.8:  # exposure and auto-gain
        x = contrast_brightness(x, float(rng.uniform(1 - 0.4 * s, 1 + 0.4 * s)), float(rng.uniform(-0.15, 0.15) * s))
    if rng.random() < 0.3:  # tone curve
        x = adjust_gamma(np.clip(x, 0, 1), float(np.exp(rng.uniform(-0.4, 0.4) * s)))
    if rng.random() < 0.2:  # fog / rain veil
        x = haze(x, float(rng.uniform(0.0, 0.4) * min(s, 2.0)), float(rng.uniform(0.6, 0.95)))
    if rng.random() < 0.15:  # falling snow
        x = speckle(x, rng.random((h, w)) < rng.uniform(0.0, 0.02) * s, float(rng.uniform(0.85, 1.0)))
    night = rng.random() < 0.35
    if night:
        tint = NIGHT_TINTS[int(rng.integers(len(NIGHT_TINTS)))]
        x = darken_to_night(np.clip(x, 0, 1), float(rng.uniform(1.2, 1.2 + 1.3 * s)),
                            float(rng.uniform(max(0.15, 0.8 - 0.5 * s), 1.0)), tint)
    if rng.random() < 0.3:  # lens and motion
        x = gaussian_blur(x, float(rng.uniform(0.3, 1.2) * s))
    if night or rng.random() < 0.3:  # sensor; always at night (high gain)
        sigma = float(rng.uniform(0.01, 0.05 if night else 0.03) * s)
        x = add_noise(x, rng.normal(0.0, sigma, x.shape).astype(np.float32))
    return to_uint8(x)
