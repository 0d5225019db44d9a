"""The network a run starts from: model shape from the recipe, shared initialisation, tied encoders, and the
choice among several random starts (`model.start_candidates`).

Why its own module: on Nordland the untrained start moves R@1 by 12 points between seeds (docs/training.md), so how
a start is built and picked is part of the method, not set-up noise; the depth trainer builds its start the same way.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from disam_ros.model import DisamNet, ModelConfig, preset

from .recipe import Recipe


def model_config(recipe: Recipe, domains: tuple[str, ...]) -> ModelConfig:
    base = preset(recipe.model.preset, domains)
    try:
        return dataclasses.replace(base, **recipe.model.overrides)
    except TypeError:
        known = [f.name for f in dataclasses.fields(ModelConfig) if f.name != "domains"]
        raise ValueError(f"model.overrides {recipe.model.overrides} has unknown keys: valid keys are {known}") from None


def share_initialisation(net: DisamNet) -> None:
    """Copy the first domain's encoder, decoder and discriminator weights into every other domain."""
    first = net.domains[0]
    for group in (net.encoders, net.decoders, net.discriminators):
        for d in net.domains[1:]:
            group[d].load_state_dict(group[first].state_dict())


def tie_encoders(net: DisamNet, stepped: tuple[str, ...]) -> None:
    """Average the `stepped` domains' encoder weights and copy the mean into every domain's encoder.

    Why: with a shared start, keeping the encoders equal keeps database and query codes in one space (one
    encoder updated by the mean of the stepped domains' Adam updates). Buffers are averaged the same way.
    """
    with torch.no_grad():
        tensors = [dict(net.encoders[d].state_dict()) for d in net.domains]
        index = {d: k for k, d in enumerate(net.domains)}
        for name in tensors[0]:
            src = [tensors[index[d]][name] for d in stepped]
            mean = src[0] if len(src) == 1 else torch.stack([t.float() for t in src]).mean(0).to(src[0].dtype)
            for t in tensors:
                t[name].copy_(mean)


def freeze_encoders(net: DisamNet, domains: list[str] | tuple[str, ...]) -> None:
    """No gradient for these conditions' encoders (model.frozen_domains): they stay as they start."""
    for d in domains:
        if d in net.encoders:
            net.encoders[d].requires_grad_(False)


def pick_start(cfg: ModelConfig, recipe: Recipe, device: torch.device, n: int,
               score: Callable[[DisamNet], float]) -> tuple[list[DisamNet], list[float]]:
    """The random starts of seeds seed .. seed + n - 1 and their validation scores (`score`, NaN when there is
    nothing to validate on). The torch seed is reset to the recipe's afterwards, so the run's own randomness does
    not depend on how many starts were drawn."""
    nets, scores = [], []
    for k in range(n):
        torch.manual_seed(recipe.seed + k)
        net = DisamNet(cfg).to(device).train()
        if recipe.model.shared_init:
            share_initialisation(net)
        nets.append(net)
        scores.append(float(score(net)))
    torch.manual_seed(recipe.seed)
    return nets, scores


def best_start(scores: list[float]) -> int:
    """Index of the best score, the first on ties; NaN (nothing validated) counts as worst."""
    ranked = [v if math.isfinite(v) else -math.inf for v in scores]
    return max(range(len(ranked)), key=lambda k: (ranked[k], -k))
