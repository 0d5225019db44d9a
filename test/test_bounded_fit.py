"""Bounded calibration (tracking/bounded_fit.py): Clopper-Pearson blocks, pooling, folds, margin, by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from disam_ros.maps.verified_confidence import clopper_pearson_lower
from disam_ros.tracking.bounded_fit import (
    admitted_threshold,
    choose_bounded,
    first_admitted,
    fit_bounded,
    fold_margin,
    held_out,
    held_out_at_margin,
    needed_threshold,
    pool_bounds,
    pooled_shift,
    segment_folds,
    with_margin,
)
from disam_ros.tracking.calibration import Calibration


def test_clopper_pearson_small_counts_by_hand():
    # k = n: the bound solves p^n = alpha; k = 0: 0; n = 1, k = 1: 0.05
    assert clopper_pearson_lower(1, 1) == pytest.approx(0.05)
    assert clopper_pearson_lower(3, 3) == pytest.approx(0.05 ** (1 / 3))
    assert clopper_pearson_lower(0, 4) == 0.0
    # k = 1 of 2: P(X >= 1) = 1 - (1 - p)^2 = 0.05 -> p = 1 - sqrt(0.95)
    assert clopper_pearson_lower(1, 2) == pytest.approx(1 - math.sqrt(0.95), abs=1e-9)
    # k = 2 of 3: P(X >= 2) = 3p^2 - 2p^3 = 0.05, checked by substitution
    p = clopper_pearson_lower(2, 3)
    assert 3 * p ** 2 - 2 * p ** 3 == pytest.approx(0.05, abs=1e-9)


def test_a_block_needs_299_right_frames_to_promise_99_percent():
    # all right: one block whose bound is 0.05^(1/n); 0.05^(1/299) = 0.99003, 0.05^(1/298) = 0.98999
    for n, admitted in ((299, True), (298, False)):
        cal = fit_bounded(np.linspace(0, 1, n), np.ones(n))
        assert cal.y == pytest.approx((0.05 ** (1 / n),))
        assert (admitted_threshold(cal, 0.99) == 0.99) is admitted
        assert math.isinf(admitted_threshold(cal, 0.99)) is not admitted
    assert fit_bounded(np.arange(300.0), np.ones(300)).extra["bound"]["frames"] == [300]


def test_pooling_keeps_bounds_non_decreasing_by_hand():
    # 90 of 100 (bound 0.836) below 10 of 10 (bound 0.05^0.1 = 0.741): pooled to 100 of 110
    starts, n, k = pool_bounds(np.array([0.0, 1.0]), np.array([100, 10]), np.array([90, 10]))
    assert (starts, n, k) == ([0.0], [110], [100])
    # 5 of 10 (0.222) below 100 of 100 (0.970): already increasing, kept apart
    assert pool_bounds(np.array([0.0, 1.0]), np.array([10, 100]), np.array([5, 100]))[1] == [10, 100]


def test_fit_bounded_publishes_each_blocks_lower_bound():
    # scores 0..399: the lowest 100 half right (alternating), the top 300 all right; groups of 1
    s = np.arange(400.0)
    ok = np.r_[(np.arange(100) + 1) % 2, np.ones(300)]  # frame 99 wrong, 100-399 right
    cal = fit_bounded(s, ok, min_group=1)
    assert cal.y[-1] == pytest.approx(0.05 ** (1 / 300)) and cal.x[-1] == 100.0
    assert np.all(np.diff(cal.y) >= 0)
    assert cal.apply(np.array([150.0]))[0] >= 0.99 > cal.apply(np.array([99.0]))[0]


def test_segment_folds_by_hand():
    folds = segment_folds(np.arange(10.0), 2, gap=1.0)
    # stretches [0, 4.5) and [4.5, 9]; the fit keeps 1 frame away from the held-out stretch
    assert folds[0][1].tolist() == [True] * 5 + [False] * 5 and np.flatnonzero(folds[0][0]).tolist() == [6, 7, 8, 9]
    assert np.flatnonzero(folds[1][0]).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="at least 2 folds"):
        segment_folds(np.arange(4.0), 1)


def test_needed_threshold_by_hand():
    x = np.array([5.0, 4, 3, 2, 1])
    assert needed_threshold(x, np.array([1, 1, 0, 1, 1]), 0.99) == 4.0  # publishing 3 would include the wrong one
    assert needed_threshold(x, np.array([1, 1, 0, 1, 1]), 0.8) == 1.0  # 4 of 5 right down to 1
    assert needed_threshold(x, np.array([1, 1, 0, 0, 1]), 0.75) == 4.0  # 2/3, 2/4, 3/5 below 4
    top_wrong = needed_threshold(x, np.array([0, 1, 1, 1, 1]), 0.99)
    assert top_wrong > 5.0  # even the best-scored frame missed: publish nothing


def test_with_margin_lowers_the_band_and_keeps_the_fit_monotone():
    cal = Calibration("isotonic", x=(0.0, 1.0, 3.0), y=(0.5, 0.995, 0.999), samples=10)
    out = with_margin(cal, 1.5, 0.99)  # admitted from 1.0 -> from 2.5
    assert out.x == (0.0, 1.0, 2.5, 3.0) and out.y == (0.5, 0.5, 0.995, 0.999)
    assert out.apply(np.array([2.4, 2.5]))[0] < 0.99 <= out.apply(np.array([2.4, 2.5]))[1]
    assert out.extra["margin"] == {"raw": 1.5, "from": 2.5, "band_confidence": 0.5}
    # every block admitted, none below: the band gets just under the target
    top = with_margin(Calibration("isotonic", x=(1.0,), y=(0.995,)), 1.0, 0.99)
    assert top.x == (1.0, 2.0) and top.y[0] < 0.99 and top.y[1] == 0.995
    assert with_margin(cal, 0.0, 0.99) is cal


def test_fold_margin_and_held_out_by_hand():
    # two stretches of 400 frames, right ones scoring 1-10; wrong ones score 0-0.5 in the first stretch but
    # 2-2.5 in the second, among right ones
    rng = np.random.default_rng(0)
    pos = np.arange(800.0)
    x = rng.uniform(1.0, 10.0, 800)
    ok = np.ones(800, bool)
    x[50:60], ok[50:60] = np.linspace(0.0, 0.5, 10), False
    x[450:460], ok[450:460] = np.linspace(2.0, 2.5, 10), False
    folds = segment_folds(pos, 2, gap=5.0)
    margin, per = fold_margin(x, ok, folds, 0.99)
    # fold 0 held out: fitted on the second stretch, admitted from above 2.5; the first stretch needed only ~1.
    # fold 1 held out: fitted on the first, admitted from ~1; the second alone needed above 2.5: ~1.5 more.
    assert per[0] < 0.0 and 1.0 < per[1] < 2.0
    # Pooled, the first stretch's right frames dilute the second's wrong ones: a smaller margin suffices, and it
    # is the smallest one that does (brute force over every held-out frame's shifted score).
    taus = [first_admitted(fit_bounded(x[f], ok[f]), 0.99) for f, _ in folds]
    d = np.concatenate([x[h] - t for (_, h), t in zip(folds, taus)])
    k = np.concatenate([ok[h] for _, h in folds])
    enough = sorted(m for m in np.r_[0.0, d[d > 0]] if k[d >= m].mean() >= 0.99)
    assert 0.0 < margin < per[1] and margin == pytest.approx(enough[0])
    kept, hits = held_out_at_margin(x, ok, folds, 0.99, margin)
    assert (kept, hits) == (int((d >= margin).sum()), int(k[d >= margin].sum())) and hits >= 0.99 * kept
    cv = held_out(x, ok, folds, 0.99)
    assert cv.frames == 800 and cv.published - cv.right == 10  # the second stretch's wrong ones slipped through
    assert cv.delivered == pytest.approx(cv.right / cv.published) and cv.expected >= 0.99


def test_pooled_shift_by_hand():
    d, ok = np.array([3.0, 2.0, 1.0, 0.5, -1.0]), np.array([1, 1, 0, 1, 1], bool)
    assert pooled_shift(d, ok, 0.75) == 0.0  # d >= 0: 3 of 4 right
    assert pooled_shift(d, ok, 0.9) == 2.0  # d >= 1: 2 of 3; d >= 2: 2 of 2
    assert pooled_shift(d, np.zeros(5, bool), 0.9) > 3.0  # nothing is right: publish nothing
    assert pooled_shift(-d, ok, 0.9) == 0.0  # the one frame at or above its threshold is right
    assert pooled_shift(np.array([-1.0, -2.0]), ok[:2], 0.9) == 0.0  # none reaches one: nothing to move


def test_choose_bounded_keeps_the_higher_auc_and_applies_the_margin():
    rng = np.random.default_rng(1)
    n = 1200
    ok = rng.uniform(size=n) < 0.9
    good = np.where(ok, rng.normal(5, 1, n), rng.normal(0, 1, n))  # separates right from wrong
    noise = rng.normal(0, 1, n)  # tells nothing
    got = choose_bounded({"noise": noise, "good": good}, ok, np.arange(n), 0.99, gap=10)
    assert got.key == "good" and got.fit.extra["feature_key"] == "good"
    assert got.table["good"]["auc"] > 0.95 > got.table["noise"]["auc"]
    assert got.threshold == 0.99
    pub = got.fit.apply(good) >= got.threshold
    assert ok[pub].mean() >= 0.99 and pub.mean() > 0.5
    assert got.table["good"]["margin"] >= 0.0 and got.fit.extra["bound"]["kind"] == "clopper_pearson"
    with pytest.raises(ValueError, match="at least one candidate"):
        choose_bounded({}, ok, np.arange(n), 0.99)


def test_frames_to_promise_by_hand():
    from disam_ros.eval.calibrate import frames_to_promise

    # 0.99^299 = 0.0495 <= 0.05 < 0.99^298 = 0.0500; 0.95^59 = 0.0485 <= 0.05 < 0.95^58 = 0.0510
    assert frames_to_promise(0.99) == 299 and frames_to_promise(0.95) == 59


def test_the_choice_judges_each_feature_with_its_margin():
    """A feature that tells right from wrong well but whose folds need a small margin (a stretch of confident wrong
    answers) beats one that needs none but tells them apart worse (right answers half strong, half weak): the
    stored fit carries the margin, so the folds are judged with it (as the posterior mass against the support)."""
    rng = np.random.default_rng(0)
    n = 3000
    pos = np.arange(float(n))
    ok = np.ones(n, bool)
    ok[rng.choice(n, 200, replace=False)] = False
    sharp = np.where(ok, rng.normal(6.0, 1.0, n), rng.normal(0.0, 1.0, n))
    sharp[2600:2630], ok[2600:2630] = np.linspace(4.0, 5.0, 30), False
    strong = rng.uniform(size=n) < 0.5
    blunt = np.where(ok, np.where(strong, rng.normal(5.0, 1.0, n), rng.normal(0.3, 1.0, n)), rng.normal(0.0, 1.0, n))
    blunt[2600:2630] = -1.0
    t = choose_bounded({"blunt": blunt, "sharp": sharp}, ok, pos, 0.99, gap=10).table
    assert t["sharp"]["auc"] > 0.95 > 0.85 > t["blunt"]["auc"]
    assert t["sharp"]["cv_delivered"] < 0.99 <= t["blunt"]["cv_delivered"]  # without the margin: sharp fails
    assert t["sharp"]["margin"] > 0.0 == t["blunt"]["margin"]
    assert t["sharp"]["cv_right_margin"] >= 0.99 * t["sharp"]["cv_published_margin"] > 0  # with it: it holds
    got = choose_bounded({"blunt": blunt, "sharp": sharp}, ok, pos, 0.99, gap=10)
    assert got.key == "sharp" and t["sharp"]["coverage"] > t["blunt"]["coverage"]
