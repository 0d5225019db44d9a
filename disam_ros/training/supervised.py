"""Pose-supervised fine-tuning terms on the RETRIEVAL DESCRIPTORS (when the training images have places).

The anchor is E_i(x_i); its positive (nearest place) and candidates are images of the partner domain j
encoded by E_j, so the term pulls one place's descriptors together *across* conditions, which is what the
retrieval needs. The losses see the vectors the map stores (`supervised.descriptor`: the eq. 16 coarse vector
or the flattened fine vector), not a spatial average of the code: a pooled vector can agree while the
per-channel spatial maps that eq. 16 compares do not, so training it moves the wrong quantity.
Seed 003 (soft contrastive, geometric influence functions) weighs every candidate by its geometric distance;
seed 004 (geographically local triplet) pushes away only negatives near the anchor's prior location.
"""
from __future__ import annotations

import torch
from torch import Tensor

from disam_ros.model import DisamNet
from disam_ros.model.related_losses import geo_local_triplet, retrieval_descriptor, soft_contrastive_loss

from .recipe import SupervisedSection


def supervised_term(cfg: SupervisedSection, anchor: Tensor, positive: Tensor, candidates: Tensor,
                    pos_dist: Tensor, cand_dist: Tensor) -> Tensor:
    """The configured loss on content codes: anchor (B,C,h,w), positive (B,C,h,w), candidates (B,K,C,h,w),
    geometric distances pos_dist (B,) and cand_dist (B,K) of positive and candidates from the anchor's place.

    Pure function of its inputs (no network): codes -> retrieval descriptors -> seed 003 or seed 004 loss.
    """
    b, k = candidates.shape[:2]
    a = retrieval_descriptor(anchor, cfg.descriptor)
    p = retrieval_descriptor(positive, cfg.descriptor)
    n = retrieval_descriptor(candidates.flatten(0, 1), cfg.descriptor).unflatten(0, (b, k))
    if cfg.kind == "soft_contrastive":
        feats, dist = torch.cat([p.unsqueeze(1), n], 1), torch.cat([pos_dist.unsqueeze(1), cand_dist], 1)
        return soft_contrastive_loss(a, feats, dist, tau=cfg.tau, gamma=cfg.gamma, eta=cfg.eta, nu=cfg.nu, mu=cfg.mu)
    if cfg.kind == "geo_local":
        return geo_local_triplet(a, p, n, cand_dist, radius=cfg.prior_radius, alpha=cfg.alpha,
                                 global_weight=cfg.global_weight)
    raise ValueError(f"supervised.kind {cfg.kind!r} has no loss: use soft_contrastive or geo_local")


def in_batch_term(cfg: SupervisedSection, codes_i: Tensor, codes_j: Tensor, xy_i: Tensor, xy_j: Tensor) -> Tensor:
    """Soft contrastive loss with the batch as the candidate set: codes_i (N,C,h,w) of condition i at places
    xy_i (N,P), codes_j (N,C,h,w) of condition j at places xy_j (N,P).

    Every descriptor of i is an anchor against all N descriptors of j (their geometric distances decide who is
    positive), and the reverse; the two directions are averaged. Pure function, like `supervised_term`.
    """
    a = retrieval_descriptor(codes_i, cfg.descriptor)
    b = retrieval_descriptor(codes_j, cfg.descriptor)
    geo = torch.cdist(xy_i.double(), xy_j.double()).to(a)
    n = a.shape[0]
    kw = {"tau": cfg.tau, "gamma": cfg.gamma, "eta": cfg.eta, "nu": cfg.nu, "mu": cfg.mu}
    i_to_j = soft_contrastive_loss(a, b.unsqueeze(0).expand(n, -1, -1), geo, **kw)
    j_to_i = soft_contrastive_loss(b, a.unsqueeze(0).expand(n, -1, -1), geo.T, **kw)
    return 0.5 * (i_to_j + j_to_i)


class SupervisedLoss:
    """Callable computing the configured supervised term from a batch's `sup_*` tensors."""

    def __init__(self, cfg: SupervisedSection) -> None:
        if cfg.kind not in ("soft_contrastive", "geo_local"):
            raise ValueError(f"supervised.kind {cfg.kind!r} has no loss: use soft_contrastive or geo_local")
        self.cfg = cfg

    def __call__(self, net: DisamNet, x_i: Tensor, dom_i: str, dom_j: str, sup: dict[str, Tensor]) -> Tensor:
        if "sup_hard_j" in sup:  # in-batch: places [anchors, hard places], each seen in both conditions
            codes_i = net.encode(torch.cat([x_i, sup["sup_hard_i"]]), dom_i)
            codes_j = net.encode(torch.cat([sup["sup_pos"], sup["sup_hard_j"]]), dom_j)
            xy = sup["sup_xy"]  # (B, 4, P): anchor, positive, hard place in i, hard place in j
            return in_batch_term(self.cfg, codes_i, codes_j, torch.cat([xy[:, 0], xy[:, 2]]),
                                 torch.cat([xy[:, 1], xy[:, 3]]))
        anchor = net.encode(x_i, dom_i)
        b, k = sup["sup_cand"].shape[:2]
        both = torch.cat([sup["sup_pos"].unsqueeze(1), sup["sup_cand"]], 1)
        codes = net.encode(both.flatten(0, 1), dom_j).unflatten(0, (b, k + 1))
        return supervised_term(self.cfg, anchor, codes[:, 0], codes[:, 1:], sup["sup_pos_dist"], sup["sup_cand_dist"])
