"""Evaluating condition recognition: accuracy per condition folder on held-out frames, and the brute-force
reference selection (encode with every candidate domain, keep the most distinctive retrieval).

Why the brute force: it needs no recogniser and no clock, only the map; it shows what a perfect selector could
be worth on a route, so the `auto` row can be judged against something better than the weather parameter. It
costs one encoder pass and one search per domain, so it is an evaluation mode, never the node's.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.data.folders import iter_frames, load_condition, read_image
from disam_ros.model.condition_head import ConditionHead, batch_features

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecognitionRow:
    """One condition folder: frames scored, domain accuracy, and the most frequent wrong answer."""

    condition: str
    frames: int
    accuracy: float
    confused_with: str


def recognition_rows(head: ConditionHead, root: str | Path, conditions: Iterable[str],
                     frame_filter: Callable[[int, int], bool] | None = None,
                     truth: Mapping[str, str] | None = None) -> list[RecognitionRow]:
    """Domain accuracy per condition folder of `root`. `frame_filter(i, n)` keeps frame i of n (held-out
    span); `truth` maps a folder to the domain it should be recognised as (default: its own name)."""
    domains = head.tasks["domain"]
    rows = []
    for cond in conditions:
        want = (truth or {}).get(cond, cond)
        if want not in domains:
            raise ValueError(f"condition {cond!r} has no domain {want!r} in the recogniser {list(domains)}")
        folder = load_condition(root, cond)
        n = len(folder)
        imgs = [read_image(p) for i, p in enumerate(folder.image_paths) if frame_filter is None or frame_filter(i, n)]
        preds = [max(p["domain"], key=p["domain"].get) for p in head.predict_features(batch_features(imgs))]
        wrong = [p for p in preds if p != want]
        confused = max(set(wrong), key=wrong.count) if wrong else ""
        rows.append(RecognitionRow(cond, len(preds), 1.0 - len(wrong) / max(len(preds), 1), confused))
    return rows


def distinctiveness(similarities: np.ndarray) -> float:
    """How sure a retrieval is: best similarity minus the second best (0 for fewer than two candidates)."""
    s = np.sort(np.asarray(similarities, dtype=np.float64).ravel())
    return float(s[-1] - s[-2]) if s.size >= 2 else 0.0


def brute_force_domain(score: Callable[[str], np.ndarray], domains: Sequence[str]) -> tuple[str, float]:
    """The domain whose retrieval is most distinctive. `score(domain)` returns the query's similarities to
    every map entry when encoded with that domain's encoder (the caller wires in the encoder and the search).
    Ties go to the first domain in `domains` (put the reference first)."""
    if not domains:
        raise ValueError("brute-force selection needs at least one candidate domain")
    best, best_d = domains[0], -np.inf
    for d in domains:
        m = distinctiveness(score(d))
        if m > best_d:
            best, best_d = d, m
    return best, float(best_d)


SOURCES = ("oracle", "clock", "auto", "brute")


def selection_rows(reloc: Any, root: str | Path, conditions: Iterable[str], truth: Mapping[str, str] | None = None,
                   frame_filter: Callable[[int, int], bool] | None = None, tolerance_m: float = 5.0,
                   ) -> dict[str, dict[str, float]]:
    """Single-frame R@1 (within `tolerance_m`) per condition folder and per way of choosing the encoder:
    `oracle` (the folder's true domain), `clock` (stamp + the selector's weather, e.g. left at its default),
    `auto` (the relocalizer's recogniser, frames in drive order, hysteresis reset per drive; needs
    `reloc.auto`), `brute` (`brute_force_domain`). Every frame is retrieved once per model domain and each
    source picks among those results, so the rows differ only by the choice."""
    loc, domains = reloc.localizer, tuple(reloc.selector.model_domains)
    out: dict[str, dict[str, float]] = {}
    for cond in conditions:
        want = (truth or {}).get(cond, cond)
        frames = list(iter_frames(load_condition(root, cond, require_poses=True)))
        n = len(frames)
        hits = dict.fromkeys(SOURCES, 0)
        used = 0
        reloc.reset_condition()
        for i, f in enumerate(frames):
            if frame_filter is not None and not frame_filter(i, n):
                continue
            used += 1
            per = {}
            for d in domains:
                coarse = loc.coarse.encode(f.image, d)
                fine = loc.fine.encode(f.image, d) if loc.fine is not None else None
                res, scores = loc.localize_and_score(coarse, fine, None, domain=d)
                ok = res.ok and float(np.linalg.norm(np.asarray(res.position) - f.position)) <= tolerance_m
                per[d] = (ok, np.asarray(scores[1] if isinstance(scores, tuple) else scores))
            sims = {d: v[1] for d, v in per.items()}
            picks = {"oracle": want, "clock": reloc.selector.select(f.stamp).domain,
                     "brute": brute_force_domain(sims.__getitem__, domains)[0]}
            if reloc.auto is not None:
                picks["auto"] = reloc.select_frame(f.image, f.stamp).domain
            for k, d in picks.items():
                hits[k] += int(per[d][0])
        out[cond] = {k: hits[k] / max(used, 1) for k in SOURCES if k != "auto" or reloc.auto is not None}
        out[cond]["frames"] = used
    return out


def format_rows(rows: Sequence[RecognitionRow]) -> str:
    """A plain table for reports and logs."""
    lines = [f"{'condition':<16}{'frames':>8}{'accuracy':>10}  confused with"]
    lines += [f"{r.condition:<16}{r.frames:>8}{100 * r.accuracy:>9.1f}%  {r.confused_with or '-'}" for r in rows]
    return "\n".join(lines)
