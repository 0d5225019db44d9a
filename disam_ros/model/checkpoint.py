"""One-file model checkpoints: format tag and version, config, domain names, weights, free-form extras.

Written atomically (temp file in the same directory, then os.replace) so a crash mid-save never leaves a
half-written model where a good one was; read with `torch.load(weights_only=True)` so a checkpoint
cannot run code. Every failure is a `CheckpointError` with one line naming the file and the fix.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .networks import DisamNet

FORMAT_TAG = "disam_ros.model"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line with the file name and the fix."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (maps record which model built them)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, net: DisamNet, config: ModelConfig, extra: dict | None = None) -> Path:
    """Write `net` (all encoders, decoders, discriminators) with its config; returns the path written.

    `extra` (e.g. {"role": "coarse", "epoch": 600}) may hold only None/bool/int/float/str, lists, str-keyed
    dicts and tensors, so that it loads under weights_only.
    """
    path = Path(path)
    if tuple(net.domains) != tuple(config.domains):
        raise ValueError(f"net domains {list(net.domains)} differ from config domains {list(config.domains)}: "
                         "save the config the net was built with")
    extra = {} if extra is None else extra
    _check_plain(extra, "extra")
    payload = {
        "format": FORMAT_TAG,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "domains": list(config.domains),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "extra": extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", expect_domains: Iterable[str] | None = None
) -> tuple[dict[str, Tensor], ModelConfig, dict[str, Any]]:
    """Validated (state_dict, config, meta) without building the network (Encoder uses this to skip decoders)."""
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
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(_msg(path, "has no state_dict", "re-save it with save_checkpoint"))
    _check_weights(path, state, cfg)
    meta = {"path": str(path), "sha256": sha, "format_version": version, "domains": list(cfg.domains),
            "extra": payload.get("extra") or {}}
    return state, cfg, meta


def load_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", expect_domains: Iterable[str] | None = None
) -> tuple[DisamNet, ModelConfig, dict[str, Any]]:
    """(net, config, meta) with meta = {path, sha256, format_version, domains, extra}; net is in eval mode."""
    state, cfg, meta = read_checkpoint(path, map_location, expect_domains)
    with torch.device("meta"):
        net = DisamNet(cfg)
    net.load_state_dict(state, strict=True, assign=True)  # shapes checked above; no random init wasted
    return net.eval(), cfg, meta


def _check_weights(path: Path, state: dict[str, Any], cfg: ModelConfig) -> None:
    """Compare against the parameters the config implies (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in DisamNet(cfg).state_dict().items()}
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
