"""Contact sheet of a generated world: rows = conditions, columns = the same places across conditions.

Places are picked on the reference traversal; every other condition shows its frame nearest to that
reference pose (position, facing the same way), so a person sees at a glance what changes and what not.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from disam_ros.data.folders import read_image
from disam_ros.data.tum import Trajectory, read_tum
from disam_ros.data.world_yaml import world_yaml_if_present
from disam_ros.geometry import quat_to_rot


def nearest_frames(traj: Trajectory, positions: np.ndarray, forwards: np.ndarray, max_dist: float = 6.0) -> np.ndarray:
    """For each query pose, the index of the closest pose of `traj` looking roughly the same way, or -1
    if none is within max_dist (that drive did not get that far)."""
    fwd = quat_to_rot(traj.quats)[:, :, 2]
    dist = np.linalg.norm(positions[:, None] - traj.positions[None], axis=2) + 100.0 * (forwards @ fwd.T < 0.5)
    k = dist.argmin(1)
    return np.where(dist[np.arange(len(k)), k] <= max_dist, k, -1)


def place_frames(root: Path, conditions: list[str], reference: str, places: int) -> dict[str, list[int]]:
    """Per condition, its frame at each of `places` reference places spread over the stretch all drives cover."""
    ref = read_tum(root / reference / "poses.txt")
    fwd = quat_to_rot(ref.quats)[:, :, 2]
    trajs = {name: read_tum(root / name / "poses.txt") for name in conditions}
    table = {n: nearest_frames(t, ref.positions, fwd) for n, t in trajs.items()}
    covered = [k for k in range(len(ref)) if all(table[n][k] >= 0 for n in conditions)] or list(range(len(ref)))
    picks = [covered[int(round(i))] for i in np.linspace(0.05, 0.95, places) * (len(covered) - 1)]
    return {n: [int(table[n][k]) for k in picks] for n in conditions}


def _label(img: np.ndarray, text: str, scale: float, y: int = 22, thick: int = 2) -> None:
    cv2.putText(img, text, (6, int(y * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale * (1 if thick > 1 else 0.8),
                (20, 20, 20) if thick > 1 else (90, 90, 90), thick, cv2.LINE_AA)


def _captions(root: Path) -> dict[str, list[str]]:
    """Second and third label lines per condition from world.yaml (date, time; weather, foliage): the lines
    world.yaml has the facts for (none without the file; a malformed one is an error, not a blank sheet)."""
    info = world_yaml_if_present(root)
    out: dict[str, list[str]] = {}
    for name, c in (info.conditions if info else {}).items():
        lines = [f"{c.local_start[:10]} {c.local_start[11:16]}"] if c.local_start else []
        labels = ", ".join(v for v in (c.weather, c.foliage) if v)
        out[name] = lines + ([labels] if labels else [])
    return out


def contact_sheet(root: Path, conditions: list[str], reference: str, places: int = 5, tile: int = 128) -> np.ndarray:
    """RGB uint8 sheet with a label column for condition names and a header row naming the places."""
    frames = place_frames(root, conditions, reference, places)
    captions = _captions(root)
    scale = max(tile / 128.0, 0.7)
    label_w, head_h = int(118 * scale), int(30 * scale)
    sheet = np.full((head_h + tile * len(conditions), label_w + tile * places, 3), 245, np.uint8)
    for c in range(places):
        cell = sheet[:head_h, label_w + c * tile: label_w + (c + 1) * tile]
        _label(cell, f"place {c + 1}", scale)
    for r, name in enumerate(conditions):
        y = head_h + r * tile
        label = sheet[y + tile // 2 - int(30 * scale): y + tile, :label_w]
        _label(label, name, scale)
        for i, line in enumerate(captions.get(name, [])):
            _label(label, line, scale, 40 + 15 * i, 1)
        images = sorted((root / name / "images").glob("*.png"))
        for c, k in enumerate(frames[name]):
            cell = sheet[y: y + tile, label_w + c * tile: label_w + (c + 1) * tile]
            if k < 0:
                cell[:] = 200
                _label(cell, "not driven", scale * 0.8)
            else:
                cell[:] = cv2.resize(read_image(images[k]), (tile, tile), interpolation=cv2.INTER_AREA)
    return sheet


def write_sheet(path: Path, sheet: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"{path}: could not write the contact sheet PNG; check the folder is writable")
