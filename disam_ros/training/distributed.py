"""torch.distributed set-up for `torchrun` (nccl on GPU, gloo on CPU) and the DDP wrappers of the GAN steps.

Why two wrappers: one iteration runs two backward passes (generator step, then discriminator step), and
the objective calls `net.encode/decode/discriminate` directly rather than `net.forward`. Wrapping the
generator halves and the discriminators in separate `DistributedDataParallel` modules whose forward calls
the objective gives each pass exactly one gradient all-reduce over disjoint parameters. Only the two
domains of the current step are used, hence `find_unused_parameters=True`; the per-domain optimisers
step those two domains only, as in ComboGAN.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from disam_ros.model import DisamNet
from disam_ros.model.objective import LossWeights, discriminator_step_loss, generator_step_losses

from .keep_structure import StructureKeeper
from .supervised import SupervisedLoss


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but CUDA is not available: use train.device=cpu or auto")
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref, local_rank)
    if world <= 1:
        return DistInfo(device=device)
    if not dist.is_initialized():
        if device.type == "cpu" and sys.platform.startswith("linux") and _loopback(os.environ.get("MASTER_ADDR", "")):
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep gloo's data sockets on loopback too
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, device=device)


def _loopback(addr: str) -> bool:
    return addr in ("127.0.0.1", "localhost", "::1")


class GeneratorStep(nn.Module):
    """Encoders + decoders as one module whose forward is the generator objective (plus supervision)."""

    def __init__(self, net: DisamNet, supervised: SupervisedLoss | None, keeper: StructureKeeper | None = None,
                 keep_weight: float = 0.0) -> None:
        super().__init__()
        self.encoders, self.decoders = net.encoders, net.decoders
        self._net = (net,)  # a tuple hides the full net from module registration (discriminators stay out)
        self.supervised = supervised
        self._keeper = (keeper,)  # the frozen start is not trained: keep it out of the parameters too
        self.keep_weight = keep_weight

    def forward(self, x_i: Tensor, x_j: Tensor, dom_i: str, dom_j: str, weights: LossWeights,
                neg_i: Tensor | None, neg_j: Tensor | None, sup: dict[str, Tensor] | None,
                sup_weight: float) -> dict[str, Tensor]:
        net = self._net[0]
        out = generator_step_losses(net, x_i, x_j, dom_i, dom_j, weights, neg_j=neg_j, neg_i=neg_i, return_fakes=True)
        out["sup"] = out["total"].new_zeros(())
        if self.supervised is not None and sup is not None:  # also at weight 0: DDP needs a graph every step
            out["sup"] = self.supervised(net, x_i, dom_i, dom_j, sup)
            out["total"] = out["total"] + sup_weight * out["sup"]
        out["keep"] = out["total"].new_zeros(())
        if self._keeper[0] is not None:
            out["keep"] = self._keeper[0](net, {dom_i: x_i, dom_j: x_j})
            out["total"] = out["total"] + self.keep_weight * out["keep"]
        return out


class DiscriminatorStep(nn.Module):
    """The discriminators as one module whose forward is eq. 2 for both domains of the step."""

    def __init__(self, net: DisamNet) -> None:
        super().__init__()
        self.discriminators = net.discriminators
        self._net = (net,)

    def forward(self, real_i: Tensor, real_j: Tensor, fake_i: Tensor, fake_j: Tensor, dom_i: str, dom_j: str) -> Tensor:
        return discriminator_step_loss(self._net[0], real_i, real_j, fake_i, fake_j, dom_i, dom_j)


def wrap(module: nn.Module, info: DistInfo) -> nn.Module:
    """DDP when running distributed (parameters broadcast from rank 0 here), the bare module otherwise."""
    if not info.enabled:
        return module
    return DistributedDataParallel(module, find_unused_parameters=True)


def all_gather(obj: object, info: DistInfo) -> list:
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
