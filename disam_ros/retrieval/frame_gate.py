"""Junk-frame gate: does a camera frame carry a scene at all? (pure functions, no ROS, no model)

Retrieval always returns *some* nearest map image, and a covered lens, a black or white frame or sensor
noise score as well as real frames (a uniform grey frame scored above 68 % of real ones), so no confidence
threshold separates them. The gate looks at the pixels instead, before the encoder runs, and refuses a
frame when one of these holds (checked in this order, the first one is the reason):

- too small: a side under `min_side` pixels (a 2000x1 "frame" is no camera image);
- too dark: the brightest luma under `min_peak` (black frame, lens cap, lights off);
- uniform: luma standard deviation under `min_std` grey levels (white, grey, covered lens, +-2 noise);
- too few grey levels: fewer than `min_levels` distinct luma values (flat frames, two-level test patterns
  such as checkerboards of any cell size);
- no spatial structure: the correlation of luma with its right and lower neighbours under
  `min_correlation`. Pure noise (uniform, Gaussian, salt-and-pepper) has neighbour correlation ~0, real
  images are strongly correlated. Frames of at least 16 blocks per side (128 px at the default 8-px
  `coarse_block`) are judged on 8x8 block means instead of pixels: JPEG-compressed noise is smooth inside
  its 8x8 blocks (pixel correlation up to 0.57 at quality 10) but its block means are independent (~0.02),
  and a real frame buried in sensor noise (night, high gain) has a low pixel correlation but a high one
  once the noise is averaged out (0.86 for a night frame with noise of sigma 60). Smaller frames use pixels.

The pixel-scale statistics come from at most `sample_pixels` pixels in whole rows (exact neighbours, so a
pixel pattern is never aliased): the gate costs under a millisecond for a VGA frame.

Measured (test/test_frame_gate.py): every frame of the shared data passes (Nordland: 3,576 frames of 64x32,
tunnels included: near-black but for a logo (brightest 85-89, std 3, 10 grey levels) or a lamp; Gardens
Point day and night), as do synthetic frames of every condition, night and fog included (lowest: night
pixel correlation 0.76, block correlation 0.66; fog std 22). Refused: black, white, grey, grey +-2 noise,
uniform and Gaussian noise (raw or JPEG at any quality), checkerboards of any cell size, demosaiced noise in
frames of 128 px and more. Not refused: a smooth low-contrast gradient (light leaking round a lens cap)
with a std above `min_std`, which these statistics cannot tell from a dark tunnel frame; in frames under
128 px, demosaiced (Bayer-interpolated) noise and low-quality JPEG noise (pixel correlation ~0.4-0.46,
that of the flattest real frames).

`features_finite` is the other half of the gate: an encoder whose output holds NaN/inf has no answer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the junk-frame gate; the defaults pass all shared real data (see the module docstring).

    Grey levels are on the 0..255 scale of 8-bit luma."""

    enabled: bool = True
    min_side: int = 8  # pixels: smaller frames carry no scene
    min_peak: float = 24.0  # brightest luma; black frames are 0, the darkest real frames seen ~85
    min_std: float = 2.0  # luma std; a covered lens with +-2 noise is 1.4, the flattest real frame 2.9
    min_levels: int = 6  # distinct luma values; checkerboards have 2, the flattest real frame 10
    min_correlation: float = 0.25  # neighbour correlation; noise ~0 (|r| < 0.05), the least real frame 0.42
    coarse_block: int = 8  # block side of the coarse scale (JPEG's block: compressed noise stays ~0 there)
    sample_pixels: int = 65536  # pixel-scale statistics come from at most this many pixels (whole rows)

    def __post_init__(self) -> None:
        for name in ("min_side", "min_levels", "coarse_block", "sample_pixels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"GateConfig.{name}={v!r} must be a positive integer")
        for name in ("min_peak", "min_std", "min_correlation"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"GateConfig.{name}={v!r} must be a finite number")


@dataclass(frozen=True)
class FrameStats:
    """What the gate measured (luma on the 0..255 scale); correlations are NaN where not measurable."""

    width: int
    height: int
    peak: float
    std: float
    levels: int
    correlation: float  # pixel scale
    coarse_correlation: float  # block-mean scale (NaN in frames too small for it)


@dataclass(frozen=True)
class GateVerdict:
    ok: bool
    reason: str  # "" when ok; else one line naming the statistic and its threshold
    stats: FrameStats | None = None


def frame_stats(rgb: np.ndarray, cfg: GateConfig = GateConfig()) -> FrameStats:
    """Luma statistics of an HxWx3 RGB (or HxW grey) uint8 frame (see the module docstring)."""
    grey = _grey(rgb)
    h, w = grey.shape
    if h < 2 or w < 2:
        lum = grey.astype(np.float32).ravel()
        return FrameStats(w, h, float(lum.max(initial=0.0)), float(lum.std()) if lum.size else 0.0,
                          int(np.unique(grey).size), math.nan, math.nan)
    # Whole rows, at most `sample_pixels` of them together: exact horizontal and vertical neighbours, so a
    # pixel-scale pattern is never aliased, and contiguous memory, so large frames stay cheap.
    n_rows = max(1, min(h - 1, cfg.sample_pixels // w))
    rows = np.arange(h - 1) if n_rows == h - 1 else np.sort(np.random.default_rng(0).choice(h - 1, n_rows, False))
    top, below = grey[rows].astype(np.float32), grey[rows + 1].astype(np.float32)
    fine = 0.5 * (_pearson(top[:, :-1], top[:, 1:]) + _pearson(top, below))
    k = cfg.coarse_block
    coarse = math.nan
    if min(h, w) >= 16 * k:  # enough blocks for a stable estimate: block means = INTER_AREA at an integer factor
        small = cv2.resize(grey[:h // k * k, :w // k * k], (w // k, h // k), interpolation=cv2.INTER_AREA)
        small = small.astype(np.float32)
        coarse = 0.5 * (_pearson(small[:, :-1], small[:, 1:]) + _pearson(small[:-1], small[1:]))
    levels = int(np.count_nonzero(np.bincount(top.astype(np.int64).ravel(), minlength=256)))
    return FrameStats(w, h, float(grey.max()), float(top.std()), levels, fine, coarse)


def check_frame(rgb: np.ndarray, cfg: GateConfig = GateConfig()) -> GateVerdict:
    """Does this frame carry a scene? ok=False with a one-line reason for a junk frame."""
    if not cfg.enabled:
        return GateVerdict(True, "")
    img = np.asarray(rgb)
    h, w = img.shape[:2] if img.ndim in (2, 3) else (0, 0)
    if min(h, w) < cfg.min_side:
        return GateVerdict(False, f"frame too small ({w}x{h} px, need at least {cfg.min_side} per side)")
    s = frame_stats(img, cfg)
    corr = s.coarse_correlation if math.isfinite(s.coarse_correlation) else s.correlation
    checks = (
        (s.peak < cfg.min_peak, f"too dark (brightest luma {s.peak:.0f} < {cfg.min_peak:g}): lens covered or "
                                "no light"),
        (s.std < cfg.min_std, f"uniform (luma std {s.std:.2f} < {cfg.min_std:g}): blank frame or covered lens"),
        (s.levels < cfg.min_levels, f"too few grey levels ({s.levels} < {cfg.min_levels}): flat frame or test "
                                    "pattern"),
        (not corr >= cfg.min_correlation, f"no spatial structure (neighbour correlation {corr:.2f} < "
                                          f"{cfg.min_correlation:g}): noise"),
    )
    reason = next((why for bad, why in checks if bad), "")
    return GateVerdict(not reason, reason, s)


def features_finite(*features: Any) -> bool:
    """True when every given feature array (numpy or torch, None skipped) is all finite."""
    for f in features:
        if f is None:
            continue
        if type(f).__module__.startswith("torch"):
            import torch

            if not bool(torch.isfinite(f).all()):
                return False
        elif not bool(np.isfinite(np.asarray(f)).all()):
            return False
    return True


def _grey(rgb: np.ndarray) -> np.ndarray:
    """HxW luma (BT.601, as the camera's own grey would be) of an RGB, RGBA or grey frame; empty otherwise."""
    img = np.asarray(rgb)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        return cv2.cvtColor(np.ascontiguousarray(img[:, :, :3]), cv2.COLOR_RGB2GRAY)
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    return img if img.ndim == 2 else np.zeros((0, 0), np.uint8)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation; 0 when either side is constant (a flat frame has no structure to correlate)."""
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / denom if denom > 0 else 0.0
