"""DISAM networks: per-domain ResNet encoder/decoder halves and two-branch multi-scale PatchGAN discriminators.

Architecture follows ComboGAN [39] as used by DISAM (Sec. III-B): the generator of each domain is cut in
half, so any encoder E_i can be combined with any decoder D_j; the content code z = E_i(x) is the
retrieval feature. Everything is sized by `ModelConfig` so small models exist for tests and CPUs.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig

# ITU-R BT.601 luma weights: the reference discriminator judges structure on luminance separately.
_LUMA = (0.299, 0.587, 0.114)
BLUR_SIZE, BLUR_SIGMA = 5, 3.0


def _norm(cfg: ModelConfig, channels: int) -> nn.Module:
    if cfg.norm == "batch":
        return nn.BatchNorm2d(channels, affine=True)
    return nn.InstanceNorm2d(channels, affine=False)


def _use_bias(cfg: ModelConfig) -> bool:
    # Instance norm without affine removes no bias, so convolutions keep theirs (as in the reference).
    return cfg.norm == "instance"


class ResnetBlock(nn.Module):
    """Two reflection-padded 3x3 convolutions with a skip connection (no activation after the sum)."""

    def __init__(self, cfg: ModelConfig, dim: int) -> None:
        super().__init__()
        bias = _use_bias(cfg)
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, bias=bias),
            _norm(cfg, dim),
            nn.PReLU(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, bias=bias),
            _norm(cfg, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def build_encoder(cfg: ModelConfig) -> nn.Sequential:
    """First half of the generator: 7x7 stem, `n_downsampling` stride-2 convs, `n_blocks_enc` res blocks."""
    bias = _use_bias(cfg)
    layers: list[nn.Module] = [
        nn.ReflectionPad2d(3),
        nn.Conv2d(cfg.in_channels, cfg.ngf, 7, bias=bias),
        _norm(cfg, cfg.ngf),
        nn.PReLU(),
    ]
    for i in range(cfg.n_downsampling):
        cin = cfg.ngf * 2**i
        layers += [nn.Conv2d(cin, cin * 2, 3, stride=2, padding=1, bias=bias), _norm(cfg, cin * 2), nn.PReLU()]
    dim = cfg.content_shape[0]
    layers += [ResnetBlock(cfg, dim) for _ in range(cfg.n_blocks_enc)]
    return nn.Sequential(*layers)


def build_decoder(cfg: ModelConfig) -> nn.Sequential:
    """Second half: `n_blocks_dec` res blocks, transposed-conv upsampling, 7x7 conv to RGB in [-1, 1]."""
    bias = _use_bias(cfg)
    dim = cfg.content_shape[0]
    layers: list[nn.Module] = [ResnetBlock(cfg, dim) for _ in range(cfg.n_blocks_dec)]
    for i in range(cfg.n_downsampling):
        cin = dim // 2**i
        layers += [
            nn.ConvTranspose2d(cin, cin // 2, 4, stride=2, padding=1, bias=bias),
            _norm(cfg, cin // 2),
            nn.PReLU(),
        ]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(cfg.ngf, cfg.in_channels, 7), nn.Tanh()]
    return nn.Sequential(*layers)


class PatchBranch(nn.Module):
    """One PatchGAN stack that also emits an intermediate real/fake map at every stride-2 stage.

    Each intermediate stage produces one extra channel; that channel is the prediction at this scale and the
    other channels feed the next stage (ComboGAN's multi-scale trick: coarse and fine patch statistics are
    judged by one network). Returns `disc_layers` maps, finest first.
    """

    def __init__(self, cfg: ModelConfig, in_channels: int) -> None:
        super().__init__()
        kw, pad, bias, ndf = 4, 2, _use_bias(cfg), cfg.ndf
        self.stem = nn.Sequential(nn.Conv2d(in_channels, ndf, kw, stride=2, padding=pad), nn.PReLU())
        stages: list[nn.Module] = []
        mult = 1
        for n in range(1, cfg.disc_layers):
            prev, mult = mult, min(2**n, 8)
            stages.append(
                nn.Sequential(
                    nn.Conv2d(ndf * prev, ndf * mult + 1, kw, stride=2, padding=pad, bias=bias),
                    _norm(cfg, ndf * mult + 1),
                    nn.PReLU(),
                )
            )
        prev, mult = mult, min(2**cfg.disc_layers, 8)
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(
            nn.Conv2d(ndf * prev, ndf * mult, kw, stride=1, padding=pad, bias=bias),
            _norm(cfg, ndf * mult),
            nn.PReLU(),
            nn.Conv2d(ndf * mult, 1, kw, stride=1, padding=pad),
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        h = self.stem(x)
        outs: list[Tensor] = []
        for stage in self.stages:
            h = stage(h)
            outs.append(h[:, -1:])
            h = h[:, :-1]
        outs.append(self.head(h))
        return outs


@lru_cache(maxsize=8)
def _gauss_1d(size: int, sigma: float) -> tuple[float, ...]:
    vals = [math.exp(-((i - size // 2) ** 2) / (2 * sigma**2)) for i in range(size)]
    return tuple(v / sum(vals) for v in vals)


def gaussian_blur(x: Tensor, size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> Tensor:
    """Depthwise normalised Gaussian blur with zero padding (the discriminator's colour branch input).

    Built on the fly (25 numbers) rather than stored as a buffer, so checkpoints hold weights only.
    """
    g = torch.tensor(_gauss_1d(size, sigma), device=x.device, dtype=x.dtype)
    k = (g[:, None] * g[None, :]).expand(x.shape[1], 1, size, size)
    return F.conv2d(x, k, padding=size // 2, groups=x.shape[1])


def luminance(x: Tensor) -> Tensor:
    """(B,3,H,W) RGB -> (B,1,H,W) luma; other channel counts are averaged."""
    if x.shape[1] == 3:
        w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


class Discriminator(nn.Module):
    """Two PatchGAN branches, on luminance and on blurred RGB, concatenated per scale -> (B, 2, h_s, w_s)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gray = PatchBranch(cfg, 1)
        self.rgb = PatchBranch(cfg, cfg.in_channels)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs_gray, outs_rgb = self.gray(luminance(x)), self.rgb(gaussian_blur(x))
        return [torch.cat([g, c], 1) for g, c in zip(outs_gray, outs_rgb)]


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer): where its inputs have to be (CPU for a module
    with neither)."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


def init_weights(module: nn.Module) -> None:
    """N(0, 0.02) conv weights and zero biases; batch-norm scale N(1, 0.02) (DCGAN init, as the reference)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DisamNet(nn.Module):
    """All per-domain encoders, decoders and discriminators of one DISAM model, keyed by domain name."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoders = nn.ModuleDict({d: build_encoder(cfg) for d in cfg.domains})
        self.decoders = nn.ModuleDict({d: build_decoder(cfg) for d in cfg.domains})
        self.discriminators = nn.ModuleDict({d: Discriminator(cfg) for d in cfg.domains})
        # A net on the meta device is built to read shapes or to take a checkpoint's weights: no init. Why: there
        # normal_ runs torch's Python reference and imports torch._dynamo (~1.3 s of every process opening one).
        if module_device(self).type != "meta":
            self.apply(init_weights)

    @property
    def domains(self) -> tuple[str, ...]:
        return self.config.domains

    def encode(self, x: Tensor, domain: str | int) -> Tensor:
        """z = E_domain(x), eq. 4: (B, in_ch, S, S) -> (B, *content_shape)."""
        return self.encoders[self.config.domain_name(domain)](x)

    def decode(self, z: Tensor, domain: str | int) -> Tensor:
        """x = D_domain(z), eq. 5: content code -> image in [-1, 1]."""
        return self.decoders[self.config.domain_name(domain)](z)

    def translate(self, x: Tensor, src: str | int, dst: str | int) -> Tensor:
        """x_{src->dst} = D_dst(E_src(x))."""
        return self.decode(self.encode(x, src), dst)

    def discriminate(self, x: Tensor, domain: str | int) -> list[Tensor]:
        """Multi-scale real/fake maps of discriminator `domain`, each (B, 2, h_s, w_s), finest first."""
        return self.discriminators[self.config.domain_name(domain)](x)

    def forward(self, x: Tensor, src: str | int, dst: str | int) -> Tensor:
        return self.translate(x, src, dst)


def seeded_net(config: ModelConfig, seed: int) -> DisamNet:
    """A randomly initialised DisamNet drawn from `seed`: the untrained baseline every evaluation sets beside a
    model (the same seed gives the same weights in every tool that asks, so their rows compare)."""
    torch.manual_seed(seed)
    return DisamNet(config)

