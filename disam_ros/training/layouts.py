"""Dataset layouts -> per-domain image lists with place coordinates.

Expected layouts (`data.layout`; `auto` picks the first that matches):

- `folders` (the product's own): `ROOT/<condition>/images/*` with optional `ROOT/<condition>/poses.txt`
  (TUM, one line per image in sorted file-name order). Place = pose translation (metres). A condition without
  poses.txt has no places while others have them (`supervised.pseudo` can give it some); with none anywhere,
  place = file-name rank, as in `flat`.
- `flat`: `ROOT/<condition>/*.png|jpg` (e.g. Nordland trimmed: `summer/images-00010.png`). The same file
  name in two conditions is the same place; place = rank of the name among all names (frames).
- `cmu_seasons`: the DIFL/DISAM preprocessing of CMU-Seasons, one folder per condition
  `ROOT/train00 ... ROOT/train11` (00 = Sunny + No Foliage reference), images directly inside.
  Conditions are unaligned traversals without query poses, so there are no places (no validation).
- `robotcar_seasons`: the RobotCar Seasons release, `ROOT/images/<condition>/<camera>/*.jpg`
  (conditions dawn, dusk, night, night-rain, overcast-reference, overcast-summer, overcast-winter, rain,
  snow, sun; cameras left/rear/right, chosen by `data.camera`). No places either.

Training itself is unpaired and never needs places; they are used for validation/evaluation and for the
pose-supervised options.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from disam_ros.data.folders import IMAGE_SUFFIXES, list_conditions, load_condition, read_image


@dataclass(frozen=True)
class DomainImages:
    """The images of one condition, in route order, with optional place coordinates (N, 3)."""

    name: str
    paths: tuple[Path, ...]
    positions: np.ndarray | None

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx: np.ndarray) -> DomainImages:
        pos = None if self.positions is None else self.positions[idx]
        return DomainImages(self.name, tuple(self.paths[i] for i in idx), pos)


def detect_layout(root: Path) -> str:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root not found: pass --data with the folder of conditions")
    subdirs = [p for p in sorted(root.iterdir()) if p.is_dir()]
    if (root / "images").is_dir() and any(c.is_dir() for p in (root / "images").iterdir() for c in p.iterdir()
                                          if p.is_dir()):
        return "robotcar_seasons"
    if any((p / "images").is_dir() for p in subdirs):
        return "folders"
    if subdirs and all(p.name.startswith("train") for p in subdirs):
        return "cmu_seasons"
    return "flat"


def discover(root: str | Path, layout: str = "auto", camera: str = "rear",
             positions: str = "auto") -> list[DomainImages]:
    """All conditions under `root` in the given layout, sorted by name."""
    root = Path(root)
    if not root.is_dir():  # before any layout lists it, so every layout fails the same clear way
        raise FileNotFoundError(f"{root}: dataset root not found: pass --data with the folder of conditions")
    layout = detect_layout(root) if layout == "auto" else layout
    if layout == "folders":
        return _folders(root, positions)
    if layout == "flat":
        return _flat(root, sorted(p for p in root.iterdir() if p.is_dir()), positions, with_places=True)
    if layout == "cmu_seasons":
        return _flat(root, sorted(p for p in root.glob("train*") if p.is_dir()), positions, with_places=False)
    if layout == "robotcar_seasons":
        base = root / "images"
        dirs = sorted(p / camera for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        return _flat(root, dirs, positions, with_places=False, name_of=lambda d: d.parent.name)
    raise ValueError(f"unknown layout {layout!r}: use auto, folders, flat, cmu_seasons or robotcar_seasons")


def _folders(root: Path, positions: str) -> list[DomainImages]:
    out = []
    for name in list_conditions(root):
        folder = load_condition(root, name, require_poses=positions == "poses")
        pos = None
        if folder.trajectory is not None and positions != "index":
            pos = np.asarray(folder.trajectory.positions, dtype=np.float64)
        out.append(DomainImages(name, folder.image_paths, pos))
    # auto: a condition without poses.txt stays unplaced when others have poses (a mapped reference drive and
    # unlabelled query drives: supervised.pseudo gives those places); only when none has poses is every condition
    # placed by file name, as the flat layout does
    if positions == "index" or (positions == "auto" and all(d.positions is None for d in out)):
        out = _index_places(out)
    return out


def _flat(root: Path, dirs: list[Path], positions: str, with_places: bool,
          name_of=lambda d: d.name) -> list[DomainImages]:
    if not dirs:
        raise FileNotFoundError(f"{root}: no condition folders found for this layout (see docs/training.md, layouts)")
    if positions == "poses":
        raise ValueError(f"{root}: data.positions=poses needs the folders layout with poses.txt: use auto or index")
    out = []
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: condition folder missing (robotcar_seasons: check data.camera)")
        paths = tuple(sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        out.append(DomainImages(name_of(d), paths, None))
    return _index_places(out) if with_places else out


def _index_places(domains: list[DomainImages]) -> list[DomainImages]:
    """Place = rank of the file name among all conditions' names, so equal names are equal places."""
    names = sorted({p.name for d in domains for p in d.paths})
    rank = {n: i for i, n in enumerate(names)}
    out = []
    for d in domains:
        pos = np.zeros((len(d), 3))
        pos[:, 0] = [rank[p.name] for p in d.paths]
        out.append(DomainImages(d.name, d.paths, pos))
    return out


def check_domains(domains: list[DomainImages]) -> None:
    """Fail early, with the file named, on empty conditions and files no image decoder recognises."""
    for d in domains:
        if not d.paths:
            raise FileNotFoundError(f"condition {d.name!r} has no images ({', '.join(IMAGE_SUFFIXES)}): "
                                    "add images or drop it from data.domains")
        for p in d.paths:
            if p.stat().st_size == 0 or not cv2.haveImageReader(str(p)):
                raise ValueError(f"{p}: unreadable image (empty or not a known image format): "
                                 "re-export it as PNG/JPEG or delete it")


def drop_dark(domains: list[DomainImages], min_brightness: int) -> list[DomainImages]:
    """Drop frames whose 99th-percentile pixel is below the threshold (tunnels, black frames).

    A percentile rather than the maximum: Nordland's near-black frames carry a bright watermark
    (max 85-89) that would keep every one of them.
    """
    if min_brightness <= 0:
        return domains
    out = []
    for d in domains:
        keep = np.array([np.percentile(read_image(p), 99) >= min_brightness for p in d.paths], dtype=bool)
        out.append(d.subset(np.flatnonzero(keep)))
    return out


def select(domains: list[DomainImages], names: list[str] | None, root: Path) -> list[DomainImages]:
    """Keep the recipe's domains in the recipe's order (order defines the model's domain list)."""
    if names is None:
        return domains
    by_name = {d.name: d for d in domains}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise FileNotFoundError(f"{root}: conditions {missing} not found (have {sorted(by_name)}): "
                                "fix data.domains or --data")
    return [by_name[n] for n in names]
