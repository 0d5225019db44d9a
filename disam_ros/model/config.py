"""Model configuration: one frozen dataclass that fully determines the DISAM network shapes.

The checkpoint stores `ModelConfig.to_dict()` next to the weights, so a model can always be rebuilt from
its file alone (no command-line flags to remember, unlike the reference implementation).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

NORMS = ("instance", "batch")


@dataclass(frozen=True)
class ModelConfig:
    """Shapes of the ComboGAN-style generator halves and PatchGAN discriminators (paper defaults, Sec. V-A).

    `n_blocks` residual blocks are split between encoder (`n_blocks // 2`) and decoder (the rest), as in
    the reference generator; the content code z = E_i(x) has shape `content_shape`.
    """

    domains: tuple[str, ...]
    image_size: int = 256
    in_channels: int = 3
    ngf: int = 64
    n_downsampling: int = 2
    n_blocks: int = 9
    ndf: int = 64
    disc_layers: int = 4
    norm: str = "instance"

    def __post_init__(self) -> None:
        if isinstance(self.domains, str):
            raise ValueError(f"domains must be a list of names, not the string {self.domains!r}: wrap it in a list")
        object.__setattr__(self, "domains", tuple(self.domains))
        _check_domains(self.domains)
        for name in ("image_size", "in_channels", "ngf", "ndf", "disc_layers"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("n_downsampling", self.n_downsampling, minimum=0)
        _check_int("n_blocks", self.n_blocks, minimum=0)
        if self.norm not in NORMS:
            raise ValueError(f"norm {self.norm!r} is not supported: use one of {list(NORMS)}")
        step = 2**self.n_downsampling
        if self.image_size % step:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by 2**n_downsampling = {step}: "
                f"pick a multiple of {step}"
            )
        if self.image_size // step < 4:
            raise ValueError(
                f"image_size {self.image_size} leaves a {self.image_size // step}px content map after "
                f"{self.n_downsampling} downsamplings (reflection padding needs >= 4): use a larger image_size"
            )

    @property
    def n_blocks_enc(self) -> int:
        """Residual blocks in each encoder (first half of the generator, as in ComboGAN)."""
        return self.n_blocks // 2

    @property
    def n_blocks_dec(self) -> int:
        """Residual blocks in each decoder (the remaining half)."""
        return self.n_blocks - self.n_blocks_enc

    @property
    def content_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the content code: (256, 64, 64) at the paper configuration."""
        side = self.image_size // 2**self.n_downsampling
        return (self.ngf * 2**self.n_downsampling, side, side)

    def domain_name(self, domain: str | int) -> str:
        """Resolve a domain given by name or index; unknown ones get a one-line error listing the known."""
        if isinstance(domain, bool):
            raise ValueError(
                f"domain must be a name or an index, not {domain!r}: known domains are {list(self.domains)}"
            )
        if isinstance(domain, int):
            if 0 <= domain < len(self.domains):
                return self.domains[domain]
            raise ValueError(
                f"domain index {domain} is out of range: known domains are {list(self.domains)} "
                f"(indices 0..{len(self.domains) - 1})"
            )
        if domain in self.domains:
            return domain
        raise ValueError(f"unknown domain {domain!r}: known domains are {list(self.domains)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (domains as a list)."""
        out = asdict(self)
        out["domains"] = list(self.domains)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; unknown keys are an error so a typo never silently falls back to a default."""
        if not isinstance(data, dict):
            raise ValueError(f"model config must be a dict, got {type(data).__name__}: pass ModelConfig.to_dict()")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}: valid keys are {sorted(known)}")
        if "domains" not in data:
            raise ValueError("model config has no 'domains': add the list of condition names")
        return cls(**data)


# name -> keyword overrides of ModelConfig; "paper" is the configuration of Sec. V-A.
PRESETS: dict[str, dict[str, int]] = {
    "paper": dict(image_size=256, ngf=64, n_blocks=9, ndf=64, disc_layers=4),
    "small": dict(image_size=128, ngf=32, n_blocks=6, ndf=32, disc_layers=4),
    "tiny": dict(image_size=64, ngf=16, n_blocks=4, ndf=16, disc_layers=3),
    "micro": dict(image_size=32, ngf=8, n_blocks=2, ndf=8, disc_layers=3),
}


def preset(name: str, domains: tuple[str, ...] | list[str]) -> ModelConfig:
    """A named configuration for the given domains ("micro" exists for fast tests)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}: valid presets are {list(PRESETS)}")
    return ModelConfig(domains=tuple(domains), **PRESETS[name])


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}: fix the model config")


def _check_domains(domains: tuple[Any, ...]) -> None:
    if not domains:
        raise ValueError("domains is empty: give at least one condition name, e.g. ['day', 'night']")
    for d in domains:
        if not isinstance(d, str) or not d or "." in d or d != d.strip():
            raise ValueError(
                f"domain name {d!r} is invalid: use non-empty strings without dots or surrounding spaces"
            )
    clashes = [d for d in domains if d.startswith("_") or hasattr(_module_dict_probe(), d)]
    if clashes:
        raise ValueError(
            f"domain names {clashes} clash with torch.nn.ModuleDict attributes: rename them (e.g. 'cond_{clashes[0]}')"
        )
    dupes = sorted({d for d in domains if domains.count(d) > 1})
    if dupes:
        raise ValueError(f"duplicate domain names {dupes}: each condition must appear once")


def _module_dict_probe() -> Any:
    """An empty ModuleDict: domain names become its keys, so they must not shadow its attributes."""
    from torch import nn  # local import keeps `config` cheap for callers that only read configs

    return nn.ModuleDict()
