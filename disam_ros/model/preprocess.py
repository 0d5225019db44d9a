"""Image -> model input: (B, 3, S, S) float32 in [-1, 1].

At test time the paper scales images directly to 256x256 (no crop, aspect ratio not kept, Sec. V-A);
we do the same, with INTER_AREA when shrinking (no aliasing) and bilinear when enlarging.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ImageInput = np.ndarray | Sequence[np.ndarray] | Tensor
_RANGE_TOL = 1e-3


def to_model_input(images: ImageInput, size: int) -> Tensor:
    """Accepts uint8 RGB HxWx3 / BxHxWx3 arrays (or a list of HxWx3 of any sizes), or a float tensor
    (3,H,W) / (B,3,H,W) already in [-1, 1]. Numpy input comes back on the CPU; tensors stay on their device.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}: pass ModelConfig.image_size")
    if isinstance(images, Tensor):
        return _from_tensor(images, size)
    if isinstance(images, np.ndarray):
        arrays = [images] if images.ndim == 3 else _split_batch(images)
    elif isinstance(images, Sequence) and not isinstance(images, str | bytes):
        arrays = list(images)
        if not arrays:
            raise ValueError("empty image list: pass at least one HxWx3 uint8 image")
    else:
        raise ValueError(
            f"unsupported image input {type(images).__name__}: pass uint8 HxWx3 RGB numpy arrays or a float "
            "tensor in [-1, 1]"
        )
    batch = np.stack([_resize(_check_array(a), size) for a in arrays])
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    return x.div_(127.5).sub_(1.0).contiguous()


def _split_batch(images: np.ndarray) -> list[np.ndarray]:
    if images.ndim != 4:
        raise ValueError(
            f"image array has {images.ndim} dims (shape {images.shape}): expected HxWx3 or BxHxWx3 RGB uint8"
        )
    if images.shape[0] == 0:
        raise ValueError("empty image batch (B=0): pass at least one image")
    return list(images)


def _check_array(a: np.ndarray) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise ValueError(f"image is a {type(a).__name__}, not a numpy array: pass uint8 HxWx3 RGB arrays")
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(
            f"image has shape {a.shape}: expected HxWx3 RGB (convert grayscale/RGBA first, e.g. with cv2.cvtColor)"
        )
    if a.dtype != np.uint8:
        raise ValueError(
            f"image dtype is {a.dtype}, expected uint8: scale to 0..255 uint8, or pass a float tensor in [-1, 1]"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"image is empty (shape {a.shape}): check the decoder or camera driver")
    return a


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    h, w = a.shape[:2]
    if (h, w) == (size, size):
        return a
    interp = cv2.INTER_AREA if h * w > size * size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(a), (size, size), interpolation=interp)


def _from_tensor(x: Tensor, size: int) -> Tensor:
    if not x.is_floating_point():
        raise ValueError(
            f"tensor dtype is {x.dtype}: tensors must be float in [-1, 1] (pass uint8 images as numpy HxWx3)"
        )
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"tensor has shape {tuple(x.shape)}: expected (3,H,W) or (B,3,H,W) channels-first RGB")
    if x.numel() == 0:
        raise ValueError(f"tensor is empty (shape {tuple(x.shape)}): pass at least one image")
    lo, hi = x.aminmax()
    if not (torch.isfinite(lo) and torch.isfinite(hi)) or lo < -1 - _RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise ValueError(
            f"tensor values span [{lo.item():.3g}, {hi.item():.3g}], outside the model range [-1, 1]: "
            "use x / 127.5 - 1 for 0..255 data"
        )
    x = x.float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.contiguous()
