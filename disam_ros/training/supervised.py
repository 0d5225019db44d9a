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

from .config import SupervisedSection


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


class SupervisedLoss:
    """Callable computing the configured supervised term from a batch's `sup_*` tensors."""

    def __init__(self, cfg: SupervisedSection) -> None:
        if cfg.kind not in ("soft_contrastive", "geo_local"):
            raise ValueError(f"supervised.kind {cfg.kind!r} has no loss: use soft_contrastive or geo_local")
        self.cfg = cfg

    def __call__(self, net: DisamNet, x_i: Tensor, dom_i: str, dom_j: str, sup: dict[str, Tensor]) -> Tensor:
        anchor = net.encode(x_i, dom_i)
        b, k = sup["sup_cand"].shape[:2]
        both = torch.cat([sup["sup_pos"].unsqueeze(1), sup["sup_cand"]], 1)
        codes = net.encode(both.flatten(0, 1), dom_j).unflatten(0, (b, k + 1))
        return supervised_term(self.cfg, anchor, codes[:, 0], codes[:, 1:], sup["sup_pos_dist"], sup["sup_cand_dist"])
