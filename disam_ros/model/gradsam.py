"""Grad-SAM: gradient-weighted similarity activation maps (eqs. 16-18).

The reference implementation gets the weights of eq. 17 with `autograd.grad(..., create_graph=True)`,
i.e. a double backward through the whole similarity. The similarity of eq. 16 is simple enough to
differentiate by hand, so here the weights are a closed-form expression: ordinary differentiable tensor
ops, one pass, no double backward, and identical values (the tests check it against autograd and
central finite differences).
"""
from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-8


def _check_pair(z_i: Tensor, z_j: Tensor) -> None:
    ok = z_i.dim() == 4 and z_j.dim() == 4 and z_i.shape[1:] == z_j.shape[1:]
    if not ok or (z_i.shape[0] != z_j.shape[0] and 1 not in (z_i.shape[0], z_j.shape[0])):
        raise ValueError(
            f"Grad-SAM needs two (B,C,H,W) feature maps of equal shape (or batch 1 vs B), got {tuple(z_i.shape)} "
            f"and {tuple(z_j.shape)}: add the batch dimension or pair features of the same model"
        )


def _wide(z: Tensor) -> Tensor:
    """float16/bfloat16 -> float32: a channel's sum of squares over 64x64 positions overflows float16."""
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def _flat_norms(z_i: Tensor, z_j: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-channel flattened maps a, b (B,C,HW), their eps-smoothed norms and dot products (B,C)."""
    a, b = _wide(z_i).flatten(2), _wide(z_j).flatten(2)
    na = (a * a).sum(-1).add(eps).sqrt()
    nb = (b * b).sum(-1).add(eps).sqrt()
    return a, b, na, nb, (a * b).sum(-1)


def mean_channel_cosine(za: Tensor, zb: Tensor, eps: float = EPS) -> Tensor:
    """Y of eq. 16: cosine of each channel's spatial map, averaged over channels -> (B,).

    Norms are sqrt(sum z^2 + eps) so an all-zero channel gives cosine 0 instead of NaN. A batch of 1 is
    broadcast against a batch of B (one query vs many references). Half inputs are computed in float32.
    """
    _check_pair(za, zb)
    _, _, na, nb, dot = _flat_norms(za, zb, eps)
    return (dot / (na * nb)).mean(-1)


def gradsam_weights(z_i: Tensor, z_j: Tensor, eps: float = EPS) -> Tensor:
    """omega_{i,j} of eq. 17: spatial sum of dY/dz_i, in closed form -> (B, C).

    With a_k, b_k the flattened channel-k maps of z_i, z_j and n channels,
    dY/da_k = (b_k / (|a_k||b_k|) - <a_k,b_k> a_k / (|a_k|^3 |b_k|)) / n,
    so omega_k = (sum(b_k) / (|a_k||b_k|) - <a_k,b_k> sum(a_k) / (|a_k|^3 |b_k|)) / n.
    Differentiable w.r.t. both inputs, which is what lets the SAM loss train the encoders.
    """
    _check_pair(z_i, z_j)
    a, b, na, nb, dot = _flat_norms(z_i, z_j, eps)
    inv = 1.0 / (na * nb)
    w = b.sum(-1) * inv - dot * a.sum(-1) * inv / (na * na)
    return w / a.shape[1]


def gradsam_map(z: Tensor, w: Tensor) -> Tensor:
    """L of eq. 18: ReLU(sum_k w_k z_k) -> (B, H, W)."""
    if z.dim() != 4 or w.shape != z.shape[:2]:
        raise ValueError(
            f"gradsam_map needs z (B,C,H,W) and w (B,C), got {tuple(z.shape)} and {tuple(w.shape)}: "
            "compute w with gradsam_weights on the same z"
        )
    return (w[:, :, None, None] * z).sum(1).relu()


def similarity_activation_maps(z_i: Tensor, z_j: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """(L_{i,j}, L_{j,i}): each code's map given the other as reference (Sec. IV-A, Fig. 3)."""
    return (
        gradsam_map(z_i, gradsam_weights(z_i, z_j, eps)),
        gradsam_map(z_j, gradsam_weights(z_j, z_i, eps)),
    )


def channel_normalized(z: Tensor, eps: float = EPS) -> Tensor:
    """(B,C,H,W) -> (B, C*H*W) vectors whose dot product is exactly Y of eq. 16.

    Each channel's map is L2-normalised and the whole divided by sqrt(C), so
    <channel_normalized(a), channel_normalized(b)> = mean_k cos(a_k, b_k): the mean-channel cosine of the
    retrieval stage becomes an inner-product search (faiss IndexFlatIP, matrix products).
    """
    if z.dim() != 4:
        raise ValueError(f"channel_normalized needs (B,C,H,W) features, got {tuple(z.shape)}: add the batch dim")
    a = _wide(z).flatten(2)
    norms = (a * a).sum(-1, keepdim=True).add(eps).sqrt()
    return (a / norms).flatten(1) / a.shape[1] ** 0.5
