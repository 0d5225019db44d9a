"""Depth branch (seed 002): decoder shapes, masked depth losses, depth descriptor and fusion on hand values."""
from __future__ import annotations

import math

import pytest
import torch

from disam_ros.model import DisamNet, ModelConfig
from disam_ros.model.depth import (
    DepthDecoder,
    abs_rel_error,
    depth_descriptor,
    depth_loss,
    fuse_descriptors,
    fused_score,
    masked_l1,
    silog_loss,
)

E = math.e
NAN = float("nan")


def test_decoder_returns_positive_depth_at_input_resolution_from_the_content_code():
    cfg = ModelConfig(domains=("day", "night"), image_size=32, ngf=8, n_downsampling=2, n_blocks=2)
    net, dec = DisamNet(cfg), DepthDecoder.for_model(cfg, width=16, max_depth_m=80.0)
    z = net.encode(torch.rand(2, 3, 32, 32) * 2 - 1, "night")
    assert z.shape == (2, *cfg.content_shape) == (2, 32, 8, 8)
    depth = dec(z)
    assert depth.shape == (2, 1, 32, 32)
    assert (depth > 0).all() and (depth < 80.0).all()
    depth_loss(depth, torch.full_like(depth, 10.0)).backward()
    assert all(p.grad is not None for p in dec.parameters())
    with pytest.raises(ValueError, match="bad depth decoder shape"):
        DepthDecoder(0)


def test_masked_l1_by_hand_ignores_invalid_pixels_and_empty_images():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]], [[1.0, 1.0], [1.0, 1.0]]])
    target = torch.tensor([[[2.0, 0.0], [1.0, NAN]],  # valid: |1-2| = 1, |3-1| = 2 -> 1.5
                           [[0.0, 0.0], [0.0, 0.0]],  # nothing valid: left out of the batch mean
                           [[1.5, -1.0], [float("inf"), 0.0]]])  # valid: 0.5 -> 0.5
    assert masked_l1(pred, target).item() == pytest.approx((1.5 + 0.5) / 2)
    assert depth_loss(pred, target, "l1").item() == pytest.approx(1.0)
    # an explicit mask narrows the valid set further
    mask = torch.tensor([[[True, True], [False, True]]] * 3)
    assert masked_l1(pred, target, mask).item() == pytest.approx((1.0 + 0.5) / 2)


def test_silog_by_hand():
    # image 1: d = log(e^2 / 1), log(e / 1) = 2, 1 (third pixel invalid): mean d^2 = 2.5, mean d = 1.5
    # image 2: d = 1, -1: mean d^2 = 1, mean d = 0
    pred = torch.tensor([[[E**2, E, 5.0]], [[E, 1.0, 2.0]]])
    target = torch.tensor([[[1.0, 1.0, 0.0]], [[1.0, E, NAN]]])
    lam = 0.85
    expect = ((2.5 - lam * 1.5**2) + 1.0) / 2
    assert silog_loss(pred, target, lam=lam).item() == pytest.approx(expect)
    assert depth_loss(pred, target, "silog").item() == pytest.approx(expect)
    assert silog_loss(pred, target, lam=1.0).item() == pytest.approx(((2.5 - 2.25) + 1.0) / 2)
    assert silog_loss(pred, target, lam=0.0).item() == pytest.approx((2.5 + 1.0) / 2)


def test_silog_scale_awareness_and_empty_batches():
    target = torch.tensor([[[2.0, 4.0, 8.0, 0.0]]])
    # a prediction right up to a global scale of 2: d = log 2 everywhere, mean d^2 = mean(d)^2 = log(2)^2
    assert silog_loss(2 * target.clamp(min=1.0), target, lam=1.0).item() == pytest.approx(0.0, abs=1e-7)
    assert silog_loss(2 * target.clamp(min=1.0), target, lam=0.85).item() == pytest.approx(
        0.15 * math.log(2) ** 2)
    pred = torch.ones(1, 1, 2, requires_grad=True)
    loss = silog_loss(pred, torch.zeros(1, 1, 2))
    assert loss.item() == 0.0
    loss.backward()  # an all-invalid batch still backpropagates (zero gradient)
    assert torch.equal(pred.grad, torch.zeros_like(pred))
    with pytest.raises(ValueError, match="differ"):
        masked_l1(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 8, 8))
    with pytest.raises(ValueError, match="not supported"):
        depth_loss(pred, pred, "l2")


def test_depth_descriptor_by_hand_and_scale_invariant():
    depth = torch.tensor([[[1.0, E], [E**2, 0.0]]])  # logs 0, 1, 2; the invalid cell takes their mean 1
    desc = depth_descriptor(depth, grid=2)
    r = 1 / math.sqrt(2)
    assert torch.allclose(desc, torch.tensor([[-r, 0.0, r, 0.0]]), atol=1e-6)
    assert torch.allclose(depth_descriptor(3.7 * depth, grid=2), desc, atol=1e-6)
    big = torch.rand(2, 1, 32, 32) * 30 + 1
    assert depth_descriptor(big, grid=4).shape == (2, 16)


def test_fused_score_is_the_weighted_sum_and_fused_descriptors_reproduce_it():
    a1, a2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8]])  # cosine 0.6
    d1, d2 = torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, 5.0]])  # cosine 1.0
    assert fused_score(0.6, 1.0, 0.25) == pytest.approx(0.25 * 0.6 + 0.75 * 1.0)  # 0.9
    f1, f2 = fuse_descriptors(a1, d1, 0.25), fuse_descriptors(a2, d2, 0.25)
    assert f1.shape == (1, 4)
    assert (f1 * f2).sum().item() == pytest.approx(0.9)
    d3 = torch.tensor([[3.0, 0.0]])  # cosine with d1 is 0
    assert (f1 * fuse_descriptors(a2, d3, 0.25)).sum().item() == pytest.approx(0.15)
    only_a = fuse_descriptors(a1, d1, 1.0) * fuse_descriptors(a2, d3, 1.0)
    assert only_a.sum().item() == pytest.approx(0.6)  # w = 1: appearance only
    assert fused_score(torch.tensor([0.6, 0.2]), torch.tensor([0.0, 1.0]), 0.5).tolist() == pytest.approx([0.3, 0.6])
    with pytest.raises(ValueError, match="fusion weight"):
        fused_score(0.5, 0.5, 1.5)


def test_abs_rel_error_by_hand_per_image_over_valid_pixels():
    pred = torch.tensor([[[3.0, 2.0], [9.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]])
    target = torch.tensor([[[2.0, 4.0], [0.0, NAN]],  # |3-2|/2 = 0.5, |2-4|/4 = 0.5 -> 0.5
                           [[0.0, 0.0], [0.0, 0.0]]])  # nothing valid -> NaN
    err = abs_rel_error(pred, target)
    assert err[0].item() == pytest.approx(0.5) and math.isnan(err[1].item())


def test_fusion_can_keep_the_appearance_vector_as_given():
    a1, a2 = torch.tensor([[0.5, 0.0]]), torch.tensor([[0.5, 0.0]])  # |a| = 0.5: <a1, a2> = 0.25, cosine 1
    d1, d2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])  # cosine 0
    raw = (fuse_descriptors(a1, d1, 0.6, unit_appearance=False) * fuse_descriptors(a2, d2, 0.6, unit_appearance=False))
    unit = fuse_descriptors(a1, d1, 0.6) * fuse_descriptors(a2, d2, 0.6)
    assert raw.sum().item() == pytest.approx(0.6 * 0.25)
    assert unit.sum().item() == pytest.approx(0.6 * 1.0)
