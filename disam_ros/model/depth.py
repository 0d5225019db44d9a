"""Depth-hallucination branch (seed 002): a depth decoder on the content code, its masked loss, a depth
descriptor from the hallucinated map, and the fusion of that descriptor with the appearance one.

Why: geometry changes less than appearance across night, snow and fog. Depth is needed only to train
the decoder; at query time the decoder infers it from the image, so the map and the node need no depth sensor.

Conventions: depth in metres, shape (B, 1, H, W) or (B, H, W); a target pixel is valid where it is finite and
> 0 (the on-disk format stores invalid as 0, disam_ros/data/depth.py). Every loss averages over the valid
pixels of each image, then over the images that have any, so a sky-heavy frame does not weigh less.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig

DEPTH_LOSSES = ("l1", "silog")
EPS = 1e-6


class DepthDecoder(nn.Module):
    """Content code (B, C, h, w) -> depth (B, 1, h * 2**n_up, w * 2**n_up) in (0, max_depth_m) metres.

    Bilinear upsampling + 3x3 convolutions rather than transposed convolutions (no checkerboard artefacts
    in a map that feeds a descriptor); a bounded sigmoid output keeps depth positive for the log loss.
    With `domains`, the first layer's features get a per-condition scale and shift (FiLM; zero-initialised,
    so it starts as the shared decoder): each condition's encoder gives codes of its own statistics (night codes
    carry the least), and one affine per condition lets the decoder read them apart at ~2 x width weights each.
    """

    def __init__(self, in_channels: int, n_up: int = 2, width: int = 64, max_depth_m: float = 80.0,
                 domains: tuple[str, ...] = ()) -> None:
        super().__init__()
        if in_channels < 1 or n_up < 0 or width < 1 or not max_depth_m > 0:
            raise ValueError(f"bad depth decoder shape: in_channels={in_channels} n_up={n_up} width={width} "
                             f"max_depth_m={max_depth_m}; all must be positive (n_up >= 0)")
        self.in_channels, self.n_up, self.width = int(in_channels), int(n_up), int(width)
        self.max_depth_m = float(max_depth_m)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.PReLU()]
        ch = width
        for _ in range(n_up):
            out = max(ch // 2, 8)
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       nn.Conv2d(ch, out, 3, padding=1), nn.InstanceNorm2d(out), nn.PReLU()]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.domains = tuple(str(d) for d in domains)
        if len(set(self.domains)) != len(self.domains):
            raise ValueError(f"depth decoder domains {list(self.domains)} repeat a name")
        if self.domains:  # keys body.* stay those of the shared decoder; film.weight is added
            self.film = nn.Embedding(len(self.domains), 2 * width)
            nn.init.zeros_(self.film.weight)

    @classmethod
    def for_model(cls, cfg: ModelConfig, width: int = 64, max_depth_m: float = 80.0,
                  conditioned: bool = False) -> DepthDecoder:
        """A decoder that returns depth at the model's input resolution from its content code (conditioned on
        the model's domains when asked)."""
        return cls(cfg.content_shape[0], cfg.n_downsampling, width, max_depth_m,
                   tuple(cfg.domains) if conditioned else ())

    def domain_index(self, domain: str | None, n: int, device: torch.device) -> Tensor | None:
        """(n,) indices of `domain` for forward; None for a shared decoder; ValueError for a missing/unknown one."""
        if not self.domains:
            return None
        if domain not in self.domains:
            raise ValueError(f"this depth decoder is conditioned on the condition ({list(self.domains)}); got "
                             f"{domain!r}: pass the condition the image was encoded under")
        return torch.full((n,), self.domains.index(domain), dtype=torch.long, device=device)

    def forward(self, z: Tensor, domain: Tensor | None = None) -> Tensor:
        """Depth of codes z; `domain` (B,) condition indices, required by (and only by) a conditioned decoder."""
        if bool(self.domains) != (domain is not None):
            raise ValueError("a conditioned depth decoder needs condition indices, a shared one takes none")
        h = self.body[0](z)
        if domain is not None:
            gamma, beta = self.film(domain)[:, :, None, None].chunk(2, dim=1)
            h = h * (1.0 + gamma) + beta
        for layer in self.body[1:]:
            h = layer(h)
        return self.max_depth_m * torch.sigmoid(h)


def _as_b1hw(x: Tensor) -> Tensor:
    return x.unsqueeze(1) if x.dim() == 3 else x


def valid_mask(target: Tensor) -> Tensor:
    """Where the ground truth holds a depth: finite and > 0."""
    return torch.isfinite(target) & (target > 0)


def _per_image_mean(values: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """(mean over valid pixels of each image, which images have any valid pixel)."""
    v = valid.flatten(1).to(values.dtype)
    n = v.sum(1)
    s = (torch.where(valid, values, torch.zeros_like(values)).flatten(1)).sum(1)
    return s / n.clamp(min=1.0), n > 0


def _batch_mean(per_image: Tensor, has: Tensor, anchor: Tensor) -> Tensor:
    if not bool(has.any()):
        return anchor.sum() * 0.0  # nothing to learn from this batch, but keep the graph connected
    return per_image[has].mean()


def _check(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    pred, target = _as_b1hw(pred), _as_b1hw(target)
    if pred.shape != target.shape:
        raise ValueError(f"depth prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ; "
                         "resize the target to the decoder's output (nearest neighbour keeps invalid pixels)")
    return pred, target


def masked_l1(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Seed 002's loss, ||G(I) - D_I||_1, over valid pixels only (metres)."""
    pred, target = _check(pred, target)
    valid = valid_mask(target) if valid is None else _as_b1hw(valid).bool() & valid_mask(target)
    err = (pred - torch.where(valid, target, pred.detach())).abs()
    per, has = _per_image_mean(err, valid)
    return _batch_mean(per, has, pred)


def silog_loss(pred: Tensor, target: Tensor, valid: Tensor | None = None, lam: float = 0.85) -> Tensor:
    """Scale-invariant log loss (Eigen et al. 2014): mean(d^2) - lam * mean(d)^2, d = log pred - log target.

    lam = 1 ignores a global scale error entirely; lam < 1 keeps part of it, so the decoder learns metric
    depth (scale-aware) while relative structure dominates: far pixels do not swamp near ones as in L1.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"silog lam {lam} must be in [0, 1] (1 = fully scale-invariant)")
    pred, target = _check(pred, target)
    valid = valid_mask(target) if valid is None else _as_b1hw(valid).bool() & valid_mask(target)
    safe_t = torch.where(valid, target, torch.ones_like(target))
    d = torch.log(pred.clamp(min=EPS)) - torch.log(safe_t)
    mean_d2, has = _per_image_mean(d * d, valid)
    mean_d, _ = _per_image_mean(d, valid)
    return _batch_mean(mean_d2 - lam * mean_d * mean_d, has, pred)


def depth_loss(pred: Tensor, target: Tensor, kind: str = "silog", valid: Tensor | None = None) -> Tensor:
    if kind == "l1":
        return masked_l1(pred, target, valid)
    if kind == "silog":
        return silog_loss(pred, target, valid)
    raise ValueError(f"depth loss {kind!r} is not supported: use one of {list(DEPTH_LOSSES)}")


def abs_rel_error(pred: Tensor, target: Tensor) -> Tensor:
    """(B,) absolute relative error mean(|pred - t| / t) over each image's valid pixels; NaN with none.

    The usual monocular-depth figure: per image, so every frame counts once whatever its sky fraction.
    """
    pred, target = _check(pred, target)
    valid = valid_mask(target)
    safe_t = torch.where(valid, target, torch.ones_like(target))
    per, has = _per_image_mean((pred - safe_t).abs() / safe_t, valid)
    return torch.where(has, per, torch.full_like(per, float("nan")))


def depth_descriptor(depth: Tensor, grid: int = 8) -> Tensor:
    """(B, grid*grid) unit vector: log depth averaged in a grid x grid layout, minus its mean.

    Log and mean removal make it invariant to a global scale (a hallucinated depth is often right up to
    scale); cells with no valid depth take the image's mean, i.e. contribute 0. A parameter-free stand-in
    for seed 002's second CNN, so the branch is usable before that network is trained.
    """
    d = _as_b1hw(depth)
    valid = valid_mask(d)
    logd = torch.where(valid, torch.log(torch.where(valid, d, torch.ones_like(d))), torch.zeros_like(d))
    w = valid.to(logd.dtype)
    s = F.adaptive_avg_pool2d(logd, grid).flatten(1)
    n = F.adaptive_avg_pool2d(w, grid).flatten(1)
    img_mean = logd.flatten(1).sum(1, keepdim=True) / w.flatten(1).sum(1, keepdim=True).clamp(min=1.0)
    cells = torch.where(n > 0, s / n.clamp(min=EPS), img_mean)
    return F.normalize(cells - cells.mean(1, keepdim=True), dim=1)


def place_contrastive(da: Tensor, db: Tensor, same_place: Tensor | None = None, tau: float = 0.1) -> Tensor:
    """Symmetric InfoNCE between two batches of descriptors of the same places under other conditions.

    Row i of `da` and row i of `db` show one place; every other row of the batch is a negative, except where
    `same_place[i, j]` says it shows the same place too (left out of both softmaxes, never pushed away). Why:
    the depth loss alone teaches the decoder what depth looks like by day; at night its depth is wrong in a
    way the descriptor cannot absorb (seed 002 reports the same). Asking the night and day descriptors of one
    place to agree, against other places, trains the hallucination for what retrieval needs.
    """
    logits = da @ db.T / tau
    if same_place is not None:
        off = same_place & ~torch.eye(len(da), dtype=torch.bool, device=da.device)
        logits = logits.masked_fill(off, float("-inf"))
    target = torch.arange(len(da), device=da.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _check_weight(w: float) -> float:
    if not (math.isfinite(w) and 0.0 <= w <= 1.0):
        raise ValueError(f"fusion weight {w} must be in [0, 1] (1 = appearance only, 0 = depth only)")
    return float(w)


def fused_score(appearance: Tensor | float, depth: Tensor | float, w: float) -> Tensor | float:
    """w * appearance + (1 - w) * depth: the retrieval score of the fused descriptor (see fuse_descriptors)."""
    w = _check_weight(w)
    return w * appearance + (1.0 - w) * depth


def fuse_descriptors(appearance: Tensor, depth: Tensor, w: float, unit_appearance: bool = True) -> Tensor:
    """Concatenate [sqrt(w) a/|a|, sqrt(1-w) d/|d|] so that one inner product of fused descriptors equals
    fused_score(cos_appearance, cos_depth, w): the map and the search keep a single vector per image.

    `unit_appearance=False` keeps a as given: for eq. 16 coarse vectors, whose inner product *is* the appearance
    score (a dead channel makes |a| < 1, and re-normalising would change that score), so w = 1 scores exactly
    as an appearance-only map.
    """
    w = _check_weight(w)
    a = F.normalize(appearance.flatten(1), dim=1) if unit_appearance else appearance.flatten(1)
    d = F.normalize(depth.flatten(1), dim=1)
    return torch.cat([math.sqrt(w) * a, math.sqrt(1.0 - w) * d], dim=1)


def query_scales(map_weight: float, query_weight: float) -> tuple[float, float]:
    """(alpha, beta) that turn a query's fused vector [sqrt(w) a, sqrt(1-w) d] into [alpha a, beta d] so that its
    inner product with a *map* vector of weight w is w_q <a, a'> + (1 - w_q) <d, d'>.

    Why: a map stores [sqrt(w) a', sqrt(1-w) d'] for one w, but how much the hallucinated depth deserves depends
    on the query's condition (night depth is the worst); scaling the query's two parts, alpha = w_q / sqrt(w),
    beta = (1 - w_q) / sqrt(1 - w), gives each query condition its own mix without rebuilding the map. Needs
    0 < w < 1 (a part the map stores as zero cannot be weighted back in).
    """
    w, wq = _check_weight(map_weight), _check_weight(query_weight)
    if not 0.0 < w < 1.0:
        raise ValueError(f"map fusion weight {w} must lie in (0, 1) for per-query weights (it stores one part as 0)")
    return wq / math.sqrt(w), (1.0 - wq) / math.sqrt(1.0 - w)


def fuse_query(appearance: Tensor, depth: Tensor, map_weight: float, query_weight: float) -> Tensor:
    """[alpha a, beta d/|d|] (see query_scales), a as given (eq. 16 vectors): the query-side fused vector whose
    inner product with fuse_descriptors(a', d', map_weight, unit_appearance=False) is
    query_weight * <a, a'> + (1 - query_weight) * cos(d, d')."""
    alpha, beta = query_scales(map_weight, query_weight)
    return torch.cat([alpha * appearance.flatten(1), beta * F.normalize(depth.flatten(1), dim=1)], dim=1)
