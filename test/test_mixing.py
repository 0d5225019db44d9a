"""Mixing a second, posed world into training (data.mix): groups of its conditions per model domain with
positions in frame steps, a keyed choice between the two sets whose share is the probability, one-line errors,
and a real training step on a batch drawn through the trainer's own mixed set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_training_utils import make_world, micro_recipe
from torch.utils.data import default_collate

from disam_ros.training.config import load_recipe
from disam_ros.training.datasets import PairKey, UnpairedDataset, build_data
from disam_ros.training.mixing import MixedDataset, frame_step, mixed_dataset, mixed_domains
from disam_ros.training.trainer import Trainer

GROUPS = "{sunny: [sunny], night: [night, fog], snow: [snow]}"


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("mix")
    return make_world(base / "real"), make_world(base / "other", ("sunny", "night", "snow", "fog"), seed=5)


def _sets(worlds, p: float) -> tuple[UnpairedDataset, UnpairedDataset, MixedDataset]:
    real_root, other = worlds
    r = micro_recipe("soft_contrastive", "data.train_fraction=1.0")
    data = build_data(r, real_root)
    real = UnpairedDataset.from_recipe(r, data.train, 32)
    mixed = UnpairedDataset.from_recipe(r, mixed_domains(other, {"sunny": ["sunny"], "night": ["night", "fog"],
                                                                 "snow": ["snow"]}, data.names), 32)
    return real, mixed, MixedDataset(real, mixed, p, seed=3)


def test_groups_are_concatenated_with_positions_in_frame_steps(worlds):
    doms = mixed_domains(worlds[1], {"sunny": ["sunny"], "night": ["night", "fog"], "snow": ["snow"]},
                         ("sunny", "night", "snow"))
    assert [d.name for d in doms] == ["sunny<-sunny", "night<-night+fog", "snow<-snow"]
    assert [len(d) for d in doms] == [12, 24, 12]
    # make_world puts places 3 m apart at height 1.5 m: in frame steps, x = place index and z = 0.5
    np.testing.assert_allclose(doms[1].positions[:, 0], np.r_[np.arange(12), np.arange(12)])
    np.testing.assert_allclose(doms[1].positions[:, 2], 0.5)
    assert doms[1].paths[12].parent.parent.name == "fog"
    assert frame_step([[0, 0, 0], [1, 0, 0], [3, 0, 0], [4, 0, 0]]) == 1.0  # median of 1, 2, 1


def test_bad_mix_settings_fail_with_one_line_that_names_the_fix(worlds, tmp_path):
    names = ("sunny", "night", "snow")
    with pytest.raises(ValueError, match=r"gives no conditions for model domain\(s\) \['snow'\]"):
        mixed_domains(worlds[1], {"sunny": ["sunny"], "night": ["night"]}, names)
    with pytest.raises(ValueError, match=r"names 'rain', not a condition of"):
        mixed_domains(worlds[1], {"sunny": ["sunny"], "night": ["rain"], "snow": ["snow"]}, names)
    with pytest.raises(FileNotFoundError, match="make one with disam-synth"):
        mixed_domains(tmp_path / "nowhere", {}, names)
    with pytest.raises(ValueError, match="the first mixed condition's poses do not move"):
        frame_step([[1.0, 2.0, 3.0]] * 3)
    with pytest.raises(ValueError, match=r"^data.mix=0.5 needs data.mix_root .* add data.mix_root=W"):
        mixed_dataset(load_recipe("rail_pseudo", ["data.mix=0.5"]), None, names, 32)
    with pytest.raises(ValueError, match=r"^data.mix=1.5 is out of range"):
        load_recipe("rail_pseudo", ["data.mix=1.5"])
    assert load_recipe("rail_pseudo").data.mix == 0.0


def test_the_choice_is_keyed_and_its_share_is_the_probability(worlds):
    real, mixed, _ = _sets(worlds, 0.0)
    keys = [PairKey(e, n, 0, 1, False) for e in range(4) for n in range(100)]
    for p, expect in ((0.0, real), (1.0, mixed)):
        mix = MixedDataset(real, mixed, p, seed=3)
        for key in keys[:3]:
            assert torch.equal(mix[key]["x_i"], expect[key]["x_i"])
    mix = MixedDataset(real, mixed, 0.3, seed=3)
    chosen = [mix.from_mix(k) for k in keys]
    share = float(np.mean(chosen))
    assert abs(share - 0.3) < 4 * np.sqrt(0.3 * 0.7 / len(keys))  # binomial, 4 standard errors
    assert chosen == [mix.from_mix(k) for k in keys]  # a function of the key
    key = next(k for k, c in zip(keys, chosen) if c)
    assert torch.equal(mix[key]["sup_pos"], mixed[key]["sup_pos"])
    with pytest.raises(ValueError, match=r"data.mix=2.0 must be within \[0, 1\]"):
        MixedDataset(real, mixed, 2.0, seed=3)


def test_the_trainer_mixes_and_a_step_on_a_mixed_batch_trains(worlds, tmp_path):
    real_root, other = worlds
    r = micro_recipe("soft_contrastive", "schedule.ramp_keys=[]", "lr_decay_start=1.0", "lr=0.001", "data.mix=1.0",
                     f"data.mix_root={other}", f"data.mix_conditions={GROUPS}")
    t = Trainer(r, real_root, tmp_path / "run")
    assert isinstance(t.dataset, MixedDataset) and t.dataset.p == 1.0
    assert t.data.names == ("night", "snow", "sunny")  # model order: each gets its own group
    assert [len(d) for d in t.dataset.mixed.domains] == [24, 12, 12]
    t.dataset.hard = {(0, 1): np.zeros((4, 1), np.int64)}  # the mining table is the real set's
    assert t.dataset.real.hard is t.dataset.hard
    batch = default_collate([t.dataset[PairKey(0, n, 0, 1, False)] for n in range(2)])
    params = {k: v.clone() for k, v in t.net.state_dict().items()}
    stats = t.train_step(batch)
    assert np.isfinite(stats["total"]) and t.step == 1
    assert any(not torch.equal(v, params[k]) for k, v in t.net.state_dict().items())
    plain = Trainer(micro_recipe("soft_contrastive"), real_root, tmp_path / "plain")
    assert isinstance(plain.dataset, UnpairedDataset)  # data.mix 0: the real set alone


def test_the_mix_recipe_is_the_real_starter_plus_the_mix():
    a, b = load_recipe("real_starter").to_dict(), load_recipe("real_starter_mix").to_dict()
    mix = {k: b["data"].pop(k) for k in ("mix", "mix_root", "mix_conditions")}
    assert mix == {"mix": 0.3, "mix_root": None, "mix_conditions": {"summer": ["sunny", "overcast", "summer", "autumn"],
                                                                    "winter": ["snow", "night", "dusk", "fog", "rain"]}}
    for k in ("mix", "mix_root", "mix_conditions"):
        a["data"].pop(k)
    a.pop("name"), b.pop("name")
    assert a == b
