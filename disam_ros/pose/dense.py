"""Dense cross-condition correspondences from the DISAM encoders' content codes.

Why: SIFT needs the same gradients in both images, and night, fog and snow change them; the DISAM content code
is trained to be the same for the same place under any condition (FCL, eq. 12; Grad-SAM, eqs. 16-19), so its
per-location vectors are candidate descriptors for matching a query to its map image across conditions. They
are coarse (one vector per stride x stride block of the resized model input), so the matches are located to
a cell, with an optional sub-cell refinement; the solver's inlier threshold must allow for that.

Method: encode the query under its condition's domain and the map image under the reference domain, with the
same model; L2-normalise every location's C-vector; mutual nearest neighbours between the two (h*w) grids by
cosine (above an optional floor); optionally refine the map side by a soft-argmax of the similarity over the
matched cell's 3x3 neighbourhood; optionally keep the matches whose Grad-SAM activations (eq. 18: where the
similarity of the two codes comes from) are in the top fraction.

Cell -> pixel: every stride-2 convolution of the encoder is 3x3 with padding 1 (model/networks.py), so output j
looks at inputs 2j-1..2j+1 and is centred on input 2j; the 7x7 stem and the residual blocks are reflection
padded and keep the grid. Cell j is thus centred on model pixel stride * j (+ RECEPTIVE_OFFSET = 0), *not* on
the middle of its block (stride * j + (stride - 1) / 2; test/test_pose_dense.py checks it on a real encoder
with autograd). The model input is the whole image resized to S x S (model/preprocess.py: no crop, aspect not
kept, cv2.resize with pixel centres aligned), so model pixel m maps to image pixel (m + 0.5) * W / S - 0.5 in x
and (m + 0.5) * H / S - 0.5 in y (OpenCV's convention, centre of the top-left pixel = (0, 0)).

Measured (pose/match_eval.py; synthetic world, ground-truth map image, 320x240 and 640x480): on their own dense
matches give (5 m, 10 deg) poses where SIFT gives none (overcast, dusk, fog, rain), but hardly ever (0.25 m,
2 deg): a match is only as good as its cell (median errors 0.5-1 m). Their use is as a rough pose that guides
SIFT matching. The shipped 64 px demo weights did no better than an untrained encoder of the same shape, and
worse at night and in snow; an encoder run at twice its training size (a finer grid) did better than at it.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from disam_ros.model import DisamNet, Encoder, EncoderLike, ModelConfig
from disam_ros.model.checkpoint import encoder_state, read_checkpoint
from disam_ros.model.gradsam import gradsam_map, gradsam_weights
from disam_ros.model.networks import build_encoder

RECEPTIVE_OFFSET = 0.0  # model pixels: centre of cell 0's receptive field (see the module docstring)


@dataclass(frozen=True)
class DenseConfig:
    """min_similarity: cosine floor of a mutual match (-1 keeps all). refine: sub-cell soft-argmax on the map
    side; temperature: its softmax temperature on cosines (small = sharp). gradsam_keep: fraction of matches
    kept, best Grad-SAM activation first (1 = no filter). max_matches: keep the most similar ones (0 = all).
    max_offset: a match may move at most this fraction of the grid's width (height) between the images (0 = any):
    retrieval hands over a map image of nearly the query's viewpoint, so far-flung pairs are wrong."""

    min_similarity: float = 0.0
    refine: bool = True
    temperature: float = 0.05
    gradsam_keep: float = 1.0
    max_matches: int = 0
    max_offset: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.min_similarity) and -1.0 <= self.min_similarity < 1.0):
            raise ValueError(f"DenseConfig.min_similarity={self.min_similarity!r} must be in [-1, 1)")
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"DenseConfig.temperature={self.temperature!r} must be finite and > 0")
        if not 0.0 < self.gradsam_keep <= 1.0:
            raise ValueError(f"DenseConfig.gradsam_keep={self.gradsam_keep!r} must be in (0, 1]")
        if not (np.isfinite(self.max_offset) and self.max_offset >= 0):
            raise ValueError(f"DenseConfig.max_offset={self.max_offset!r} must be >= 0 (0 = no limit)")
        if self.max_matches < 0:
            raise ValueError(f"DenseConfig.max_matches={self.max_matches!r} must be >= 0 (0 = all)")


@dataclass(frozen=True)
class DenseMatches:
    """query_px, map_px: (M,2) float64 image pixels; scores: (M,) cosine of each match; query_cells, map_cells:
    (M,) flat cell indices (row * w + col) into the (h, w) grids; cell_px: the size of one cell in image pixels
    (x, y), i.e. how far off a match may be (the solver's threshold should allow about half of it)."""

    query_px: np.ndarray
    map_px: np.ndarray
    scores: np.ndarray
    query_cells: np.ndarray
    map_cells: np.ndarray
    cell_px: tuple[float, float]

    def __len__(self) -> int:
        return len(self.scores)


def _code(z: Tensor | np.ndarray) -> Tensor:
    t = torch.as_tensor(z).detach().float().cpu()
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3 or min(t.shape) < 1:
        raise ValueError(f"dense matching needs one content code (C,h,w) or (1,C,h,w), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("dense matching got a content code with NaN/inf: check the encoder and its input")
    return t


def normalise_cells(z: Tensor | np.ndarray) -> Tensor:
    """(C,h,w) content code -> (h*w, C) unit vectors, row-major cells (index = row * w + col)."""
    t = _code(z)
    f = t.flatten(1).T
    return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)


def offset_mask(grid_hw: tuple[int, int], max_offset: float) -> Tensor:
    """(h*w, h*w) bool, True where a map cell is farther than max_offset x the grid side (per axis) from the
    query cell: the pairs a retrieved map image of nearly the same viewpoint cannot hold."""
    h, w = grid_hw
    yy, xx = torch.div(torch.arange(h * w), w, rounding_mode="floor"), torch.arange(h * w) % w
    return ((xx[:, None] - xx[None]).abs() > max_offset * w) | ((yy[:, None] - yy[None]).abs() > max_offset * h)


def mutual_nearest(fq: Tensor, fm: Tensor, min_similarity: float = -1.0,
                   forbidden: Tensor | None = None) -> tuple[np.ndarray, np.ndarray, Tensor]:
    """Mutual nearest neighbours of unit rows fq (Nq,C) and fm (Nm,C) by cosine: (pairs (M,2) int64 [i, j],
    scores (M,), the similarity matrix (Nq,Nm), -inf where `forbidden`). Ties go to the lowest index
    (torch.max), so it is deterministic."""
    sim = fq @ fm.T
    if forbidden is not None:
        sim = sim.masked_fill(forbidden, float("-inf"))
    best_m, j = sim.max(dim=1)
    i_back = sim.argmax(dim=0)
    i = torch.arange(len(fq))
    keep = (i_back[j] == i) & (best_m >= min_similarity)
    pairs = torch.stack([i[keep], j[keep]], 1).numpy().astype(np.int64)
    return pairs, best_m[keep].numpy().astype(np.float64), sim


def soft_argmax_refine(sim: Tensor, pairs: np.ndarray, grid_hw: tuple[int, int], temperature: float) -> np.ndarray:
    """Sub-cell map positions (M,2) (x = col, y = row, in cells) of the matches: the softmax(sim / T)-weighted
    mean position over the matched map cell's 3x3 neighbourhood (cells off the grid get no weight)."""
    h, w = grid_hw
    if len(pairs) == 0:
        return np.zeros((0, 2))
    rows = sim[torch.as_tensor(pairs[:, 0])].reshape(-1, h, w)  # each query cell's similarity to the map grid
    padded = torch.nn.functional.pad(rows, (1, 1, 1, 1), value=float("-inf"))
    r0, c0 = torch.as_tensor(pairs[:, 1] // w), torch.as_tensor(pairs[:, 1] % w)
    dy, dx = torch.meshgrid(torch.arange(-1, 2), torch.arange(-1, 2), indexing="ij")
    dy, dx = dy.reshape(-1), dx.reshape(-1)
    m = torch.arange(len(pairs))[:, None]
    vals = padded[m, r0[:, None] + 1 + dy, c0[:, None] + 1 + dx]  # (M, 9)
    wts = torch.softmax(vals / temperature, dim=1)
    x = c0.double() + (wts.double() * dx.double()).sum(1)
    y = r0.double() + (wts.double() * dy.double()).sum(1)
    return torch.stack([x, y], 1).numpy()


def cells_to_pixels(cells_xy: np.ndarray, grid_hw: tuple[int, int], model_size: int,
                    image_wh: tuple[int, int]) -> np.ndarray:
    """Cell coordinates (M,2) (x = col, y = row; fractional after refinement) -> image pixels (M,2).

    stride = model_size / grid side; model pixel = stride * cell + RECEPTIVE_OFFSET; image pixel =
    (model + 0.5) * image side / model_size - 0.5 (preprocess.py resizes the whole image to model_size^2)."""
    h, w = grid_hw
    if model_size % h or model_size % w:
        raise ValueError(f"feature grid {h}x{w} does not divide the model input {model_size}: pass the encoder's "
                         "config.image_size and the code's (h, w)")
    c = np.asarray(cells_xy, np.float64).reshape(-1, 2)
    model = c * np.array([model_size / w, model_size / h]) + RECEPTIVE_OFFSET
    return (model + 0.5) * (np.array(image_wh, np.float64) / model_size) - 0.5


def gradsam_activations(zq: Tensor | np.ndarray, zm: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grad-SAM maps of the query code given the map code as reference and vice versa (eq. 18), flattened
    row-major and scaled to [0, 1] by their maxima (a map of zeros stays zero)."""
    a, b = _code(zq)[None], _code(zm)[None]
    out = []
    for x, y in ((a, b), (b, a)):
        m = gradsam_map(x, gradsam_weights(x, y))[0].flatten().numpy().astype(np.float64)
        out.append(m / m.max() if m.max() > 0 else m)
    return out[0], out[1]


def match_codes(zq: Tensor | np.ndarray, zm: Tensor | np.ndarray, config: DenseConfig | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Matches between two content codes of the same shape: (query cell xy (M,2), map cell xy (M,2), scores
    (M,), pairs (M,2) flat indices), best score first."""
    config = config or DenseConfig()
    a, b = _code(zq), _code(zm)
    if a.shape != b.shape:
        raise ValueError(f"dense matching needs codes of one model and input size, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    h, w = a.shape[1:]
    forbidden = offset_mask((h, w), config.max_offset) if config.max_offset > 0 else None
    pairs, scores, sim = mutual_nearest(normalise_cells(a), normalise_cells(b), config.min_similarity, forbidden)
    if config.gradsam_keep < 1.0 and len(pairs):
        act_q, act_m = gradsam_activations(a, b)
        act = np.sqrt(act_q[pairs[:, 0]] * act_m[pairs[:, 1]])
        n_keep = max(1, int(round(config.gradsam_keep * len(pairs))))
        keep = np.sort(np.argsort(-act, kind="stable")[:n_keep])
        pairs, scores = pairs[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    if config.max_matches:
        order = order[:config.max_matches]
    pairs, scores = pairs[order], scores[order]
    q_xy = np.stack([pairs[:, 0] % w, pairs[:, 0] // w], 1).astype(np.float64)
    if config.refine:
        m_xy = soft_argmax_refine(sim, pairs, (h, w), config.temperature)
    else:
        m_xy = np.stack([pairs[:, 1] % w, pairs[:, 1] // w], 1).astype(np.float64)
    return q_xy, m_xy, scores, pairs


def dense_matches(encoder: EncoderLike, query_image: np.ndarray, query_domain: str, map_image: np.ndarray,
                  map_domain: str, config: DenseConfig | None = None, map_code: Tensor | None = None) -> DenseMatches:
    """Dense correspondences between a query image (its condition's domain) and a map image (the reference
    domain), in each image's own pixels. `map_code` skips encoding the map image (codes stored or cached)."""
    zq = encoder.encode(query_image, query_domain)[0]
    zm = encoder.encode(map_image, map_domain)[0] if map_code is None else map_code
    size = int(encoder.config.image_size)
    q_xy, m_xy, scores, pairs = match_codes(zq, zm, config)
    h, w = _code(zq).shape[1:]
    qh, qw = query_image.shape[:2]
    mh, mw = map_image.shape[:2]
    return DenseMatches(query_px=cells_to_pixels(q_xy, (h, w), size, (qw, qh)),
                        map_px=cells_to_pixels(m_xy, (h, w), size, (mw, mh)),
                        scores=scores, query_cells=pairs[:, 0], map_cells=pairs[:, 1],
                        cell_px=(qw / w, qh / h))


def load_encoder(path: str | os.PathLike, image_size: int | None = None, device: str = "cpu") -> Encoder:
    """A checkpoint's encoders, optionally run at another input size than trained (`image_size`, a multiple of
    the stride): the encoder is fully convolutional, so a larger input gives a finer grid of codes, which is
    what dense matching wants; whether the codes stay condition-invariant at that scale is for experiments."""
    state, cfg, meta = read_checkpoint(path, map_location="cpu")
    if image_size is not None:
        cfg = dataclasses.replace(cfg, image_size=int(image_size))
    encoders = {}
    for d in cfg.domains:
        with torch.device("meta"):  # no random init of weights about to be replaced (as Encoder.from_checkpoint)
            enc = build_encoder(cfg)
        enc.load_state_dict(encoder_state(state, d), strict=True, assign=True)
        encoders[d] = enc
    return Encoder(encoders, cfg, device=device, checkpoint_sha256=meta["sha256"])


def untrained_encoder(config: ModelConfig, seed: int = 0, device: str = "cpu") -> Encoder:
    """The baseline beside a trained model: one randomly initialised encoder of the same shape shared by every
    domain (as training/evaluate.py's "untrained encoder"), so query and map codes come from one random CNN."""
    torch.manual_seed(seed)
    enc = DisamNet(config).encoders[config.domains[0]]
    return Encoder({d: enc for d in config.domains}, config, device=device)
