"""Generator/discriminator objectives on the micro preset: they train, and SAM reaches the encoders."""
from __future__ import annotations

import pytest
import torch

from disam_ros.model import DisamNet, preset
from disam_ros.model.objective import LossWeights, discriminator_step_loss, generator_step_losses

DOMS = ("day", "night")


pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(seed=0, b=2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 32, 32, generator=g) * 2 - 1, torch.rand(b, 3, 32, 32, generator=g) * 2 - 1


def _net(seed=0):
    torch.manual_seed(seed)
    return DisamNet(preset("micro", DOMS))


@pytest.mark.parametrize("recipe", ["coarse", "fine"])
def test_adam_steps_reduce_generator_total(recipe):
    net, (x_i, x_j) = _net(), _batch()
    w = getattr(LossWeights, recipe)()
    gen_params = [p for n, p in net.named_parameters() if not n.startswith("discriminators.")]
    opt = torch.optim.Adam(gen_params, lr=1e-3)
    first = None
    for _ in range(5):
        out = generator_step_losses(net, x_i, x_j, "day", "night", w)
        first = out["total"].item() if first is None else first
        opt.zero_grad()
        out["total"].backward()
        opt.step()
    with torch.no_grad():
        last = generator_step_losses(net, x_i, x_j, "day", "night", w)["total"].item()
    assert last < 0.9 * first


def test_total_is_weighted_sum_and_zero_weight_terms_are_skipped():
    net, (x_i, x_j) = _net(), _batch()
    w = LossWeights.fine()
    out = generator_step_losses(net, x_i, x_j, 0, 1, w)
    expected = (out["gan_g"] * w.gan + out["cycle"] * w.cyc + out["fcl"] * w.fcl + out["sam"] * w.sam
                + out["triplet_fcl"] * w.triplet_fcl + out["triplet_sam"] * w.triplet_sam)
    torch.testing.assert_close(out["total"], expected)
    assert all(out[k].item() > 0 for k in ("gan_g", "cycle", "fcl", "sam"))
    coarse = generator_step_losses(net, x_i, x_j, 0, 1, LossWeights.coarse())
    assert coarse["sam"].item() == 0.0 and coarse["triplet_sam"].item() == 0.0
    # the FCL of the fine recipe adds (1 - cosine) on top of the L2 term of the coarse one
    assert out["fcl"].item() > coarse["fcl"].item()


def test_sam_only_weights_reach_both_encoders():
    net, (x_i, x_j) = _net(), _batch()
    w = LossWeights(gan=0.0, cyc=0.0, sam=1.0)
    out = generator_step_losses(net, x_i, x_j, "day", "night", w)
    out["total"].backward()
    for dom in DOMS:
        grads = [p.grad for p in net.encoders[dom].parameters()]
        assert all(g is not None for g in grads)
        assert sum(g.abs().sum().item() for g in grads) > 0
    # GAN weight 0: the discriminators were never run
    assert all(p.grad is None for p in net.discriminators.parameters())


def test_hard_negative_candidates_and_fakes():
    net, (x_i, x_j) = _net(), _batch()
    g = torch.Generator().manual_seed(3)
    neg_j = torch.rand(2, 4, 3, 32, 32, generator=g) * 2 - 1
    w = LossWeights(gan=0.0, cyc=0.0, triplet_fcl=1.0, triplet_sam=1.0, sam=1.0)
    out = generator_step_losses(net, x_i, x_j, "day", "night", w, neg_j, return_fakes=True)
    assert out["fake_j"].shape == x_i.shape and not out["fake_j"].requires_grad
    assert torch.isfinite(out["total"])
    with pytest.raises(ValueError, match=r"\(B,K,C,H,W\)"):
        generator_step_losses(net, x_i, x_j, "day", "night", w, neg_j[:, :, :, :16])
    with pytest.raises(ValueError, match="both 'day'"):
        generator_step_losses(net, x_i, x_j, "day", 0, w)


def test_discriminator_loss_does_not_touch_generator():
    net, (x_i, x_j) = _net(), _batch()
    out = generator_step_losses(net, x_i, x_j, "day", "night", LossWeights.translation(), return_fakes=True)
    loss = discriminator_step_loss(net, x_i, x_j, out["fake_i"], out["fake_j"], "day", "night")
    loss.backward()
    assert loss.item() > 0
    assert all(p.grad is None for p in net.encoders.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.discriminators["day"].parameters())


def test_weights_presets_ramp_and_validation():
    fine = LossWeights.fine()
    assert (fine.cyc, fine.fcl, fine.sam, fine.triplet_sam, fine.triplet_fcl, fine.fcl_cosine) == (
        10.0, 0.1, 1000.0, 1.0, 1.0, True)
    assert (fine.m_f, fine.alpha_f, fine.m_s, fine.alpha_s) == (5.0, 2.0, 0.1, 1000.0)
    coarse = LossWeights.coarse()
    assert (coarse.fcl, coarse.triplet_fcl, coarse.sam, coarse.fcl_cosine) == (0.1, 1.0, 0.0, False)
    half = fine.ramped(0.5)
    assert (half.sam, half.fcl, half.cyc) == (500.0, 0.05, 10.0)
    assert LossWeights.translation().fcl == 0.0
    with pytest.raises(ValueError, match="sam=-1"):
        LossWeights(sam=-1.0)


def test_stop_grad_targets_changes_which_paths_get_gradient():
    net, (x_i, x_j) = _net(), _batch()
    grads = {}
    for sg in (True, False):
        net.zero_grad(set_to_none=True)
        w = LossWeights(gan=0.0, cyc=0.0, fcl=1.0, triplet_fcl=1.0, stop_grad_targets=sg)
        out = generator_step_losses(net, x_i, x_j, "day", "night", w)
        assert out["triplet_fcl"].item() > 0  # the term is active at init, so its gradients exist
        out["total"].backward()
        grads[sg] = torch.cat([p.grad.flatten() for p in net.encoders["night"].parameters()])
    assert grads[True].abs().sum() > 0
    # without stop-gradient the real codes z_i, z_j and the flipped negatives also pull on E_night directly
    assert not torch.allclose(grads[True], grads[False])
