"""Scores of the depth branch on a held-out set: depth error and R@1 of appearance, depth and fused vectors.

Why one module for validation and evaluation: the fusion weight is *chosen* on the training world's validation
part and *reported* on the unseen town; both must compute exactly the same numbers, so both call these.

A condition is encoded once: eq. 16 appearance vectors a (their inner product is the coarse score), depth
descriptors of the hallucinated depth d (and of the true depth, an upper bound the branch could reach), and
the per-image abs. rel. error. Fused scores are w <a_q, a_db> + (1 - w) <d_q, d_db> (the inner product of
fused vectors, disam_ros.model.depth_branch), so a sweep over w costs two matrix products.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from disam_ros.data.depth import depth_path, read_depth
from disam_ros.model.depth import abs_rel_error, depth_descriptor
from disam_ros.model.depth_branch import DepthBranch
from disam_ros.model.related_losses import coarse_descriptor

from .evaluate import correct, evenly, load_images
from .layouts import DomainImages

CodeFn = Callable[[Tensor, str], Tensor]  # (B,3,S,S) in [-1, 1], domain -> content codes (B,C,h,w)


def load_depths(paths: Sequence[Path], size: int) -> Tensor:
    """(N,1,S,S) float32 metres of the images' depth files (nearest-neighbour resize keeps 0 = invalid);
    an image without a depth file gets an all-invalid map, which every loss and error leaves out."""
    out = torch.zeros(len(paths), 1, size, size)
    for i, p in enumerate(paths):
        dp = depth_path(p)
        if dp.is_file():
            d = torch.from_numpy(read_depth(dp))[None, None]
            out[i] = F.interpolate(d, size=(size, size), mode="nearest")[0] if d.shape[-1] != size else d[0]
    return out


@dataclass
class EncodedCondition:
    """One condition's vectors and depth error, in the order of `positions`."""

    name: str
    positions: np.ndarray
    appearance: Tensor  # (N, D) eq. 16 vectors
    depth: Tensor  # (N, g*g) descriptors of the hallucinated depth
    true_depth: Tensor  # (N, g*g) descriptors of the rendered depth (zeros where none)
    abs_rel: Tensor  # (N,) NaN where the image has no valid depth


def encode_condition(codes: CodeFn, branch: DepthBranch, dom: DomainImages, size: int, encoder_domain: str,
                     batch: int = 64) -> EncodedCondition:
    """Encode every image of `dom` with `encoder_domain`'s encoder and describe it (no gradients)."""
    parts: dict[str, list[Tensor]] = {"a": [], "d": [], "t": [], "e": []}
    for s in range(0, len(dom), batch):
        paths = dom.paths[s:s + batch]
        x, gt = load_images(paths, size), load_depths(paths, size)
        with torch.no_grad():
            z = codes(x, encoder_domain).float()
            pred = branch.depth(z, encoder_domain).cpu()
        parts["a"].append(coarse_descriptor(z).cpu())
        parts["d"].append(depth_descriptor(pred, branch.grid))
        parts["t"].append(depth_descriptor(gt, branch.grid))
        parts["e"].append(abs_rel_error(pred, gt))
    cat = {k: torch.cat(v) for k, v in parts.items()}
    return EncodedCondition(dom.name, np.asarray(dom.positions), cat["a"], cat["d"], cat["t"], cat["e"])


def merge_conditions(name: str, parts: Sequence[EncodedCondition]) -> EncodedCondition:
    """One database of several encoded parts (e.g. the reference's validation part plus its training part as
    distractors: 30 validation places alone make a weak descriptor look better than in a map of hundreds)."""
    return EncodedCondition(name, np.concatenate([p.positions for p in parts]),
                            *(torch.cat([getattr(p, k) for p in parts])
                              for k in ("appearance", "depth", "true_depth", "abs_rel")))


def domain_weights(rows: dict[str, dict[str, float]], weights: Sequence[float]) -> dict[str, float]:
    """{query condition: its own best weight} by choose_weight on that condition's row alone (ties to the
    larger w, 1 always a candidate): never below appearance on the validation queries of that condition."""
    return {n: choose_weight({n: r}, weights)[0] for n, r in rows.items() if r.get("queries")}


def recall_at_1(sim: Tensor, q_pos: np.ndarray, db_pos: np.ndarray, tol: float) -> float:
    """Fraction of queries (rows of sim) whose best database column lies within `tol` of their place."""
    return float(correct(sim.argmax(1)[:, None], q_pos, db_pos, tol).mean())


def select_queries(q: EncodedCondition, db: EncodedCondition, tol: float, max_queries: int) -> np.ndarray:
    """Queries whose place has a database image within `tol` (others cannot be right; as evaluate.scorable),
    evenly thinned to at most `max_queries` (0 = all)."""
    d = np.linalg.norm(q.positions[:, None] - db.positions[None], axis=-1).min(1)
    sel = np.flatnonzero(d <= tol + 1e-9)
    return sel[evenly(len(sel), max_queries)]


def condition_recalls(q: EncodedCondition, db: EncodedCondition, weights: Sequence[float], tol: float,
                      max_queries: int = 0) -> dict[str, float]:
    """R@1 within `tol` of: appearance, hallucinated depth, true depth, and fused at every weight `w` and at 1
    (keys `fused@w`; fused@1 equals appearance); `queries` = how many were scored."""
    sel = select_queries(q, db, tol, max_queries)
    if not len(sel):
        return {"queries": 0}
    pos = q.positions[sel]
    s_a = q.appearance[sel] @ db.appearance.T
    s_d = q.depth[sel] @ db.depth.T
    out = {"queries": int(len(sel)), "appearance": recall_at_1(s_a, pos, db.positions, tol),
           "depth": recall_at_1(s_d, pos, db.positions, tol),
           "true_depth": recall_at_1(q.true_depth[sel] @ db.true_depth.T, pos, db.positions, tol)}
    for w in sorted(set(float(w) for w in weights) | {1.0}):
        out[f"fused@{w:g}"] = recall_at_1(w * s_a + (1.0 - w) * s_d, pos, db.positions, tol)
    return out


def mean_abs_rel(c: EncodedCondition) -> float:
    """Mean abs. rel. error over the condition's images that have depth (NaN when none has)."""
    e = c.abs_rel[torch.isfinite(c.abs_rel)]
    return float(e.mean()) if len(e) else float("nan")


def choose_weight(rows: dict[str, dict[str, float]], weights: Sequence[float]) -> tuple[float, float]:
    """(w, its mean R@1 over the query conditions): the best mean; ties go to the larger w (closer to
    appearance only), and w = 1 is always a candidate, so the chosen fusion never scores below appearance
    on the data it is chosen on."""
    cands = sorted(set(float(w) for w in weights) | {1.0}, reverse=True)
    scored = [r for r in rows.values() if r.get("queries")]
    best_w, best = 1.0, -1.0
    for w in cands:
        key = f"fused@{w:g}"
        m = float(np.mean([r[key] for r in scored])) if scored else float("nan")
        if m > best + 1e-12:
            best_w, best = w, m
    return best_w, best
