"""Pose-supervised fine-tuning terms on DISAM content codes (when the training images have places).

The anchor is E_i(x_i); its positive (nearest place) and candidates are images of the partner domain j
encoded by E_j, so the term pulls codes of one place together *across* conditions, which is what the
retrieval needs. Seed 003 (soft contrastive, geometric influence functions) weighs every candidate by its
geometric distance; seed 004 (geographically local triplet) pushes away only negatives near the anchor's
prior location.
"""
from __future__ import annotations

import torch
from torch import Tensor

from disam_ros.model import DisamNet
from disam_ros.model.related_losses import geo_local_triplet, soft_contrastive_loss

from .config import SupervisedSection


class SupervisedLoss:
    """Callable computing the configured supervised term from a batch's `sup_*` tensors."""

    def __init__(self, cfg: SupervisedSection) -> None:
        if cfg.kind not in ("soft_contrastive", "geo_local"):
            raise ValueError(f"supervised.kind {cfg.kind!r} has no loss: use soft_contrastive or geo_local")
        self.cfg = cfg

    def __call__(self, net: DisamNet, x_i: Tensor, dom_i: str, dom_j: str, sup: dict[str, Tensor]) -> Tensor:
        c = self.cfg
        anchor = net.encode(x_i, dom_i)
        b, k = sup["sup_cand"].shape[:2]
        both = torch.cat([sup["sup_pos"].unsqueeze(1), sup["sup_cand"]], 1)
        codes = net.encode(both.flatten(0, 1), dom_j).unflatten(0, (b, k + 1))
        if c.kind == "soft_contrastive":
            dist = torch.cat([sup["sup_pos_dist"].unsqueeze(1), sup["sup_cand_dist"]], 1)
            return soft_contrastive_loss(anchor, codes, dist, tau=c.tau, gamma=c.gamma, eta=c.eta, nu=c.nu, mu=c.mu)
        return geo_local_triplet(anchor, codes[:, 0], codes[:, 1:], sup["sup_cand_dist"], radius=c.prior_radius,
                                 alpha=c.alpha, global_weight=c.global_weight)
