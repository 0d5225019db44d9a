"""Mixing a second, posed world into training (`data.mix`): e.g. the synthetic world beside real drives.

Why: real training drives show two conditions (Nordland: summer, winter); the synthetic world shows nine, with
exact places. Each model domain gets a group of the mixed world's conditions (`data.mix_conditions`, e.g.
summer <- sunny, overcast; winter <- snow, night, fog), concatenated into one drive with their world
positions in units of its first drive's median frame step (real flat-layout places are frame indices, and
the loss's distance ranges are in those units), so the same supervised loss finds cross-condition positives
there by position. A sample comes from
the mixed world with probability `data.mix`, decided by the sample's own key (resumes stay exact); its pair of
model domains is the real sample's, so batches stay homogeneous. Mining and pseudo places stay on the real
drives: the mixed world's places are exact.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from disam_ros.data.folders import list_conditions, load_condition

from .layouts import DomainImages

log = logging.getLogger(__name__)


def mixed_domains(root: str | Path, groups: dict[str, list[str]], names: tuple[str, ...]) -> tuple[DomainImages, ...]:
    """One DomainImages per model domain (in `names` order): its group's conditions of the posed world at `root`,
    concatenated with their poses.txt positions divided by the median frame step of the first model domain's first
    condition (so distances read in frames, as real places do). Every model domain needs a group, every
    condition poses."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.mix_root {root}: not a folder: make one with disam-synth --out {root}")
    found = set(list_conditions(root))
    missing = [n for n in names if not groups.get(n)]
    if missing:
        raise ValueError(f"data.mix_conditions gives no conditions for model domain(s) {missing}: map every one of "
                         f"{list(names)} to conditions of {root} (found {sorted(found)})")
    out = []
    for name in names:
        paths: list[Path] = []
        positions: list[np.ndarray] = []
        for cond in groups[name]:
            if cond not in found:
                raise ValueError(f"data.mix_conditions[{name}] names {cond!r}, not a condition of {root} "
                                 f"(found {sorted(found)})")
            folder = load_condition(root, cond, require_poses=True)
            paths += folder.image_paths
            positions.append(np.asarray(folder.trajectory.positions, dtype=np.float64))
        out.append((name, tuple(paths), np.concatenate(positions)))
    step = frame_step(load_condition(root, groups[names[0]][0], require_poses=True).trajectory.positions)
    return tuple(DomainImages(f"{n}<-{'+'.join(groups[n])}", p, pos / step) for n, p, pos in out)


def frame_step(positions) -> float:
    """Median distance between consecutive positions (a drive's frame spacing); > 0 or a clear error."""
    pos = np.asarray(positions, dtype=np.float64)
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1) if len(pos) > 1 else np.empty(0)
    step = float(np.median(steps)) if steps.size else 0.0
    if not step > 0:
        raise ValueError("data.mix_root: the first mixed condition's poses do not move (median frame step 0): "
                         "name a driven condition first in data.mix_conditions")
    return step


class MixedDataset(Dataset):
    """The real training set, with each sample replaced by one of the mixed world's with probability `p`.

    Indexed with the real set's PairKey; the mixed set answers the same key (its own modulo and generator), so
    the choice and the sample depend on the key alone. `hard` (the mining table) is the real set's.
    """

    def __init__(self, real: Dataset, mixed: Dataset, p: float, seed: int) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"data.mix={p} must be within [0, 1]")
        self.real, self.mixed, self.p, self.seed = real, mixed, p, seed

    def __len__(self) -> int:
        return len(self.real)

    @property
    def hard(self) -> dict:
        return self.real.hard

    @hard.setter
    def hard(self, table: dict) -> None:
        self.real.hard = table

    def from_mix(self, key) -> bool:
        """Whether the sample of `key` comes from the mixed world (a draw of its own, independent of the sample)."""
        rng = np.random.default_rng([self.seed, key.epoch, key.n, key.dom_i, key.dom_j, 1_000_003])
        return bool(rng.random() < self.p)

    def __getitem__(self, key):
        return self.mixed[key] if self.from_mix(key) else self.real[key]


def mixed_dataset(recipe, real, names: tuple[str, ...], image_size: int) -> Dataset:
    """The training set a recipe describes: `real` alone when data.mix is 0, else `real` mixed with the posed
    world at data.mix_root (every image of it is a training image: it is never evaluated on)."""
    d = recipe.data
    if d.mix <= 0:
        return real
    if not d.mix_root or not d.mix_conditions:  # checked here, not on loading: a recipe may leave the root to the CLI
        raise ValueError(f"data.mix={d.mix} needs data.mix_root (a posed world, e.g. from disam-synth --out W: add "
                         "data.mix_root=W) and data.mix_conditions (model domain -> its conditions there, e.g. "
                         "{summer: [sunny], winter: [snow, night]})")
    domains = mixed_domains(d.mix_root, d.mix_conditions, names)
    mixed = type(real).from_recipe(recipe, domains, image_size)
    log.info("data: mixing %s with probability %.2f: %s", d.mix_root, d.mix,
             ", ".join(f"{dom.name} {len(dom)}" for dom in domains))
    return MixedDataset(real, mixed, d.mix, recipe.seed)
