"""What a training recipe holds: nested dataclasses, one per YAML section, and the whole `Recipe`.

A recipe is everything that determines the numbers a run produces (model shape, data split, schedule, loss
weights, seed). Reading it from YAML with overrides lives in `config.py`, range checks in `recipe_checks.py`;
the loss section is the objective's own `LossWeights`, so a weight cannot exist in one and not the other.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from disam_ros.fsutil import atomic_write_text
from disam_ros.model.objective import LossWeights


@dataclass
class ModelSection:
    """Network shape: a preset of disam_ros.model plus optional ModelConfig field overrides."""

    preset: str = "tiny"
    overrides: dict = field(default_factory=dict)
    # Start every domain from the same weights (the reference initialises each domain independently, and
    # relies on FCL to align the code spaces over hundreds of epochs; short runs need the head start).
    shared_init: bool = False
    # One encoder for every condition (Nordland ablation, 2026-11-23): after each generator step the two stepped
    # encoders' weights are averaged and copied into every domain. Why: independent updates of the per-condition
    # encoders undo the shared start's alignment of database and query codes, and FCL does not restore it. Measured
    # on Nordland it did not rescue the coarse recipe either (0.816 -> 0.587; docs/training.md, Table VI ablation).
    tie_encoders: bool = False
    # Draw this many random starts (seeds seed, seed + 1, ...) and train from the one with the best validation
    # R@1. Why: on Nordland two untrained tiny starts score 64.3 and 76.1 % on the test part, more than many
    # training effects, and validation ranks them the same way. 1 = the seed's start, as before.
    start_candidates: int = 1
    # Conditions whose encoder is never trained: it stays the start (with shared_init, the untrained encoder every
    # condition starts from) and the other conditions' encoders learn into its code space. Why: on real night
    # images an untrained encoder ranks the right place more often than the trained ones (docs/training.md, real
    # cameras); a frozen map-side encoder keeps that, while the winter encoder still learns the season.
    frozen_domains: list = field(default_factory=list)


@dataclass
class DataSection:
    """Which images are trained on and how they are augmented (Sec. V-A: resize 286, random crop 256)."""

    layout: str = "auto"
    domains: list | None = None  # None = every condition found under --data, sorted
    reference: str | None = None  # database condition for validation; None = first domain
    # Honest split along the reference route (all its frames, before any dark-frame filter), see split.py:
    # test = [train_fraction * N, N) is never touched by training; validation is the `val_fraction * N` frames
    # before it; `gap` reference frames separate train | val | test (neighbouring frames see the same scene).
    train_fraction: float = 0.8
    val_fraction: float = 0.1
    gap: int = 5
    load_ratio: float = 286 / 256  # resize side = round(image_size * load_ratio), then random crop
    flip: bool = True  # random horizontal flip of the (x_i, x_j) pair together
    min_brightness: int = 0  # drop frames whose 99th-percentile pixel is below this (tunnels); 0 = keep all
    cache_images: bool = True  # keep decoded images in RAM (small datasets; each loader worker has a copy)
    camera: str = "rear"  # robotcar_seasons only: which camera folder
    positions: str = "auto"  # place coordinates: poses.txt translations, or the frame index along the route
    # Photometric augmentation (photometric.py): the probability that a training image is changed (darkened and
    # tinted toward night, contrast / brightness / gamma jitter, haze, snow speckle, blur, sensor noise), drawn
    # independently for every image of a sample; 0 = off. Why: real training drives cover two conditions, and a
    # model should not learn to rely on what those two happen to share (real-world starter work, 2026-11-23).
    photometric: float = 0.0
    photometric_strength: float = 1.0  # magnitude scale of every effect (1 = the ranges in photometric.py)
    # A second, posed world mixed into training (mixing.py; e.g. disam-synth's): each sample comes from it with
    # probability `mix`; `mix_conditions` maps every model domain to its conditions there, e.g.
    # {summer: [sunny, overcast], winter: [snow, night]}. 0 = off. Why: real drives show two conditions.
    mix: float = 0.0
    mix_root: str | None = None
    mix_conditions: dict | None = None


@dataclass
class ScheduleSection:
    """Iterations, Adam, linear lr decay, linear loss-weight ramp and the random -> hard negative switch."""

    steps: int = 1000
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay_start: float = 0.0  # fraction of steps after which lr decays linearly to 0 (reference: niter)
    ramp_end: float = 1.0  # fraction of steps at which ramped weights reach their maximum
    ramp_keys: list = field(default_factory=lambda: ["fcl", "triplet_fcl", "sam", "triplet_sam", "sup"])
    hard_negatives_from: float = 0.5  # fraction of steps from which the triplet uses the closest of K
    num_negatives: int = 10  # K candidates for hard-negative mining (paper: 10)
    pool_size: int = 50  # history of generated images shown to the discriminators (0 = off)


@dataclass
class SupervisedSection:
    """Optional pose-supervised term (seed 003 soft contrastive, seed 004 geographically local triplet)."""

    kind: str = "none"
    weight: float = 1.0
    descriptor: str = "coarse"  # the retrieval vector the loss acts on: eq. 16 coarse, or the flattened fine one
    num_candidates: int = 6
    pos_radius: float = 2.0  # places closer than this (metres, or frames with index positions) are positives
    prior_radius: float = 20.0  # spatial-prior neighbourhood the local negatives are drawn from
    mine_every: int = 0  # steps between hard-negative mining over the whole training map (0 = never)
    mined: int = 20  # hardest other-place images kept per anchor; half the candidates are drawn from them
    # In-batch candidates (soft contrastive only): each batch item brings its anchor's place and one hard other
    # place, both seen in both conditions; every image is scored against all of the batch's images of the other
    # condition. 4 images per item instead of K + 2, with 2B - 1 candidates each: what makes 128 px fit a CPU.
    in_batch: bool = False
    # Pseudo-positives (pseudo_places.py): the non-reference conditions' own places are not used; each of their
    # training images takes the place of its nearest reference image under the start encoders, kept only when the
    # match is mutual and within pseudo_tolerance of the median match of the pseudo_window frames either side;
    # pseudo_match "route" instead slides the pseudo_window frames before and after it along the reference drive
    # and keeps it when both land within pseudo_tolerance (drives in route order, same direction).
    pseudo: bool = False
    pseudo_match: str = "mutual"
    # pseudo_val: the validation segment's other-condition places come from the start too, by route windows (a short
    # segment needs most frames labelled; mutual matches keep about a quarter), so selection needs no query poses.
    pseudo_val: bool = False
    pseudo_val_window: int = 8
    pseudo_val_tolerance: float = 2.0
    pseudo_window: int = 5
    pseudo_tolerance: float = 5.0
    # Soft contrastive (eqs. 3-5). Descriptors are unit vectors: the untrained tiny encoder on Nordland's training
    # segment puts same-place pairs at distance ~1.15 and other places at ~1.32, so positives are pulled below
    # mu / eta = 1.0 and negatives pushed above mu / nu = 1.43 (about orthogonal).
    tau: float = 3.0  # geometric distance where g+ = g- = 0.5
    gamma: float = 2.0
    eta: float = 10.0
    nu: float = 7.0
    mu: float = 10.0
    alpha: float = 10.0  # geo-local soft margin slope
    global_weight: float = 0.0


@dataclass
class KeepSection:
    """Relational anchor to the run's start (keep_structure.py): each condition's within-batch similarities of the
    retrieval descriptor held to those of the frozen start encoder; `weight` 0 = off."""

    weight: float = 0.0
    descriptor: str = "coarse"


@dataclass
class DepthSection:
    """Seed 002 depth branch (`depth.enabled`): a decoder on the frozen encoders' content code, trained on
    ROOT/<condition>/depth; the fusion weight is `fusion_weight`, or the best of `fusion_weights` on validation."""

    enabled: bool = False
    loss: str = "silog"  # silog (scale-aware log loss) or l1 (seed 002), both masked where depth is invalid
    width: int = 64
    max_depth_m: float = 65.535  # the farthest depth the 16-bit millimetre files hold
    grid: int = 8  # depth descriptor: grid x grid cells of log depth
    fusion_weight: float = 1.0  # weight of appearance in the fused score (1 = appearance only)
    fusion_weights: list = field(default_factory=list)  # candidates chosen among on validation R@1
    per_domain: bool = False  # also choose a query weight per query condition on validation (branch version 2)
    val_distractors: bool = False  # validation database = the reference's val + train parts (not val alone)
    conditioned: bool = False  # decoder conditioned on the condition (per-condition FiLM of its first layer)
    place_weight: float = 0.0  # weight of the cross-condition place loss on the depth descriptor (0 = off)
    place_tau: float = 0.1  # its softmax temperature
    place_radius_m: float = 3.0  # views of other conditions within this distance are the same place
    select: str = "abs_rel"  # validation point kept: lowest depth error (abs_rel) or best depth-only R@1 (r1)


@dataclass
class TrainSection:
    """Loop mechanics that do not change the numbers (safe to change on --resume)."""

    batch_size: int = 4
    num_workers: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads; 0 = torch default
    log_every: int = 10
    val_every: int = 0  # 0 = validate only at the end
    ckpt_every: int = 200
    val_queries: int = 200  # per condition, evenly spaced over the held-out part
    val_tolerance: float = 0.0  # frames (index positions) or metres (poses) for a correct R@1
    val_metric: str = "mean_channel"  # mean_channel (eq. 16, coarse) or cosine (fine) for validation R@1
    progress: bool = True


@dataclass
class Recipe:
    name: str = "custom"
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    loss: LossWeights = field(default_factory=LossWeights)  # the objective's own dataclass: one source
    supervised: SupervisedSection = field(default_factory=SupervisedSection)
    keep: KeepSection = field(default_factory=KeepSection)
    depth: DepthSection = field(default_factory=DepthSection)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dump(self, path: str | Path) -> None:
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


# Sections whose values may differ on --resume without changing the trained numbers.
RESUME_SAFE = {"train.num_workers", "train.device", "train.threads", "train.log_every", "train.val_every",
               "train.ckpt_every", "train.val_queries", "train.val_tolerance", "train.val_metric", "train.progress",
               "data.cache_images"}
