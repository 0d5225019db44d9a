"""Dense gradient-histogram descriptors and a detector-free guided search: where a map keypoint lies in a query
image taken in rain, snow or fog, found without detecting keypoints in the query at all.

Why: across those conditions the query's SIFT keypoints are not where the map's are (on the development town, a
query keypoint lies within 3 px of a projected map keypoint no more often than chance in rain, snow and fog), so
no descriptor can match them. The descriptor itself still carries the place: computed at the right position it
picks out the true spot among all positions 32 px around it in 17-25 % of map points in rain and fog and 11 % in
snow (chance: 0.8 %; docs/pose.md). So every position of a coarse grid over the query image gets a descriptor,
and each map keypoint is looked for among the grid positions near where a candidate's pose projects it; RANSAC
sorts the many wrong finds from the right ones.

The descriptor has SIFT's layout (Lowe 2004): 4 x 4 cells of 8 orientation bins, each bin the gradient magnitude
soft-assigned by orientation and smoothed over a cell, Gaussian-weighted cells, L2-normalised, clipped at 0.2,
normalised again. Unlike SIFT it has one fixed scale (`cell` pixels a cell) and no dominant orientation (a camera
on a vehicle does not roll), which is what lets it be computed for every pixel at once from eight smoothed
channels: a descriptor is sixteen reads of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from disam_ros.pose.features import equalise, to_grey

BINS = 8
CELLS = 4
DIM = BINS * CELLS * CELLS  # 128, as SIFT
CLIP = 0.2
GRADIENT_CELL = 8  # pixels per cell at 640 px width: what maps are built with (the query must use the same)
WINDOW_FLOATS = 1 << 22  # similarities `search` holds at once (16 MB)
U8_SCALE = 1000.0  # stored as uint8: a unit descriptor clipped at 0.2 has entries <= ~0.25 (one byte to 0.255)


def cell_pixels(cell: int, width: int) -> int:
    """The cell size for an image `width` pixels wide: `cell` at 640 px, scaled with the width (the descriptor
    then spans the same angle of view in a map image and a query of another resolution), even and >= 2 (cell
    centres then fall on whole pixels, which lets a grid of descriptors be read by slicing)."""
    return max(2, 2 * round(cell * width / 1280.0))


def orientation_channels(grey: np.ndarray, cell: float) -> np.ndarray:
    """(8, H, W) float32: gradient magnitude soft-binned into 8 orientations (linear in angle), each channel
    smoothed with a Gaussian of half a cell. A grey uint8 or float image (H, W) in."""
    g = np.asarray(grey, np.float32)
    if g.ndim != 2 or g.shape[0] < 3 or g.shape[1] < 3:
        raise ValueError(f"gradient descriptors need a grey (H,W) image of at least 3x3, got shape {g.shape}")
    g = cv2.GaussianBlur(g, (0, 0), cell / 8.0)  # 1 px at the 8 px cell of 640 px images, scaled with the cell
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=1)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=1)
    mag, ang = cv2.cartToPolar(gx, gy)
    pos = ang * np.float32(BINS / (2 * np.pi))  # [0, 8): bin o is centred on o
    out = np.empty((BINS,) + g.shape, np.float32)
    for o in range(BINS):
        d = np.abs(pos - np.float32(o))
        np.minimum(d, np.float32(BINS) - d, out=d)  # circular distance in bins
        np.maximum(np.float32(1.0) - d, np.float32(0.0), out=d)
        np.multiply(d, mag, out=d)
        out[o] = cv2.GaussianBlur(d, (0, 0), 0.5 * cell)
    return out


def _cell_offsets(cell: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x and y offsets of the 16 cell centres (row-major over y, then x) and their Gaussian weights."""
    c = (np.arange(CELLS) - (CELLS - 1) / 2.0) * cell
    ox, oy = np.tile(c, CELLS), np.repeat(c, CELLS)
    weight = np.exp(-(ox ** 2 + oy ** 2) / (2.0 * (0.5 * CELLS * cell) ** 2)).astype(np.float32)
    return ox, oy, weight


def normalise(d: np.ndarray) -> np.ndarray:
    """SIFT's normalisation: unit length, entries clipped at 0.2, unit length again (rows of zeros stay zero)."""
    d = np.array(d, np.float32)
    np.divide(d, np.maximum(np.sqrt(np.einsum("...i,...i->...", d, d))[..., None], np.float32(1e-12)), out=d)
    np.minimum(d, np.float32(CLIP), out=d)
    np.divide(d, np.maximum(np.sqrt(np.einsum("...i,...i->...", d, d))[..., None], np.float32(1e-12)), out=d)
    return d


def describe(channels: np.ndarray, xy: np.ndarray, cell: float) -> np.ndarray:
    """(N, 128) unit descriptors at (N, 2) pixel positions (x, y; bilinear between pixels; positions whose cells
    leave the image read its border). Layout: cell-major (16 cells row by row), 8 bins each."""
    ch = np.asarray(channels, np.float32)
    _, h, w = ch.shape
    p = np.asarray(xy, np.float64).reshape(-1, 2)
    ox, oy, weight = _cell_offsets(cell)
    cx = np.clip(p[:, :1] + ox[None], 0, w - 1)
    cy = np.clip(p[:, 1:] + oy[None], 0, h - 1)
    v = _read_whole(ch, cx, cy) if _whole(cx) and _whole(cy) else _read_bilinear(ch, cx, cy)  # (8, N, 16)
    return normalise((v * weight).transpose(1, 2, 0).reshape(len(p), DIM))


def _whole(c: np.ndarray) -> bool:
    return bool(np.all(c == np.floor(c)))


def _read_whole(ch: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """The channels at whole-pixel positions: what `_read_bilinear` gives there to the bit (one of its four weights
    is 1, the rest 0), for a quarter of its reads. Why: the dense search refines its finds over whole-pixel
    windows around grid positions, and those reads were a fifth of a dark keyframe's time."""
    return ch[:, cy.astype(np.int64), cx.astype(np.int64)]


def _read_bilinear(ch: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    _, h, w = ch.shape
    x0 = np.minimum(np.floor(cx).astype(np.int64), w - 2)
    y0 = np.minimum(np.floor(cy).astype(np.int64), h - 2)
    fx, fy = (cx - x0).astype(np.float32), (cy - y0).astype(np.float32)
    return (ch[:, y0, x0] * ((1 - fx) * (1 - fy)) + ch[:, y0, x0 + 1] * (fx * (1 - fy))
            + ch[:, y0 + 1, x0] * ((1 - fx) * fy) + ch[:, y0 + 1, x0 + 1] * (fx * fy))


@dataclass(frozen=True)
class DescriptorGrid:
    """Descriptors at every `stride`-th pixel of an image, away from its border by the descriptor's reach:
    positions (ny, nx, 2) float32 (x, y) and descriptors (ny, nx, 128) float32."""

    positions: np.ndarray
    descriptors: np.ndarray
    stride: int

    @property
    def origin(self) -> np.ndarray:
        return self.positions[0, 0]


def describe_grid(channels: np.ndarray, cell: int, stride: int) -> DescriptorGrid:
    """The descriptors of a regular grid, read by slicing the channels (cell centres fall on whole pixels for an
    even `cell`): the same values `describe` gives at those positions, at a fraction of the cost."""
    if cell % 2 or cell < 2 or stride < 1:
        raise ValueError(f"describe_grid needs an even cell >= 2 and a stride >= 1, got cell={cell}, stride={stride}")
    ch = np.asarray(channels, np.float32)
    _, h, w = ch.shape
    reach = (3 * cell) // 2
    xs, ys = np.arange(reach, w - reach, stride), np.arange(reach, h - reach, stride)
    if len(xs) == 0 or len(ys) == 0:
        raise ValueError(f"an image of {w}x{h} is too small for descriptors of cell {cell} (reach {reach} px)")
    ox, oy, weight = _cell_offsets(cell)
    hw = ch.transpose(1, 2, 0)  # (H, W, 8) view: each slice below copies whole descriptors' bins at once
    d = np.empty((len(ys), len(xs), CELLS * CELLS, BINS), np.float32)
    for c, (dx, dy) in enumerate(zip(ox, oy)):
        np.multiply(hw[ys[0] + int(dy): ys[-1] + int(dy) + 1: stride, xs[0] + int(dx): xs[-1] + int(dx) + 1: stride],
                    weight[c], out=d[:, :, c])
    d = normalise(d.reshape(len(ys), len(xs), DIM))
    gx, gy = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
    return DescriptorGrid(np.stack([gx, gy], -1), d, stride)


def search(map_desc: np.ndarray, predicted: np.ndarray, grid: DescriptorGrid, radius: float, apart: int = 2
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each map descriptor, the grid position within `radius` px (a square window) of its predicted position
    whose descriptor is most similar (largest dot product), that similarity, and the best similarity at least
    `apart` grid steps (along x or y) from it: the runner-up a ratio test compares with. Returns (N, 2) positions
    (NaN where no grid position is that near, or the prediction is not finite), (N,) best and (N,) runner-up
    similarities (-inf where there is none)."""
    md = np.asarray(map_desc, np.float32)
    pred = np.asarray(predicted, np.float64).reshape(-1, 2)
    pos = np.full((len(md), 2), np.nan, np.float32)
    best = np.full(len(md), -np.inf, np.float32)
    second = np.full(len(md), -np.inf, np.float32)
    ny, nx = grid.descriptors.shape[:2]
    x0, y0 = (float(v) for v in grid.origin)
    with np.errstate(invalid="ignore"):
        lo = np.ceil((pred - [x0, y0] - radius) / grid.stride)
        hi = np.floor((pred - [x0, y0] + radius) / grid.stride)
    ok = np.isfinite(lo).all(axis=1) & np.isfinite(hi).all(axis=1)
    lo, hi = np.where(ok[:, None], lo, 0).astype(np.int64), np.where(ok[:, None], hi, -1).astype(np.int64)
    c0, r0 = np.maximum(lo[:, 0], 0), np.maximum(lo[:, 1], 0)
    c1, r1 = np.minimum(hi[:, 0], nx - 1), np.minimum(hi[:, 1], ny - 1)
    idx = np.flatnonzero(ok & (c1 >= c0) & (r1 >= r0))
    if len(idx) == 0:
        return pos, best, second
    size = int((r1[idx] - r0[idx]).max() + 1) * int((c1[idx] - c0[idx]).max() + 1)
    step = max(1, WINDOW_FLOATS // size)  # windows scored at once: bounded memory whatever the radius
    for part in (idx[k:k + step] for k in range(0, len(idx), step)):
        r, c, best[part], second[part] = _window_peaks(grid.descriptors, md, part, r0[part], r1[part] + 1, c0[part],
                                                       c1[part] + 1, apart)
        pos[part] = grid.positions[r0[part] + r, c0[part] + c]
    return pos, best, second


def _window_peaks(g: np.ndarray, md: np.ndarray, idx: np.ndarray, r0: np.ndarray, r1: np.ndarray, c0: np.ndarray,
                  c1: np.ndarray, apart: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`search` for map descriptors `idx`, each over grid rows r0:r1 and columns c0:c1: the best cell (row, column
    within the window, the first in row-major order among equals), its similarity, and the best at least `apart`
    cells from it. The windows are scored one by one (a matrix-vector product each) into one array padded with
    -inf, and everything after is done for all of them at once: the per-window bookkeeping in Python cost as much
    as the products."""
    s = np.full((len(idx), int((r1 - r0).max()), int((c1 - c0).max())), -np.inf, np.float32)
    for j, (i, a, b, e, f) in enumerate(zip(idx.tolist(), r0.tolist(), r1.tolist(), c0.tolist(), c1.tolist())):
        s[j, :b - a, :f - e] = g[a:b, e:f] @ md[i]
    r, c = np.divmod(np.argmax(s.reshape(len(idx), -1), axis=1), s.shape[2])
    top = s[np.arange(len(idx)), r, c]
    near = (np.abs(np.arange(s.shape[1])[None, :, None] - r[:, None, None]) < apart) \
        & (np.abs(np.arange(s.shape[2])[None, None, :] - c[:, None, None]) < apart)
    s[near] = -np.inf
    return r, c, top, s.reshape(len(idx), -1).max(axis=1)


def refine(channels: np.ndarray, map_desc: np.ndarray, xy: np.ndarray, cell: float, reach: int) -> np.ndarray:
    """Each position moved to the most similar pixel within `reach` px (a square), then to the sub-pixel peak of
    a parabola through that pixel's neighbours along x and along y. Why: the grid places a match only to
    within half its stride; the pose wants better."""
    p = np.asarray(xy, np.float64).reshape(-1, 2)
    if len(p) == 0:
        return p
    r = np.arange(-reach, reach + 1)
    offs = np.stack(np.meshgrid(r, r), -1).reshape(-1, 2).astype(np.float64)  # row-major over y, then x
    n, k = len(p), len(offs)
    d = describe(channels, (p[:, None, :] + offs[None]).reshape(-1, 2), cell).reshape(n, k, DIM)
    s = np.einsum("nd,nkd->nk", np.asarray(map_desc, np.float32), d).reshape(n, len(r), len(r))
    iy, ix = np.unravel_index(np.argmax(s.reshape(n, -1), axis=1), (len(r), len(r)))
    rows = np.arange(n)
    out = p + np.stack([r[ix], r[iy]], 1)
    for axis, i, other in ((0, ix, iy), (1, iy, ix)):
        inner = (i > 0) & (i < len(r) - 1)
        a = np.where(inner, i - 1, i)
        b = np.where(inner, i + 1, i)
        if axis == 0:
            sm, s0, sp = s[rows, other, a], s[rows, other, i], s[rows, other, b]
        else:
            sm, s0, sp = s[rows, a, other], s[rows, i, other], s[rows, b, other]
        curv = sm - 2 * s0 + sp
        shift = np.where(inner & (curv < 0), 0.5 * (sm - sp) / np.where(curv < 0, curv, -1.0), 0.0)
        out[:, axis] += np.clip(shift, -0.5, 0.5)
    return out


def to_u8(desc: np.ndarray) -> np.ndarray:
    """Unit descriptors as a map stores them: x 1000, rounded, uint8 (entries <= 0.255)."""
    return np.clip(np.rint(np.asarray(desc, np.float32) * U8_SCALE), 0, 255).astype(np.uint8)


def from_u8(desc: np.ndarray) -> np.ndarray:
    """The inverse of `to_u8`, renormalised to unit length."""
    d = np.asarray(desc, np.float32) / U8_SCALE
    return d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)


MAX_SIDE = 1024  # descriptors are computed on the image shrunk to at most this many pixels along its longer side


def working_scale(width: int, height: int, max_side: int = MAX_SIDE) -> float:
    """The factor an image is shrunk by before its descriptors are computed (1 up to `max_side`). Why: the
    channels hold eight floats per pixel (a 12 MP photograph: 380 MB) and the descriptor's fixed scale is about
    the image's angle of view, not its pixel count."""
    return min(1.0, max_side / max(width, height))


def to_working(xy: np.ndarray, factor: float) -> np.ndarray:
    """Pixel positions (OpenCV centres) of the original image -> of the image resized by `factor`."""
    return (np.asarray(xy, np.float64) + 0.5) * factor - 0.5


def from_working(xy: np.ndarray, factor: float) -> np.ndarray:
    """The inverse of `to_working`."""
    return (np.asarray(xy, np.float64) + 0.5) / factor - 0.5


def prepared_grey(image: np.ndarray, max_side: int = MAX_SIDE) -> tuple[np.ndarray, float]:
    """The grey image descriptors are computed on, map and query alike: shrunk to `working_scale` and local
    contrast equalised (CLAHE, which lifts the faint gradients of fog, dusk and night as it does for SIFT);
    returns it and the factor."""
    grey = to_grey(image)
    h, w = grey.shape
    f = working_scale(w, h, max_side)
    if f < 1.0:
        grey = cv2.resize(grey, (max(3, round(w * f)), max(3, round(h * f))), interpolation=cv2.INTER_AREA)
        f = grey.shape[1] / w
    return equalise(grey), f


def keypoint_descriptors(image: np.ndarray, keypoints: np.ndarray, cell: int) -> np.ndarray:
    """(N, 128) uint8 descriptors (`to_u8`) of an image's keypoints, at the cell size for its working width
    (`cell` at 640 px): what a map stores per keypoint for the dense search."""
    grey, f = prepared_grey(image)
    c = cell_pixels(cell, grey.shape[1])
    xy = to_working(np.asarray(keypoints, np.float64).reshape(-1, 2), f)
    return to_u8(describe(orientation_channels(grey, c), xy, c))
