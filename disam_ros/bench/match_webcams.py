"""`disam-bench match`, part `webcams`: night against day on fixed webcams, where the true mapping is the identity.

Why: a webcam never moves, so every correct correspondence between its night and day frames joins the same
pixel (up to a pixel or two of shake), and illumination is the only change: the cleanest real test of
"features that match across conditions".

Pairing rule (fixed, chosen on nothing): each night frame (frames.csv mean grey < 40, as the data README
defines night) is paired with its camera's brightest frame (highest mean grey), the day image `disam-bench real`
uses as that camera's map. Per frame: detect + describe both, match (ratio 0.8, mutual), RANSAC homography
night -> day (3 px); "recovered" = at least 15 inliers and the corners moved by less than 3 px on average; MMA@t
= share of putative matches whose two keypoints lie within t px of each other. Extraction time is measured on
the night frames, OpenCV on one thread.
"""
from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from disam_ros.bench.match_methods import METHODS, LocalFeatures, match
from disam_ros.bench.match_metrics import corner_error, fit_homography, median, mma

NIGHT_GREY = 40.0  # webcams_dev README: mean grey < 40 is night
THRESHOLDS = (3.0, 5.0, 10.0)
RECOVER_PX = 3.0
MIN_INLIERS = 15


@dataclass(frozen=True)
class WebcamPair:
    """One night frame and the day frame of the same camera it is matched against."""

    camera: str
    night: Path
    day: Path


def read_grey(path: Path) -> np.ndarray:
    """A uint8 grey image; a one-line ValueError names an unreadable file."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None or img.size == 0:
        raise ValueError(f"{path}: unreadable or empty image; check the webcams_dev copy")
    return img


def webcam_pairs(root: Path, per_camera: int = 0) -> list[WebcamPair]:
    """Every night frame (at most `per_camera` per camera, evenly spread, when > 0) with its camera's brightest
    frame; cameras without night frames give none."""
    with open(root / "frames.csv", newline="") as f:
        rows = [dict(r, mean_gray=float(r["mean_gray"])) for r in csv.DictReader(f)]
    out = []
    for cam in sorted({r["camera"] for r in rows}):
        mine = [r for r in rows if r["camera"] == cam]
        day = max(mine, key=lambda r: r["mean_gray"])
        nights = sorted((r for r in mine if r["mean_gray"] < NIGHT_GREY), key=lambda r: r["file"])
        if per_camera and len(nights) > per_camera:
            nights = [nights[i] for i in np.linspace(0, len(nights) - 1, per_camera).round().astype(int)]
        out += [WebcamPair(cam, root / cam / n["file"], root / cam / day["file"]) for n in nights]
    return out


def timed(fn: Callable[[np.ndarray], LocalFeatures], image: np.ndarray) -> tuple[LocalFeatures, float]:
    t0 = time.perf_counter()
    f = fn(image)
    return f, 1000.0 * (time.perf_counter() - t0)


def score_pair(night: LocalFeatures, day: LocalFeatures, size: tuple[int, int]) -> dict:
    """One night frame against its day frame: MMA under the identity, inliers, corner error, recovered."""
    pairs = match(night, day)
    a, b = night.keypoints[pairs[:, 0]], day.keypoints[pairs[:, 1]]
    H, inliers = fit_homography(a, b)
    err = corner_error(H, *size) if H is not None else float("inf")
    return {"mma": mma(np.linalg.norm(a - b, axis=1), THRESHOLDS), "inliers": inliers, "corner_px": err,
            "recovered": bool(inliers >= MIN_INLIERS and err < RECOVER_PX), "matches": len(pairs)}


def summarise(method: str, group: str, scores: list[dict], ms: list[float]) -> dict:
    """One table row: frames, recovered share, mean MMA per threshold, median inliers and ms."""
    row = {"part": "webcams", "method": method, "group": group, "frames": len(scores),
           "recovered": float(np.mean([s["recovered"] for s in scores])) if scores else 0.0}
    for k, t in enumerate(THRESHOLDS):
        row[f"mma@{t:g}"] = float(np.mean([s["mma"][k] for s in scores])) if scores else 0.0
    row.update(median_inliers=median([s["inliers"] for s in scores]),
               median_matches=median([s["matches"] for s in scores]), ms=median(ms))
    return row


def run_webcams(root: Path, methods: tuple[str, ...], per_camera: int, tick: Callable[[], None]) -> list[dict]:
    """Rows per method: each camera with night frames, then `pooled` over every night frame."""
    pairs = webcam_pairs(root, per_camera)
    rows = []
    for name in methods:
        fn, days, by_cam = METHODS[name], {}, {}
        for p in pairs:
            if p.day not in days:
                days[p.day] = fn(read_grey(p.day))
            image = read_grey(p.night)
            night, ms = timed(fn, image)
            by_cam.setdefault(p.camera, []).append((score_pair(night, days[p.day], image.shape[::-1]), ms))
            tick()
        for cam, got in by_cam.items():
            rows.append(summarise(name, cam, [g[0] for g in got], [g[1] for g in got]))
        every = [g for got in by_cam.values() for g in got]
        rows.append(summarise(name, "pooled", [g[0] for g in every], [g[1] for g in every]))
    return rows
