"""Soft contrastive loss (influence functions, eq. 5) and the geographically local triplet."""
from __future__ import annotations

import math

import pytest
import torch

from disam_ros.model.related_losses import geo_local_triplet, influence_neg, influence_pos, soft_contrastive_loss


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_influence_functions_follow_definition_4_1():
    y = torch.linspace(0, 50, 201, dtype=torch.float64)
    gp, gn = influence_pos(y, tau=20.0, gamma=0.3), influence_neg(y, tau=20.0, gamma=0.3)
    assert (gp.diff() < 0).all(), "g+ must be strictly decreasing"
    assert (gn.diff() > 0).all(), "g- must be strictly increasing"
    assert influence_pos(20.0, 20.0, 0.3).item() == pytest.approx(0.5)
    assert influence_neg(20.0, 20.0, 0.3).item() == pytest.approx(0.5)
    assert gp[0] > gn[0] > 0
    assert gp[-1] < gn[-1]
    assert influence_pos(3.0, 5.0, 2.0).item() == pytest.approx(_sig(2.0 * (5.0 - 3.0)))


def test_soft_contrastive_hand_point():
    anchor = torch.tensor([[0.0, 0.0]])
    feats = torch.tensor([[[3.0, 4.0], [0.0, 1.0]]])
    geo = torch.tensor([[0.0, 10.0]])
    tau, gamma, eta, nu, mu = 5.0, 1.0, 2.0, 0.5, 1.0
    d = [5.0, 1.0]
    gp = [_sig(gamma * (tau - 0.0)), _sig(gamma * (tau - 10.0))]
    gn = [_sig(gamma * (0.0 - tau)), _sig(gamma * (10.0 - tau))]
    sp = [g * di for g, di in zip(gp, d)]
    sn = [g * di for g, di in zip(gn, d)]
    expected = math.log(1 + sum(math.exp(eta * s - mu) for s in sp)) / eta + math.log(
        1 + sum(math.exp(mu - nu * s) for s in sn)
    ) / nu
    got = soft_contrastive_loss(anchor, feats, geo, tau, gamma, eta, nu, mu)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_soft_contrastive_pools_maps_and_reduces():
    g = torch.Generator().manual_seed(0)
    a, f = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 5, 4, 2, 2, generator=g)
    geo = torch.rand(3, 5, generator=g) * 20
    per = soft_contrastive_loss(a, f, geo, 10, 0.5, 1, 1, 0.5, reduction="none")
    pooled = soft_contrastive_loss(a.mean((2, 3)), f.mean((3, 4)), geo, 10, 0.5, 1, 1, 0.5, reduction="none")
    torch.testing.assert_close(per, pooled)
    assert soft_contrastive_loss(a, f, geo, 10, 0.5, 1, 1, 0.5, reduction="sum").item() == pytest.approx(
        per.sum().item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="one geometric distance per candidate"):
        soft_contrastive_loss(a, f, geo[:, :4], 10, 0.5, 1, 1, 0.5)


def test_soft_contrastive_gradient_pulls_near_and_pushes_far():
    anchor = torch.zeros(1, 2)
    feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], requires_grad=True)
    geo = torch.tensor([[0.0, 100.0]])  # first is at the anchor's place, second far away
    soft_contrastive_loss(anchor, feats, geo, tau=10.0, gamma=1.0, eta=1.0, nu=1.0, mu=0.0).backward()
    # gradient descent moves f0 towards the anchor (grad along +x) and f1 away (grad along -y)
    assert feats.grad[0, 0, 0] > 0
    assert feats.grad[0, 1, 1] < 0


def _triplet_inputs():
    anchor = torch.tensor([[0.0, 0.0]])
    positive = torch.tensor([[1.0, 0.0]])
    negatives = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [0.5, 0.0]]])
    geo = torch.tensor([[5.0, 8.0, 100.0]])
    return anchor, positive, negatives, geo


def test_geo_local_triplet_hand_value_uses_local_negatives_only():
    a, p, n, geo = _triplet_inputs()
    got = geo_local_triplet(a, p, n, geo, radius=10.0, alpha=2.0, normalize=False)
    expected = (math.log1p(math.exp(2.0 * (1 - 2))) + math.log1p(math.exp(2.0 * (1 - 3)))) / 2
    assert got.item() == pytest.approx(expected, rel=1e-6)
    n2 = n.clone()
    n2[0, 2] = torch.tensor([0.0, 0.01])  # far negative moved right next to the anchor: no effect
    assert geo_local_triplet(a, p, n2, geo, radius=10.0, alpha=2.0, normalize=False).item() == pytest.approx(
        got.item(), rel=1e-7
    )
    n3 = n.clone()
    n3[0, 0] = torch.tensor([0.0, 0.01])  # a local negative moved: the loss changes
    assert geo_local_triplet(a, p, n3, geo, radius=10.0, alpha=2.0, normalize=False).item() > got.item() + 0.1


def test_geo_local_triplet_global_mix_and_fallback():
    a, p, n, geo = _triplet_inputs()
    all_three = geo_local_triplet(a, p, n, geo, radius=10.0, alpha=2.0, global_weight=1.0, normalize=False)
    expected_all = sum(math.log1p(math.exp(2.0 * (1 - dn))) for dn in (2.0, 3.0, 0.5)) / 3
    assert all_three.item() == pytest.approx(expected_all, rel=1e-6)
    none_local = geo_local_triplet(a, p, n, geo, radius=1.0, alpha=2.0, normalize=False)
    assert none_local.item() == pytest.approx(expected_all, rel=1e-6)
    local = geo_local_triplet(a, p, n, geo, radius=10.0, alpha=2.0, normalize=False)
    mixed = geo_local_triplet(a, p, n, geo, radius=10.0, alpha=2.0, global_weight=0.25, normalize=False)
    assert mixed.item() == pytest.approx(0.75 * local.item() + 0.25 * expected_all, rel=1e-6)


def test_geo_local_triplet_normalizes_by_default():
    a, p, n, geo = _triplet_inputs()
    scaled = geo_local_triplet(a + 0.3, p * 7 + 0.3, n * 7 + 0.3, geo, radius=10.0)
    base = geo_local_triplet(a + 0.3, p + 0.3, n + 0.3, geo, radius=10.0)
    assert torch.isfinite(scaled) and torch.isfinite(base)
    with pytest.raises(ValueError, match="global_weight"):
        geo_local_triplet(a, p, n, geo, radius=10.0, global_weight=1.5)
