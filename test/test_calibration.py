"""Calibration: PAV and isotonic/logistic fits worked by hand, ECE, reliability, precision vs coverage, JSON."""
from __future__ import annotations

import math

import numpy as np
import pytest

from disam_ros.tracking.calibration import (
    Calibration,
    auc,
    choose_feature,
    ece,
    fit_isotonic,
    fit_logistic,
    pav,
    precision_coverage,
    reliability,
    score_groups,
    threshold_for_precision,
    wilson_lower,
)


def test_pav_by_hand():
    # 1 | 3 ; 2 < 3 -> pool (3+2)/2 = 2.5 ; 4 ; 0 < 4 -> pool 2, now 2 < 2.5 -> pool (2.5*2 + 2*2)/4 = 2.25 ; 5
    assert pav(np.array([1.0, 3, 2, 4, 0, 5])).tolist() == [1, 2.25, 2.25, 2.25, 2.25, 5]
    # weights: 3 (w 1) and 1 (w 3) pool to (3 + 3) / 4 = 1.5
    assert pav(np.array([3.0, 1.0]), np.array([1.0, 3.0])).tolist() == [1.5, 1.5]
    assert pav(np.array([0.0, 1, 2])).tolist() == [0, 1, 2]  # already monotone: unchanged


def test_isotonic_is_exact_and_monotone_on_a_toy_set():
    s = np.array([0.1, 0.2, 0.3, 0.4])
    c = np.array([0, 1, 0, 1])
    cal = fit_isotonic(s, c, min_group=1, mode="sequence")
    # per score 0, 1, 0, 1 -> PAV 0, 0.5, 0.5, 1: steps start at 0.1, 0.2, 0.4
    assert cal.x == (0.1, 0.2, 0.4) and cal.y == (0.0, 0.5, 1.0)
    assert cal.apply(s).tolist() == [0.0, 0.5, 0.5, 1.0]
    assert cal.apply(np.array([0.0, 0.15, 0.35, 9.0])).tolist() == [0.0, 0.0, 0.5, 1.0]
    grid = cal.apply(np.linspace(-1, 2, 301))
    assert np.all(np.diff(grid) >= 0)


def test_isotonic_pools_equal_scores_and_small_groups():
    # equal scores share a label mean: 0.5 has labels 1, 0 -> 0.5
    cal = fit_isotonic(np.array([0.5, 0.5, 0.9]), np.array([1, 0, 1]), min_group=1)
    assert cal.apply(np.array([0.5, 0.9])).tolist() == [0.5, 1.0]
    # groups of >= 2 samples, equal scores never split: (1, 2), (3, 3, 3), (4, 5)
    gid = score_groups(np.array([5.0, 1, 3, 2, 3, 4, 3]), 2)
    assert gid.tolist() == [2, 0, 1, 0, 1, 2, 1]
    # a short tail joins the group before it: (1, 2), (3, 4, 5)
    assert score_groups(np.array([1.0, 2, 3, 4, 5]), 2).tolist() == [0, 0, 1, 1, 1]


def test_logistic_fits_two_proportions_exactly():
    # x = -1: 1 of 4 right (p 0.25), x = +1: 3 of 4 right (p 0.75); two parameters fit two proportions:
    # -a + b = logit(0.25) = -ln 3 and a + b = ln 3 -> a = ln 3, b = 0
    s = np.array([-1.0] * 4 + [1.0] * 4)
    c = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    cal = fit_logistic(s, c)
    assert cal.a == pytest.approx(math.log(3), abs=1e-4) and cal.b == pytest.approx(0.0, abs=1e-4)
    assert cal.apply(np.array([-1.0, 1.0])) == pytest.approx([0.25, 0.75], abs=1e-4)


def test_ece_and_reliability_by_hand():
    conf = np.array([0.9, 0.9, 0.2, 0.2])
    ok = np.array([1, 0, 0, 0])
    # bin (0.8, 0.9]: accuracy 0.5 vs 0.9 -> 0.4 * 2/4; bin (0.1, 0.2]: 0 vs 0.2 -> 0.2 * 2/4; ECE 0.3
    assert ece(conf, ok) == pytest.approx(0.3)
    r = reliability(conf, ok)
    assert r["count"].tolist() == [0, 2, 0, 0, 0, 0, 0, 0, 2, 0]
    assert r["accuracy"][8] == 0.5 and r["confidence"][1] == pytest.approx(0.2)
    assert ece(np.array([0.75, 0.75, 0.75, 0.75]), np.array([1, 1, 1, 0])) == pytest.approx(0.0)


def test_precision_coverage_and_threshold_by_hand():
    conf = np.array([0.9, 0.8, 0.8, 0.1])
    ok = np.array([1, 0, 1, 0])
    pc = precision_coverage(conf, ok)
    assert pc["threshold"].tolist() == [0.9, 0.8, 0.1]
    assert pc["coverage"].tolist() == [0.25, 0.75, 1.0]
    assert pc["precision"] == pytest.approx([1.0, 2 / 3, 0.5])
    assert threshold_for_precision(conf, ok, 0.6, z=0.0) == 0.8  # the lowest threshold still >= 60 %
    assert threshold_for_precision(conf, ok, 0.99, z=0.0) == 0.9
    # with confidence asked for, one right answer out of one is not enough for 99 %
    assert threshold_for_precision(conf, ok, 0.99) == math.inf


def test_wilson_lower_bound_by_hand():
    # 8 of 10 at z = 1.645 (z^2 = 2.706): centre 0.8 + 2.706 / 20 = 0.9353; spread
    # 1.645 * sqrt(0.016 + 2.706 / 400) = 1.645 * 0.15088 = 0.2482; (0.9353 - 0.2482) / 1.2706 = 0.5408
    assert wilson_lower(np.array([8.0]), np.array([10.0]))[0] == pytest.approx(0.5408, abs=1e-3)
    assert wilson_lower(np.array([5.0]), np.array([10.0]), z=0.0)[0] == pytest.approx(0.5)


def test_json_round_trip_and_version():
    cal = fit_isotonic(np.array([0.1, 0.2, 0.3]), np.array([0, 1, 1]), min_group=1, mode="window",
                       tolerance=(5.0, 10.0))
    again = Calibration.from_json(cal.to_json())
    assert again == cal and again.apply(np.array([0.25])).tolist() == [1.0]
    log = fit_logistic(np.array([0.0, 1.0, 0.0, 1.0]), np.array([0, 1, 1, 1]))
    assert Calibration.from_json(log.to_json()).apply(0.5) == pytest.approx(log.apply(0.5))
    with pytest.raises(ValueError, match="version"):
        Calibration.from_dict({**cal.to_dict(), "version": 2})
    with pytest.raises(ValueError, match="kind"):
        Calibration("platt")
    with pytest.raises(ValueError, match="one score and one bool"):
        fit_isotonic(np.array([0.1, 0.2]), np.array([1]))


def test_isotonic_answers_zero_below_its_fitted_range():
    # every calibration frame right: one block, value 1 from score 0.5 up. Below 0.5 nothing was seen,
    # so the probability there is 0 (not the block's 1), and a NaN score is never a sure answer
    cal = fit_isotonic(np.array([0.5, 0.7, 0.9]), np.array([1, 1, 1]), min_group=1)
    assert cal.x == (0.5,) and cal.y == (1.0,)
    assert cal.apply(np.array([-3.0, 0.49, 0.5, 0.8, 7.0, np.nan])).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    assert float(cal.apply(0.1)) == 0.0  # a scalar in, a scalar out


def test_auc_by_hand():
    # right answers score 0.35 and 0.8, wrong ones 0.1 and 0.4: 3 of the 4 (right, wrong) pairs are ordered
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auc(np.array([0.5, 0.5, 0.9]), np.array([1, 0, 1])) == pytest.approx(0.75)  # tie counts half
    assert math.isnan(auc(np.array([0.1, 0.2]), np.array([1, 1])))  # no wrong answer: undefined


def test_choose_feature_keeps_the_feature_with_the_best_auc():
    """60 right then 40 wrong frames. 'sharp' ranks every right frame above every wrong one (AUC 1): its
    isotonic fit is 1 on the right ones, so at 99 % it publishes exactly them (coverage 0.6); 'flat' is one
    value for all (one block at 0.6: nothing reaches 99 %, coverage 0, AUC 0.5). Order does not matter."""
    ok = np.r_[np.ones(60), np.zeros(40)]
    sharp = np.r_[np.linspace(2.0, 3.0, 60), np.linspace(0.0, 1.0, 40)]
    flat = np.full(100, 0.7)
    for cands in ({"flat": flat, "sharp": sharp}, {"sharp": sharp, "flat": flat}):
        got = choose_feature(cands, ok, 0.99, mode="sequence", extra={"covariance_scale": 2.0})
        assert got.key == "sharp" and got.fit.feature_key("support") == "sharp"
        assert got.fit.extra["covariance_scale"] == 2.0 and got.fit.mode == "sequence"
        assert got.table["sharp"]["coverage"] == pytest.approx(0.6) and got.table["sharp"]["auc"] == 1.0
        assert got.table["flat"]["coverage"] == 0.0 and got.table["flat"]["auc"] == 0.5
        assert got.threshold == pytest.approx(1.0) and math.isinf(got.table["flat"]["threshold"])
    tie = choose_feature({"a": flat, "b": flat + 1.0}, ok, 0.99)  # neither publishes, same AUC: the first
    assert tie.key == "a" and math.isinf(tie.threshold)
    # 'late' puts one wrong frame on top (AUC (2400 - 60) / 2400 = 0.975; the top k never reach 99 %), 'top'
    # has its best 30 right frames on top, then the wrong ones, then the other 30 right (AUC 1200 / 2400 = 0.5,
    # coverage 0.3): the AUC decides, the coverage only breaks ties
    late = sharp.copy()
    late[60] = 9.0
    top = np.r_[np.linspace(5.0, 6.0, 30), np.linspace(-2.0, -1.0, 30), np.linspace(0.0, 1.0, 40)]
    got = choose_feature({"top": top, "late": late}, ok, 0.99)
    assert got.table["late"]["auc"] == pytest.approx(0.975) and got.table["top"]["auc"] == pytest.approx(0.5)
    assert got.table["top"]["coverage"] == pytest.approx(0.3) and got.table["late"]["coverage"] == 0.0
    assert got.key == "late"
    assert Calibration("isotonic", x=(0.0,), y=(1.0,)).feature_key("support") == "support"  # an older fit
