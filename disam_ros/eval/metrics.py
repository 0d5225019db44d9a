"""Localisation metrics: pure functions over arrays, plus per-condition summaries of query results.

Protocol (DISAM Section V, after the long-term visual localisation benchmark): a query is correctly
localised at (T m, R deg) when its translation error <= T AND its rotation error <= R. "<=" is inclusive,
with a 1e-9 slack so that a pose built to lie exactly on a threshold is not lost to floating-point
round-off in the quaternion->angle conversion. Shares are over ALL queries: a query the localiser did not
answer (abstained) counts as a failure at every threshold. Median errors are over answered queries only;
the abstain rate is reported beside them so the two are read together.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from disam_ros.geometry import quat_angle_deg
from disam_ros.tracking.calibration import ece

DEFAULT_THRESHOLDS: tuple[tuple[float, float], ...] = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))
DEFAULT_RECALL_NS: tuple[int, ...] = (1, 5, 10)
DEFAULT_RECALL_RADII: tuple[float, ...] = (5.0, 10.0, 25.0)
DEFAULT_LATENCY_PS: tuple[float, ...] = (50.0, 90.0, 99.0)
BOUNDARY_EPS = 1e-9
ALL = "all"


@dataclass(frozen=True, eq=False)  # array fields: compare explicitly, not with ==
class QueryResult:
    """One query: ground truth, the localiser's answer (None = abstained), its latency and ranked candidates.

    Poses are the camera optical frame in the map frame (TUM convention); `candidate_positions` (K,3) are the
    map positions of the top-K retrieved database images, best first, for recall@N.
    """

    name: str
    condition: str
    gt_position: np.ndarray
    gt_quat: np.ndarray
    est_position: np.ndarray | None = None
    est_quat: np.ndarray | None = None
    latency_s: float | None = None
    candidate_positions: np.ndarray | None = None
    match_name: str | None = None

    @property
    def answered(self) -> bool:
        return self.est_position is not None and self.est_quat is not None


def translation_errors(gt: np.ndarray, est: np.ndarray) -> np.ndarray:
    """Euclidean distance per row (N,3)-(N,3) -> (N,); NaN where the estimate is missing (NaN row)."""
    return np.linalg.norm(np.asarray(est, float).reshape(-1, 3) - np.asarray(gt, float).reshape(-1, 3), axis=1)


def rotation_errors_deg(gt_q: np.ndarray, est_q: np.ndarray) -> np.ndarray:
    """Geodesic angle in degrees per row (q and -q are the same rotation); NaN where the estimate is missing."""
    gt_q, est_q = np.asarray(gt_q, float).reshape(-1, 4), np.asarray(est_q, float).reshape(-1, 4)
    out = np.full(len(gt_q), np.nan)
    ok = np.all(np.isfinite(est_q), axis=1)
    if ok.any():
        out[ok] = quat_angle_deg(gt_q[ok], est_q[ok])
    return out


def within(t_err: np.ndarray, r_err: np.ndarray, max_t: float, max_r: float) -> np.ndarray:
    """Boolean per query: t <= max_t and r <= max_r (inclusive, 1e-9 slack); NaN (abstained) -> False."""
    t, r = np.asarray(t_err, float), np.asarray(r_err, float)
    with np.errstate(invalid="ignore"):
        return (t <= max_t + BOUNDARY_EPS) & (r <= max_r + BOUNDARY_EPS)


def in_map(gt_pos: np.ndarray, gt_quat: np.ndarray, map_pos: np.ndarray, map_quat: np.ndarray,
           tolerance: tuple[float, float], chunk: int = 1024) -> np.ndarray:
    """Boolean per query: some map pose lies within the tolerance of its ground truth (`within`'s rule).

    Why: a query drive that runs past the map's end (another start, another speed) has frames no map image can
    answer correctly; VPR benchmarks leave such queries out of recall, and the right answer there is to abstain.
    Reports give R@1 over all frames AND over these in-map frames, and count every publication off the map as
    wrong, so abstaining is the only way to score there."""
    gp, gq = np.asarray(gt_pos, float).reshape(-1, 3), np.asarray(gt_quat, float).reshape(-1, 4)
    mp, mq = np.asarray(map_pos, float).reshape(-1, 3), np.asarray(map_quat, float).reshape(-1, 4)
    out = np.zeros(len(gp), bool)
    for s in range(0, len(gp), chunk):
        t = np.linalg.norm(gp[s:s + chunk, None, :] - mp[None, :, :], axis=2)
        r = quat_angle_deg(gq[s:s + chunk, None, :], mq[None, :, :])
        out[s:s + chunk] = within(t, r, *tolerance).any(axis=1)
    return out


def threshold_shares(t_err: np.ndarray, r_err: np.ndarray,
                     thresholds: Sequence[tuple[float, float]] = DEFAULT_THRESHOLDS) -> list[float]:
    """Share of ALL queries within each (m, deg) threshold; abstentions (NaN) count as failures."""
    n = len(np.asarray(t_err))
    if n == 0:
        return [float("nan")] * len(thresholds)
    return [float(np.count_nonzero(within(t_err, r_err, mt, mr))) / n for mt, mr in thresholds]


def candidate_distances(gt: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(N,3) ground truth and (N,K,3) ranked candidate positions (NaN-padded) -> (N,K) distances."""
    c = np.asarray(candidates, float)
    return np.linalg.norm(c - np.asarray(gt, float).reshape(-1, 1, 3), axis=2)


def recall_at_n(distances: np.ndarray, ns: Sequence[int] = DEFAULT_RECALL_NS,
                radii: Sequence[float] = DEFAULT_RECALL_RADII) -> dict[tuple[int, float], float]:
    """Share of queries with at least one of their top-N candidates within r metres (inclusive).

    `distances` is (N,K), best candidate first; NaN marks a missing candidate (never within). N > K is NaN:
    only K candidates were kept, so recall at N was not measured (printing R@10 = R@5 would claim it was).
    """
    d = np.asarray(distances, float)
    if d.ndim != 2 or d.shape[0] == 0:
        return {(n, r): float("nan") for n in ns for r in radii}
    d = np.where(np.isnan(d), np.inf, d)
    out = {}
    for n in ns:
        if n > d.shape[1]:
            out.update({(n, r): float("nan") for r in radii})
            continue
        best = d[:, :n].min(axis=1) if d.shape[1] else np.full(d.shape[0], np.inf)
        for r in radii:
            out[(n, r)] = float(np.mean(best <= r + BOUNDARY_EPS))
    return out


def percentiles(values: Iterable[float], ps: Sequence[float] = DEFAULT_LATENCY_PS) -> dict[float, float]:
    """Percentiles (numpy 'linear' interpolation) of the finite values; NaN for each p when there are none."""
    v = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, float).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {p: float("nan") for p in ps}
    return {p: float(x) for p, x in zip(ps, np.percentile(v, list(ps)))}


def _median(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    return float(np.median(v)) if v.size else float("nan")


@dataclass(frozen=True)
class ConditionSummary:
    """Every metric of one condition (or of all queries, condition == 'all')."""

    condition: str
    queries: int
    answered: int
    thresholds: tuple[tuple[float, float], ...]
    shares: tuple[float, ...]
    median_t_m: float
    median_r_deg: float
    recall: dict[tuple[int, float], float] = field(default_factory=dict)
    latency_s: dict[float, float] = field(default_factory=dict)

    @property
    def abstained(self) -> int:
        return self.queries - self.answered

    @property
    def abstain_rate(self) -> float:
        return self.abstained / self.queries if self.queries else float("nan")


def errors_of(results: Sequence[QueryResult]) -> tuple[np.ndarray, np.ndarray]:
    """(translation m, rotation deg) per result; NaN for abstentions."""
    if not results:
        return np.zeros(0), np.zeros(0)
    gt_p = np.array([r.gt_position for r in results], float).reshape(-1, 3)
    gt_q = np.array([r.gt_quat for r in results], float).reshape(-1, 4)
    est_p = np.array([r.est_position if r.answered else [np.nan] * 3 for r in results], float).reshape(-1, 3)
    est_q = np.array([r.est_quat if r.answered else [np.nan] * 4 for r in results], float).reshape(-1, 4)
    return translation_errors(gt_p, est_p), rotation_errors_deg(gt_q, est_q)


def _candidate_matrix(results: Sequence[QueryResult]) -> np.ndarray | None:
    """(N,K) candidate distances, NaN-padded; None when no result carries candidates."""
    ks = [0 if r.candidate_positions is None else len(r.candidate_positions) for r in results]
    if not results or max(ks) == 0:
        return None
    d = np.full((len(results), max(ks)), np.nan)
    for i, r in enumerate(results):
        if ks[i]:
            cand = np.asarray(r.candidate_positions, float).reshape(1, -1, 3)
            d[i, : ks[i]] = candidate_distances(np.asarray(r.gt_position)[None], cand)[0]
    return d


def summarize(results: Sequence[QueryResult], condition: str = ALL,
              thresholds: Sequence[tuple[float, float]] = DEFAULT_THRESHOLDS,
              recall_ns: Sequence[int] = DEFAULT_RECALL_NS, recall_radii: Sequence[float] = DEFAULT_RECALL_RADII,
              latency_ps: Sequence[float] = DEFAULT_LATENCY_PS) -> ConditionSummary:
    t_err, r_err = errors_of(results)
    cands = _candidate_matrix(results)
    lat = [r.latency_s for r in results if r.latency_s is not None]
    return ConditionSummary(
        condition=condition, queries=len(results), answered=sum(r.answered for r in results),
        thresholds=tuple((float(a), float(b)) for a, b in thresholds),
        shares=tuple(threshold_shares(t_err, r_err, thresholds)),
        median_t_m=_median(t_err), median_r_deg=_median(r_err),
        recall={} if cands is None else recall_at_n(cands, recall_ns, recall_radii),
        latency_s=percentiles(lat, latency_ps) if lat else {},
    )


def per_condition(results: Sequence[QueryResult], **kwargs) -> dict[str, ConditionSummary]:
    """Summary per condition (sorted by name), then 'all' over every query; kwargs go to summarize()."""
    conditions = sorted({r.condition for r in results})
    out = {c: summarize([r for r in results if r.condition == c], c, **kwargs) for c in conditions}
    out[ALL] = summarize(results, ALL, **kwargs)
    return out


# ----------------------------------------------------------------------------------------------------------
# Tracker modes side by side: what is published at a threshold, and whether confidence means it


@dataclass(frozen=True)
class ModeSummary:
    """One (condition, mode) row. `shares`: any answer within each threshold, over ALL frames (R@1, and the in-map
    R@1: the retrieval-only pose, i.e. the answered map place's); coverage: share of frames published (answered
    and confidence >= threshold); precision: share of the published poses (refined where verified) within
    `tolerance`; ece: expected calibration error of the answered frames' confidence against their published pose
    being within tolerance; nees: mean normalised estimation error squared of published positions under their
    covariance (3 = consistent)."""

    condition: str
    mode: str
    frames: int
    answered: int
    thresholds: tuple[tuple[float, float], ...]
    shares: tuple[float, ...]
    threshold: float
    published: int
    precision: float
    ece: float
    nees_mean: float
    nees_median: float
    calibrated: bool
    in_map: int | None = None  # frames some map pose could answer within the tolerance (None: not computed)
    in_map_share: float = float("nan")  # share of those answered within the tolerance (R@1 over in-map frames)

    @property
    def coverage(self) -> float:
        return self.published / self.frames if self.frames else float("nan")


def nees(error: np.ndarray, covariance: np.ndarray) -> float:
    """e^T C^-1 e of a position error (3,) under its covariance (3,3); NaN when either is not finite."""
    e, c = np.asarray(error, float).reshape(3), np.asarray(covariance, float)[:3, :3]
    if not (np.isfinite(e).all() and np.isfinite(c).all()):
        return float("nan")
    try:
        return float(e @ np.linalg.solve(c, e))
    except np.linalg.LinAlgError:
        return float("nan")


def expected_calibration_error(conf: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """`tracking.calibration.ece` (10 equal-width bins), NaN for no frames instead of an error."""
    p = np.asarray(conf, float).reshape(-1)
    return ece(p, np.asarray(correct, float).reshape(-1), bins) if p.size else float("nan")


def summarize_mode(condition: str, mode: str, t_err: np.ndarray, r_err: np.ndarray, conf: np.ndarray,
                   nees_values: np.ndarray, threshold: float, tolerance: tuple[float, float], calibrated: bool,
                   thresholds: Sequence[tuple[float, float]] = DEFAULT_THRESHOLDS,
                   in_map_mask: np.ndarray | None = None,
                   published_errors: tuple[np.ndarray, np.ndarray] | None = None) -> ModeSummary:
    """Per-frame arrays (NaN errors / confidence / NEES where a frame got no answer) -> one ModeSummary;
    `in_map_mask` (per frame, see `in_map`) adds the in-map count and R@1 over those frames. `t_err`/`r_err` are
    the retrieval-only pose's errors (R@1); `published_errors` those of the published pose (precision, ECE;
    default: the same). The tolerance is added to `thresholds` when missing (`with_tolerance`)."""
    thresholds = with_tolerance(thresholds, tolerance)
    t, r, p, v = (np.asarray(x, float).reshape(-1) for x in (t_err, r_err, conf, nees_values))
    answered = np.isfinite(t) & np.isfinite(p)
    right = within(t, r, *tolerance)
    pt, pr = (t, r) if published_errors is None else (np.asarray(x, float).reshape(-1) for x in published_errors)
    right_pub = within(pt, pr, *tolerance)
    pub = answered & (p >= threshold)
    nv = v[pub & np.isfinite(v)]
    return ModeSummary(
        condition=condition, mode=mode, frames=len(t), answered=int(answered.sum()),
        thresholds=tuple((float(a), float(b)) for a, b in thresholds), shares=tuple(threshold_shares(t, r, thresholds)),
        threshold=float(threshold), published=int(pub.sum()),
        precision=float(right_pub[pub].mean()) if pub.any() else float("nan"),
        ece=expected_calibration_error(p[answered], right_pub[answered]),
        nees_mean=float(nv.mean()) if nv.size else float("nan"),
        nees_median=float(np.median(nv)) if nv.size else float("nan"), calibrated=calibrated,
        **_in_map_fields(right, in_map_mask))


def with_tolerance(thresholds: Sequence[tuple[float, float]],
                   tolerance: tuple[float, float]) -> tuple[tuple[float, float], ...]:
    """`thresholds` with the tolerance appended when it is not one of them.

    Why: R@1 at the tolerance is read from the shares (terminal table, report) beside the in-map R@1, which is
    computed at the tolerance; with a tolerance off the benchmark's three (e.g. `--tolerance 2,180`) R@1 had no
    share to show ("-") while "R@1 in map" had a value, so the two columns no longer matched."""
    out = tuple((float(a), float(b)) for a, b in thresholds)
    tol = (float(tolerance[0]), float(tolerance[1]))
    return out if tol in out else (*out, tol)


def _in_map_fields(right: np.ndarray, mask: np.ndarray | None) -> dict[str, Any]:
    if mask is None:
        return {}
    m = np.asarray(mask, bool).reshape(-1)
    return {"in_map": int(m.sum()), "in_map_share": float(right[m].mean()) if m.any() else float("nan")}
