"""`disam-bench match`, part `gardens`: does local matching tell the right place, day against night, on a walk?

Why: Gardens Point mini has no pixel ground truth (a hand-held walk, day 960x540 against night 640x360), but it
has the place: `query/i.jpg` (day) shows the place of `ref/i.jpg` (night). So every day image is matched with
every night image, a RANSAC fundamental matrix (3 px) is fitted to each pair's matches, and the inlier count of
the right pair is set against the best wrong pair's. A method whose right pairs do not out-count the wrong ones
cannot verify a place across day and night, whatever its MMA elsewhere.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from disam_ros.bench.match_methods import METHODS, match
from disam_ros.bench.match_metrics import fundamental_inliers, median
from disam_ros.bench.match_webcams import read_grey


def gardens_images(root: Path) -> tuple[list[Path], list[Path]]:
    """(day queries, night references), same place at the same index; a ValueError when they differ in number."""
    day = sorted((root / "query").glob("*.jpg"), key=lambda p: int(p.stem))
    night = sorted((root / "ref").glob("*.jpg"), key=lambda p: int(p.stem))
    if not day or [p.stem for p in day] != [p.stem for p in night]:
        raise ValueError(f"{root}: query/*.jpg and ref/*.jpg must hold the same place numbers; check the copy")
    return day, night


def inlier_matrix(day: list, night: list, tick: Callable[[], None] = lambda: None) -> np.ndarray:
    """(n_day, n_night) fundamental-matrix inlier counts of every day x night pair of feature sets."""
    out = np.zeros((len(day), len(night)), np.int64)
    for i, a in enumerate(day):
        for j, b in enumerate(night):
            pairs = match(a, b)
            out[i, j] = fundamental_inliers(a.keypoints[pairs[:, 0]], b.keypoints[pairs[:, 1]])
        tick()
    return out


def summarise(method: str, counts: np.ndarray) -> dict:
    """Median right-pair inliers, median best-wrong inliers, share of places whose right pair wins outright."""
    n = len(counts)
    right = np.diag(counts)
    wrong = np.where(np.eye(n, dtype=bool), -1, counts).max(axis=1)
    return {"part": "gardens", "method": method, "group": "day>night", "places": n,
            "median_right_inliers": median(right.tolist()), "median_best_wrong_inliers": median(wrong.tolist()),
            "right_wins": float(np.mean(right > wrong)), "inliers": counts.tolist()}


def run_gardens(root: Path, methods: tuple[str, ...], tick: Callable[[], None]) -> list[dict]:
    """One row per method (`tick` once per day image)."""
    day_paths, night_paths = gardens_images(root)
    rows = []
    for name in methods:
        fn = METHODS[name]
        day = [fn(read_grey(p)) for p in day_paths]
        night = [fn(read_grey(p)) for p in night_paths]
        rows.append(summarise(name, inlier_matrix(day, night, tick)))
    return rows
