"""Inference-only encoders: what map building and the localizer need, and nothing else.

Decoders and discriminators are about two thirds of a DISAM model's weights; an `Encoder` never holds
them (`from_checkpoint` does not even build them).
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .checkpoint import CheckpointError, encoder_state, read_checkpoint
from .config import ModelConfig
from .depth_branch import DepthBranch, DepthBranchError
from .networks import DisamNet, build_encoder
from .preprocess import ImageInput, to_model_input


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> cuda if available else cpu; asking for an absent CUDA is a clear error, not a crash later."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"invalid device {device!r}: use 'auto', 'cpu' or 'cuda[:N]'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available: use device='cpu' or 'auto'")
    return dev


class ImageSizeConfig(Protocol):
    """The one config field retrieval reads: the side the encoder resizes images to (recorded in maps)."""

    @property
    def image_size(self) -> int: ...


@runtime_checkable
class EncoderLike(Protocol):
    """What map building and search need from "an encoder", and nothing more: the real `Encoder`, and the
    benchmarks' and tests' stand-ins (e.g. disam_ros.bench.table_encoder.TableEncoder) that return given
    features so retrieval runs without a network. Typing against this instead of `Any` lets a checker and
    a reader see the contract; `isinstance(x, EncoderLike)` checks the members are present (not their types).
    """

    @property
    def domains(self) -> tuple[str, ...]: ...

    @property
    def content_shape(self) -> tuple[int, int, int]: ...

    @property
    def config(self) -> ImageSizeConfig: ...

    @property
    def checkpoint_sha256(self) -> str | None: ...

    @property
    def device(self) -> torch.device: ...

    def encode(self, images: ImageInput, domain: str) -> Tensor:
        """Content codes (B, C, h, w) of the images under `domain`'s encoder."""
        ...


class Encoder:
    """Per-domain content encoders E_i on one device, run under inference mode.

    `net_or_encoders` is a DisamNet (its encoders are copied, so the training net is left untouched) or a
    mapping domain -> encoder module (used as is).
    """

    def __init__(
        self,
        net_or_encoders: DisamNet | Mapping[str, nn.Module],
        config: ModelConfig,
        device: str | torch.device = "auto",
        half: bool = False,
        channels_last: bool = False,
        checkpoint_sha256: str | None = None,
    ) -> None:
        self.config = config
        self.device = resolve_device(device)
        if half and self.device.type != "cuda":
            raise ValueError(f"half=True needs a CUDA device, got {self.device}: use half=False on CPU")
        if isinstance(net_or_encoders, DisamNet):
            encoders = nn.ModuleDict({d: copy.deepcopy(m) for d, m in net_or_encoders.encoders.items()})
        else:
            encoders = nn.ModuleDict(dict(net_or_encoders))
        if set(encoders.keys()) != set(config.domains):
            raise ValueError(f"encoders for {sorted(encoders.keys())} do not match config domains "
                             f"{list(config.domains)}: pass the config the model was built with")
        self.dtype = torch.float16 if half else torch.float32
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._encoders = encoders.to(device=self.device, dtype=self.dtype, memory_format=self.memory_format).eval()
        self._encoders.requires_grad_(False)
        self.checkpoint_sha256 = checkpoint_sha256
        self.depth_branch: DepthBranch | None = None  # set by from_checkpoint when the file has one

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "auto", half: bool = False,
        channels_last: bool = False,
    ) -> Encoder:
        """Load only the encoders of a checkpoint written by `save_checkpoint`."""
        dev = resolve_device(device)
        state, cfg, meta = read_checkpoint(path, map_location="cpu")
        encoders = {}
        for d in cfg.domains:
            with torch.device("meta"):
                enc = build_encoder(cfg)
            enc.load_state_dict(encoder_state(state, d), strict=True, assign=True)
            encoders[d] = enc
        enc = cls(encoders, cfg, device=dev, half=half, channels_last=channels_last,
                  checkpoint_sha256=meta["sha256"])
        try:  # seed 002: maps, search and node fuse its depth descriptor when the checkpoint carries the branch
            enc.depth_branch = DepthBranch.from_extra(meta["extra"], dev, where=f"checkpoint {str(path)!r}")
        except DepthBranchError as exc:
            raise CheckpointError(str(exc)) from None
        return enc

    @property
    def domains(self) -> tuple[str, ...]:
        return self.config.domains

    @property
    def content_shape(self) -> tuple[int, int, int]:
        return self.config.content_shape

    def encode(self, images: ImageInput, domain: str | int, batch_size: int | None = None) -> Tensor:
        """Content codes (B, C, h, w) on `device` (float32, or float16 when half), for anything
        `to_model_input` accepts; `batch_size` bounds memory for long lists."""
        enc = self._encoders[self.config.domain_name(domain)]
        x = to_model_input(images, self.config.image_size)
        step = batch_size or x.shape[0]
        outs = []
        with torch.inference_mode():
            for start in range(0, x.shape[0], step):
                chunk = x[start:start + step].to(self.device, non_blocking=True)
                chunk = chunk.to(dtype=self.dtype, memory_format=self.memory_format)
                outs.append(enc(chunk).contiguous())
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def __repr__(self) -> str:
        return (f"Encoder(domains={list(self.domains)}, image_size={self.config.image_size}, "
                f"content_shape={self.content_shape}, device={self.device}, dtype={self.dtype})")
