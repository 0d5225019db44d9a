"""The trained depth branch as a unit that travels inside a model checkpoint and rides on its `Encoder`.

Why in the checkpoint's `extra` and not as a fourth DisamNet part: the branch is optional, small (a decoder of
~60 k weights) and belongs to one set of encoders (it decodes *their* content code), so the file that holds
the encoders must hold it too; a map records the checkpoint's sha256 and so records the branch with it.
`extra["depth_branch"]` is plain values and tensors, so `torch.load(weights_only=True)` still reads it.

At query time the branch turns a content code into a depth descriptor (disam_ros.model.depth) and appends it
to the appearance vector: <fuse(a1, z1), fuse(a2, z2)> = w <a1, a2> + (1 - w) cos(d1, d2) exactly, with the
appearance vectors used as given (eq. 16 vectors are not re-normalised, so w = 1 reproduces appearance-only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .depth import DEPTH_LOSSES, DepthDecoder, depth_descriptor, fuse_descriptors

EXTRA_KEY = "depth_branch"
BRANCH_VERSION = 1


class DepthBranchError(ValueError):
    """A depth branch record that cannot be used; one line naming the problem and the fix."""


@dataclass
class DepthBranch:
    """A depth decoder on the content code, the descriptor grid, and the fusion weight w of appearance.

    `fusion_weight` 1.0 means the branch exists but retrieval ignores it (validation found no gain), so maps
    built with it hold plain appearance vectors (`active` False).
    """

    decoder: DepthDecoder
    grid: int = 8
    fusion_weight: float = 1.0
    loss: str = "silog"

    def __post_init__(self) -> None:
        if not (isinstance(self.grid, int) and self.grid >= 1):
            raise DepthBranchError(f"depth descriptor grid {self.grid!r} must be a positive integer (e.g. 8)")
        w = self.fusion_weight
        if not (isinstance(w, int | float) and math.isfinite(w) and 0.0 <= w <= 1.0):
            raise DepthBranchError(f"fusion weight {w!r} must lie in [0, 1] (1 = appearance only)")
        if self.loss not in DEPTH_LOSSES:
            raise DepthBranchError(f"depth loss {self.loss!r} is not one of {list(DEPTH_LOSSES)}")
        self.fusion_weight = float(w)

    @property
    def active(self) -> bool:
        """True when maps built with this branch hold fused vectors (some weight on depth)."""
        return self.fusion_weight < 1.0

    @property
    def dim(self) -> int:
        """Length of the depth descriptor appended to each appearance vector."""
        return self.grid * self.grid

    def depth(self, z: Tensor) -> Tensor:
        """Hallucinated depth (B, 1, H, W) in metres from content codes (B, C, h, w), float32, no gradient."""
        dec = self.decoder
        param = next(dec.parameters())
        with torch.inference_mode():
            return dec(z.to(param.device, torch.float32))

    def describe(self, z: Tensor) -> Tensor:
        """(B, grid*grid) unit depth descriptors of content codes."""
        return depth_descriptor(self.depth(z), self.grid)

    def fuse(self, appearance: Tensor, z: Tensor) -> Tensor:
        """Fused vectors [sqrt(w) a, sqrt(1-w) d] for appearance vectors a (B, D) and their codes z."""
        d = self.describe(z).to(appearance.device)
        return fuse_descriptors(appearance.float(), d, self.fusion_weight, unit_appearance=False)

    def record(self) -> dict[str, Any]:
        """What a map built with this branch records about it (compared again when the map is loaded)."""
        return {"fusion_weight": self.fusion_weight, "grid": self.grid, "dim": self.dim,
                "max_depth_m": self.decoder.max_depth_m}

    def to_extra(self) -> dict[str, Any]:
        """Checkpoint-extra form (plain values + float32 tensors on the CPU)."""
        dec = self.decoder
        return {"version": BRANCH_VERSION, "in_channels": dec.in_channels, "n_up": dec.n_up, "width": dec.width,
                "max_depth_m": dec.max_depth_m, "grid": self.grid, "fusion_weight": self.fusion_weight,
                "loss": self.loss,
                "state_dict": {k: v.detach().float().cpu().clone() for k, v in dec.state_dict().items()}}

    @classmethod
    def from_extra(cls, extra: dict[str, Any], device: str | torch.device = "cpu",
                   where: str = "checkpoint") -> DepthBranch | None:
        """The branch stored in a checkpoint's extras, or None when it has none; DepthBranchError if damaged."""
        rec = extra.get(EXTRA_KEY) if isinstance(extra, dict) else None
        if rec is None:
            return None
        fix = "re-train the depth branch (disam-train --recipe depth_demo) or re-export the model"
        if not isinstance(rec, dict) or rec.get("version") != BRANCH_VERSION:
            version = rec.get("version") if isinstance(rec, dict) else type(rec).__name__
            raise DepthBranchError(f"{where}: depth branch record has version {version!r}, this disam_ros reads "
                                   f"{BRANCH_VERSION}: {fix}")
        try:
            dec = DepthDecoder(int(rec["in_channels"]), int(rec["n_up"]), int(rec["width"]), float(rec["max_depth_m"]))
            dec.load_state_dict(rec["state_dict"], strict=True)
            branch = cls(dec.to(device).eval(), int(rec["grid"]), float(rec["fusion_weight"]), str(rec["loss"]))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or ["no details"])[0][:160]
            raise DepthBranchError(f"{where}: depth branch record is damaged ({type(exc).__name__}: {first}): "
                                   f"{fix}") from None
        branch.decoder.requires_grad_(False)
        return branch


def fused_dim(branch: DepthBranch | None) -> int:
    """Extra vector length a map stores per image for this branch (0 without an active branch)."""
    return branch.dim if branch is not None and branch.active else 0
