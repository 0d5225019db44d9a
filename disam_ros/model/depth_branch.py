"""The trained depth branch as a unit that travels inside a model checkpoint and rides on its `Encoder`.

Why in the checkpoint's `extra` and not as a fourth DisamNet part: the branch is optional, small (a decoder of
~60 k weights) and belongs to one set of encoders (it decodes *their* content code), so the file that holds
the encoders must hold it too; a map records the checkpoint's sha256 and so records the branch with it.
`extra["depth_branch"]` is plain values and tensors, so `torch.load(weights_only=True)` still reads it.

At query time the branch turns a content code into a depth descriptor (disam_ros.model.depth) and appends it
to the appearance vector: <fuse(a1, z1), fuse(a2, z2)> = w <a1, a2> + (1 - w) cos(d1, d2) exactly, with the
appearance vectors used as given (eq. 16 vectors are not re-normalised, so w = 1 reproduces appearance-only).

Record versions: 1 = one fusion weight for every image; 2 adds `domain_weights` {query condition: w_q}, chosen
on validation, with which a *query* of that condition scales its two parts (depth.fuse_query) so that it scores
w_q <a, a'> + (1 - w_q) cos(d, d') against the map's vectors of weight w. The map's vectors depend on w alone,
so maps record the same fields for both versions. Version 2 may also carry `domains`: the decoder is
conditioned on the condition (depth.DepthDecoder FiLM), so every call names the condition the code came from. A
branch with neither still writes version 1, so files that do not use them stay readable by older code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .depth import DEPTH_LOSSES, DepthDecoder, depth_descriptor, fuse_descriptors, fuse_query

EXTRA_KEY = "depth_branch"
BRANCH_VERSION = 2  # written when the branch has per-domain query weights, else 1
READS = (1, 2)


class DepthBranchError(ValueError):
    """A depth branch record that cannot be used; one line naming the problem and the fix."""


@dataclass
class DepthBranch:
    """A depth decoder on the content code, the descriptor grid, and the fusion weight w of appearance.

    `fusion_weight` 1.0 means the branch exists but retrieval ignores it (validation found no gain), so maps
    built with it hold plain appearance vectors (`active` False). `domain_weights` (query condition -> w_q)
    override w for queries of those conditions; they need 0 < w < 1, since the map stores the parts with w.
    """

    decoder: DepthDecoder
    grid: int = 8
    fusion_weight: float = 1.0
    loss: str = "silog"
    domain_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (isinstance(self.grid, int) and self.grid >= 1):
            raise DepthBranchError(f"depth descriptor grid {self.grid!r} must be a positive integer (e.g. 8)")
        w = self.fusion_weight
        if not (isinstance(w, int | float) and math.isfinite(w) and 0.0 <= w <= 1.0):
            raise DepthBranchError(f"fusion weight {w!r} must lie in [0, 1] (1 = appearance only)")
        if self.loss not in DEPTH_LOSSES:
            raise DepthBranchError(f"depth loss {self.loss!r} is not one of {list(DEPTH_LOSSES)}")
        self.fusion_weight = float(w)
        self.domain_weights = _check_domain_weights(self.domain_weights, self.fusion_weight)

    @property
    def active(self) -> bool:
        """True when maps built with this branch hold fused vectors (some weight on depth)."""
        return self.fusion_weight < 1.0

    @property
    def dim(self) -> int:
        """Length of the depth descriptor appended to each appearance vector."""
        return self.grid * self.grid

    def depth(self, z: Tensor, domain: str | None = None) -> Tensor:
        """Hallucinated depth (B, 1, H, W) in metres from content codes (B, C, h, w) encoded under `domain`
        (needed by a conditioned decoder only), float32, no gradient."""
        dec = self.decoder
        param = next(dec.parameters())
        with torch.inference_mode():
            return dec(z.to(param.device, torch.float32), dec.domain_index(domain, len(z), param.device))

    def describe(self, z: Tensor, domain: str | None = None) -> Tensor:
        """(B, grid*grid) unit depth descriptors of content codes."""
        return depth_descriptor(self.depth(z, domain), self.grid)

    def fuse(self, appearance: Tensor, z: Tensor, domain: str | None = None) -> Tensor:
        """Fused vectors [sqrt(w) a, sqrt(1-w) d] for appearance vectors a (B, D) and their codes z."""
        d = self.describe(z, domain).to(appearance.device)
        return fuse_descriptors(appearance.float(), d, self.fusion_weight, unit_appearance=False)

    def query_weight(self, domain: str | None) -> float:
        """The appearance weight a query of `domain` is scored with (the map's w for unlisted or None)."""
        return self.domain_weights.get(domain, self.fusion_weight) if domain is not None else self.fusion_weight

    def fuse_query(self, appearance: Tensor, z: Tensor, domain: str | None = None) -> Tensor:
        """Query vectors of codes z encoded under `domain`: scored against map vectors (fuse) with the domain's
        weight; exactly `fuse` when that weight is the map's."""
        wq = self.query_weight(domain)
        if wq == self.fusion_weight:
            return self.fuse(appearance, z, domain)
        d = self.describe(z, domain).to(appearance.device)
        return fuse_query(appearance.float(), d, self.fusion_weight, wq)

    def record(self) -> dict[str, Any]:
        """What a map built with this branch records about it (compared again when the map is loaded)."""
        return {"fusion_weight": self.fusion_weight, "grid": self.grid, "dim": self.dim,
                "max_depth_m": self.decoder.max_depth_m}

    def to_extra(self) -> dict[str, Any]:
        """Checkpoint-extra form (plain values + float32 tensors on the CPU)."""
        dec = self.decoder
        out = {"version": 2 if self.domain_weights or dec.domains else 1, "in_channels": dec.in_channels,
               "n_up": dec.n_up, "width": dec.width, "max_depth_m": dec.max_depth_m, "grid": self.grid,
               "fusion_weight": self.fusion_weight, "loss": self.loss,
               "state_dict": {k: v.detach().float().cpu().clone() for k, v in dec.state_dict().items()}}
        return (out | ({"domain_weights": dict(self.domain_weights)} if self.domain_weights else {})
                | ({"domains": list(dec.domains)} if dec.domains else {}))

    @classmethod
    def from_extra(cls, extra: dict[str, Any], device: str | torch.device = "cpu",
                   where: str = "checkpoint") -> DepthBranch | None:
        """The branch stored in a checkpoint's extras, or None when it has none; DepthBranchError if damaged."""
        rec = extra.get(EXTRA_KEY) if isinstance(extra, dict) else None
        if rec is None:
            return None
        fix = "re-train the depth branch (disam-train --recipe depth_demo) or re-export the model"
        if not isinstance(rec, dict) or rec.get("version") not in READS:
            version = rec.get("version") if isinstance(rec, dict) else type(rec).__name__
            raise DepthBranchError(f"{where}: depth branch record has version {version!r}, this disam_ros reads "
                                   f"{list(READS)}: {fix}")
        try:
            v2 = rec["version"] >= 2
            dw, doms = (rec.get("domain_weights", {}), rec.get("domains", [])) if v2 else ({}, [])
            if v2 and not (dw or doms):
                raise ValueError("a version-2 record must hold domain_weights or domains")
            dec = DepthDecoder(int(rec["in_channels"]), int(rec["n_up"]), int(rec["width"]), float(rec["max_depth_m"]),
                               tuple(doms))
            dec.load_state_dict(rec["state_dict"], strict=True)
            branch = cls(dec.to(device).eval(), int(rec["grid"]), float(rec["fusion_weight"]), str(rec["loss"]),
                         {str(k): float(v) for k, v in dw.items()})
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or ["no details"])[0][:160]
            raise DepthBranchError(f"{where}: depth branch record is damaged ({type(exc).__name__}: {first}): "
                                   f"{fix}") from None
        branch.decoder.requires_grad_(False)
        return branch


def _check_domain_weights(weights: object, w: float) -> dict[str, float]:
    """{condition: weight in [0, 1]}; empty unless 0 < w < 1 (the query can only re-weight parts the map holds)."""
    if not isinstance(weights, dict):
        raise DepthBranchError(f"domain weights {weights!r} must be a mapping condition -> weight")
    out = {}
    for k, v in weights.items():
        if not (isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                and 0.0 <= v <= 1.0):
            raise DepthBranchError(f"domain weight {k!r}: {v!r} must be a condition name and a weight in [0, 1]")
        out[k] = float(v)
    if out and not 0.0 < w < 1.0:
        raise DepthBranchError(f"per-domain query weights need a map fusion weight in (0, 1), not {w:g}: the map "
                               "would store one part as zero")
    return out


def fused_dim(branch: DepthBranch | None) -> int:
    """Extra vector length a map stores per image for this branch (0 without an active branch)."""
    return branch.dim if branch is not None and branch.active else 0
