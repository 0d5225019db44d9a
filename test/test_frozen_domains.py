"""model.frozen_domains: a condition's encoder stays exactly its start while the others train into its space."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_training_utils import make_world, micro_recipe

from disam_ros.training.trainer import Trainer


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world") / "root")


def test_a_frozen_encoder_is_its_start_bit_for_bit_and_the_others_move(world, tmp_path):
    r = micro_recipe("soft_contrastive", "steps=4", "mine_every=2", "mined=2", "ramp_keys=[]",
                     "model.shared_init=true", "model.frozen_domains=[sunny]", "lr=0.01")
    t = Trainer(r, world, tmp_path / "run")
    start = {d: {k: v.clone() for k, v in t.net.encoders[d].state_dict().items()} for d in t.cfg.domains}
    frozen_ids = {id(p) for p in t.net.encoders["sunny"].parameters()}
    assert not any(id(p) in frozen_ids for opt in t.opt_g.values() for g in opt.param_groups for p in g["params"])
    t.fit()
    after = {d: t.net.encoders[d].state_dict() for d in t.cfg.domains}
    assert all(torch.equal(start["sunny"][k], after["sunny"][k]) for k in start["sunny"])
    moved = [d for d in ("night", "snow") if not all(torch.equal(start[d][k], after[d][k]) for k in start[d])]
    assert moved, "no other encoder trained"
    # shared start: before training every encoder was the frozen one
    assert all(torch.equal(start["night"][k], start["sunny"][k]) for k in start["sunny"])


@pytest.mark.parametrize("bad", ["model.frozen_domains=[night,snow,sunny]", "model.frozen_domains=[fog]"])
def test_freezing_every_or_an_unknown_condition_is_a_one_line_error(bad):
    with pytest.raises(ValueError, match="model.frozen_domains .* must be some, not all, of data.domains"):
        micro_recipe("soft_contrastive", "data.domains=[night,snow,sunny]", bad)
