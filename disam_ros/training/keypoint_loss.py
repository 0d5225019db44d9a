"""The keypoint network's loss on one pair: descriptors that find their true match among every other place of
the other image, and a detector that predicts where they do (SiLK's idea: a keypoint is a matchable pixel).

Descriptor term: for each true pair (p in A, q in B), the descriptor at p must be more similar to B's
descriptor at q than to B's descriptor at every 8x8 cell farther than one cell from q (InfoNCE with dense
negatives, temperature TAU), and the same from B to A. Detector term: binary cross-entropy of the keypoint
logit at p against "p's descriptor beats every negative" (detached), plus logits at pixels with no true match
(sky, hidden, outside the other crop) pushed to 0, so the detector learns to stay off what cannot be matched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from disam_ros.model.keypoint_net import CELL, sample_descriptors

TAU = 0.05


def cell_centres(h: int, w: int) -> torch.Tensor:
    """(h*w, 2) pixel centres (x, y) of the descriptor cells, row-major."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xs.ravel(), ys.ravel()], 1).float() * CELL + (CELL - 1) / 2


def one_way(d_src: torch.Tensor, desc_dst: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE of source descriptors (N,D) against their true destination pixels q (N,2) in a dense map
    (D,h,w): the positive is read at q, negatives are the cells farther than one cell from q. Returns the loss
    per point and whether the positive beat every negative."""
    _, h, w = desc_dst.shape
    pos = (d_src * sample_descriptors(desc_dst, q)).sum(1, keepdim=True)
    neg = d_src @ desc_dst.reshape(desc_dst.shape[0], -1)
    near = torch.cdist(q, cell_centres(h, w).to(q.device)) <= CELL * 1.5
    neg = neg.masked_fill(near, float("-inf"))
    logits = torch.cat([pos, neg], 1) / TAU
    loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device), reduction="none")
    return loss, (pos[:, 0] > neg.max(1).values).detach()


def logits_at(logits: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Keypoint logits (1,H,W) at integer-valued pixels pts (N,2: x, y)."""
    x, y = pts[:, 0].round().long(), pts[:, 1].round().long()
    return logits[0, y, x]


def pair_loss(logits_a: torch.Tensor, desc_a: torch.Tensor, logits_b: torch.Tensor, desc_b: torch.Tensor,
              pts_a: torch.Tensor, pts_b: torch.Tensor, unmatched_a: torch.Tensor,
              weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Loss of one pair (logits (1,H,W), descriptors (D,h,w) of each image) and its statistics."""
    da, db = sample_descriptors(desc_a, pts_a), sample_descriptors(desc_b, pts_b)
    loss_ab, ok_ab = one_way(da, desc_b, pts_b)
    loss_ba, ok_ba = one_way(db, desc_a, pts_a)
    desc_loss = 0.5 * (loss_ab.mean() + loss_ba.mean())
    la, lb = logits_at(logits_a, pts_a), logits_at(logits_b, pts_b)
    det = F.binary_cross_entropy_with_logits(la, ok_ab.float()) + \
        F.binary_cross_entropy_with_logits(lb, ok_ba.float())
    if len(unmatched_a):
        lu = logits_at(logits_a, unmatched_a)
        det = det + F.binary_cross_entropy_with_logits(lu, torch.zeros_like(lu))
    total = desc_loss + weight * det
    return total, {"desc": float(desc_loss.detach()), "det": float(det.detach()),
                   "matched": float(0.5 * (ok_ab.float().mean() + ok_ba.float().mean()))}
