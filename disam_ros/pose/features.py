"""Classical local features for geometric verification: OpenCV SIFT keypoints + descriptors, and the ratio-test
(+ mutual nearest neighbour) matching of two descriptor sets.

Why SIFT: it is in OpenCV (no extra weights, no GPU), scale and rotation invariant, and the baseline every
learned matcher is compared with; the dense DISAM correspondences can replace it behind the same (M,2) pair
interface. Keypoints are in OpenCV's pixel convention (centre of the top-left pixel = (0, 0)), the one the
intrinsics and the pose solver use, so they go to disam_ros.pose.solver unchanged.

Determinism: SIFT is deterministic for a given image; the keypoints are then sorted by response (strongest
first), then position, so the order does not depend on OpenCV's internal threading, and matching is a brute
force search with no random component.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class SiftConfig:
    """OpenCV SIFT options (Lowe's defaults); nfeatures = 0 keeps all; root_sift: Hellinger-normalised
    descriptors (L1 normalise, square root), which match better under illumination change; clahe: equalise
    local contrast (CLAHE, clip 3, 8x8 tiles) before detection, which lifts the faint gradients of fog, dusk
    and night over the contrast threshold. `MAP_SIFT` is the recipe maps are built with (docs/pose.md)."""

    nfeatures: int = 2000
    n_octave_layers: int = 3
    contrast_threshold: float = 0.04
    edge_threshold: float = 10.0
    sigma: float = 1.6
    root_sift: bool = False
    clahe: bool = False
    scale: float = 1.0  # detect on the image resized by this factor (0.5: a quarter of the cost at 640x480)
    # ... and never on more than this many pixels along the longer side (0 = no cap). Why: a real photograph of
    # 4000x3000 would spend seconds on SIFT and its 2000 strongest keypoints would be fine-scale texture that
    # another camera or season does not repeat; hloc's SIFT caps at 1600 too. 640x480 images are untouched.
    max_side: int = 0

    def __post_init__(self) -> None:
        if self.nfeatures < 0 or self.n_octave_layers < 1 or not self.sigma > 0 or self.max_side < 0:
            raise ValueError(f"SiftConfig: nfeatures={self.nfeatures} and max_side={self.max_side} must be >= 0, "
                             f"n_octave_layers={self.n_octave_layers} >= 1 and sigma={self.sigma} > 0")
        if not (0.0 < self.contrast_threshold < 1.0 and self.edge_threshold > 0 and 0.1 <= self.scale <= 1.0):
            raise ValueError(f"SiftConfig: contrast_threshold={self.contrast_threshold} must be in (0, 1) and "
                             f"edge_threshold={self.edge_threshold} > 0, scale={self.scale} in [0.1, 1]")

    def to_record(self) -> dict:
        """What a map records about how its keypoints were found (the query must be treated alike)."""
        return {"kind": "sift", "nfeatures": self.nfeatures, "n_octave_layers": self.n_octave_layers,
                "contrast_threshold": self.contrast_threshold, "edge_threshold": self.edge_threshold,
                "sigma": self.sigma, "clahe": self.clahe, "scale": self.scale, "max_side": self.max_side}

    @classmethod
    def from_record(cls, record: object) -> SiftConfig:
        """The inverse of `to_record`; the bare string "sift" (maps written before recipes were recorded)
        means Lowe's defaults without CLAHE. A ValueError names anything else."""
        if record == "sift":
            return cls()
        keys = ("nfeatures", "n_octave_layers", "contrast_threshold", "edge_threshold", "sigma", "clahe")
        if not isinstance(record, dict) or record.get("kind") != "sift" or not set(keys) <= set(record):
            raise ValueError(f"map geometry features {str(record)[:80]!r} are not a SIFT recipe: rebuild the map")
        try:
            return cls(**{k: record[k] for k in keys}, scale=record.get("scale", 1.0),
                       max_side=record.get("max_side", 0))  # maps written before the cap: none
        except TypeError as exc:
            raise ValueError(f"map geometry features recipe is invalid ({exc}): rebuild the map") from None


MAP_SIFT = SiftConfig(contrast_threshold=0.01, clahe=True, max_side=1600)


@dataclass(frozen=True)
class Features:
    """Keypoints (N,2) float32 pixels (x, y), descriptors (N,128) float32, scales (N,) keypoint diameters in
    pixels, responses (N,) detector scores, strongest first."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    scales: np.ndarray
    responses: np.ndarray

    def __len__(self) -> int:
        return len(self.keypoints)


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 (H,W) grey or (H,W,3) RGB -> (H,W) uint8 grey; a one-line ValueError for anything else."""
    if not isinstance(image, np.ndarray) or image.size == 0:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"feature extraction got an empty or non-array image ({shape}): pass an (H,W) or "
                         "(H,W,3) uint8 array")
    if image.dtype != np.uint8:
        raise ValueError(f"feature extraction needs a uint8 image, got {image.dtype}: convert it, e.g. "
                         "np.clip(img * 255, 0, 255).astype(np.uint8) for [0, 1] floats")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"feature extraction needs (H,W) grey or (H,W,3) RGB, got shape {image.shape}")


def equalise(grey: np.ndarray) -> np.ndarray:
    """Local contrast equalisation (CLAHE, clip limit 3, 8x8 tiles) of a uint8 grey image."""
    return cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(grey)


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, then square root; unit L2 norm as a result."""
    d = np.asarray(descriptors, np.float32)
    d = d / np.maximum(np.abs(d).sum(axis=1, keepdims=True), 1e-12)
    return np.sqrt(d)


def detection_scale(config: SiftConfig, width: int, height: int) -> float:
    """The factor an image of this size is resized by before detection: `scale`, lowered so that the longer
    side stays within `max_side` when that is set."""
    cap = config.max_side / max(width, height) if config.max_side else 1.0
    return min(config.scale, cap)


def detect_sift(image: np.ndarray, config: SiftConfig | None = None, mask: np.ndarray | None = None) -> Features:
    """SIFT keypoints and descriptors of an image; `mask` (H,W) uint8/bool, non-zero where to detect."""
    config = config or SiftConfig()
    grey = to_grey(image)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != grey.shape:
            raise ValueError(f"feature mask shape {mask.shape} differs from the image's {grey.shape}")
        mask = (mask != 0).astype(np.uint8)
    h, w = grey.shape
    factor = detection_scale(config, w, h)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    if factor != 1.0:
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        mask = None if mask is None else cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    grey = equalise(grey) if config.clahe else grey
    sift = cv2.SIFT_create(config.nfeatures, config.n_octave_layers, config.contrast_threshold,
                           config.edge_threshold, config.sigma)
    kps, desc = sift.detectAndCompute(grey, mask)
    if not kps:
        z = np.zeros(0, np.float32)
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), z, z)
    sx, sy = size[0] / w, size[1] / h
    pts = np.array([k.pt for k in kps], np.float64)  # back to the original's pixels (centre convention)
    pts = np.stack([(pts[:, 0] + 0.5) / sx - 0.5, (pts[:, 1] + 0.5) / sy - 0.5], 1).astype(np.float32)
    scales = np.array([k.size for k in kps], np.float32) / np.float32(sx)
    resp = np.array([k.response for k in kps], np.float32)
    order = np.lexsort((pts[:, 0], pts[:, 1], -resp))
    desc = np.asarray(desc, np.float32)[order]
    return Features(pts[order], root_sift(desc) if config.root_sift else desc, scales[order], resp[order])


def _check_descriptors(d1: np.ndarray, d2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(d1), np.asarray(d2)
    if a.ndim != 2 or b.ndim != 2 or (len(a) and len(b) and a.shape[1] != b.shape[1]):
        raise ValueError(f"matching needs descriptor arrays (N,D) and (M,D), got {a.shape} and {b.shape}")
    a, b = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("matching got NaN/inf descriptors: recompute the features")
    return a, b


def match_descriptors(d1: np.ndarray, d2: np.ndarray, ratio: float = 0.8, mutual: bool = True) -> np.ndarray:
    """(M,2) int64 index pairs (i in d1, j in d2), sorted by i: j is i's nearest neighbour (L2) and closer
    than `ratio` times the second nearest (Lowe's ratio test); with `mutual`, i is also j's nearest neighbour.
    With fewer than 2 candidates in d2 the ratio test is undefined and nothing matches."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio={ratio!r} must be in (0, 1] (Lowe's ratio test; 0.8 is his value)")
    a, b = _check_descriptors(d1, d2)
    if len(a) == 0 or len(b) < 2:
        return np.zeros((0, 2), np.int64)
    bf = cv2.BFMatcher(cv2.NORM_L2)
    pairs = [(m[0].queryIdx, m[0].trainIdx) for m in bf.knnMatch(a, b, k=2)
             if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    out = np.array(pairs, np.int64).reshape(-1, 2)
    if mutual and len(out):
        back = np.full(len(b), -1, np.int64)
        for m in bf.match(b, a):
            back[m.queryIdx] = m.trainIdx
        out = out[back[out[:, 1]] == out[:, 0]]
    return out[np.argsort(out[:, 0], kind="stable")]


def match_unit_descriptors(d1: np.ndarray, d2: np.ndarray, ratio: float = 0.8, mutual: bool = True) -> np.ndarray:
    """`match_descriptors` for unit-length descriptors (RootSIFT), by one matrix product: for unit vectors
    |a - b|^2 = 2 - 2 a.b, so the nearest neighbours are the largest similarities. Why: the verifier matches a
    query against whole map images on every frame it cannot guide; on one thread this takes ~30 ms for 2000 x
    1800 descriptors where OpenCV's brute-force kNN takes ~100 ms. The same pairs (test_pose_features)."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio={ratio!r} must be in (0, 1] (Lowe's ratio test; 0.8 is his value)")
    a, b = _check_descriptors(d1, d2)
    if len(a) == 0 or len(b) < 2:
        return np.zeros((0, 2), np.int64)
    sim = a @ b.T
    back = np.argmax(sim, axis=0)
    rows = np.arange(len(a))
    j = np.argmax(sim, axis=1)
    best = sim[rows, j].copy()
    sim[rows, j] = -np.inf
    second = sim.max(axis=1)
    d_best, d_second = np.maximum(2.0 - 2.0 * best, 0.0), np.maximum(2.0 - 2.0 * second, 0.0)
    keep = d_best < ratio * ratio * d_second
    if mutual:
        keep &= back[j] == rows
    return np.stack([rows[keep], j[keep]], 1).astype(np.int64)
