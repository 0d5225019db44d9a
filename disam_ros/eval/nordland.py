"""The Nordland dev route as the evaluations read it: summer and winter frames of the same places, dark frames
dropped. One module so that the score-matrix loop (`sequence_eval`) and the node route (`node_route`) keep the same
frames: a frame is kept only when both seasons' 99th-percentile pixel reaches MIN_BRIGHTNESS."""
from __future__ import annotations

from pathlib import Path

import numpy as np

NORDLAND_DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "data" / "nordland_trimmed_dev"
MIN_BRIGHTNESS = 20  # 99th-percentile pixel: Nordland's tunnel frames carry a bright watermark, so not max


def nordland_paths(root: Path) -> dict[str, list[Path]]:
    """Sorted summer/ and winter/ PNGs; FileNotFoundError (one line) unless both hold the same names."""
    paths = {s: sorted((Path(root) / s).glob("*.png")) for s in ("summer", "winter")}
    if not paths["summer"] or [p.name for p in paths["summer"]] != [p.name for p in paths["winter"]]:
        raise FileNotFoundError(f"{root}: expected summer/ and winter/ with the same PNG names: pass --data "
                                "pointing at nordland_trimmed_dev")
    return paths


def nordland_frames(root: Path) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Summer and winter images of the kept places, and the frame number of each (its index on the route)."""
    from disam_ros.data.folders import read_image

    paths = nordland_paths(root)
    s_img, w_img = [read_image(p) for p in paths["summer"]], [read_image(p) for p in paths["winter"]]
    keep = np.flatnonzero([np.percentile(a, 99) >= MIN_BRIGHTNESS and np.percentile(b, 99) >= MIN_BRIGHTNESS
                           for a, b in zip(s_img, w_img)])
    return [s_img[i] for i in keep], [w_img[i] for i in keep], keep


__all__ = ["MIN_BRIGHTNESS", "NORDLAND_DEFAULT", "nordland_frames", "nordland_paths"]
