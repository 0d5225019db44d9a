"""Unpaired multi-domain training data: any image of domain i with any image of domain j.

Why keyed randomness: every random choice of a sample (crop, flip, partner image, negatives) is drawn
from a generator seeded by (seed, epoch, index, domains), not from global state. A sample is therefore a
pure function of its key, whatever the number of loader workers or ranks, and a resumed run that skips
to step t sees exactly the batches an uninterrupted run would have seen.

Negatives (Sec. IV-B): x_i and x_j are flipped together (augmentation), so the objective's default
negative flip(x_j) always shows a different view than x_i. For hard-negative mining the dataset adds
K candidates per direction: flip(x_j) plus K-1 other images of domain j, all in the flip state opposite
to x_i's (never the same view, even when the partner is the same place in an aligned dataset).

Photometric augmentation (`data.photometric`, photometric.py): every image of a sample (anchor, partner,
negatives, supervised candidates) is changed independently with that probability. Its parameters come from a
child generator seeded by one draw of the sample's keyed generator, so a sample stays a pure function of its key
and the crops and partners drawn after it do not depend on which effects fired; off (0) draws nothing, so a
recipe without it gives the same samples as before the option existed.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler, Sampler

from disam_ros.data.folders import read_image

from .layouts import DomainImages, check_domains, discover, drop_dark, select
from .photometric import augment
from .recipe import Recipe, SupervisedSection
from .split import split_route


class PairKey(NamedTuple):
    """Everything a sample depends on; `n` indexes domain i modulo its size."""

    epoch: int
    n: int
    dom_i: int
    dom_j: int
    hard: bool


@dataclass(frozen=True)
class DataBundle:
    """Train, validation and test parts of every domain, in model domain order, and what was done to get them.

    Training reads `train` only, validation (checkpoint selection) `val` only; `test` is carried for the
    evaluation of a finished run and never touched by the loop.
    """

    names: tuple[str, ...]
    train: tuple[DomainImages, ...]
    val: tuple[DomainImages, ...]
    test: tuple[DomainImages, ...]
    reference: str
    report: dict = field(default_factory=dict)

    def describe(self) -> list[str]:
        """Human lines for the log: split points, then images per condition and part, dark frames dropped."""
        r = self.report
        lines = [f"data: reference {self.reference}; split {r.get('split', '?')} (gap {r.get('gap', 0)} frames; "
                 "the test part is never read by training)"]
        for name in self.names:
            c = r.get("conditions", {}).get(name, {})
            parts = ", ".join(f"{k} {c[k]['kept']} (dark dropped {c[k]['dark']})" for k in ("train", "val", "test")
                              if k in c)
            lines.append(f"data: {name}: {parts}; in gaps {c.get('in_gaps', 0)}")
        return lines


def build_data(recipe: Recipe, root: str | Path) -> DataBundle:
    """Discover, select and check the recipe's conditions; split every route (all frames) into train / val /
    test with gaps; then drop dark frames inside each part (so the cut does not depend on the filter)."""
    root = Path(root)
    d = recipe.data
    domains = select(discover(root, d.layout, d.camera, d.positions), d.domains, root)
    if len(domains) < 2:
        raise ValueError(f"{root}: found {len(domains)} condition(s) {[x.name for x in domains]}; DISAM needs "
                         "at least two (ROOT/<condition>/images/*)")
    check_domains(domains)
    names = tuple(dom.name for dom in domains)
    reference = d.reference or names[0]
    if reference not in names:
        raise ValueError(f"data.reference {reference!r} is not among the conditions {list(names)}: fix data.reference")
    cut, parts = split_route(domains, reference, d.train_fraction, d.val_fraction, d.gap)
    kept: dict[str, list[DomainImages]] = {"train": [], "val": [], "test": []}
    conditions: dict[str, dict] = {}
    for dom, part in zip(domains, parts):
        row: dict = {"in_gaps": part.in_gaps}
        for key in kept:
            before = getattr(part, key)
            after = drop_dark([before], d.min_brightness)[0]
            kept[key].append(after)
            row[key] = {"kept": len(after), "dark": len(before) - len(after)}
        conditions[dom.name] = row
        if len(kept["train"][-1]) < 2:
            raise ValueError(f"condition {dom.name!r} keeps {len(kept['train'][-1])} training image(s) after the split "
                             f"({cut.describe()}) and data.min_brightness={d.min_brightness}: raise "
                             "data.train_fraction, lower data.val_fraction/data.gap or the threshold, or add images")
    report = {"split": cut.describe(), "gap": d.gap, "conditions": conditions}
    return DataBundle(names, tuple(kept["train"]), tuple(kept["val"]), tuple(kept["test"]), reference, report)


def to_tensor(img: np.ndarray) -> Tensor:
    """HxWx3 uint8 RGB -> (3,H,W) float32 in [-1, 1], the model's input range."""
    # contiguous NCHW: a channels-last batch sends CPU convolutions and instance norm down slow paths
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(127.5).sub_(1.0).contiguous()


def resize_square(img: np.ndarray, side: int) -> np.ndarray:
    """Square resize without keeping the aspect ratio (as the paper and the inference encoder do)."""
    h, w = img.shape[:2]
    if (h, w) == (side, side):
        return img
    interp = cv2.INTER_AREA if h * w > side * side else cv2.INTER_LINEAR
    return cv2.resize(img, (side, side), interpolation=interp)


class UnpairedDataset(Dataset):
    """Samples for one generator/discriminator step; index with a `PairKey` (see `PairBatchSampler`)."""

    def __init__(self, domains: tuple[DomainImages, ...], image_size: int, load_ratio: float, flip: bool,
                 seed: int, num_negatives: int, supervised: SupervisedSection | None = None,
                 cache: bool = True, photometric: float = 0.0, photometric_strength: float = 1.0) -> None:
        self.domains = domains
        self.size = image_size
        self.load = max(image_size, round(image_size * load_ratio))
        self.flip = flip
        self.seed = seed
        self.k = num_negatives
        self.photometric = photometric  # probability that an image is changed (photometric.py); 0 = off
        self.photometric_strength = photometric_strength
        self.sup = supervised if supervised is not None and supervised.kind != "none" else None
        self.cache: dict[tuple[int, int], np.ndarray] | None = {} if cache else None
        # (dom_i, dom_j) -> (N_i, M) indices into domain j of the images the current model confuses most with
        # each anchor of domain i (mining.py; -1 = none); empty until the trainer mines.
        self.hard: dict[tuple[int, int], np.ndarray] = {}
        if self.sup is not None:
            missing = [d.name for d in domains if d.positions is None]
            if missing:
                raise ValueError(f"supervised.kind={self.sup.kind} needs place coordinates but {missing} have none: "
                                 "give them poses.txt, use the flat layout (same name = same place), or set "
                                 "supervised.pseudo=true (places from the reference drive's matches)")

    def __len__(self) -> int:
        """One epoch = the largest domain once (as the reference's unaligned dataset)."""
        return max(len(d) for d in self.domains)

    @classmethod
    def from_recipe(cls, recipe: Recipe, domains: tuple[DomainImages, ...], image_size: int) -> UnpairedDataset:
        """The training set a recipe describes (every data.* option that shapes a sample, in one place)."""
        d = recipe.data
        return cls(domains, image_size, d.load_ratio, d.flip, recipe.seed, recipe.schedule.num_negatives,
                   recipe.supervised, d.cache_images, d.photometric, d.photometric_strength)

    def _decoded(self, dom: int, idx: int) -> np.ndarray:
        key = (dom, idx)
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        img = resize_square(read_image(self.domains[dom].paths[idx]), self.load)
        if self.cache is not None:
            self.cache[key] = img
        return img

    def image(self, dom: int, idx: int, rng: np.random.Generator, flip: bool) -> Tensor:
        """Resize to `load`, random crop to `size`, optional photometric change, optional horizontal flip."""
        img = self._decoded(dom, idx)
        top, left = rng.integers(0, self.load - self.size + 1, size=2)
        crop = img[top:top + self.size, left:left + self.size]
        if self.photometric > 0:
            crop = self._photometric(crop, np.random.default_rng(int(rng.integers(2 ** 63))))
        t = to_tensor(crop)
        return t.flip(-1) if flip else t

    def _photometric(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """With probability `photometric`, one random change of `img` (a copy; the cache is never touched)."""
        if rng.random() >= self.photometric:
            return img
        return augment(img, rng, self.photometric_strength)

    def __getitem__(self, key: PairKey) -> dict[str, Tensor]:
        rng = np.random.default_rng([self.seed, key.epoch, key.n, key.dom_i, key.dom_j])
        flip = self.flip and bool(rng.random() < 0.5)
        di, dj = key.dom_i, key.dom_j
        ia = key.n % len(self.domains[di])
        ib = int(rng.integers(len(self.domains[dj])))
        x_i, x_j = self.image(di, ia, rng, flip), self.image(dj, ib, rng, flip)
        out = {"x_i": x_i, "x_j": x_j, "dom_i": torch.tensor(di), "dom_j": torch.tensor(dj)}
        if key.hard:
            out["neg_j"] = self._negatives(dj, x_j, rng, not flip)
            out["neg_i"] = self._negatives(di, x_i, rng, not flip)
        if self.sup is not None:
            pick = self._in_batch if self.sup.in_batch else self._supervised
            out.update(pick(di, ia, dj, rng, flip))
        return out

    def _negatives(self, dom: int, real: Tensor, rng: np.random.Generator, flip: bool) -> Tensor:
        """(K,3,S,S): flip(real) and K-1 random images of `dom`, all flipped opposite to the anchor."""
        idx = rng.integers(len(self.domains[dom]), size=self.k - 1)
        return torch.stack([real.flip(-1)] + [self.image(dom, int(i), rng, flip) for i in idx])

    def _supervised(self, di: int, ia: int, dj: int, rng: np.random.Generator, flip: bool) -> dict[str, Tensor]:
        """Positive = domain-j image nearest to the anchor's place (cross-condition). Candidates: half from the
        mined hard negatives of this anchor when a mining has run, then local ones, the rest from anywhere."""
        s = self.sup
        dist = np.linalg.norm(self.domains[dj].positions - self.domains[di].positions[ia], axis=1)
        pos = int(np.argmin(dist))
        far = np.flatnonzero(dist > s.pos_radius)
        if far.size == 0:
            raise ValueError(f"condition {self.domains[dj].name!r} has no image farther than supervised.pos_radius="
                             f"{s.pos_radius} from an anchor: lower pos_radius or add places")
        mined = self.hard.get((di, dj))
        hard = mined[ia][mined[ia] >= 0] if mined is not None else np.empty(0, np.int64)
        n_hard = min(len(hard), s.num_candidates // 2)
        pick = [int(i) for i in rng.choice(hard, size=n_hard, replace=False)] if n_hard else []
        rest = s.num_candidates - n_hard
        local = far[dist[far] <= s.prior_radius]
        n_local = min(len(local), rest // 2)
        pick += list(rng.choice(local, size=n_local, replace=False)) if n_local else []
        pick += list(rng.choice(far, size=rest - n_local, replace=far.size < rest - n_local))
        return {
            "sup_pos": self.image(dj, pos, rng, flip),
            "sup_pos_dist": torch.tensor(dist[pos], dtype=torch.float32),
            "sup_cand": torch.stack([self.image(dj, int(i), rng, flip) for i in pick]),
            "sup_cand_dist": torch.tensor(dist[pick], dtype=torch.float32),
        }


    def _in_batch(self, di: int, ia: int, dj: int, rng: np.random.Generator, flip: bool) -> dict[str, Tensor]:
        """The anchor's positive (domain-j image nearest its place) and one other place seen in both domains:
        one of the anchor's mined hard negatives when a mining has run, else any place farther than pos_radius.
        The batch's other items supply the remaining candidates (`supervised.in_batch_term`)."""
        pos_i, pos_j = self.domains[di].positions, self.domains[dj].positions
        dist = np.linalg.norm(pos_j - pos_i[ia], axis=1)
        pos = int(np.argmin(dist))
        far = np.flatnonzero(dist > self.sup.pos_radius)
        if far.size == 0:
            raise ValueError(f"condition {self.domains[dj].name!r} has no image farther than supervised.pos_radius="
                             f"{self.sup.pos_radius} from an anchor: lower pos_radius or add places")
        mined = self.hard.get((di, dj))
        hard = mined[ia][mined[ia] >= 0] if mined is not None else np.empty(0, np.int64)
        hj = int(rng.choice(hard)) if hard.size else int(rng.choice(far))
        hi = int(np.argmin(np.linalg.norm(pos_i - pos_j[hj], axis=1)))
        xy = np.stack([pos_i[ia], pos_j[pos], pos_i[hi], pos_j[hj]]).reshape(4, -1)
        return {
            "sup_pos": self.image(dj, pos, rng, flip),
            "sup_hard_i": self.image(di, hi, rng, flip),
            "sup_hard_j": self.image(dj, hj, rng, flip),
            "sup_xy": torch.tensor(xy, dtype=torch.float32),
        }


class PairBatchSampler(Sampler[list[PairKey]]):
    """Batches of keys for steps [start_step, total_steps); one domain pair per step, shared by all ranks.

    Within an epoch the anchor indices come from `DistributedSampler` (shuffled per epoch, disjoint across
    ranks, equal length: drop_last), so DDP ranks see different images of the same two domains (per-domain
    encoders need one domain per batch, and every rank must step the same optimisers).
    """

    def __init__(self, epoch_len: int, n_domains: int, batch_size: int, seed: int, start_step: int, total_steps: int,
                 hard_from_step: int, rank: int = 0, world: int = 1) -> None:
        self.epoch_len, self.n_domains, self.batch = epoch_len, n_domains, batch_size
        self.seed, self.start, self.total, self.hard_from = seed, start_step, total_steps, hard_from_step
        self.rank, self.world = rank, world
        self.per_epoch = (epoch_len // world) // batch_size
        if self.per_epoch < 1:
            raise ValueError(f"batch size {batch_size} x {world} rank(s) exceeds the {epoch_len} images of the largest "
                             "domain: lower train.batch_size or add images")

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def epoch_of(self, step: int) -> int:
        return step // self.per_epoch

    def pair_at(self, step: int) -> tuple[int, int]:
        """Ordered pair of distinct domains for a step (same on every rank: depends on seed and step only)."""
        rng = np.random.default_rng([self.seed, step, 0x9A1])
        i, j = rng.choice(self.n_domains, size=2, replace=False)
        return int(i), int(j)

    def _epoch_indices(self, epoch: int) -> list[int]:
        ds = DistributedSampler(range(self.epoch_len), num_replicas=self.world, rank=self.rank, shuffle=True,
                                seed=self.seed, drop_last=True)
        ds.set_epoch(epoch)
        return list(ds)

    def __iter__(self) -> Iterator[list[PairKey]]:
        cached_epoch, indices = -1, []
        for step in range(self.start, self.total):
            epoch, b = divmod(step, self.per_epoch)
            if epoch != cached_epoch:
                cached_epoch, indices = epoch, self._epoch_indices(epoch)
            i, j = self.pair_at(step)
            hard = step >= self.hard_from
            yield [PairKey(epoch, n, i, j, hard) for n in indices[b * self.batch:(b + 1) * self.batch]]
