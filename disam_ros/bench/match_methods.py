"""Local feature methods for `disam-bench match`: a registry of `detect_and_describe(image) -> LocalFeatures`.

Why a registry: the benchmark exists so that a learned detector/descriptor trained later is compared with the
classical baselines on the same numbers. A new method is one function registered under a name (`register`),
returning keypoints, descriptors, the descriptor norm and the ratio test its descriptors are matched with (Lowe's
0.8 suits SIFT and ORB; learned descriptors are usually matched by mutual nearest neighbours alone, and the
learned method's ratio was chosen on a validation town); everything after that (mutual check, RANSAC, ground
truth) is shared and cannot drift between methods.

Baselines, all capped at 2000 keypoints so that no method wins by sheer numbers:
- `sift`: OpenCV SIFT with Lowe's defaults (contrast 0.04), L2 descriptors;
- `orb`: OpenCV ORB (FAST + rBRIEF, 8 levels), binary descriptors under the Hamming norm;
- `sift_map`: the product's map recipe (pose/features.py MAP_SIFT: contrast 0.01, CLAHE, longer side <= 1600)
  with RootSIFT descriptors, as the verifier matches them.
The learned detector/descriptor (model/keypoint_net.py) is `learned`: the shipped network, or any file
`disam-train-keypoints` wrote (`learned_method(path)`), loaded on its first image.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from disam_ros.pose.features import MAP_SIFT, detect_sift, root_sift, to_grey
from disam_ros.shipped import KEYPOINTS

NFEATURES = 2000
LEARNED_RATIO = 1.0  # mutual nearest neighbours alone: chosen among 0.8 / 0.9 / 1.0 on the validation town (seed 7)
NORMS = {"l2": cv2.NORM_L2, "hamming": cv2.NORM_HAMMING}


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoints (N,2) float32 pixels (x, y; OpenCV's centre-of-pixel convention), descriptors (N,D), the
    norm they are compared with ("l2" for float descriptors, "hamming" for packed uint8 binary ones) and the
    ratio test their method matches with (Lowe's 0.8 for the classical ones; 1.0 = mutual nearest neighbours
    only, as learned descriptors are usually matched)."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    norm: str
    ratio: float = 0.8

    def __len__(self) -> int:
        return len(self.keypoints)


DetectFn = Callable[[np.ndarray], LocalFeatures]
METHODS: dict[str, DetectFn] = {}


def register(name: str, fn: DetectFn) -> DetectFn:
    """Make `fn` available as `--methods name` (a learned method registers itself the same way)."""
    METHODS[name] = fn
    return fn


def _from_cv(kps: tuple, desc: np.ndarray | None, norm: str, dim: int, dtype: type) -> LocalFeatures:
    if not kps or desc is None:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, dim), dtype), norm)
    pts = np.array([k.pt for k in kps], np.float32)
    return LocalFeatures(pts, np.asarray(desc, dtype), norm)


def sift(image: np.ndarray) -> LocalFeatures:
    """OpenCV SIFT, Lowe's defaults, the 2000 strongest keypoints."""
    kps, desc = cv2.SIFT_create(NFEATURES).detectAndCompute(to_grey(image), None)
    return _from_cv(kps, desc, "l2", 128, np.float32)


def orb(image: np.ndarray) -> LocalFeatures:
    """OpenCV ORB (FAST corners, oriented BRIEF), 2000 keypoints, Hamming norm."""
    kps, desc = cv2.ORB_create(NFEATURES).detectAndCompute(to_grey(image), None)
    return _from_cv(kps, desc, "hamming", 32, np.uint8)


def sift_map(image: np.ndarray) -> LocalFeatures:
    """What the product's maps and verifier use: MAP_SIFT detection + RootSIFT descriptors."""
    f = detect_sift(image, MAP_SIFT)
    return LocalFeatures(f.keypoints, root_sift(f.descriptors), "l2")


def learned_method(path: Path, ratio: float = LEARNED_RATIO) -> DetectFn:
    """The keypoint network in `path` as a method (loaded on the first image, so listing methods stays cheap)."""
    net = []

    def learned(image: np.ndarray) -> LocalFeatures:
        from disam_ros.model.keypoint_net import extract, load_keypoint_net

        if not net:
            net.append(load_keypoint_net(path))
        kps, _, desc = extract(net[0], image, limit=NFEATURES)
        return LocalFeatures(kps, desc, "l2", ratio)
    return learned


for _name, _fn in (("sift", sift), ("orb", orb), ("sift_map", sift_map),
                   ("learned", learned_method(KEYPOINTS))):
    register(_name, _fn)


def match(a: LocalFeatures, b: LocalFeatures, ratio: float | None = None, mutual: bool = True) -> np.ndarray:
    """(M,2) index pairs (i in a, j in b): j is i's nearest neighbour under the features' norm, closer than
    `ratio` (default: the features' own) times the second nearest, and (with `mutual`) i is j's nearest
    neighbour too. Brute force: no randomness, so every run gives the same pairs."""
    if a.norm != b.norm or a.ratio != b.ratio:
        raise ValueError(f"cannot match {a.norm} descriptors (ratio {a.ratio}) with {b.norm} ones (ratio {b.ratio}): "
                         "use one method on both images")
    ratio = a.ratio if ratio is None else ratio
    if len(a) == 0 or len(b) < 2:
        return np.zeros((0, 2), np.int64)
    bf = cv2.BFMatcher(NORMS[a.norm])
    pairs = [(m[0].queryIdx, m[0].trainIdx) for m in bf.knnMatch(a.descriptors, b.descriptors, k=2)
             if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    out = np.array(pairs, np.int64).reshape(-1, 2)
    if mutual and len(out):
        back = np.full(len(b), -1, np.int64)
        for m in bf.match(b.descriptors, a.descriptors):
            back[m.queryIdx] = m.trainIdx
        out = out[back[out[:, 1]] == out[:, 0]]
    return out[np.argsort(out[:, 0], kind="stable")]


def method_names(text: str) -> tuple[str, ...]:
    """--methods 'sift,orb' -> ('sift', 'orb'); a ValueError names the known methods."""
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in METHODS]
    if not names or unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown) or repr(text)}: choose from {', '.join(METHODS)}")
    return names
