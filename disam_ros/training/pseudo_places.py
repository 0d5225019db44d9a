"""Places for the other conditions' images without their poses: pseudo-positives from the start's own retrieval.

Why: the unpaired DISAM losses never say which images show the same place, and at small scale they erase the
place structure the untrained start already has (docs/training.md, ablation). The supervised losses fix that but
need every condition's poses, and on a vehicle only the map drive usually has them. The start descriptor already
retrieves the right place for most query images, and a vehicle's images come in route order; so each query image
of the training segment is matched to its nearest reference image (eq. 16 of the start encoders), and the match
is kept only when it is mutual and agrees with the matches of the frames around it (the route moves smoothly).
Kept images take the reference image's place; the rest are left out of training. The query conditions' own poses
are never read (they are replaced before training sees them); when they exist, the report scores the labels.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .layouts import DomainImages

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PseudoPlaces:
    """Per query image kept: its index in the condition's training list and the place it was given."""

    kept: np.ndarray  # (M,) int64 indices into the condition's training images
    positions: np.ndarray  # (M, P) the matched reference images' places
    matched: np.ndarray  # (M,) int64 indices of the matched reference images


def consistent_matches(sim: Tensor, ref_positions: np.ndarray, window: int, tolerance: float) -> np.ndarray:
    """(N,) bool: query rows of `sim` (N queries x R reference images) whose nearest reference image is mutual
    (the query is also that image's nearest query) and lies within `tolerance` of the median place matched by the
    queries [i - window, i + window] around it (route order)."""
    nn = sim.argmax(1).numpy()
    back = sim.argmax(0).numpy()
    mutual = back[nn] == np.arange(len(nn))
    place = ref_positions[nn]
    keep = np.zeros(len(nn), bool)
    for i in range(len(nn)):
        lo, hi = max(0, i - window), min(len(nn), i + window + 1)
        med = np.median(place[lo:hi], axis=0)
        keep[i] = mutual[i] and np.linalg.norm(place[i] - med) <= tolerance
    return keep


def pseudo_places(sim: Tensor, ref_positions: np.ndarray, window: int, tolerance: float) -> PseudoPlaces:
    keep = consistent_matches(sim, ref_positions, window, tolerance)
    nn = sim.argmax(1).numpy()
    kept = np.flatnonzero(keep).astype(np.int64)
    return PseudoPlaces(kept, ref_positions[nn[kept]], nn[kept].astype(np.int64))


def relabel(domain: DomainImages, labels: PseudoPlaces, true_radius: float | None = None) -> tuple[DomainImages, dict]:
    """The condition's kept training images with their pseudo places, and a report (kept count; where the
    condition has places of its own, the fraction of labels within `true_radius` of them, for the log only)."""
    out = DomainImages(domain.name, tuple(domain.paths[i] for i in labels.kept), labels.positions.copy())
    report: dict = {"images": len(domain), "kept": len(labels.kept)}
    if domain.positions is not None and true_radius is not None and len(labels.kept):
        err = np.linalg.norm(domain.positions[labels.kept] - labels.positions, axis=1)
        report["right"] = float(np.mean(err <= true_radius))
    return out, report


def to_plain(labels: dict[str, PseudoPlaces]) -> dict[str, dict[str, Tensor]]:
    return {k: {"kept": torch.from_numpy(v.kept), "positions": torch.from_numpy(v.positions),
                "matched": torch.from_numpy(v.matched)} for k, v in labels.items()}


def from_plain(plain: dict[str, dict[str, Tensor]]) -> dict[str, PseudoPlaces]:
    return {k: PseudoPlaces(v["kept"].numpy().astype(np.int64), v["positions"].numpy(),
                            v["matched"].numpy().astype(np.int64)) for k, v in plain.items()}


def label_conditions(desc: list[Tensor], train: tuple[DomainImages, ...], ref: int, window: int,
                     tolerance: float) -> dict[str, PseudoPlaces]:
    """Pseudo places for every condition but the reference `ref`, from each one's descriptors `desc[k]`."""
    if train[ref].positions is None:
        raise ValueError(f"supervised.pseudo needs places for the reference condition {train[ref].name!r}: "
                         "give it poses (folders layout) or use the flat layout")
    return {train[k].name: pseudo_places(desc[k] @ desc[ref].T, train[ref].positions, window, tolerance)
            for k in range(len(train)) if k != ref}


def relabel_all(train: tuple[DomainImages, ...], labels: dict[str, PseudoPlaces],
                true_radius: float) -> tuple[tuple[DomainImages, ...], dict[str, dict]]:
    """`relabel` for every labelled condition; one-line error when a condition keeps fewer than 2 images."""
    out, reports = list(train), {}
    for k, dom in enumerate(train):
        if dom.name not in labels:
            continue
        out[k], reports[dom.name] = relabel(dom, labels[dom.name], true_radius)
        if len(out[k]) < 2:
            raise ValueError(f"supervised.pseudo kept {len(out[k])} training image(s) of {dom.name!r}: raise "
                             "supervised.pseudo_tolerance or lower supervised.pseudo_window")
    return tuple(out), reports
