"""Calibration that transfers to a route part it was not fitted on: bounded blocks, cross-validated choices.

Why: an isotonic fit is exact on the run it was fitted on, so its top block is often "1.000" (every frame of
it right), and a threshold set there promised 99 % and delivered 76-98 % on another part of the same route.
Two changes make the promise hold on new ground:

* every block of the isotonic fit publishes the one-sided Clopper-Pearson LOWER bound (95 %) of its
  precision instead of its observed share, so a block's confidence grows with the evidence behind it (a block
  of 300 right frames: 0.990; of 100: 0.970). Blocks whose bounds would fall as the score rises are pooled
  (their frames counted together), so confidence stays non-decreasing in the score;
* the threshold admits only blocks whose bound reaches the precision target ("no block admitted below the
  target"): `min_confidence` is then the target itself, and the published set is a union of blocks each
  bounded above it.

Which raw feature to calibrate (the track's support or the posterior mass) is chosen by cross-validation over
contiguous route segments (`segment_folds`): each segment in turn is held out (with a gap either side, as
neighbouring frames see the same scene), the fit is made on the rest, and what it publishes on the held-out
segment is counted. The feature whose held-out precision reached the target with the most coverage wins;
the same folds give the "expected vs delivered" table `disam-calibrate` and `disam-sequence-eval` print.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from disam_ros.maps.confidence_fit import Calibration
from disam_ros.maps.verified_confidence import ALPHA, clopper_pearson_lower
from disam_ros.tracking.calibration import auc, fit_isotonic

FOLDS = 4  # contiguous segments the calibration run is cut into for cross-validation


def block_counts(cal: Calibration, scores: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames and right frames per step of an isotonic fit (a frame belongs to the last step starting at or
    below its score; the fit's own scores never fall below its first step)."""
    b = np.clip(np.searchsorted(np.asarray(cal.x), scores, side="right") - 1, 0, len(cal.x) - 1)
    n = np.bincount(b, minlength=len(cal.x))
    hits = np.bincount(b, weights=np.asarray(correct, float), minlength=len(cal.x))
    return n, np.rint(hits).astype(np.int64)


def pool_bounds(starts: np.ndarray, n: np.ndarray, hits: np.ndarray, alpha: float = ALPHA
                ) -> tuple[list[float], list[int], list[int]]:
    """Merge adjacent blocks (low score to high) until their Clopper-Pearson lower bounds never fall as the score
    rises: a small high block (10 of 10 right: 0.741) joins the larger one below it and they share one bound.
    Returns block starts, frames and right frames of the pooled blocks."""
    stack: list[list] = []
    for s, nb, kb in zip(starts, n, hits):
        if nb == 0:
            continue
        stack.append([float(s), int(nb), int(kb)])
        while len(stack) > 1 and (clopper_pearson_lower(stack[-2][2], stack[-2][1], alpha)
                                  > clopper_pearson_lower(stack[-1][2], stack[-1][1], alpha)):
            top = stack.pop()
            stack[-1][1] += top[1]
            stack[-1][2] += top[2]
    return [b[0] for b in stack], [b[1] for b in stack], [b[2] for b in stack]


def fit_bounded(scores: np.ndarray, correct: np.ndarray, alpha: float = ALPHA, min_group: int | None = None,
                **meta) -> Calibration:
    """Isotonic fit (`fit_isotonic`, groups of >= 2 % of the run) whose blocks publish the Clopper-Pearson lower
    bound of their precision at confidence 1 - alpha. The blocks' counts are kept in extra["bound"] so a reader
    can see the evidence behind every step."""
    s, c = np.asarray(scores, float).reshape(-1), np.asarray(correct, float).reshape(-1)
    iso = fit_isotonic(s, c, min_group=min_group, **meta)
    n, hits = block_counts(iso, s, c)
    starts, n2, k2 = pool_bounds(np.asarray(iso.x), n, hits, alpha)
    y = tuple(clopper_pearson_lower(k, m, alpha) for k, m in zip(k2, n2))
    extra = {**iso.extra, "bound": {"kind": "clopper_pearson", "alpha": alpha, "frames": n2, "right": k2}}
    return replace(iso, x=tuple(starts), y=y, extra=extra)


def admitted_threshold(cal: Calibration, precision: float) -> float:
    """The publishing threshold on the calibrated confidence: the target itself when some block's bound reaches
    it (those blocks and every higher one are admitted), inf when none does."""
    return float(precision) if cal.y and max(cal.y) >= precision else float("inf")


def segment_folds(position: np.ndarray, folds: int = FOLDS, gap: float = 0.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit mask, held-out mask) per fold: the held-out part is one of `folds` equal stretches of `position` (a
    frame's place along the route: frame number, or its share of the drive); the fit part is every frame more
    than `gap` outside that stretch."""
    p = np.asarray(position, float).reshape(-1)
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    edges = np.linspace(p.min(), p.max(), folds + 1)
    edges[-1] = np.nextafter(edges[-1], np.inf)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        held = (p >= lo) & (p < hi)
        fit = (p < lo - gap) | (p >= hi + gap)
        out.append((fit, held))
    return out


@dataclass(frozen=True)
class HeldOut:
    """What a fit made without a segment published on it, pooled over the folds."""

    frames: int
    published: int
    right: int
    expected: float  # mean calibrated confidence of the published frames (what the fit promised them)
    per_fold: tuple[dict, ...] = ()

    @property
    def coverage(self) -> float:
        return self.published / self.frames if self.frames else 0.0

    @property
    def delivered(self) -> float:
        return self.right / self.published if self.published else float("nan")

    def row(self) -> dict:
        return {"frames": self.frames, "published": self.published, "right": self.right,
                "coverage": self.coverage, "delivered": self.delivered, "expected": self.expected,
                "folds": list(self.per_fold)}


def held_out(x: np.ndarray, correct: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], precision: float,
             alpha: float = ALPHA) -> HeldOut:
    """Fit on each fold's fit part, publish on its held-out part at the admitted threshold, and pool the counts."""
    ok = np.asarray(correct, bool)
    frames = published = right = 0
    promised, per = [], []
    for fit, held in folds:
        if fit.sum() < 2 or not held.any():
            continue
        cal = fit_bounded(x[fit], ok[fit], alpha)
        conf = cal.apply(x[held])
        pub = conf >= admitted_threshold(cal, precision)
        hits = int(ok[held][pub].sum())
        frames, published, right = frames + int(held.sum()), published + int(pub.sum()), right + hits
        promised += conf[pub].tolist()
        per.append({"frames": int(held.sum()), "published": int(pub.sum()), "right": hits})
    return HeldOut(frames, published, right, float(np.mean(promised)) if promised else float("nan"), tuple(per))


def first_admitted(cal: Calibration, precision: float) -> float:
    """The raw score from which a bounded fit publishes (its lowest block whose bound reaches `precision`)."""
    xs, ys = np.asarray(cal.x), np.asarray(cal.y)
    return float(xs[ys >= precision].min()) if len(xs) and (ys >= precision).any() else float("inf")


def needed_threshold(x: np.ndarray, correct: np.ndarray, precision: float) -> float:
    """The lowest raw threshold at which this segment's published frames were right often enough; above its
    highest score when even its best-scored frames miss (nothing there should have been published)."""
    order = np.argsort(-x, kind="stable")
    xs, ok = x[order], np.asarray(correct, float)[order]
    share = np.cumsum(ok) / np.arange(1, len(xs) + 1)
    last = np.r_[xs[1:] != xs[:-1], True]  # equal scores publish together
    good = np.flatnonzero((share >= precision) & last)
    return float(xs[good.max()]) if len(good) else float(np.nextafter(xs[0], np.inf))


def fold_thresholds(x: np.ndarray, correct: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                    precision: float, alpha: float = ALPHA) -> list[float]:
    """Per fold, the raw score from which a bounded fit made without its held-out segment publishes (inf: it
    admits nothing); the margin and the held-out counts at it both start from these."""
    ok = np.asarray(correct, bool)
    return [first_admitted(fit_bounded(x[fit], ok[fit], alpha), precision) if fit.sum() >= 2 else float("inf")
            for fit, _ in folds]


def fold_margin(x: np.ndarray, correct: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], precision: float,
                alpha: float = ALPHA, taus: list[float] | None = None) -> tuple[float, list[float]]:
    """How far above a fit's own threshold new segments needed the threshold to reach `precision`, POOLED over
    the folds: the smallest margin m >= 0 at which the held-out frames every fold publishes (its frames scoring
    at least its own fit's threshold + m) are, all together, right at `precision`. Also returned, per fold, what
    that segment alone needed (its needed threshold minus the threshold fitted without it; NaN where the fit
    admits nothing): the largest of these always suffices, so the pooled margin is never above it.

    Why pooled and not the worst fold: one confident wrong stretch in one held-out segment (a track lagging
    into a tunnel) asked for the threshold above it, and the worst fold's margin then withheld nearly every
    frame of the route (Nordland, untrained encoder fitted on 1188:1788: margin 6.4 log-odds, 0.7 % of the
    fit's own frames published where its folds had delivered 97.4 % at 92.7 % without any margin). The pooled
    margin asks what a new part of the route delivers on average, which is what `precision` promises."""
    ok = np.asarray(correct, bool)
    taus = fold_thresholds(x, ok, folds, precision, alpha) if taus is None else taus
    per, shifted = [], []
    for (_, held), tau in zip(folds, taus):
        if not (np.isfinite(tau) and held.any()):
            per.append(float("nan"))
            continue
        per.append(needed_threshold(x[held], ok[held], precision) - tau)
        shifted.append((x[held] - tau, ok[held]))
    if not shifted:
        return 0.0, per
    return pooled_shift(np.concatenate([d for d, _ in shifted]), np.concatenate([k for _, k in shifted]),
                        precision), per


def held_out_at_margin(x: np.ndarray, correct: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                       precision: float, margin: float, alpha: float = ALPHA,
                       taus: list[float] | None = None) -> tuple[int, int]:
    """(published, right) of the held-out segments, pooled, when each fold's fit publishes from its own threshold
    + `margin`: what the calibration as stored would have delivered on segments it did not see."""
    ok = np.asarray(correct, bool)
    taus = fold_thresholds(x, ok, folds, precision, alpha) if taus is None else taus
    published = right = 0
    for (_, held), tau in zip(folds, taus):
        if np.isfinite(tau) and held.any():
            pub = x[held] >= tau + margin
            published, right = published + int(pub.sum()), right + int(ok[held][pub].sum())
    return published, right


def pooled_shift(d: np.ndarray, ok: np.ndarray, precision: float) -> float:
    """The smallest m >= 0 such that the frames with d >= m are right at `precision` (d: a held-out frame's
    score minus its fold's threshold); 0 when no frame reaches its threshold, just above the largest d when no
    m is enough (nothing should be published)."""
    order = np.argsort(-d, kind="stable")
    ds, share = d[order], np.cumsum(ok[order]) / np.arange(1, len(d) + 1)
    published = np.flatnonzero(ds >= 0.0)
    if not len(published) or share[published.max()] >= precision:
        return 0.0
    last = np.r_[ds[1:] != ds[:-1], True]  # equal scores publish together
    good = np.flatnonzero((share >= precision) & last & (ds > 0.0))
    return float(ds[good.max()]) if len(good) else float(np.nextafter(ds[0], np.inf))


def with_margin(cal: Calibration, margin: float, precision: float) -> Calibration:
    """The bounded fit with its admitted region moved up by `margin` raw units: a step is inserted at the new
    start and the steps between the old and the new start are lowered to the best bound below the target
    (or just under the target when none is below): cross-validation showed a new segment's wrong frames reach
    into that band, so it must not be published, and its frames are no better evidenced than the best
    non-admitted block."""
    start = first_admitted(cal, precision)
    if not (np.isfinite(start) and margin > 0):
        return cal
    xs, ys = list(cal.x), list(cal.y)
    new_start = start + margin
    below = [y for y in ys if y < precision]
    band = max(below) if below else float(np.nextafter(precision, 0.0))
    i = int(np.searchsorted(xs, new_start, side="right")) - 1  # the step holding new_start
    lower = [(x, min(y, band)) for x, y in zip(xs, ys) if x < new_start]
    upper = [(x, y) for x, y in zip(xs, ys) if x >= new_start]
    if not upper or upper[0][0] != new_start:
        upper.insert(0, (new_start, ys[i]))
    steps = lower + upper
    extra = {**cal.extra, "margin": {"raw": margin, "from": new_start, "band_confidence": band}}
    return replace(cal, x=tuple(x for x, _ in steps), y=tuple(y for _, y in steps), extra=extra)


@dataclass(frozen=True)
class BoundedChoice:
    """The chosen feature, its bounded fit (with the cross-validated margin) on the whole calibration run, the
    admitted threshold, and per candidate what cross-validation saw (margin; coverage, delivered and expected
    precision on held-out segments WITHOUT the margin, the evidence for it; coverage on the run after it; AUC)."""

    key: str
    fit: Calibration
    threshold: float
    table: dict


def choose_bounded(candidates: dict[str, np.ndarray], correct: np.ndarray, position: np.ndarray, precision: float,
                   alpha: float = ALPHA, folds: int = FOLDS, gap: float = 0.0, **meta) -> BoundedChoice:
    """Per candidate feature: the bounded fit on the whole run, moved up by the margin cross-validation over
    contiguous segments asks for (`fold_margin`). The choice is cross-validated too: first the candidates whose
    fits, made without a segment and moved up by that margin, published on it at >= `precision` (pooled over the
    folds); among them the highest AUC (it tells right from wrong best over the whole run); then the coverage left
    after the margin, then the first candidate. Why with the margin: the stored fit carries it, so that is what
    a new segment gets; judged without it, a feature whose folds needed a small margin (the posterior mass, AUC
    0.98, 98.8 % held out before the margin) lost to one that needed none (the support, AUC 0.82), which then
    delivered 95.7 % on another part of the route (Nordland, untrained small encoder, node route 894:1788 -> 0:889;
    the mass, chosen now, published 65.0 % there at 95.5 %: that row fails either way). Of six node-route rows the
    rule changed three (the shipped real-camera model's two did not move): untrained tiny 0:889 -> 894:1788
    published 92.4 % at 100 % instead of 39.2 %, untrained small there 0 % instead of 46.4 % at 100 %.

    Why AUC before coverage: the coverage hinges on the few frames near the threshold, the AUC on the whole
    run. On Nordland (untrained encoder, three fit/test splits) the posterior mass had the higher AUC on every
    fit with wrong answers and delivered >= 99.2 % on every test segment; the track's support, kept once for its
    coverage on a fit without wrong answers (no AUC, folds all right), delivered 96.0 %."""
    if not candidates:
        raise ValueError("choose_bounded needs at least one candidate feature")
    ok = np.asarray(correct, bool)
    parts = segment_folds(position, folds, gap)
    extra = dict(meta.pop("extra", None) or {})
    table, best = {}, None
    for key, x in candidates.items():
        x = np.asarray(x, float)
        cv = held_out(x, ok, parts, precision, alpha)
        taus = fold_thresholds(x, ok, parts, precision, alpha)  # the folds' fits, made once for both
        margin, per = fold_margin(x, ok, parts, precision, alpha, taus)
        kept, hits = held_out_at_margin(x, ok, parts, precision, margin, alpha, taus)
        cal = with_margin(fit_bounded(x, ok, alpha, extra={**extra, "feature_key": key}, **meta), margin, precision)
        thr = admitted_threshold(cal, precision)
        cover = float(np.mean(cal.apply(x) >= thr))
        a = auc(x, ok)
        table[key] = {"auc": a, "margin": margin, "wrong": int((~ok).sum()), "coverage": cover, "threshold": thr,
                      "cv_coverage": cv.coverage, "cv_delivered": cv.delivered, "cv_expected": cv.expected,
                      "cv_published": cv.published, "cv_published_margin": kept, "cv_right_margin": hits}
        rank = (kept > 0 and hits >= precision * kept, np.nan_to_num(a, nan=-1.0), cover)
        if best is None or rank > best[0]:
            best = (rank, BoundedChoice(key, cal, thr, table))
    return best[1]


__all__ = ["FOLDS", "BoundedChoice", "HeldOut", "admitted_threshold", "block_counts", "choose_bounded",
           "first_admitted", "fit_bounded", "fold_margin", "fold_thresholds", "held_out", "held_out_at_margin",
           "needed_threshold", "pool_bounds", "pooled_shift", "segment_folds", "with_margin"]
