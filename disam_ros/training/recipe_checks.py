"""Range and choice checks for a built recipe, each failing with one line that names the key and the fix.

Why apart from config.py: config.py says what a recipe holds and how it is read; this says which values make
sense, and grows with every new option.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .recipe import Recipe

LOSS_TERMS = ("fcl", "triplet_fcl", "sam", "triplet_sam", "cyc", "gan", "sup")
LAYOUTS = ("auto", "folders", "flat", "cmu_seasons", "robotcar_seasons")
SUPERVISED = ("none", "soft_contrastive", "geo_local")
DESCRIPTORS = ("coarse", "fine")
PSEUDO_MATCHES = ("mutual", "route")  # pseudo_places.py: single-frame mutual matches, or route windows
POSITIONS = ("auto", "poses", "index")
METRICS = ("mean_channel", "cosine")


def validate(r: Recipe) -> None:
    """Range checks with one-line errors; type checks already happened in `_build`."""
    _one_of("data.layout", r.data.layout, LAYOUTS)
    _one_of("data.positions", r.data.positions, POSITIONS)
    _one_of("supervised.kind", r.supervised.kind, SUPERVISED)
    _one_of("supervised.descriptor", r.supervised.descriptor, DESCRIPTORS)
    if r.supervised.in_batch and r.supervised.kind != "soft_contrastive":
        raise ValueError(f"supervised.in_batch needs supervised.kind=soft_contrastive, got {r.supervised.kind!r}: "
                         "the geo-local triplet takes one positive and its own negatives per anchor")
    _one_of("keep.descriptor", r.keep.descriptor, DESCRIPTORS)
    _one_of("supervised.pseudo_match", r.supervised.pseudo_match, PSEUDO_MATCHES)
    _range("keep.weight", r.keep.weight, 0.0, math.inf)
    _range("supervised.pseudo_tolerance", r.supervised.pseudo_tolerance, 0.0, math.inf)
    _range("supervised.pseudo_val_tolerance", r.supervised.pseudo_val_tolerance, 0.0, math.inf)
    _one_of("train.val_metric", r.train.val_metric, METRICS)
    _one_of("depth.loss", r.depth.loss, ("l1", "silog"))
    _one_of("depth.select", r.depth.select, ("abs_rel", "r1"))
    _range("depth.place_weight", r.depth.place_weight, 0.0, math.inf)
    _range("depth.place_tau", r.depth.place_tau, 0.0, math.inf, low_open=True)
    _range("depth.place_radius_m", r.depth.place_radius_m, 0.0, math.inf, low_open=True)
    for w in (r.depth.fusion_weight, *r.depth.fusion_weights):
        _range("depth.fusion_weight(s)", w if isinstance(w, int | float) else math.nan, 0.0, 1.0)
    _range("depth.max_depth_m", r.depth.max_depth_m, 0.0, math.inf, low_open=True)
    _range("data.train_fraction", r.data.train_fraction, 0.0, 1.0, low_open=True)
    _range("data.val_fraction", r.data.val_fraction, 0.0, 1.0)
    _range("data.load_ratio", r.data.load_ratio, 1.0, 4.0)
    _range("data.photometric", r.data.photometric, 0.0, 1.0)
    _range("data.photometric_strength", r.data.photometric_strength, 0.0, 2.0, low_open=True)
    _range("data.mix", r.data.mix, 0.0, 1.0)
    _range("schedule.lr_decay_start", r.schedule.lr_decay_start, 0.0, 1.0)
    _range("schedule.ramp_end", r.schedule.ramp_end, 0.0, 1.0, low_open=True)
    _range("schedule.hard_negatives_from", r.schedule.hard_negatives_from, 0.0, math.inf)
    for name in ("schedule.num_negatives", "train.batch_size", "supervised.num_candidates", "supervised.mined",
                 "supervised.pseudo_window", "supervised.pseudo_val_window", "model.start_candidates",
                 "depth.width", "depth.grid"):
        _positive_int(name, _get(r, name))
    # schedule.steps may be 0: the `init` recipe validates and exports the untrained starting point
    for name in ("schedule.steps", "schedule.pool_size", "data.gap", "supervised.mine_every", "train.num_workers",
                 "train.log_every", "train.val_every", "train.ckpt_every", "train.threads", "data.min_brightness",
                 "train.val_queries"):
        if _get(r, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {_get(r, name)}")
    bad = [k for k in r.schedule.ramp_keys if k not in LOSS_TERMS]
    if bad:
        raise ValueError(f"schedule.ramp_keys has unknown terms {bad}: choose from {list(LOSS_TERMS)}")
    if r.data.domains is not None and (len(r.data.domains) < 2 or len(set(r.data.domains)) != len(r.data.domains)):
        raise ValueError(f"data.domains {r.data.domains} needs at least two distinct conditions (DISAM pairs them)")
    if r.train.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device {r.train.device!r} is not auto, cpu or cuda")
    if r.supervised.pseudo_val and not (r.supervised.pseudo and r.model.start_candidates == 1):
        raise ValueError("supervised.pseudo_val labels validation from the start's matches: it needs "
                         "supervised.pseudo=true and model.start_candidates=1 (a start must exist before labelling)")
    frozen = list(r.model.frozen_domains)
    if frozen and (r.model.tie_encoders or (r.data.domains is not None and not set(frozen) < set(r.data.domains))):
        raise ValueError(f"model.frozen_domains {frozen} must be some, not all, of data.domains {r.data.domains} and "
                         "cannot go with model.tie_encoders: list the conditions whose encoder stays untrained")
    if r.model.tie_encoders and not r.model.shared_init:
        raise ValueError("model.tie_encoders needs model.shared_init=true: tying averages encoders that start equal")
    if r.data.reference is not None and r.data.domains is not None and r.data.reference not in r.data.domains:
        raise ValueError(f"data.reference {r.data.reference!r} is not in data.domains {r.data.domains}: add it")


def _get(r: Recipe, dotted: str) -> Any:
    section, name = dotted.split(".")
    return getattr(getattr(r, section), name)


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} {value!r} is not supported: use one of {list(choices)}")


def _range(name: str, value: float, lo: float, hi: float, low_open: bool = False) -> None:
    above_low = lo < value if low_open else lo <= value
    if math.isnan(value) or not above_low or value > hi:
        raise ValueError(f"{name}={value} is out of range: expected {'(' if low_open else '['}{lo}, {hi}]")


def _positive_int(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
