"""Real optimisation steps of every recipe on the micro model: the fixed-batch objective goes down."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_training_utils import make_world, micro_recipe
from torch.utils.data import default_collate

from disam_ros.training.datasets import PairKey
from disam_ros.training.trainer import Trainer


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world") / "root")


def _generator_loss(t: Trainer, batch: dict, weights) -> dict[str, float]:
    """The recipe's generator objective on a fixed batch at fixed (maximum) weights."""
    names = t.cfg.domains
    di, dj = names[int(batch["dom_i"][0])], names[int(batch["dom_j"][0])]
    sup = {k: v for k, v in batch.items() if k.startswith("sup_")} or None
    with torch.no_grad():
        out = t.g_step(batch["x_i"], batch["x_j"], di, dj, weights, batch.get("neg_i"), batch.get("neg_j"), sup,
                       t.recipe.supervised.weight)
    return {k: float(out[k]) for k in ("total", "gan_g", "sup")}


@pytest.mark.parametrize("recipe", ["translation", "coarse", "fine", "soft_contrastive", "geo_local"])
def test_recipe_steps_lower_the_fixed_batch_objective(recipe, world, tmp_path):
    r = micro_recipe(recipe, "schedule.ramp_keys=[]", "lr_decay_start=1.0", "lr=0.001", "hard_negatives_from=0.0")
    t = Trainer(r, world, tmp_path / "run")
    hard = t.base_weights.triplet_fcl > 0
    batch = default_collate([t.dataset[PairKey(0, n, 0, 2, hard)] for n in range(2)])
    assert ("neg_j" in batch) == (recipe != "translation")
    assert ("sup_cand" in batch) == (recipe in ("soft_contrastive", "geo_local"))
    weights = t.schedule.weights_at(t.base_weights, 0)
    before = _generator_loss(t, batch, weights)
    params = {k: v.clone() for k, v in t.net.state_dict().items()}
    for _ in range(5):
        stats = t.train_step(batch)
    after = _generator_loss(t, batch, weights)
    assert torch.isfinite(torch.tensor(stats["total"]))
    # the adversarial term is a moving target (its discriminator trains too); the rest must go down
    assert after["total"] - after["gan_g"] < before["total"] - before["gan_g"], (before, after)
    if recipe in ("soft_contrastive", "geo_local"):
        assert before["sup"] > 0
    changed = {k.split(".")[1] for k, v in t.net.state_dict().items() if not torch.equal(v, params[k])}
    assert changed == {"night", "sunny"}  # ComboGAN: only the step's two domains move (dom 0 and 2)
    assert t.step == 5


def test_shared_init_starts_every_domain_from_the_same_weights(world, tmp_path):
    t = Trainer(micro_recipe("translation", "model.shared_init=true"), world, tmp_path / "run")
    for group in (t.net.encoders, t.net.decoders, t.net.discriminators):
        a, b = group["sunny"].state_dict(), group["night"].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    independent = Trainer(micro_recipe("translation"), world, tmp_path / "run2").net.encoders
    assert not torch.equal(independent["sunny"][1].weight, independent["night"][1].weight)
