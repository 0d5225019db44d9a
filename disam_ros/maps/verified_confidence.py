"""The confidence of a VERIFIED pose: from its RANSAC inlier count, fitted on calibration drives with ground truth.

Why apart from the retrieval calibration: a verified pose is a different answer (solved against the map's 3D
points, not the map image's pose), and its evidence is geometric. On every held-out run so far all verified poses
were right at (5 m, 10 deg), so a fitted curve would say 1.0 everywhere: the honest statement is a LOWER BOUND on
the precision, which shrinks as the evidence grows. Per inlier bin (VERIFIED_EDGES) the fit stores the frames,
the right ones and the one-sided Clopper-Pearson lower bound at 95 % of their precision; a bin with fewer frames
gets a weaker bound. Bins are then made non-decreasing from few inliers to many (more inliers are never less
evidence), so an empty or small high bin takes the bound of the bins below it.

The record lives in a map's calibration (modes.<m>.extra.verified) and is applied by the Tracker to each verified
frame's `confidence`; `disam-calibrate --verify` fits it.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

VERIFIED_EDGES = (0, 30, 60, 120)  # inlier bins [0, 30), [30, 60), [60, 120), [120, inf)
ALPHA = 0.05  # one-sided: the precision is at least the bound with 95 % confidence


def _log_binom_tail(k: int, n: int, p: float) -> float:
    """log P(X >= k) for X ~ Binomial(n, p), summed in log space (no overflow for large n)."""
    if k <= 0:
        return 0.0
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
             for i in range(k, n + 1)]
    m = max(terms)
    return m + math.log(sum(math.exp(t - m) for t in terms))


@functools.lru_cache(maxsize=4096)
def clopper_pearson_lower(k: int, n: int, alpha: float = ALPHA) -> float:
    """Exact one-sided lower confidence bound of a binomial proportion with k successes in n trials: the p at
    which P(X >= k | n, p) = alpha (0 when k = 0; alpha^(1/n) when k = n). Bisection to 1e-12, each step a sum
    over n - k terms: remembered, since a calibration's bounded fit asks for the same (k, n) again and again (797
    calls, 163 distinct, 2 s of an 8 s `disam-sequence-eval` comparison on the Nordland dev route)."""
    if not (0 <= k <= n) or not 0.0 < alpha < 1.0:
        raise ValueError(f"clopper_pearson_lower needs 0 <= k <= n and alpha in (0, 1), got k={k}, n={n}, "
                         f"alpha={alpha}")
    if k == 0:
        return 0.0
    if k == n:
        return alpha ** (1.0 / n)
    lo, hi, target = 0.0, 1.0, math.log(alpha)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _log_binom_tail(k, n, mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def fit_verified(inliers: Sequence[int], right: Sequence[bool], edges: Sequence[int] = VERIFIED_EDGES,
                 alpha: float = ALPHA) -> dict[str, Any]:
    """The record (module docstring) from the verified frames of calibration drives: their inlier counts and
    whether each verified pose was within the calibration tolerance."""
    inl, ok = np.asarray(inliers, np.int64).reshape(-1), np.asarray(right, bool).reshape(-1)
    if len(inl) != len(ok) or len(inl) == 0:
        raise ValueError(f"fit_verified needs one inlier count and one right/wrong label per verified frame, got "
                         f"{len(inl)} and {len(ok)}: calibrate on drives where some frames verify")
    edges = [int(e) for e in edges]
    if edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"inlier bin edges {edges} must start at 0 and increase")
    bins = np.searchsorted(edges, inl, side="right") - 1
    n = [int((bins == b).sum()) for b in range(len(edges))]
    k = [int(ok[bins == b].sum()) for b in range(len(edges))]
    bound = [clopper_pearson_lower(kb, nb, alpha) if nb else 0.0 for kb, nb in zip(k, n)]
    return {"edges": edges, "confidence": [float(x) for x in np.maximum.accumulate(bound)], "frames": n,
            "right": k, "alpha": alpha}


def verified_confidence(record: dict[str, Any], inliers: int) -> float:
    """The confidence of a verified pose with this many inliers under a fitted record."""
    b = int(np.searchsorted(record["edges"], int(inliers), side="right")) - 1
    return float(record["confidence"][max(b, 0)])


def check_record(record: Any, where: str) -> None:
    """ValueError naming the field when a stored record is not what fit_verified writes."""
    fix = "re-run disam-calibrate --verify"
    if not isinstance(record, dict):
        raise ValueError(f"{where} holds {type(record).__name__}, not an object: {fix}")
    edges, conf = record.get("edges"), record.get("confidence")
    if not (isinstance(edges, list) and edges and all(type(e) is int for e in edges) and edges[0] == 0
            and all(b > a for a, b in zip(edges, edges[1:]))):
        raise ValueError(f"{where}.edges is {edges!r}: must be increasing whole inlier counts from 0: {fix}")
    if not (isinstance(conf, list) and len(conf) == len(edges)
            and all(isinstance(c, int | float) and 0.0 <= c <= 1.0 for c in conf)
            and all(b >= a for a, b in zip(conf, conf[1:]))):
        raise ValueError(f"{where}.confidence is {conf!r}: must be one non-decreasing probability per bin: {fix}")
