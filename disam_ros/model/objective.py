"""Training objectives of DISAM: the generator terms of eqs. 24/25 and the discriminator step of eq. 2.

One call computes both translation directions i->j and j->i of an unpaired pair of batches.
Terms whose weight is zero are not computed (they appear as 0 in the result), so the cheap coarse
recipe does not pay for Grad-SAM.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from .gradsam import gradsam_map, gradsam_weights
from .losses import (
    adaptive_triplet,
    cycle_loss,
    fcl_loss,
    feature_distance,
    lsgan_d_loss,
    lsgan_g_loss,
    select_hard_negative,
)
from .networks import DisamNet

LOSS_KEYS = ("gan_g", "cycle", "fcl", "sam", "triplet_fcl", "triplet_sam")
RAMPED_KEYS = ("fcl", "triplet_fcl", "sam", "triplet_sam")
LOSS_WEIGHT_FIELDS = ("gan", "cyc", "fcl", "triplet_fcl", "sam", "triplet_sam")


@dataclass(frozen=True)
class LossWeights:
    """Loss weights (lambdas of eqs. 24/25) and adaptive-margin parameters (Sec. V-A).

    `stop_grad_targets` follows the reference: the real image's code z_i (FCL, triplet positive), the
    negative codes, and the translated map L_{i->j} (SAM) are treated as constants, so gradients reach
    the networks through z_{i->j} = E_j(D_j(E_i(x_i))) and, for SAM, through L_i.
    """

    gan: float = 1.0
    cyc: float = 10.0
    fcl: float = 0.0
    triplet_fcl: float = 0.0
    sam: float = 0.0
    triplet_sam: float = 0.0
    m_f: float = 5.0
    alpha_f: float = 2.0
    m_s: float = 0.1
    alpha_s: float = 1000.0
    fcl_cosine: bool = False
    stop_grad_targets: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float | int) and not isinstance(v, bool) and (not math.isfinite(v) or v < 0):
                raise ValueError(f"loss weight {f.name}={v} must be finite and >= 0: fix the training recipe")

    @classmethod
    def translation(cls) -> LossWeights:
        """Pure ComboGAN translation, eq. 3: GAN + cycle (the pre-training stage)."""
        return cls(gan=1.0, cyc=10.0)

    @classmethod
    def coarse(cls) -> LossWeights:
        """Coarse-retrieval model, eq. 24 (maximum weights of Sec. V-A)."""
        return cls(gan=1.0, cyc=10.0, fcl=0.1, triplet_fcl=1.0)

    @classmethod
    def fine(cls) -> LossWeights:
        """Fine-retrieval model, eq. 25: adds SAM and triplet-SAM; FCL uses L2 + cosine."""
        return cls(gan=1.0, cyc=10.0, fcl=0.1, sam=1000.0, triplet_sam=1.0, triplet_fcl=1.0, fcl_cosine=True)

    def ramped(self, fraction: float, keys: tuple[str, ...] = RAMPED_KEYS) -> LossWeights:
        """Weights of `keys` scaled by `fraction` in [0, 1]: the linear warm-up from 0 of Sec. V-A.

        The reference ramps the representation terms only (translation is pre-trained), hence the default.
        """
        unknown = sorted(set(keys) - set(LOSS_WEIGHT_FIELDS))
        if unknown:
            raise ValueError(f"cannot ramp {unknown}: rampable weights are {list(LOSS_WEIGHT_FIELDS)}")
        frac = min(max(float(fraction), 0.0), 1.0)
        return replace(self, **{k: getattr(self, k) * frac for k in keys})


def _sg(x: Tensor, on: bool) -> Tensor:
    return x.detach() if on else x


@dataclass
class _Branch:
    """Tensors of one translation direction src -> dst (eqs. 4-7)."""

    z: Tensor  # E_src(x_src)
    fake: Tensor  # x_{src->dst} = D_dst(z)
    z_trans: Tensor  # E_dst(x_{src->dst})
    rec: Tensor | None  # D_src(z_trans), only when the cycle term is used


def _branch(net: DisamNet, z: Tensor, src: str, dst: str, with_rec: bool) -> _Branch:
    fake = net.decode(z, dst)
    z_trans = net.encode(fake, dst)
    return _Branch(z=z, fake=fake, z_trans=z_trans, rec=net.decode(z_trans, src) if with_rec else None)


def _negative_codes(net: DisamNet, x_dst: Tensor, dst: str, candidates: Tensor | None, constant: bool) -> Tensor:
    """(B, K, C, h, w) codes of other places in domain dst; built without a graph when `constant`.

    Without candidates: K=1, the encoding of the horizontally flipped real image of dst (Sec. IV-B): a
    flipped view never shows the same place, so no cross-condition pairing is needed.
    """
    if candidates is not None and (
        candidates.dim() != 5 or candidates.shape[0] != x_dst.shape[0] or candidates.shape[2:] != x_dst.shape[1:]
    ):
        raise ValueError(
            f"negative candidates must be (B,K,C,H,W) matching images {tuple(x_dst.shape)}, got "
            f"{tuple(candidates.shape)}: stack K negatives per sample on dim 1"
        )
    with torch.set_grad_enabled(torch.is_grad_enabled() and not constant):
        if candidates is None:
            return net.encode(torch.flip(x_dst, dims=[-1]), dst).unsqueeze(1)
        b, k = candidates.shape[:2]
        return net.encode(candidates.flatten(0, 1), dst).unflatten(0, (b, k))


def _sam_pair_distance(z_a: Tensor, z_b: Tensor) -> Tensor:
    """Per-sample MSE between the maps of a negative pair, L_{a|b} vs L_{b|a} (eq. 21 distance)."""
    return feature_distance(gradsam_map(z_a, gradsam_weights(z_a, z_b)), gradsam_map(z_b, gradsam_weights(z_b, z_a)))


def _branch_losses(net: DisamNet, br: _Branch, x: Tensor, negs: Tensor | None, dst: str, w: LossWeights) -> dict:
    """Weighted-term inputs for one direction; each value is a scalar (batch mean)."""
    zero = br.z.new_zeros(())
    out = dict.fromkeys(LOSS_KEYS, zero)
    sg = w.stop_grad_targets
    z_t = _sg(br.z, sg)
    if w.gan:
        out["gan_g"] = lsgan_g_loss(net.discriminate(br.fake, dst))
    if w.cyc:
        out["cycle"] = cycle_loss(br.rec, x)
    if w.fcl:
        out["fcl"] = fcl_loss(br.z_trans, z_t, cosine=w.fcl_cosine)
    if w.triplet_fcl:
        d_pos = feature_distance(br.z_trans, z_t)
        neg = select_hard_negative(br.z_trans, _sg(negs, sg))
        d_neg = feature_distance(br.z_trans, neg)
        out["triplet_fcl"] = adaptive_triplet(d_pos, d_neg, w.m_f, w.alpha_f).mean()
    if w.sam or w.triplet_sam:
        L_i = gradsam_map(br.z, gradsam_weights(br.z, br.z_trans))
        L_ij = gradsam_map(br.z_trans, gradsam_weights(br.z_trans, br.z))
        d_pos_sam = feature_distance(L_i, _sg(L_ij, sg))
        out["sam"] = d_pos_sam.mean()
        if w.triplet_sam:
            d_neg_sam = _hard_sam_negative(br.z_trans, _sg(negs, sg))
            out["triplet_sam"] = adaptive_triplet(d_pos_sam, d_neg_sam, w.m_s, w.alpha_s).mean()
    return out


def _hard_sam_negative(z_trans: Tensor, negs: Tensor) -> Tensor:
    """Eq. 21: SAM distance to the closest of K negatives -> (B,). Maps depend on the pair, so all K are mapped."""
    b, k = negs.shape[:2]
    anchor = z_trans.unsqueeze(1).expand_as(negs).flatten(0, 1)
    d = _sam_pair_distance(negs.flatten(0, 1), anchor).view(b, k)
    idx = d.detach().argmin(1)
    return d[torch.arange(b, device=d.device), idx]


def generator_step_losses(
    net: DisamNet,
    x_i: Tensor,
    x_j: Tensor,
    dom_i: str | int,
    dom_j: str | int,
    weights: LossWeights,
    neg_j: Tensor | None = None,
    *,
    neg_i: Tensor | None = None,
    return_fakes: bool = False,
) -> dict[str, Tensor]:
    """Unweighted terms of eq. 24/25 summed over both directions, plus their weighted "total".

    x_i, x_j: unpaired (B,3,S,S) batches of domains i and j. Negatives for direction i->j are the flipped
    x_j, or the hard negative (eq. 20/21) among K candidate images `neg_j` (B,K,3,S,S) of domain j; `neg_i`
    does the same for j->i. With `return_fakes`, "fake_i" (= x_{j->i}) and "fake_j" (= x_{i->j}), detached,
    are added for the discriminator step (None when every weight is 0: then nothing is computed at all).
    The discriminators receive gradients from "gan_g": step only the generator optimiser on it.
    """
    cfg = net.config
    di, dj = cfg.domain_name(dom_i), cfg.domain_name(dom_j)
    if di == dj:
        raise ValueError(f"dom_i and dom_j are both {di!r}: DISAM trains on pairs of different conditions")
    need_negs = bool(weights.triplet_fcl or weights.triplet_sam)
    if not any(getattr(weights, k) for k in LOSS_WEIGHT_FIELDS):
        # every unpaired term is off (a purely supervised recipe, or all weights still ramping from 0):
        # nothing to translate, so no network runs; the total is a constant 0 (no graph) and there are no fakes
        zero = x_i.new_zeros(())
        out = dict.fromkeys((*LOSS_KEYS, "total"), zero)
        if return_fakes:
            out["fake_i"] = out["fake_j"] = None
        return out
    z_i, z_j = net.encode(x_i, di), net.encode(x_j, dj)
    with_rec = bool(weights.cyc)
    br_ij, br_ji = _branch(net, z_i, di, dj, with_rec), _branch(net, z_j, dj, di, with_rec)
    sg = weights.stop_grad_targets
    negs_j = _negative_codes(net, x_j, dj, neg_j, sg) if need_negs else None
    negs_i = _negative_codes(net, x_i, di, neg_i, sg) if need_negs else None
    a = _branch_losses(net, br_ij, x_i, negs_j, dj, weights)
    b = _branch_losses(net, br_ji, x_j, negs_i, di, weights)
    out = {k: a[k] + b[k] for k in LOSS_KEYS}
    lambdas = {"gan_g": weights.gan, "cycle": weights.cyc, "fcl": weights.fcl, "sam": weights.sam,
               "triplet_fcl": weights.triplet_fcl, "triplet_sam": weights.triplet_sam}
    out["total"] = sum(lambdas[k] * out[k] for k in LOSS_KEYS)
    if return_fakes:
        out["fake_i"], out["fake_j"] = br_ji.fake.detach(), br_ij.fake.detach()
    return out


def discriminator_step_loss(
    net: DisamNet, real_i: Tensor, real_j: Tensor, fake_i: Tensor, fake_j: Tensor, dom_i: str | int, dom_j: str | int
) -> Tensor:
    """Eq. 2 for both discriminators: D_i judges real_i vs fake_i (= x_{j->i}), D_j real_j vs fake_j.

    Fakes are detached here so the generator is never updated by this loss.
    """
    di, dj = net.config.domain_name(dom_i), net.config.domain_name(dom_j)
    loss_i = lsgan_d_loss(net.discriminate(real_i, di), net.discriminate(fake_i.detach(), di))
    loss_j = lsgan_d_loss(net.discriminate(real_j, dj), net.discriminate(fake_j.detach(), dj))
    return loss_i + loss_j
