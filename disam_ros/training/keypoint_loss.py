"""The keypoint network's loss on one pair: descriptors that find their true match among every other place of
the other image, and a detector that predicts where they do (SiLK's idea: a keypoint is a matchable pixel).

Descriptor term: for each true pair (p in A, q in B), the descriptor at p must be more similar to B's
descriptor at q than to B's descriptor at every 8x8 cell farther than one cell from q (InfoNCE with dense
negatives, temperature TAU), and the same from B to A. Detector term: binary cross-entropy of the keypoint
logit at p against "p's descriptor beats every negative" (detached), plus logits at pixels with no true match
(sky, hidden, outside the other crop) pushed to 0, so the detector learns to stay off what cannot be matched.
Optional repeatability term (R2D2's, `repeat` > 0): the keypoint probabilities in a PATCH x PATCH window around p
and around q should have the same shape (cosine similarity) and a peak (max minus mean), so the detector fires on
the same pixel in both images, not just somewhere in a matchable area. Frames of a pair are a few metres apart, so
the window is carried across by translation alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from disam_ros.model.keypoint_net import CELL, sample_descriptors

TAU = 0.05
PATCH = 8  # repeatability window (pixels), one descriptor cell


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


def patches(prob: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Probabilities (1,H,W) read bilinearly on a PATCH x PATCH pixel grid centred on each point (N,2: x, y)
    -> (N, PATCH*PATCH); outside the image reads 0."""
    _, h, w = prob.shape
    off = torch.arange(PATCH, dtype=centres.dtype, device=centres.device) - (PATCH - 1) / 2
    oy, ox = torch.meshgrid(off, off, indexing="ij")
    x = centres[:, :1] + ox.reshape(1, -1)
    y = centres[:, 1:] + oy.reshape(1, -1)
    grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], -1)[None]
    return F.grid_sample(prob[None], grid, mode="bilinear", align_corners=True)[0, 0]


def repeatability(logits_a: torch.Tensor, logits_b: torch.Tensor, pts_a: torch.Tensor,
                  pts_b: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity of the two windows + 1 - (max - mean) of each window, averaged over the points."""
    pa, pb = patches(torch.sigmoid(logits_a), pts_a), patches(torch.sigmoid(logits_b), pts_b)
    cos = F.cosine_similarity(pa, pb, dim=1, eps=1e-6)
    peak = 0.5 * ((pa.max(1).values - pa.mean(1)) + (pb.max(1).values - pb.mean(1)))
    return (1 - cos).mean() + (1 - peak).mean()


def pair_loss(logits_a: torch.Tensor, desc_a: torch.Tensor, logits_b: torch.Tensor, desc_b: torch.Tensor,
              pts_a: torch.Tensor, pts_b: torch.Tensor, unmatched_a: torch.Tensor,
              weight: float = 1.0, repeat: float = 0.0) -> tuple[torch.Tensor, dict]:
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
    rep = repeatability(logits_a, logits_b, pts_a, pts_b) if repeat > 0 else torch.zeros(())
    total = desc_loss + weight * det + repeat * rep
    return total, {"desc": float(desc_loss.detach()), "det": float(det.detach()), "rep": float(rep.detach()),
                   "matched": float(0.5 * (ok_ab.float().mean() + ok_ba.float().mean()))}
