"""DISAM training losses as pure functions on batched tensors (eqs. 1, 2, 12, 19-23).

Convention: distances are per sample, shape (B,); `*_loss` functions return a scalar mean over the batch.
The paper writes ||.||_2 for FCL, SAM and the triplet distances; the reference implementation uses the
mean squared error everywhere, and the published hyper-parameters (m_f=5, alpha_f=2, m_s=0.1,
alpha_s=1000, lambda_SAM=1000) are tuned for that scale, so MSE it is.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .gradsam import mean_channel_cosine


def feature_distance(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample mean squared error over all non-batch dimensions -> (B,)."""
    if a.shape != b.shape or a.dim() < 2:
        raise ValueError(
            f"feature_distance needs two batched tensors of equal shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}: compare features from the same model and batch"
        )
    return (a - b).pow(2).flatten(1).mean(1)


def fcl_loss(z_trans: Tensor, z: Tensor, cosine: bool = False) -> Tensor:
    """Feature consistency loss, eq. 12: MSE(z_{i->j}, z_i); the fine model adds 1 - mean-channel cosine."""
    loss = feature_distance(z_trans, z).mean()
    if cosine:
        loss = loss + (1.0 - mean_channel_cosine(z_trans, z)).mean()
    return loss


def sam_loss(L_a: Tensor, L_b: Tensor) -> Tensor:
    """Grad-SAM loss, eq. 19: MSE between the activation maps L_i and L_{i->j}."""
    return feature_distance(L_a, L_b).mean()


def cycle_loss(rec: Tensor, real: Tensor) -> Tensor:
    """Cycle consistency, eq. 1: mean absolute error between D_i(E_j(D_j(E_i(x_i)))) and x_i."""
    return F.l1_loss(rec, real)


def _multiscale_mse(preds: Sequence[Tensor], target: float) -> Tensor:
    """LSGAN MSE against a constant, weighted 1, 2, ..., n-1, n+1 over scales (coarsest counts most).

    The normalisation sum(m*l) / (sum(m) * n) reproduces the reference GANLoss exactly, so loss
    weights tuned there transfer.
    """
    if not preds:
        raise ValueError("no discriminator outputs given: pass the list returned by DisamNet.discriminate")
    mults = list(range(1, len(preds) + 1))
    mults[-1] += 1
    total = sum(m * F.mse_loss(p, torch.full_like(p, target)) for m, p in zip(mults, preds))
    return total / (sum(mults) * len(preds))


def lsgan_d_loss(pred_real: Sequence[Tensor], pred_fake: Sequence[Tensor]) -> Tensor:
    """Discriminator side of eq. 2: 0.5 * (E[(D(x_j) - 1)^2] + E[D(x_{i->j})^2]), multi-scale weighted."""
    return 0.5 * (_multiscale_mse(pred_real, 1.0) + _multiscale_mse(pred_fake, 0.0))


def lsgan_g_loss(pred_fake: Sequence[Tensor]) -> Tensor:
    """Generator side of eq. 2 (LSGAN): E[(D_j(x_{i->j}) - 1)^2], multi-scale weighted."""
    return _multiscale_mse(pred_fake, 1.0)


def adaptive_triplet(d_pos: Tensor, d_neg: Tensor, margin: float, alpha: float) -> Tensor:
    """Adaptive triplet, eqs. 22/23: max(0, 1 - d_neg / (d_pos + margin * exp(-alpha * d_pos))) -> (B,).

    Early in training d_pos is large, the margin term vanishes and the loss barely interferes with FCL/SAM;
    as d_pos shrinks the margin grows towards `margin` and metric learning takes over (Sec. IV-B).
    """
    return (1.0 - d_neg / (d_pos + margin * torch.exp(-alpha * d_pos))).clamp(min=0.0)


def _pair_distances(anchor: Tensor, candidates: Tensor) -> Tensor:
    if candidates.dim() != anchor.dim() + 1 or candidates.shape[0] != anchor.shape[0] or (
        candidates.shape[2:] != anchor.shape[1:]
    ):
        raise ValueError(
            f"candidates must be (B,K,...) matching anchor (B,...), got {tuple(candidates.shape)} and "
            f"{tuple(anchor.shape)}: stack K negatives per anchor on dim 1"
        )
    return (candidates - anchor.unsqueeze(1)).pow(2).flatten(2).mean(2)


def hard_negative_index(anchor: Tensor, candidates: Tensor) -> Tensor:
    """Eqs. 20/21: index of the candidate closest to the anchor (per-pair MSE) -> (B,) long.

    Selection is not differentiable and runs without building a graph.
    """
    with torch.no_grad():
        return _pair_distances(anchor.detach(), candidates.detach()).argmin(1)


def select_hard_negative(anchor: Tensor, candidates: Tensor) -> Tensor:
    """The hard negative itself, (B,...), gathered with gradients kept on the chosen candidate."""
    idx = hard_negative_index(anchor, candidates)
    return candidates[torch.arange(candidates.shape[0], device=candidates.device), idx]
