"""DISAM losses (eqs. 1, 2, 12, 19-23) at hand-computed points."""
from __future__ import annotations

import math

import pytest
import torch

from disam_ros.model.losses import (
    adaptive_triplet,
    cycle_loss,
    fcl_loss,
    feature_distance,
    hard_negative_index,
    lsgan_d_loss,
    lsgan_g_loss,
    sam_loss,
    select_hard_negative,
)


def test_adaptive_triplet_hand_points():
    d_pos = torch.tensor([0.5, 0.0, 2.0, 0.1])
    d_neg = torch.tensor([1.0, 10.0, 0.5, 0.1])
    got = adaptive_triplet(d_pos, d_neg, margin=5.0, alpha=2.0)
    # sample 0: margin term 5 e^-1 = 1.8394; 1 - 1 / (0.5 + 1.8394) = 0.57255
    m0 = 5 * math.exp(-1.0)
    assert got[0].item() == pytest.approx(1 - 1.0 / (0.5 + m0), rel=1e-6)
    # sample 1: d_pos 0 -> full margin 5; 1 - 10/5 < 0 -> clamped to 0
    assert got[1].item() == 0.0
    # sample 2: margin almost gone (5 e^-4); 1 - 0.5 / (2 + 0.0916)
    assert got[2].item() == pytest.approx(1 - 0.5 / (2 + 5 * math.exp(-4.0)), rel=1e-6)
    # SAM parameters: m_s=0.1, alpha_s=1000 -> with d_pos=0.1 the margin is 0.1 e^-100 ~ 0
    sam = adaptive_triplet(torch.tensor([0.1]), torch.tensor([0.05]), margin=0.1, alpha=1000.0)
    assert sam.item() == pytest.approx(0.5, rel=1e-6)


def test_adaptive_triplet_margin_term_value():
    # with d_neg = 0 the loss is exactly 1; with d_neg equal to the denominator it is exactly 0
    d_pos = torch.tensor([0.3])
    denom = 0.3 + 5 * math.exp(-0.6)
    assert adaptive_triplet(d_pos, torch.tensor([0.0]), 5.0, 2.0).item() == pytest.approx(1.0)
    assert adaptive_triplet(d_pos, torch.tensor([denom]), 5.0, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_hard_negative_is_argmin_on_hand_built_case():
    anchor = torch.zeros(2, 1, 2, 2)
    cands = torch.stack(
        [
            torch.stack([torch.full((1, 2, 2), 3.0), torch.full((1, 2, 2), -1.0), torch.full((1, 2, 2), 2.0)]),
            torch.stack([torch.full((1, 2, 2), 0.5), torch.full((1, 2, 2), 0.2), torch.full((1, 2, 2), -0.1)]),
        ]
    )
    anchor[1] = 0.2  # sample 1: candidate 1 equals the anchor exactly
    assert hard_negative_index(anchor, cands).tolist() == [1, 1]
    anchor[1] = -0.3  # now -0.1 (index 2) is closest
    assert hard_negative_index(anchor, cands).tolist() == [1, 2]
    neg = select_hard_negative(anchor, cands)
    torch.testing.assert_close(neg, torch.stack([cands[0, 1], cands[1, 2]]))


def test_select_hard_negative_keeps_gradient_on_chosen_candidate():
    anchor = torch.zeros(1, 3)
    cands = torch.tensor([[[5.0, 5, 5], [1.0, 0, 0]]], requires_grad=True)
    select_hard_negative(anchor, cands).sum().backward()
    assert cands.grad.tolist() == [[[0.0, 0, 0], [1.0, 1, 1]]]


def test_hard_negative_shape_error():
    with pytest.raises(ValueError, match=r"\(B,K,...\)"):
        hard_negative_index(torch.zeros(2, 3), torch.zeros(2, 3))


def test_feature_distance_fcl_sam_cycle_values():
    a = torch.tensor([[1.0, 2.0], [0.0, 0.0]]).view(2, 2, 1, 1)
    b = torch.tensor([[1.0, 0.0], [3.0, 4.0]]).view(2, 2, 1, 1)
    assert feature_distance(a, b).tolist() == pytest.approx([2.0, 12.5])
    assert fcl_loss(a, b).item() == pytest.approx(7.25)
    # cosine term: channels with 1x1 maps have cosine sign(a*b): sample0 (1, 0/eps) -> mean 0.5; sample1 0
    assert fcl_loss(a, b, cosine=True).item() == pytest.approx(7.25 + ((1 - 0.5) + (1 - 0.0)) / 2, abs=1e-6)
    assert sam_loss(a[:, 0], b[:, 0]).item() == pytest.approx((0 + 9) / 2)
    assert cycle_loss(a, b).item() == pytest.approx((0 + 2 + 3 + 4) / 4)


def test_lsgan_multiscale_weighting_matches_reference_formula():
    preds = [torch.full((1, 2, 4, 4), 0.0), torch.full((1, 2, 2, 2), 0.5), torch.full((1, 2, 1, 1), 2.0)]
    # G wants 1: per-scale MSE 1, 0.25, 1; multipliers 1, 2, 4 (last +1); / (7 * 3)
    g = (1 * 1.0 + 2 * 0.25 + 4 * 1.0) / (7 * 3)
    assert lsgan_g_loss(preds).item() == pytest.approx(g)
    # D: real -> 1 on preds, fake -> 0 on preds: MSE 0, 0.25, 4
    fake = (1 * 0.0 + 2 * 0.25 + 4 * 4.0) / (7 * 3)
    assert lsgan_d_loss(preds, preds).item() == pytest.approx(0.5 * (g + fake))
    with pytest.raises(ValueError, match="no discriminator outputs"):
        lsgan_g_loss([])
