"""Metric functions against hand-computed cases (boundaries, abstentions, recall@N, percentiles)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from disam_ros.eval.metrics import (
    ALL,
    QueryResult,
    candidate_distances,
    per_condition,
    percentiles,
    recall_at_n,
    rotation_errors_deg,
    summarize,
    threshold_shares,
    translation_errors,
    within,
)
from disam_ros.geometry import yaw_pitch_roll_to_quat

Q_ID = np.array([0.0, 0.0, 0.0, 1.0])


def yaw_deg(d: float) -> np.ndarray:
    return yaw_pitch_roll_to_quat(math.radians(d))


def test_rotation_error_90_about_z_and_sign_invariance():
    qz90 = np.array([0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)])
    assert rotation_errors_deg(Q_ID, qz90)[0] == pytest.approx(90.0, abs=1e-9)
    assert rotation_errors_deg(qz90, -qz90)[0] == pytest.approx(0.0, abs=1e-6)
    # 180 deg about x, and the error is symmetric
    qx180 = np.array([1.0, 0.0, 0.0, 0.0])
    assert rotation_errors_deg(qx180, Q_ID)[0] == pytest.approx(180.0, abs=1e-9)
    # a missing estimate (NaN row) gives NaN, the other rows are unaffected
    err = rotation_errors_deg(np.stack([Q_ID, Q_ID]), np.stack([np.full(4, np.nan), qz90]))
    assert math.isnan(err[0]) and err[1] == pytest.approx(90.0)


def test_translation_error_is_euclidean_and_nan_for_missing():
    e = translation_errors([[0, 0, 0], [1, 1, 1]], [[3, 4, 0], [np.nan] * 3])
    assert e[0] == 5.0 and math.isnan(e[1])


def test_threshold_boundary_is_inclusive():
    # exactly 0.25 m and exactly 2 degrees, built from a yaw quaternion (goes through arccos round-off)
    t = translation_errors([[0, 0, 0]], [[0.25, 0, 0]])
    r = rotation_errors_deg(Q_ID, yaw_deg(2.0))
    assert t[0] == 0.25 and r[0] == pytest.approx(2.0, abs=1e-9)
    assert within(t, r, 0.25, 2.0)[0]
    # just outside on either axis is not within
    assert not within(np.array([0.25 + 1e-6]), r, 0.25, 2.0)[0]
    assert not within(t, rotation_errors_deg(Q_ID, yaw_deg(2.0001)), 0.25, 2.0)[0]
    # both must hold: a good position with a bad rotation fails
    assert not within(np.array([0.0]), np.array([2.5]), 0.25, 2.0)[0]


def test_shares_count_abstentions_as_failures():
    t = np.array([0.25, 0.4, 3.0, np.nan])  # last query abstained
    r = np.array([2.0, 4.0, 9.0, np.nan])
    assert threshold_shares(t, r) == [0.25, 0.5, 0.75]
    assert all(math.isnan(x) for x in threshold_shares(np.zeros(0), np.zeros(0)))


def test_recall_at_n_hand_computed():
    # query 0: best candidate 7 m, 2nd 3 m; query 1: 20, 30, 4 m; query 2: one candidate at 12 m; query 3: none
    d = np.array([[7.0, 3.0, np.nan], [20.0, 30.0, 4.0], [12.0, np.nan, np.nan], [np.nan] * 3])
    rec = recall_at_n(d, ns=(1, 2, 3, 10), radii=(5.0, 12.0, 25.0))
    assert rec[(1, 5.0)] == 0.0
    assert rec[(1, 12.0)] == 0.5  # 7 m and 12 m (inclusive)
    assert rec[(1, 25.0)] == 0.75
    assert rec[(2, 5.0)] == 0.25  # query 0 via its 2nd candidate
    assert rec[(3, 5.0)] == 0.5
    assert rec[(3, 25.0)] == 0.75  # query 3 (no candidate) is never recalled
    assert all(np.isnan(rec[(10, r)]) for r in (5.0, 12.0, 25.0))  # only 3 candidates kept: R@10 not measured


def test_candidate_distances_shape_and_values():
    d = candidate_distances(np.array([[0.0, 0, 0]]), np.array([[[3.0, 4, 0], [0, 0, 1]]]))
    assert d.shape == (1, 2) and d.tolist() == [[5.0, 1.0]]


def test_percentiles_linear_and_nan_handling():
    p = percentiles([4.0, 1.0, 3.0, 2.0, np.nan], (50, 90, 100))
    assert p[50] == 2.5 and p[90] == pytest.approx(3.7) and p[100] == 4.0
    assert all(math.isnan(v) for v in percentiles([], (50,)).values())


def _result(name, cond, t_m, r_deg, latency=None, answered=True, cands=None):
    gt_p, gt_q = np.array([10.0, 5.0, 0.0]), Q_ID
    return QueryResult(name, cond, gt_p, gt_q, gt_p + [t_m, 0, 0] if answered else None,
                       yaw_deg(r_deg) if answered else None, latency, cands)


def hand_results() -> list[QueryResult]:
    """night: 4 queries (one abstained); day: 2 queries. Shared with test_eval_report."""
    return [
        _result("n0.png", "night", 0.2, 1.0, 0.010, cands=np.array([[10.2, 5, 0], [40, 5, 0]])),
        _result("n1.png", "night", 0.4, 4.0, 0.020, cands=np.array([[30.0, 5, 0], [10.4, 5, 0]])),
        _result("n2.png", "night", 3.0, 9.0, 0.030, cands=np.array([[13.0, 5, 0]])),
        _result("n3.png", "night", 0, 0, 0.040, answered=False),
        _result("d0.png", "day", 0.1, 0.5, 0.005, cands=np.array([[10.1, 5, 0]])),
        _result("d1.png", "day", 20.0, 30.0, 0.015, cands=np.array([[30.0, 5, 0]])),
    ]


def test_summarize_per_condition_hand_computed():
    s = per_condition(hand_results(), recall_ns=(1, 2), recall_radii=(0.5, 5.0), latency_ps=(50,))
    assert list(s) == ["day", "night", ALL]
    night, day, every = s["night"], s["day"], s[ALL]
    assert (night.queries, night.answered, night.abstained, night.abstain_rate) == (4, 3, 1, 0.25)
    assert night.shares == (0.25, 0.5, 0.75)
    assert night.median_t_m == pytest.approx(0.4) and night.median_r_deg == pytest.approx(4.0)
    # recall: n0 top-1 at 0.2 m; n1 top-1 at 20 m, top-2 at 0.4 m; n2 at 3 m; n3 has no candidates
    assert night.recall[(1, 0.5)] == 0.25 and night.recall[(2, 0.5)] == 0.5 and night.recall[(1, 5.0)] == 0.5
    assert night.latency_s[50] == pytest.approx(0.025)
    assert day.shares == (0.5, 0.5, 0.5) and day.median_t_m == pytest.approx(10.05)
    assert every.queries == 6 and every.shares == (2 / 6, 3 / 6, 4 / 6)


def test_summarize_without_candidates_or_latency_leaves_them_empty():
    s = summarize([QueryResult("q", "c", np.zeros(3), Q_ID, np.zeros(3), Q_ID)])
    assert s.recall == {} and s.latency_s == {} and s.shares == (1.0, 1.0, 1.0)
