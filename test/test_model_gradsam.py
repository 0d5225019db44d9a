"""Grad-SAM (eqs. 16-18) against explicit loops, autograd and central finite differences (float64)."""
from __future__ import annotations

import math

import pytest
import torch

from disam_ros.model.gradsam import (
    channel_normalized,
    gradsam_map,
    gradsam_weights,
    mean_channel_cosine,
    similarity_activation_maps,
)


def _pair(seed=0, shape=(2, 3, 4, 5)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def _eq16_loop(a: torch.Tensor, b: torch.Tensor) -> float:
    """Eq. 16 written out for one sample (C,H,W) with Python floats."""
    n, h, w = a.shape
    total = 0.0
    for k in range(n):
        num = sum(float(a[k, p, q] * b[k, p, q]) for p in range(h) for q in range(w))
        na = math.sqrt(sum(float(a[k, p, q]) ** 2 for p in range(h) for q in range(w)))
        nb = math.sqrt(sum(float(b[k, p, q]) ** 2 for p in range(h) for q in range(w)))
        total += num / (na * nb)
    return total / n


def test_mean_channel_cosine_equals_loop():
    a, b = _pair()
    y = mean_channel_cosine(a, b)
    assert y.shape == (2,)
    for i in range(2):
        assert y[i].item() == pytest.approx(_eq16_loop(a[i], b[i]), rel=1e-8)  # eps-smoothed norms


def test_mean_channel_cosine_is_eps_safe_for_zero_channels():
    a, b = _pair()
    a[:, 1] = 0.0
    y = mean_channel_cosine(a, b)
    assert torch.isfinite(y).all()
    expected = [(_cos(a[i, 0], b[i, 0]) + 0.0 + _cos(a[i, 2], b[i, 2])) / 3 for i in range(2)]
    assert y.tolist() == pytest.approx(expected, abs=1e-9)
    w = gradsam_weights(a, b)
    assert torch.isfinite(w).all()


def _cos(u, v):
    return float((u * v).sum() / (u.norm() * v.norm()))


def test_weights_equal_central_finite_differences():
    a, b = _pair(1, (1, 3, 3, 4))
    w = gradsam_weights(a, b)
    h = 1e-6
    for k in range(3):
        fd = 0.0
        for p in range(3):
            for q in range(4):
                ap, am = a.clone(), a.clone()
                ap[0, k, p, q] += h
                am[0, k, p, q] -= h
                fd += (mean_channel_cosine(ap, b) - mean_channel_cosine(am, b)).item() / (2 * h)
        assert w[0, k].item() == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_weights_equal_autograd_first_and_second_order():
    a, b = _pair(2)
    a.requires_grad_(True)
    b.requires_grad_(True)
    y = mean_channel_cosine(a, b).sum()
    (grad_a,) = torch.autograd.grad(y, a, create_graph=True)
    w_auto = grad_a.sum(dim=(2, 3))
    w = gradsam_weights(a, b)
    torch.testing.assert_close(w, w_auto, rtol=1e-10, atol=1e-12)
    # The closed form is differentiable w.r.t. both inputs and matches the double-backward derivatives.
    probe = torch.randn(w.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    g_closed = torch.autograd.grad((w * probe).sum(), (a, b), retain_graph=True)
    g_double = torch.autograd.grad((w_auto * probe).sum(), (a, b))
    for gc, gd in zip(g_closed, g_double):
        assert gc.abs().sum() > 0
        torch.testing.assert_close(gc, gd, rtol=1e-8, atol=1e-10)


def test_sam_map_equals_hand_loop():
    a, b = _pair(3)
    w = gradsam_weights(a, b)
    L = gradsam_map(a, w)
    assert L.shape == (2, 4, 5)
    for i in range(2):
        for p in range(4):
            for q in range(5):
                s = sum(float(w[i, k]) * float(a[i, k, p, q]) for k in range(3))
                assert L[i, p, q].item() == pytest.approx(max(s, 0.0), abs=1e-12)
    assert (L == 0).any() and (L > 0).any()  # the ReLU is doing something on this input


def test_similarity_maps_are_directional():
    a, b = _pair(4)
    L_a, L_b = similarity_activation_maps(a, b)
    torch.testing.assert_close(L_a, gradsam_map(a, gradsam_weights(a, b)))
    torch.testing.assert_close(L_b, gradsam_map(b, gradsam_weights(b, a)))
    assert not torch.allclose(L_a, L_b)


def test_shape_errors_are_clear():
    a, b = _pair()
    with pytest.raises(ValueError, match="equal shape"):
        gradsam_weights(a, b[:, :2])
    with pytest.raises(ValueError, match="batch dimension"):
        mean_channel_cosine(a[0], b[0])
    with pytest.raises(ValueError, match=r"w \(B,C\)"):
        gradsam_map(a, torch.zeros(2, 4, dtype=torch.float64))


def test_channel_normalized_dot_is_mean_channel_cosine_and_broadcasts():
    a, b = _pair(6, (3, 4, 5, 5))
    va, vb = channel_normalized(a), channel_normalized(b)
    assert va.shape == (3, 100)
    sims = va @ vb.T
    for i in range(3):
        # batch 1 against batch 3: one query row of the similarity matrix
        torch.testing.assert_close(mean_channel_cosine(a[i : i + 1], b), sims[i])
        assert sims[i, 0].item() == pytest.approx(_eq16_loop(a[i], b[0]), rel=1e-8)


def test_half_inputs_do_not_overflow():
    a = torch.full((1, 2, 64, 64), 20.0, dtype=torch.float16)  # sum of squares 1.6e6 > float16 max
    y = mean_channel_cosine(a, a)
    assert y.dtype == torch.float32 and y.item() == pytest.approx(1.0, abs=1e-6)
    assert torch.isfinite(gradsam_weights(a, a)).all()
