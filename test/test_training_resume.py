"""Exact resume, checkpoint/recipe domain checks and the disam-train CLI."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_training_utils import make_world, micro_recipe

from disam_ros.model import CheckpointError, load_checkpoint
from disam_ros.training import cli
from disam_ros.training.trainer import Trainer


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world") / "root")


def test_resume_after_n_steps_equals_uninterrupted_training_bit_for_bit(world, tmp_path):
    # fine recipe: FCL + SAM + both triplets, ramps, lr decay, discriminator pools, and the switch to hard
    # negatives happens after the interruption, so every piece of state has to come back exactly
    r = micro_recipe("fine", "steps=6", "ramp_end=0.5", "pool_size=3", "hard_negatives_from=0.6")
    straight = Trainer(r, world, tmp_path / "a")
    straight.fit()
    first = Trainer(r, world, tmp_path / "b")
    first.fit(until=3)
    assert first.step == 3 and (tmp_path / "b" / "checkpoints" / "last.pt").is_file()
    resumed = Trainer(r, world, tmp_path / "b", resume=True)
    assert resumed.step == 3
    resumed.fit()
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for d in straight.cfg.domains:
        sa, sb = straight.opt_g[d].state_dict()["state"], resumed.opt_g[d].state_dict()["state"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    _, cfg, last = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert last["extra"]["step"] == 6 and cfg.domains == ("night", "snow", "sunny")
    # the shipped model is the same selection, with the same validation history, as the uninterrupted run's
    net_a, _, meta_a = load_checkpoint(tmp_path / "a" / "model.pt")
    net_b, _, meta_b = load_checkpoint(tmp_path / "b" / "model.pt")
    assert meta_b["extra"]["val_history"] == meta_a["extra"]["val_history"]
    assert resumed.history == straight.history and [h["step"] for h in straight.history] == [0, 6]
    assert meta_b["extra"]["step"] == meta_a["extra"]["step"] and meta_b["extra"]["selected"] == "best"
    sa, sb = net_a.state_dict(), net_b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    rows = [r.split(",") for r in (tmp_path / "b" / "log.csv").read_text().splitlines()[1:]]
    train_steps = [int(r[0]) for r in rows if r[5]]  # the resumed log continues: no step twice
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 6


def test_resume_with_hard_negative_mining_restores_the_mined_table(world, tmp_path):
    # supervised soft contrastive on the descriptors, mining every 2 steps; interrupted at 3, between two minings:
    # the resumed run must draw its candidates from the table mined at step 2, not from a fresh one
    r = micro_recipe("soft_contrastive", "steps=6", "mine_every=2", "mined=2", "ramp_keys=[]")
    straight = Trainer(r, world, tmp_path / "a")
    straight.fit()
    first = Trainer(r, world, tmp_path / "b")
    first.fit(until=3)
    table = {k: v.copy() for k, v in first.dataset.hard.items()}
    assert set(table) == {(i, j) for i in range(3) for j in range(3) if i != j}
    assert all(v.shape == (4, 2) for v in table.values())  # 4 training places per condition, the 2 hardest
    resumed = Trainer(r, world, tmp_path / "b", resume=True)
    assert {k: v.tolist() for k, v in resumed.dataset.hard.items()} == {k: v.tolist() for k, v in table.items()}
    resumed.fit()
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_a_checkpoint_with_other_domains_is_a_clear_error(world, tmp_path):
    r = micro_recipe("translation", "steps=1", "data.domains=[sunny,night]")
    Trainer(r, world, tmp_path / "t").fit()
    other = micro_recipe("coarse", "data.domains=[sunny,snow]")
    with pytest.raises(CheckpointError, match=r"trained for domains \['sunny', 'night'\].*\['snow', 'sunny'\]") as e:
        Trainer(other, world, tmp_path / "c", init=tmp_path / "t" / "model.pt")
    assert "\n" not in str(e.value)
    wider = micro_recipe("coarse", "data.domains=[sunny,night]", "model.overrides={ngf: 4}")
    with pytest.raises(CheckpointError, match="set model.preset/model.overrides to match"):
        Trainer(wider, world, tmp_path / "c", init=tmp_path / "t" / "model.pt")
    ok = Trainer(micro_recipe("coarse", "data.domains=[night,sunny]"), world, tmp_path / "c",
                 init=tmp_path / "t" / "model.pt")  # same domains in another order load by name
    assert ok.step == 0


def test_resume_refuses_a_changed_recipe(world, tmp_path):
    r = micro_recipe("coarse", "steps=2")
    Trainer(r, world, tmp_path / "run").fit(until=1)
    changed = micro_recipe("coarse", "steps=2", "lr=0.01")
    with pytest.raises(ValueError, match=r"different recipe \(schedule.lr\)"):
        Trainer(changed, world, tmp_path / "run", resume=True)
    Trainer(micro_recipe("coarse", "steps=2", "log_every=1"), world, tmp_path / "run", resume=True)  # logging is fine


def test_cli_trains_resumes_and_reports_errors_in_one_line(world, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--recipe", "translation", "--data", str(world), "--out", str(out), "model.preset=micro", "steps=2",
            "batch_size=2", "data.reference=sunny", "progress=false", "threads=2"]
    assert cli.main([*base, "--until", "1"]) == 0
    assert cli.main(["--out", str(out), "--resume"]) == 0  # recipe and data come from the checkpoint
    assert (out / "model.pt").is_file() and (out / "recipe.yaml").is_file()
    assert cli.main(["--recipe", "coarse", "--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("disam-train: error:") and "dataset root not found" in err[-1]
    assert cli.main(["--recipe", "coarse", "--data", str(world), "--out", str(out), "steps=lots"]) == 2
    assert "schedule.steps must be int" in capsys.readouterr().err
