"""One-file model checkpoints: format tag and version, config, domain names, weights, free-form extras.

A checkpoint holds some `parts` of a DisamNet: all of them (encoders, decoders, discriminators: a training
checkpoint, what `load_checkpoint` needs) or only the encoders (an inference export, what
`Encoder.from_checkpoint` needs), optionally with its floating weights stored in a smaller dtype (float16).
Files written before `parts` existed hold all three.

Written atomically (disam_ros.fsutil: temp file beside it, fsync, rename) with mode 0644, so a crash mid-save
never leaves a half-written model where a good one was; read with `torch.load(weights_only=True)` so a
checkpoint cannot run code. Every failure is a `CheckpointError` with one line naming the file and the fix.
"""
from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from disam_ros.fsutil import atomic_path

from .config import ModelConfig
from .networks import DisamNet

FORMAT_TAG = "disam_ros.model"
FORMAT_VERSION = 1
PARTS = ("encoders", "decoders", "discriminators")  # top-level modules of DisamNet, in state-dict order
FILE_MODE = 0o644  # checkpoints are shipped and shared: readable by everyone, like any file cp writes


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line with the file name and the fix."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (maps record which model built them)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike, net: DisamNet, config: ModelConfig, extra: dict | None = None,
    parts: Iterable[str] = PARTS, dtype: torch.dtype | None = None,
) -> Path:
    """Write the `parts` of `net` with its config; returns the path written.

    `parts` names top-level modules of DisamNet and must include "encoders": ("encoders",) writes an
    inference export for `Encoder.from_checkpoint`, the default everything `load_checkpoint` needs to resume.
    `dtype` (e.g. torch.float16) casts the floating tensors for storage; None keeps the net's dtype.
    `extra` (e.g. {"role": "coarse", "epoch": 600}) may hold only None/bool/int/float/str, lists, str-keyed
    dicts and tensors, so that it loads under weights_only.
    """
    path = Path(path)
    if tuple(net.domains) != tuple(config.domains):
        raise ValueError(f"net domains {list(net.domains)} differ from config domains {list(config.domains)}: "
                         "save the config the net was built with")
    parts = _parts(parts)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype {dtype!r} is not a floating torch dtype: use e.g. torch.float16, or None")
    extra = {} if extra is None else extra
    _check_plain(extra, "extra")
    state = {}
    for k, v in net.state_dict().items():
        if _part_of(k) in parts:
            v = v.detach().cpu()
            state[k] = v.to(dtype) if dtype is not None and v.is_floating_point() else v
    payload = {
        "format": FORMAT_TAG,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "domains": list(config.domains),
        "parts": list(parts),
        "dtype": _stored_dtype(state),
        "state_dict": state,
        "extra": extra,
    }
    with atomic_path(path, mode=FILE_MODE, fsync=True) as tmp:  # mode: 0644 whatever the umask
        torch.save(payload, tmp)
    return path


def _parts(parts: Iterable[str]) -> tuple[str, ...]:
    """Validated `parts`, in PARTS order, without repeats; a ValueError lists the valid names."""
    names = (parts,) if isinstance(parts, str) else tuple(parts)
    unknown = [p for p in names if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown checkpoint parts {unknown}: valid parts are {list(PARTS)}")
    if "encoders" not in names:
        raise ValueError(f"checkpoint parts {list(names)} lack 'encoders': every checkpoint holds the encoders "
                         f"(valid parts are {list(PARTS)})")
    return tuple(p for p in PARTS if p in names)


def _part_of(key: str) -> str:
    return key.split(".", 1)[0]


def _stored_dtype(state: dict[str, Tensor]) -> str:
    """Name of the floating dtype the weights are stored in ("float16"; "mixed" if several)."""
    kinds = {str(v.dtype).replace("torch.", "") for v in state.values() if v.is_floating_point()}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "none")


def read_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", expect_domains: Iterable[str] | None = None
) -> tuple[dict[str, Tensor], ModelConfig, dict[str, Any]]:
    """Validated (state_dict, config, meta) without building the network (Encoder uses this to skip decoders).

    Only the stored parts are validated (an inference export holds the encoders alone); meta is
    {path, sha256, format_version, domains, parts, dtype, extra}, the tensors are in the dtype stored.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(_msg(path, "not found", "check the path, or train/download the model first"))
    sha = file_sha256(path)
    try:
        # mmap: tensors are paged in only when used, so Encoder.from_checkpoint never reads the decoders.
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError... for damaged files
        raise CheckpointError(
            _msg(path, f"is truncated or corrupt ({type(e).__name__}: {_first_line(e)})", "copy or save it again")
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_TAG:
        raise CheckpointError(
            _msg(path, "is not a disam_ros model checkpoint", "save models with disam_ros.model.save_checkpoint")
        )
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(_msg(path, f"has format version {version!r}, this disam_ros reads {FORMAT_VERSION}",
                                   "use the disam_ros version that wrote it, or re-save it"))
    try:
        cfg = ModelConfig.from_dict(payload.get("config"))
    except (TypeError, ValueError) as e:
        raise CheckpointError(_msg(path, f"has an invalid config ({_first_line(e)})", "re-save it")) from e
    if list(payload.get("domains", [])) != list(cfg.domains):
        raise CheckpointError(_msg(path, f"lists domains {payload.get('domains')} but its config has "
                                   f"{list(cfg.domains)}", "re-save it with save_checkpoint"))
    if expect_domains is not None and set(expect_domains) != set(cfg.domains):
        raise CheckpointError(_msg(path, f"was trained for domains {list(cfg.domains)} but "
                                   f"{sorted(set(expect_domains))} were expected",
                                   "pick the checkpoint trained for these conditions or fix the domain list"))
    try:
        parts = _parts(payload.get("parts", PARTS))  # files from before `parts` existed hold everything
    except (TypeError, ValueError) as e:
        raise CheckpointError(_msg(path, f"has invalid parts ({_first_line(e)})",
                                   "re-save it with save_checkpoint")) from e
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(_msg(path, "has no state_dict", "re-save it with save_checkpoint"))
    _check_weights(path, state, cfg, parts)
    meta = {"path": str(path), "sha256": sha, "format_version": version, "domains": list(cfg.domains),
            "parts": list(parts), "dtype": payload.get("dtype", _stored_dtype(state)),
            "extra": payload.get("extra") or {}}
    return state, cfg, meta


def load_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", expect_domains: Iterable[str] | None = None
) -> tuple[DisamNet, ModelConfig, dict[str, Any]]:
    """(net, config, meta) with meta as read_checkpoint's; net is in eval mode, its weights in torch's default
    dtype (float32) whatever the stored one. Needs a full checkpoint: an inference export is an error."""
    state, cfg, meta = read_checkpoint(path, map_location, expect_domains)
    if tuple(meta["parts"]) != PARTS:
        held = " and ".join(meta["parts"])
        raise CheckpointError(f"{path}: holds only the {held} (an inference export): load it with "
                              "Encoder.from_checkpoint, or resume from the full training checkpoint".replace("\n", " "))
    default = torch.get_default_dtype()
    state = {k: v.to(default) if v.is_floating_point() and v.dtype != default else v for k, v in state.items()}
    with torch.device("meta"):
        net = DisamNet(cfg)
    net.load_state_dict(state, strict=True, assign=True)  # shapes checked above; no random init wasted
    return net.eval(), cfg, meta


def _check_weights(path: Path, state: dict[str, Any], cfg: ModelConfig, parts: tuple[str, ...] = PARTS) -> None:
    """Compare against the parameters of `parts` the config implies."""
    expected = {k: shape for k, shape in _config_shapes(cfg) if _part_of(k) in parts}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad = [k for k in sorted(set(expected) & set(state))
           if not isinstance(state[k], Tensor) or tuple(state[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if bad:
        k = bad[0]
        got = tuple(state[k].shape) if isinstance(state[k], Tensor) else type(state[k]).__name__
        problems.append(f"{len(bad)} shape mismatches (e.g. {k}: file {got} vs config {expected[k]})")
    if problems:
        raise CheckpointError(_msg(path, "weights do not match its config: " + "; ".join(problems),
                                   "the file was edited or written by an incompatible version; re-save it"))


@functools.lru_cache(maxsize=8)
def _config_shapes(cfg: ModelConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Every parameter's name and shape the config implies. Built on the meta device (no memory), but building the
    modules still costs ~0.16 s of Python a network, paid by every node start and map build for each checkpoint it
    reads: a map's coarse and fine models share a config, so the second read is free."""
    with torch.device("meta"):
        return tuple((k, tuple(v.shape)) for k, v in DisamNet(cfg).state_dict().items())


def encoder_state(state: dict[str, Tensor], domain: str) -> dict[str, Tensor]:
    """The sub-state-dict of one domain's encoder (keys relative to the encoder module)."""
    prefix = f"encoders.{domain}."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _msg(path: Path, problem: str, fix: str) -> str:
    return f"checkpoint {str(path)!r} {problem}: {fix}".replace("\n", " ")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else "no details")[:160]


def _check_plain(obj: Any, where: str) -> None:
    if obj is None or isinstance(obj, bool | int | float | str | Tensor):
        return
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has a non-string key {k!r}: checkpoint extras need str keys")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, nn.Module):
        raise ValueError(f"{where} is a module: store its state_dict() or describe it with plain values")
    raise ValueError(f"{where} is a {type(obj).__name__}: checkpoint extras may hold only plain values and tensors")
