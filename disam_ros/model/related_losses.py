"""Pose-supervised metric losses for fine-tuning when training images have poses.

- Soft contrastive loss with geometric influence functions (Thoma et al., "Soft contrastive learning for
  visual localization", eqs. 3-5 there).
- Geographically local soft-margin triplet (Xia et al., "Geographically local representation learning
  with a spatial prior for visual localization").

Descriptors are vectors (B, D); 4-D feature maps (B, C, H, W) are average-pooled over space first, and
candidate sets carry an extra K dimension on axis 1.

Training should not hand the losses a spatial average of the code: retrieval never looks at one. It scores
the eq. 16 coarse vector and the flattened fine vector (`retrieval_descriptor` below, the same maths as
`disam_ros.maps.descriptors.coarse_vectors` / `fine_vectors`, which training may not import), so the
supervised terms are applied to those: what the loss pulls together is what the map compares.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_EPS = 1e-12
DESCRIPTORS = ("coarse", "fine")


def coarse_descriptor(z: Tensor) -> Tensor:
    """(B, C, h, w) codes -> (B, C*h*w): each channel's map L2-normalised, flattened, scaled by 1/sqrt(C).

    The dot product of two such vectors is eq. 16 (mean over channels of the cosine of the spatial maps), and
    their squared Euclidean distance is 2 - 2 * eq. 16 when no channel is all zero (a dead channel adds 0).
    """
    if z.dim() != 4:
        raise ValueError(f"coarse_descriptor needs codes (B, C, h, w), got shape {tuple(z.shape)}: pass content codes")
    b, c = z.shape[:2]
    return F.normalize(z.reshape(b, c, -1), dim=-1, eps=_EPS).reshape(b, -1) / math.sqrt(c)


def fine_descriptor(z: Tensor) -> Tensor:
    """(B, ...) codes -> (B, D) unit vectors: the fine stage's cosine is their dot product (Sec. IV-C)."""
    return F.normalize(z.reshape(z.shape[0], -1), dim=-1, eps=_EPS)


def retrieval_descriptor(z: Tensor, kind: str) -> Tensor:
    """The vector the map stores for code z: `coarse` (eq. 16) or `fine` (cosine of the flattened code)."""
    if kind == "coarse":
        return coarse_descriptor(z)
    if kind == "fine":
        return fine_descriptor(z)
    raise ValueError(f"unknown descriptor {kind!r}: use one of {list(DESCRIPTORS)}")


def influence_pos(y: Tensor | float, tau: float, gamma: float) -> Tensor:
    """g+(y) = 1 / (1 + exp(gamma * y - gamma * tau)): strictly decreasing, 0.5 at y = tau.

    Eq. 4 of the paper as printed assigns this sigmoid to g- and the increasing one to g+, which
    contradicts its own Definition 4.1 (g+ decreasing, g+(0) > g-(0)); we follow the definition, which is
    also what makes near images "positive".
    """
    return torch.sigmoid(gamma * (tau - torch.as_tensor(y)))


def influence_neg(y: Tensor | float, tau: float, gamma: float) -> Tensor:
    """g-(y) = 1 / (1 + exp(gamma * tau - gamma * y)): strictly increasing, 0.5 at y = tau."""
    return torch.sigmoid(gamma * (torch.as_tensor(y) - tau))


def _as_vectors(x: Tensor, batch_dims: int) -> Tensor:
    """Flatten to (*batch, D); spatial maps (…, C, H, W) are average-pooled to (…, C) first."""
    if x.dim() == batch_dims + 3:
        x = x.mean(dim=(-2, -1))
    if x.dim() != batch_dims + 1:
        raise ValueError(
            f"expected descriptors with {batch_dims} batch dims plus (D,) or (C,H,W), got shape {tuple(x.shape)}: "
            "check the anchor/candidate stacking"
        )
    return x


def _euclidean(a: Tensor, b: Tensor) -> Tensor:
    """||a - b|| along the last dim, with a gradient that stays finite at distance 0."""
    return (a - b).pow(2).sum(-1).clamp_min(_EPS).sqrt()


def soft_contrastive_loss(
    anchor: Tensor,
    feats: Tensor,
    geo_dist: Tensor,
    tau: float,
    gamma: float,
    eta: float,
    nu: float,
    mu: float,
    reduction: str = "mean",
) -> Tensor:
    """Eq. 5 with the scores of eq. 3, per anchor a and its K tuples (f_k, geometric distance y_k):

    s+_k = g+(y_k) ||f_k - a||,  s-_k = g-(y_k) ||f_k - a||,
    loss_a = log(1 + sum_k exp(eta s+_k - mu)) / eta + log(1 + sum_k exp(mu - nu s-_k)) / nu.

    The first term pulls geometrically close images in, the second pushes far ones out, with no hard
    positive/negative threshold. The paper sums over anchors; `reduction="mean"` (default) averages so the
    scale does not depend on the batch size ("sum" and "none" are available).
    """
    a = _as_vectors(anchor, 1)
    f = _as_vectors(feats, 2)
    if f.shape[0] != a.shape[0] or f.shape[2] != a.shape[1] or geo_dist.shape != f.shape[:2]:
        raise ValueError(
            f"soft_contrastive_loss needs anchor (B,D), feats (B,K,D), geo_dist (B,K); got {tuple(a.shape)}, "
            f"{tuple(f.shape)}, {tuple(geo_dist.shape)}: give one geometric distance per candidate"
        )
    d = _euclidean(f, a.unsqueeze(1))
    s_pos = influence_pos(geo_dist, tau, gamma).to(d) * d
    s_neg = influence_neg(geo_dist, tau, gamma).to(d) * d
    zero = d.new_zeros(d.shape[0], 1)
    # log(1 + sum exp(x)) == logsumexp([0, x...]): stable for large slopes.
    pos = torch.logsumexp(torch.cat([zero, eta * s_pos - mu], 1), 1) / eta
    neg = torch.logsumexp(torch.cat([zero, mu - nu * s_neg], 1), 1) / nu
    return _reduce(pos + neg, reduction)


def geo_local_triplet(
    anchor: Tensor,
    positive: Tensor,
    negatives: Tensor,
    neg_geo_dist: Tensor,
    radius: float,
    alpha: float = 10.0,
    global_weight: float = 0.0,
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """Geographically local soft-margin triplet (Xia et al.):

    l_k = log(1 + exp(alpha (d(a, p) - d(a, n_k)))),
    loss = (1 - w) * mean_{k: geo_k <= radius} l_k + w * mean_k l_k,  w = `global_weight`.

    Negatives are drawn from the spatial prior's neighbourhood (geo_k = distance of negative k from the
    anchor's prior location), because at run time the localizer only has to tell apart places near the
    prior, not across the whole map. A sample with no local negative falls back to all its negatives.
    With `normalize` descriptors are L2-normalised first, the setting alpha = 10 was tuned for.
    """
    a, p = _as_vectors(anchor, 1), _as_vectors(positive, 1)
    n = _as_vectors(negatives, 2)
    if p.shape != a.shape or n.shape[0] != a.shape[0] or n.shape[2] != a.shape[1] or neg_geo_dist.shape != n.shape[:2]:
        raise ValueError(
            f"geo_local_triplet needs anchor/positive (B,D), negatives (B,K,D), neg_geo_dist (B,K); got "
            f"{tuple(a.shape)}, {tuple(p.shape)}, {tuple(n.shape)}, {tuple(neg_geo_dist.shape)}: fix the stacking"
        )
    if not 0.0 <= global_weight <= 1.0:
        raise ValueError(f"global_weight must be in [0, 1], got {global_weight}: it mixes local and global terms")
    if normalize:
        a, p, n = F.normalize(a, dim=-1), F.normalize(p, dim=-1), F.normalize(n, dim=-1)
    d_pos = _euclidean(a, p)
    d_neg = _euclidean(n, a.unsqueeze(1))
    per_neg = F.softplus(alpha * (d_pos.unsqueeze(1) - d_neg))
    local = (neg_geo_dist <= radius).to(per_neg)
    has_local = local.sum(1) > 0
    mask = torch.where(has_local.unsqueeze(1), local, torch.ones_like(local))
    local_term = (per_neg * mask).sum(1) / mask.sum(1)
    loss = (1.0 - global_weight) * local_term + global_weight * per_neg.mean(1)
    return _reduce(loss, reduction)


def _reduce(x: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise ValueError(f"unknown reduction {reduction!r}: use 'mean', 'sum' or 'none'")
