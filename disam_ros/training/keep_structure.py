"""Keep what tells places apart: hold each condition's within-batch descriptor similarities to the run's start.

Why (docs/training.md, "Ablation on Nordland"): at small scale every unpaired DISAM objective (GAN, cycle, FCL,
triplet-FCL) is met within ~100 steps by codes that no longer separate places, while the untrained shared start
separates them well. The paper's losses only ask that a place look the same across conditions; nothing asks that
different places stay different. This term asks exactly that, without labels: for the batch of one condition,
the eq. 16 similarity of every pair of images under the current encoder should stay what it was under the
frozen start encoder (relational distillation). Alignment across conditions stays free; the ordering of places
within a condition, which is what retrieval reads, is anchored.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from disam_ros.model import DisamNet
from disam_ros.model.related_losses import retrieval_descriptor


def similarity_drift(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared change of the pairwise similarities (dot products) of B descriptors (B, D), off-diagonal
    only (a unit descriptor's self-similarity is 1 either way). 0 for a batch of one."""
    b = student.shape[0]
    if teacher.shape != student.shape:
        raise ValueError(f"similarity_drift needs student and teacher of one shape, got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}")
    if b < 2:
        return student.new_zeros(())
    off = ~torch.eye(b, dtype=torch.bool, device=student.device)
    diff = (student @ student.T - teacher @ teacher.T)[off]
    return diff.pow(2).mean()


class StructureKeeper:
    """A frozen copy of every condition's encoder at the run's start, and the term against it.

    The copy is held outside the trained modules (no gradients, not in DDP's parameters) and travels with the
    training state (`state_dict`), so a resumed run anchors to the same start.
    """

    def __init__(self, net: DisamNet, descriptor: str = "coarse") -> None:
        self.descriptor = descriptor
        self.teacher = nn.ModuleDict({d: copy.deepcopy(e) for d, e in net.encoders.items()}).eval()
        self.teacher.requires_grad_(False)

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.teacher.state_dict().items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.teacher.load_state_dict(state)

    def __call__(self, net: DisamNet, batches: dict[str, Tensor]) -> Tensor:
        """Sum over conditions of `similarity_drift` for each condition's batch {domain: (B,3,S,S)}."""
        total = None
        for dom, x in batches.items():
            with torch.no_grad():
                t = retrieval_descriptor(self.teacher[dom](x), self.descriptor)
            s = retrieval_descriptor(net.encode(x, dom), self.descriptor)
            term = similarity_drift(s, t)
            total = term if total is None else total + term
        if total is None:
            raise ValueError("StructureKeeper needs at least one condition's batch")
        return total
