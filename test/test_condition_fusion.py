"""Fusion of image evidence with the solar prior (hand-set probabilities) and hysteresis over frames."""
from __future__ import annotations

import math

import pytest

from disam_ros.conditions.fusion import (
    Hysteresis,
    attribute_probs,
    daylight_prior,
    domain_daylight_likelihood,
    fuse,
    fuse_domain,
)
from disam_ros.conditions.table import ConditionTable, DomainAttributes, ScoringRule

TABLE = ConditionTable("t", "day", {"day": DomainAttributes(weather=("sunny",), daylight=("day",)),
                                    "night": DomainAttributes(daylight=("night",)),
                                    "snow": DomainAttributes(weather=("snow",))})


def test_prior_is_uniform_without_elevation():
    assert daylight_prior(None) == pytest.approx({"day": 0.25, "low_sun": 0.25, "twilight": 0.25, "night": 0.25})


def test_prior_at_the_day_threshold_splits_day_and_low_sun():
    # elevation 10 = day edge: P(day) = sigmoid(0) = 0.5; low_sun edge at -0.833 deg is 10.833/2 = 5.42 widths
    # away: sigmoid(5.4167) = 1/(1 + 0.004437) = 0.995582, so P(low_sun) = 0.4956
    p = daylight_prior(10.0, softness_deg=2.0)
    assert p["day"] == pytest.approx(0.5, abs=1e-6)
    assert p["low_sun"] == pytest.approx(0.49558, abs=1e-4)
    assert p["night"] < 1e-4
    assert daylight_prior(-40.0)["night"] > 0.9999


def test_fuse_multiplies_and_normalises():
    post = fuse({"a": 0.6, "b": 0.4}, {"a": 0.25, "b": 1.0}, floor=0.0)
    # 0.15 : 0.40
    assert post == pytest.approx({"a": 0.15 / 0.55, "b": 0.40 / 0.55})
    assert fuse({"a": 0.6, "b": 0.4}, {"a": 0.25}, prior_weight=0.0, floor=0.0) == pytest.approx({"a": 0.6, "b": 0.4})


def test_daylight_likelihood_uses_the_cost_weight():
    like = domain_daylight_likelihood({"day": 1.0, "low_sun": 0.0, "twilight": 0.0, "night": 0.0}, TABLE,
                                      ["day", "night", "snow"], ScoringRule(daylight_weight=3.0))
    # night is 3 darkness steps from day: exp(-9); snow has no daylight attribute: neutral
    assert like == pytest.approx({"day": 1.0, "night": math.exp(-9.0), "snow": 1.0})


def test_clock_vetoes_a_dark_frame_at_noon_but_not_weather():
    image = {"day": 0.25, "night": 0.7, "snow": 0.05}  # a tunnel at noon looks like night
    post = fuse_domain(image, 50.0, TABLE, ScoringRule())
    assert max(post, key=post.get) == "day"
    assert post["night"] < 1e-3
    assert post["snow"] / post["day"] == pytest.approx(0.05 / 0.25, rel=1e-2)  # the clock says nothing of snow
    unknown = fuse_domain(image, None, TABLE, ScoringRule())
    assert max(unknown, key=unknown.get) == "night"  # no stamp: the image decides


def test_no_elevation_is_neutral_to_tabled_and_untabled_domains():
    # day and night are tabled, snow has no daylight attribute: without a stamp none may be favoured, so the
    # posterior is the image's probabilities with the floor: (p + 1e-4) / (1 + 3e-4)
    image = {"day": 0.25, "night": 0.7, "snow": 0.05}
    for elevation in (None, math.nan):
        post = fuse_domain(image, elevation, TABLE, ScoringRule())
        assert post == pytest.approx({k: (v + 1e-4) / (1 + 3e-4) for k, v in image.items()}, rel=1e-9)


def test_attribute_marginal_through_the_table():
    p = attribute_probs({"day": 0.2, "night": 0.5, "snow": 0.3}, TABLE, "daylight", ("day", "night"))
    assert p == pytest.approx({"day": 0.2 / 0.7, "night": 0.5 / 0.7})


def test_hysteresis_needs_a_confirmed_lead():
    h = Hysteresis(alpha=1.0, margin=0.2, hold=2)
    assert h.update({"A": 0.9, "B": 0.1})[0] == "A"
    assert h.update({"A": 0.2, "B": 0.8})[0] == "A"   # one frame: streak 1 of 2
    assert h.update({"A": 0.9, "B": 0.1})[0] == "A"   # streak broken
    assert h.update({"A": 0.45, "B": 0.55})[0] == "A"  # lead 0.1 < margin: does not count
    assert h.update({"A": 0.2, "B": 0.8})[0] == "A"
    chosen, p = h.update({"A": 0.2, "B": 0.8})
    assert (chosen, p) == ("B", pytest.approx(0.8))


def test_hysteresis_smooths_with_the_moving_average():
    h = Hysteresis(alpha=0.5, margin=0.0, hold=1)
    h.update({"A": 1.0, "B": 0.0})
    # smoothed after one B frame: A 0.5, B 0.5, a tie; the argmax of a tie is the first class, A: no switch
    assert h.update({"A": 0.0, "B": 1.0}) == ("A", pytest.approx(0.5))
    assert h.update({"A": 0.0, "B": 1.0}) == ("B", pytest.approx(0.75))
    h.reset()
    assert h.update({"A": 0.3, "B": 0.7})[0] == "B"


def test_hysteresis_rejects_bad_settings():
    with pytest.raises(ValueError):
        Hysteresis(alpha=0.0)
    with pytest.raises(ValueError):
        Hysteresis(hold=0)
