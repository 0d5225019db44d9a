"""A small learned keypoint detector and descriptor for matching across conditions (night, rain, snow, fog).

Why this shape: SIFT's gradients vanish under night noise, rain streaks and snow, so the verifier solves few
poses there. The synthetic world gives exact pixel correspondences between a daylight frame and a night or snow
frame of a nearby pose for free (rendered depth + poses), so a network can learn what stays the same. The
design follows the SuperPoint / SiLK family at a size one CPU thread runs at SIFT's cost on 640x480:
- a VGG-style backbone down to 1/8 resolution on the grey image, each image standardised first (night frames
  are dark and flat; the standardisation removes exposure before the first layer sees it);
- descriptors at 1/8 resolution, read at a keypoint by bilinear interpolation and L2-normalised;
- a per-pixel keypoint logit at full resolution from the 1/8 features (pixel shuffle of 64 channels), trained
  SiLK-style as the probability that the pixel's descriptor finds its true match, so the detector fires where
  matching works rather than where a hand-made corner measure is high.

`extract` gives keypoints (x, y pixel centres, OpenCV's convention), their scores and descriptors.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from disam_ros.fsutil import atomic_path

CELL = 8  # backbone stride: descriptors live on an 8x8-pixel grid
FORMAT = "disam-keypoints-1"


@dataclass(frozen=True)
class KeypointConfig:
    """Network size: channels of the four backbone stages (full, 1/2, 1/4, 1/8 resolution), convolutions per
    stage, the kernel of the shared layer before the heads, and the descriptor size. The defaults cost about
    1 GMAC on 640x480 (one CPU thread: SIFT's time)."""

    channels: tuple[int, int, int, int] = (8, 24, 48, 96)
    convs: tuple[int, int, int, int] = (1, 1, 1, 2)
    neck_kernel: int = 1
    dim: int = 64


def _block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.MaxPool2d(2)] if pool else []
    return [*layers, nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class KeypointNet(nn.Module):
    """Grey image (B,1,H,W) in [0,1], H and W multiples of 8 -> keypoint logits (B,1,H,W) and unit descriptors
    (B,D,H/8,W/8)."""

    def __init__(self, config: KeypointConfig | None = None):
        super().__init__()
        self.config = config or KeypointConfig()
        layers, cin = [], 1
        for stage, (cout, n) in enumerate(zip(self.config.channels, self.config.convs, strict=True)):
            for k in range(n):
                layers += _block(cin, cout, pool=stage > 0 and k == 0)
                cin = cout
        self.backbone = nn.Sequential(*layers)
        c4, k = self.config.channels[-1], self.config.neck_kernel
        self.neck = nn.Sequential(nn.Conv2d(c4, c4, k, padding=k // 2), nn.ReLU(inplace=True))
        self.score_head = nn.Conv2d(c4, CELL * CELL, 1)
        self.desc_head = nn.Conv2d(c4, self.config.dim, 1)

    def forward(self, grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = grey.mean(dim=(2, 3), keepdim=True)
        std = grey.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
        feat = self.neck(self.backbone((grey - mean) / std))
        logits = F.pixel_shuffle(self.score_head(feat), CELL)
        return logits, F.normalize(self.desc_head(feat), dim=1)


def sample_descriptors(desc: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Descriptors (D,h,w) of one image read at pixel positions pts (N,2: x, y) by bilinear interpolation ->
    (N,D) unit vectors. Cell (i, j) describes the pixel block whose centre is (8j + 3.5, 8i + 3.5)."""
    _, h, w = desc.shape
    gx = (pts[:, 0] - (CELL - 1) / 2) / CELL
    gy = (pts[:, 1] - (CELL - 1) / 2) / CELL
    grid = torch.stack([2 * gx / max(w - 1, 1) - 1, 2 * gy / max(h - 1, 1) - 1], -1).view(1, 1, -1, 2)
    out = F.grid_sample(desc[None], grid.to(desc.dtype), mode="bilinear", align_corners=True)
    return F.normalize(out[0, :, 0].T, dim=1)


def nms_keypoints(scores: torch.Tensor, radius: int, limit: int, threshold: float) -> torch.Tensor:
    """(H,W) probabilities -> (N,2) x, y of local maxima within `radius`, above `threshold`, the `limit` best;
    exact ties (saturated probabilities are exactly 1) in row-major order, every run alike (an unstable sort
    orders them arbitrarily)."""
    k = 2 * radius + 1  # a square max filter is a row filter then a column filter: 2k comparisons, not k*k
    rows = F.max_pool2d(scores[None, None], (1, k), stride=1, padding=(0, radius))
    peak = scores == F.max_pool2d(rows, (k, 1), stride=1, padding=(radius, 0))[0, 0]
    ys, xs = torch.nonzero(peak & (scores > threshold), as_tuple=True)
    order = torch.argsort(scores[ys, xs], descending=True, stable=True)[:limit]
    return torch.stack([xs[order], ys[order]], 1)


def grey_tensor(image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """HxW or HxWx3 uint8 -> (1,1,H8,W8) float in [0,1], zero-padded to multiples of 8, and the original (H, W)."""
    img = np.asarray(image)
    grey = img if img.ndim == 2 else (img[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
    h, w = grey.shape
    t = torch.from_numpy(np.ascontiguousarray(grey, np.float32) / 255.0)[None, None]
    return F.pad(t, (0, -w % CELL, 0, -h % CELL), mode="replicate"), (h, w)


@torch.no_grad()
def extract(net: KeypointNet, image: np.ndarray, limit: int = 2000, radius: int = 4,
            threshold: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image -> keypoints (N,2) float32 (x, y), scores (N,) and descriptors (N,D) float32, strongest first.
    Runs where the network's weights are (CPU or CUDA); the answers come back as NumPy arrays."""
    net.eval()
    grey, (h, w) = grey_tensor(image)
    logits, desc = net(grey.to(next(net.parameters()).device))
    prob = torch.sigmoid(logits[0, 0, :h, :w])
    pts = nms_keypoints(prob, radius, limit, threshold)
    d = sample_descriptors(desc[0], pts.float())
    score = prob[pts[:, 1], pts[:, 0]]
    return (pts.cpu().numpy().astype(np.float32), score.cpu().numpy(), d.cpu().numpy().astype(np.float32))


def save_keypoint_net(path: str | Path, net: KeypointNet, meta: dict) -> None:
    """Weights + config + `meta` (what it was trained on), written whole or not at all (fsutil.atomic_path)."""
    with atomic_path(path, fsync=True) as tmp:
        torch.save({"format": FORMAT, "config": asdict(net.config), "state": net.state_dict(), "meta": meta}, tmp)


def load_keypoint_net(path: str | Path) -> KeypointNet:
    """A network saved by save_keypoint_net; a ValueError names a file that is not one."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise ValueError(f"{path}: not a readable keypoint network ({exc.__class__.__name__}): pass a file "
                         "written by disam-train-keypoints") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a keypoint network ({FORMAT}): pass a file written by disam-train-keypoints")
    cfg = blob["config"]
    net = KeypointNet(KeypointConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}))
    net.load_state_dict(blob["state"])
    return net.eval()
