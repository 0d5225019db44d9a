"""Recipes, schedule values (hand-computed), the negative-mining switch and hard-negative selection."""
from __future__ import annotations

import pytest
import torch

from disam_ros.model import DisamNet, preset
from disam_ros.model.losses import adaptive_triplet, feature_distance, hard_negative_index
from disam_ros.model.objective import LossWeights, generator_step_losses
from disam_ros.training.config import load_recipe
from disam_ros.training.datasets import PairBatchSampler
from disam_ros.training.schedule import Schedule


def test_lr_decay_and_weight_ramp_hit_hand_computed_values():
    s = Schedule(steps=100, lr=2e-4, lr_decay_start=0.5, ramp_end=0.5, hard_negatives_from=0.25)
    # constant until step 50, then 2e-4 * (1 - (t - 50) / 50)
    assert s.lr_at(0) == 2e-4 and s.lr_at(49) == 2e-4 and s.lr_at(50) == 2e-4
    assert s.lr_at(75) == pytest.approx(1e-4) and s.lr_at(99) == pytest.approx(4e-6)
    # ramp t / 50, capped at 1
    assert s.ramp_at(0) == 0.0 and s.ramp_at(10) == pytest.approx(0.2) and s.ramp_at(50) == 1.0 == s.ramp_at(99)
    w = s.weights_at(LossWeights.fine(), 10)  # paper maxima x 0.2; GAN and cycle are not ramped
    assert (w.fcl, w.triplet_fcl, w.sam, w.triplet_sam) == pytest.approx((0.02, 0.2, 200.0, 0.2))
    assert (w.gan, w.cyc) == (1.0, 10.0)
    assert s.sup_weight_at(2.0, 25) == pytest.approx(1.0)


def test_recipe_files_carry_the_paper_hyper_parameters():
    fine = load_recipe("fine").loss
    assert (fine.cyc, fine.fcl, fine.triplet_fcl, fine.sam, fine.triplet_sam) == (10.0, 0.1, 1.0, 1000.0, 1.0)
    assert (fine.m_f, fine.alpha_f, fine.m_s, fine.alpha_s, fine.fcl_cosine) == (5.0, 2.0, 0.1, 1000.0, True)
    coarse = load_recipe("coarse")
    assert coarse.loss.sam == 0.0 and not coarse.loss.fcl_cosine
    assert coarse.schedule.lr == 2e-4 and coarse.schedule.num_negatives == 10
    assert load_recipe("translation").loss.fcl == 0.0


def test_negative_mining_switches_from_random_to_hard_at_the_configured_step():
    s = Schedule(steps=30, lr=1e-3, hard_negatives_from=0.4, num_negatives=10)
    assert [s.hard_negatives_at(t) for t in (0, 11, 12, 29)] == [False, False, True, True]
    assert not Schedule(steps=30, lr=1e-3, hard_negatives_from=0.0, num_negatives=1).hard_negatives_at(5)
    sampler = PairBatchSampler(epoch_len=8, n_domains=3, batch_size=2, seed=0, start_step=0, total_steps=30,
                               hard_from_step=s.hard_start_step)
    flags = [batch[0].hard for batch in sampler]
    assert flags == [t >= 12 for t in range(30)]


def test_hard_negative_is_the_closest_of_k_candidates_and_feeds_the_triplet():
    torch.manual_seed(0)
    net = DisamNet(preset("micro", ["a", "b"])).eval()
    x_i, x_j = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        fake = net.translate(x_i, "a", "b")  # x_{i->j}: a candidate almost equal to it must win
        cands = torch.rand(1, 5, 3, 32, 32) * 2 - 1
        cands[0, 3] = fake[0] + 0.01 * torch.randn_like(fake[0])
        z_trans = net.encode(fake, "b")
        codes = net.encode(cands[0], "b").unsqueeze(0)
    assert hard_negative_index(z_trans, codes).item() == 3
    w = LossWeights(gan=0.0, cyc=0.0, triplet_fcl=1.0)
    with torch.no_grad():
        out = generator_step_losses(net, x_i, x_j, "a", "b", w, neg_j=cands, neg_i=torch.flip(x_i, [-1])[:, None])
        z_i, z_j = net.encode(x_i, "a"), net.encode(x_j, "b")
        z_ji = net.encode(net.decode(z_j, "a"), "a")
        expect_ij = adaptive_triplet(feature_distance(z_trans, z_i), feature_distance(z_trans, codes[:, 3]), 5.0, 2.0)
        neg_ji = net.encode(torch.flip(x_i, [-1]), "a")
        expect_ji = adaptive_triplet(feature_distance(z_ji, z_j), feature_distance(z_ji, neg_ji), 5.0, 2.0)
    assert out["triplet_fcl"].item() == pytest.approx((expect_ij + expect_ji).item(), rel=1e-5)


@pytest.mark.parametrize(("override", "message"), [
    ("schedule.stepz=3", "unknown recipe key"),
    ("steps=many", "schedule.steps must be int"),
    ("train.batch_size=0", "must be >= 1"),
    ("data.layout=zip", "data.layout 'zip' is not supported"),
    ("schedule.ramp_keys=[fcl,foo]", "unknown terms"),
    ("data.domains=[sunny]", "at least two distinct"),
    ("data.val_fraction=1.5", r"data.val_fraction=1.5 is out of range"),
    ("data.gap=-1", "data.gap must be >= 0"),
    ("supervised.descriptor=pooled", "supervised.descriptor 'pooled' is not supported"),
    ("train.val_metric=l2", "train.val_metric 'l2' is not supported"),
    ("supervised.pseudo_val_tolerance=-1", "supervised.pseudo_val_tolerance=-1.0 is out of range"),
])
def test_recipe_errors_are_one_line_and_name_the_key(override, message):
    with pytest.raises(ValueError, match=message) as err:
        load_recipe("coarse", [override])
    assert "\n" not in str(err.value)


def test_unknown_recipe_name_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match=r"use one of \['coarse', .*'translation'.*\] or a YAML path"):
        load_recipe("medium")


def test_a_directory_as_recipe_says_it_is_a_directory_and_what_is_expected(tmp_path, capsys):
    from disam_ros.training import cli

    with pytest.raises(ValueError, match=r"is a directory: give a recipe YAML file inside it \(e.g. .*my_recipe.yaml\) "
                                         r"or one of \['coarse'") as err:
        load_recipe(str(tmp_path))
    assert "\n" not in str(err.value) and "not found" not in str(err.value)
    assert cli.main(["--recipe", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("disam-train: error: recipe") and "is a directory" in line and "\n" not in line


def test_recipe_loss_section_is_the_objective_weights():
    """One source for loss weights: the recipe's loss section IS the objective's LossWeights, so an override
    reaches the objective unchanged and its range check speaks for the recipe."""
    import pytest

    from disam_ros.model.objective import LossWeights

    r = load_recipe("fine", ["loss.m_f=3", "loss.stop_grad_targets=false"])
    assert type(r.loss) is LossWeights
    assert r.loss.m_f == 3.0 and r.loss.stop_grad_targets is False
    with pytest.raises(ValueError, match="loss weight sam=-1.0 must be finite and >= 0"):
        load_recipe("fine", ["loss.sam=-1"])
