"""Places for the other conditions' images without their poses: pseudo-positives from the start's own retrieval.

Why: the unpaired DISAM losses never say which images show the same place, and at small scale they erase the
place structure the untrained start already has (docs/training.md, ablation). The supervised losses fix that but
need every condition's poses, and on a vehicle only the map drive usually has them. The start descriptor already
retrieves the right place for most query images, and a vehicle's images come in route order; so each query image
of the training segment is matched to its nearest reference image (eq. 16 of the start encoders), and the match
is kept only when it is mutual and agrees with the matches of the frames around it (the route moves smoothly).
With `match="route"` the single-frame match is replaced by two sequence matches (route_matches): the window of
frames ending at the image and the window starting at it are each slid along the reference drive at a few speed
ratios, and the image is kept when both windows put it at the same place. Two mostly independent pieces of
evidence agreeing keeps far more images than the strict mutual test, at a similar precision (docs/training.md).
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
from .mining import Miner
from .recipe import SupervisedSection

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


# Reference frames advanced per query frame that a route window may slide at: a drive at half to twice the map
# drive's speed (or frame rate), in the same direction.
ROUTE_SPEEDS = (0.5, 0.71, 1.0, 1.41, 2.0)


def window_scores(z: np.ndarray, window: int, speeds: tuple[float, ...], direction: int) -> np.ndarray:
    """(N, R): for query i and reference j, the best mean of z over the straight path of `window` + 1 frames that
    starts at (i, j) and runs forwards (`direction` 1) or backwards (-1) in both drives, reference frames advancing
    round(v t) at query step t for each speed v. Paths leaving either drive average what is inside; a cell with
    fewer than half the path inside scores -inf."""
    n, r = z.shape
    best = np.full((n, r), -np.inf, dtype=np.float64)
    for v in speeds:
        total, count = np.zeros((n, r)), np.zeros((n, r))
        for t in range(window + 1):
            di, dj = direction * t, direction * int(round(v * t))
            if abs(di) >= n or abs(dj) >= r:
                break
            qi, rj = slice(max(0, -di), n - max(0, di)), slice(max(0, -dj), r - max(0, dj))
            si, sj = slice(max(0, di), n - max(0, -di)), slice(max(0, dj), r - max(0, -dj))
            total[qi, rj] += z[si, sj]
            count[qi, rj] += 1
        score = np.where(count * 2 >= window + 1, total / np.maximum(count, 1), -np.inf)
        best = np.maximum(best, score)
    return best


def route_matches(sim: Tensor, ref_positions: np.ndarray, window: int, tolerance: float,
                  speeds: tuple[float, ...] = ROUTE_SPEEDS) -> tuple[np.ndarray, np.ndarray]:
    """(keep (N,) bool, matched (N,) int64): each query's reference image from the window of frames ending at it,
    kept when the window starting at it lands within `tolerance` of the same place. Both drives must be in route
    order. Scores are standardised per query row first, so a dark frame's low similarities weigh like any other's."""
    s = sim.double().numpy()
    z = (s - s.mean(1, keepdims=True)) / (s.std(1, keepdims=True) + 1e-9)
    back = window_scores(z, window, speeds, -1).argmax(1)
    ahead = window_scores(z, window, speeds, 1).argmax(1)
    keep = np.linalg.norm(ref_positions[back] - ref_positions[ahead], axis=1) <= tolerance
    return keep, back.astype(np.int64)


def pseudo_places(sim: Tensor, ref_positions: np.ndarray, window: int, tolerance: float,
                  match: str = "mutual") -> PseudoPlaces:
    """The kept queries of `sim` (N queries x R reference images) with their matched reference image and place."""
    if match == "route":
        keep, nn = route_matches(sim, ref_positions, window, tolerance)
    else:
        keep, nn = consistent_matches(sim, ref_positions, window, tolerance), sim.argmax(1).numpy()
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
                     tolerance: float, match: str = "mutual") -> dict[str, PseudoPlaces]:
    """Pseudo places for every condition but the reference `ref`, from each one's descriptors `desc[k]`."""
    if train[ref].positions is None:
        raise ValueError(f"supervised.pseudo needs places for the reference condition {train[ref].name!r}: set "
                         "data.reference to the drive with poses.txt, or give this one poses (folders layout)")
    return {train[k].name: pseudo_places(desc[k] @ desc[ref].T, train[ref].positions, window, tolerance, match)
            for k in range(len(train)) if k != ref}


def label_from_start(net: torch.nn.Module, split: tuple[DomainImages, ...], ref: int, image_size: int,
                     sup: SupervisedSection, device: torch.device, validation: bool = False) -> dict[str, PseudoPlaces]:
    """`label_conditions` on the descriptors (`sup.descriptor`) of `net`, the run's start, for every image of `split`.
    Validation images are always matched by route windows (`sup.pseudo_val_window`, `sup.pseudo_val_tolerance`):
    selection needs most of a short segment labelled, which the strict mutual test does not give."""
    probe = Miner(split, image_size, sup.descriptor, sup.pos_radius, 1, cache=False)
    with torch.no_grad():
        desc = probe.all_descriptors(net, device)
    if validation:
        return label_conditions(desc, split, ref, sup.pseudo_val_window, sup.pseudo_val_tolerance, "route")
    return label_conditions(desc, split, ref, sup.pseudo_window, sup.pseudo_tolerance, sup.pseudo_match)


def describe(reports: dict[str, dict], radius: float, split: str = "training") -> list[str]:
    """One log line per labelled condition: kept of all and, where its own places exist, how many labels are right."""
    lines = []
    for name, rep in reports.items():
        right = f"; {100 * rep['right']:.1f} % within {radius:g} of its own places (log only)" if "right" in rep else ""
        lines.append(f"pseudo places: {name} keeps {rep['kept']} of {rep['images']} {split} images{right}")
    return lines


def relabel_split(split: tuple[DomainImages, ...], saved: dict | None, net: torch.nn.Module, ref: int,
                  image_size: int, sup: SupervisedSection, device: torch.device,
                  validation: bool = False) -> tuple[dict[str, PseudoPlaces], tuple[DomainImages, ...], dict]:
    """(labels, relabelled split, reports) for one split: the `saved` labels of a resumed run (its weights are no
    longer the start), else new ones from `net`, the run's start."""
    labels = from_plain(saved) if saved is not None else \
        label_from_start(net, split, ref, image_size, sup, device, validation)
    out, reports = relabel_all(split, labels, sup.pos_radius)
    return labels, out, reports


def relabel_all(train: tuple[DomainImages, ...], labels: dict[str, PseudoPlaces],
                true_radius: float) -> tuple[tuple[DomainImages, ...], dict[str, dict]]:
    """`relabel` for every labelled condition; one-line error when a condition keeps fewer than 2 images."""
    out, reports = list(train), {}
    for k, dom in enumerate(train):
        if dom.name not in labels:
            continue
        out[k], reports[dom.name] = relabel(dom, labels[dom.name], true_radius)
        if len(out[k]) < 2:
            raise ValueError(f"supervised.pseudo kept {len(out[k])} image(s) of {dom.name!r}: raise "
                             "supervised.pseudo_tolerance or lower supervised.pseudo_window")
    return tuple(out), reports
