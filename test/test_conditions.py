"""Condition-aware encoder selection: solar geometry against almanac values, calendar, table matching."""
from __future__ import annotations

import calendar
import math

import pytest

from disam_ros import conditions as C
from disam_ros.conditions import solar

LONDON = (51.5074, -0.1278)
GREENWICH = (51.4769, 0.0)
SYDNEY = (-33.8688, 151.2093)
CHICHESTER = (50.8376, -0.7749)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return float(calendar.timegm((y, mo, d, h, mi, 0)))


# Published sunrise/sunset (local clock) -> UTC; within 3 minutes (almanacs round to the minute and use
# slightly different coordinates).
ALMANAC = [
    # London, summer solstice 2021: 04:43 / 21:21 BST (UTC+1)
    (LONDON, utc(2021, 6, 21, 12), utc(2021, 6, 21, 3, 43), utc(2021, 6, 21, 20, 21)),
    # Chichester, winter solstice 2021: 08:03 / 15:59 GMT
    (CHICHESTER, utc(2021, 12, 21, 12), utc(2021, 12, 21, 8, 3), utc(2021, 12, 21, 15, 59)),
    # Sydney, 1 January: 05:48 / 20:10 AEDT (UTC+11), so sunrise is on 31 Dec UTC
    (SYDNEY, utc(2022, 1, 1, 2), utc(2021, 12, 31, 18, 48), utc(2022, 1, 1, 9, 10)),
    # Sydney, 1 June: 06:52 / 16:55 AEST (UTC+10)
    (SYDNEY, utc(2022, 6, 1, 2), utc(2022, 5, 31, 20, 52), utc(2022, 6, 1, 6, 55)),
]


@pytest.mark.parametrize("place,when,rise,set_", ALMANAC)
def test_sunrise_sunset_match_almanac(place, when, rise, set_):
    got_rise, got_set = C.sun_times(when, *place)
    assert abs(got_rise - rise) < 180, (got_rise - rise) / 60
    assert abs(got_set - set_) < 180, (got_set - set_) / 60
    # At the computed instants the geometric elevation is the almanac horizon.
    assert C.solar_elevation(got_rise, *place) == pytest.approx(C.SUNRISE_ELEVATION_DEG, abs=0.02)
    assert C.solar_elevation(got_set, *place) == pytest.approx(C.SUNRISE_ELEVATION_DEG, abs=0.02)


def test_solar_elevation_known_geometry():
    # Greenwich at UTC midnight on the June solstice: the sun is lat - (90 - 23.44) = 15.08 deg below.
    assert C.solar_elevation(utc(2021, 6, 21, 0), *GREENWICH) == pytest.approx(-15.08, abs=0.1)
    # Noon maximum on the solstice: 90 - 51.48 + 23.44 = 61.96 deg.
    noon = max(C.solar_elevation(utc(2021, 6, 21, 12) + m * 60, *GREENWICH) for m in range(-20, 21))
    assert noon == pytest.approx(61.96, abs=0.05)
    # Refraction lifts the sun by ~0.57 deg (34') at the horizon and nothing at the zenith.
    assert solar._refraction_deg(0.0) == pytest.approx(0.48, abs=0.01)
    assert solar._refraction_deg(89.0) == 0.0
    t = C.sun_times(utc(2021, 6, 21, 12), *GREENWICH)[0]
    lift = C.solar_elevation(t, *GREENWICH, refraction=True) - C.solar_elevation(t, *GREENWICH)
    assert 0.3 < lift < 0.6


def test_polar_day_has_no_sunrise():
    assert C.sun_times(utc(2021, 6, 21, 12), 69.65, 18.96) == (None, None)


def test_bad_coordinates_get_one_line_error():
    with pytest.raises(ValueError, match="latitude 95.0 is out of range"):
        C.solar_elevation(0.0, 95.0, 0.0)


@pytest.mark.parametrize("when,expected", [
    (utc(2021, 6, 21, 12), "day"),         # ~62 deg
    (utc(2021, 6, 21, 4, 0), "low_sun"),   # ~2 deg after sunrise
    (utc(2021, 6, 21, 3, 0), "twilight"),  # ~-5.5 deg
    (utc(2021, 6, 21, 0, 0), "night"),     # ~-15 deg
    (utc(2021, 12, 21, 15, 0), "low_sun"),  # winter afternoon: sun ~5 deg
    (utc(2021, 12, 21, 22, 0), "night"),
])
def test_daylight_class_at_hand_picked_stamps(when, expected):
    assert C.daylight_class(C.solar_elevation(when, *GREENWICH)) == expected


def test_daylight_thresholds():
    assert C.daylight_class(10.0) == "day"
    assert C.daylight_class(9.99) == "low_sun"
    assert C.daylight_class(-0.833) == "low_sun"
    assert C.daylight_class(-0.84) == "twilight"
    assert C.daylight_class(-12.0) == "twilight"
    assert C.daylight_class(-12.01) == "night"
    assert C.daylight_class(5.0, {"day": 4.0}) == "day"


@pytest.mark.parametrize("month,north,south", [
    (1, "winter", "summer"), (4, "spring", "autumn"), (7, "summer", "winter"), (10, "autumn", "spring"),
    (12, "winter", "summer"),
])
def test_season_both_hemispheres(month, north, south):
    stamp = utc(2021, month, 15, 12)
    assert C.season(stamp, 40.0) == north
    assert C.season(stamp, -40.0) == south


def test_foliage_both_hemispheres_and_tropics():
    assert C.foliage(utc(2011, 4, 4), 40.44) == "none"     # CMU reference date
    assert C.foliage(utc(2011, 7, 28), 40.44) == "full"
    assert C.foliage(utc(2010, 10, 28), 40.44) == "mixed"
    assert C.foliage(utc(2011, 1, 15), -33.9) == "full"     # southern summer
    assert C.foliage(utc(2011, 7, 15), -33.9) == "none"
    assert C.foliage(utc(2011, 1, 15), 1.3) == "full"       # Singapore


def test_describe_unknowns():
    q = C.describe(12.5, "sunny", 40.0, -80.0)  # sim time: no calendar
    assert (q.daylight, q.foliage, q.season) == ("unknown", "unknown", "unknown")
    q = C.describe(utc(2011, 4, 4, 16), "overcast", None, None)
    assert q.daylight == "unknown" and q.weather == "overcast"
    q = C.describe(utc(2011, 4, 4, 16), "sunny", 40.44, -79.99)
    assert (q.daylight, q.foliage, q.season) == ("day", "none", "spring")
    with pytest.raises(ValueError, match="weather 'hail'"):
        C.describe(0.0, "hail", None, None)


@pytest.fixture(scope="module")
def config():
    return C.load_config()


def test_packaged_table_parses(config):
    t = config.tables["cmu_seasons"]
    assert t.reference == "sunny_no_foliage"
    assert all(isinstance(a, C.DomainAttributes) for a in t.domains.values())


PITT = (40.4406, -79.9959)
CMU_DOMAINS = ("sunny_no_foliage", "overcast_mixed_foliage", "low_sun_snow", "low_sun_mixed_foliage",
               "sunny_foliage", "cloudy_foliage")


def selector(config, **kw):
    return C.ConditionSelector(model_domains=kw.pop("domains", CMU_DOMAINS), config=config,
                               latitude=PITT[0], longitude=PITT[1], **kw)


def test_selection_matches_conditions(config):
    s = selector(config, weather="overcast")
    assert s.select(utc(2010, 10, 28, 17)).domain == "overcast_mixed_foliage"  # 13:00 EDT
    s.set_weather("sunny")
    assert s.select(utc(2011, 4, 4, 17)).domain == "sunny_no_foliage"
    assert s.select(utc(2010, 8, 1, 17)).domain == "sunny_foliage"
    s.set_weather("snow")
    # 21 Dec, 16:00 EST: sun ~8 deg -> low sun + snow
    sel = s.select(utc(2010, 12, 21, 21))
    assert sel.query.daylight == "low_sun" and sel.domain == "low_sun_snow"


def test_selection_falls_back_to_reference(config):
    s = selector(config, weather="fog")
    # Midnight: no night domain, best is far above max_cost -> reference, as the paper does for Night.
    sel = s.select(utc(2011, 4, 5, 4))
    assert sel.query.daylight == "night"
    assert sel.domain == "sunny_no_foliage" and "reference" in sel.reason
    # Unknown everything (sim time, unknown weather): every domain costs 0 -> reference wins the tie.
    s.set_weather("unknown")
    assert s.select(3.0).domain == "sunny_no_foliage"


def test_fallback_is_a_model_domain(config, caplog):
    # Model lacks the table's reference: fallback is the map's reference if the model has it...
    s = selector(config, domains=("overcast_mixed_foliage", "low_sun_snow"), reference="low_sun_snow")
    assert s.fallback == "low_sun_snow"
    # ...else the model's first domain; missing table domains are reported once.
    s = selector(config, domains=("overcast_mixed_foliage", "extra"), reference="not_in_model")
    assert s.fallback == "overcast_mixed_foliage"
    assert any("not in the model" in w for w in s.warnings)
    assert any("'extra'" in w or "['extra']" in w for w in s.warnings)
    assert s.select(utc(2011, 4, 5, 4)).domain in s.model_domains


def test_override_wins(config):
    s = selector(config, weather="sunny", override="low_sun_snow")
    sel = s.select(utc(2011, 4, 4, 17))
    assert sel.domain == "low_sun_snow" and "override" in sel.reason
    s.set_override("")
    assert s.select(utc(2011, 4, 4, 17)).domain == "sunny_no_foliage"
    with pytest.raises(ValueError, match="not a model domain"):
        s.set_override("night_rain")


def test_table_autopick_and_validation():
    cfg = C.parse_config({"tables": {
        "a": {"reference": "x", "domains": {"x": {"weather": "sunny"}, "y": {"weather": ["rain", "fog"]}}},
        "b": {"reference": "p", "domains": {"p": {}, "q": {"daylight": "night"}, "r": {"foliage": "any"}}},
    }})
    assert C.pick_table(cfg, ["p", "q"]).name == "b"
    assert C.pick_table(cfg, ["x"]).name == "a"
    s = C.ConditionSelector(("x", "y"), cfg, weather="fog")
    assert s.select(None).domain == "y"
    with pytest.raises(ValueError, match="daylight \\['dusk'\\] not in"):
        C.parse_config({"tables": {"a": {"reference": "x", "domains": {"x": {"daylight": "dusk"}}}}})
    with pytest.raises(ValueError, match="reference 'z' is not one of its domains"):
        C.parse_config({"tables": {"a": {"reference": "z", "domains": {"x": {}}}}})
    with pytest.raises(ValueError, match="day > low_sun > twilight"):
        C.parse_config({"tables": cfg_tables(), "daylight_thresholds_deg": {"day": -20}})


def cfg_tables():
    return {"a": {"reference": "x", "domains": {"x": {}}}}


def test_match_cost_ordering():
    rule = C.ScoringRule()
    q = C.QueryCondition(weather="overcast", daylight="twilight", foliage="none")
    assert C.match_cost(q, C.DomainAttributes(("overcast",), ("twilight",), ("none",)), rule) == 0
    # daylight mismatch (one step) costs more than any weather mismatch, which costs more than foliage.
    dl = C.match_cost(q, C.DomainAttributes(("overcast",), ("low_sun",), ("none",)), rule)
    wx = C.match_cost(q, C.DomainAttributes(("sunny",), ("twilight",), ("none",)), rule)
    wx_similar = C.match_cost(q, C.DomainAttributes(("cloudy",), ("twilight",), ("none",)), rule)
    fo = C.match_cost(q, C.DomainAttributes(("overcast",), ("twilight",), ("mixed",)), rule)
    assert dl > wx > wx_similar >= fo > 0
    assert math.isfinite(dl)


def test_world_yaml_is_a_condition_table(tmp_path):
    """A dataset's world.yaml (synthetic world format) works as conditions_file."""
    import yaml

    world = {"reference": "sunny", "site": {"latitude": 40.44, "longitude": -80.0},
             "conditions": {"sunny": {"weather": "sunny", "daylight": "day", "foliage": "none", "start_utc": 1.0},
                            "dusk": {"weather": "sunny", "daylight": "low_sun", "foliage": "none"}}}
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(world))
    cfg = C.load_config(path)
    assert list(cfg.tables) == ["world"] and cfg.tables["world"].reference == "sunny"
    s = C.ConditionSelector(("sunny", "dusk"), cfg, latitude=40.44, longitude=-80.0)
    assert s.select(utc(2011, 4, 4, 23, 30)).domain == "dusk"  # 19:30 EDT, sun ~3 deg
    assert s.select(utc(2011, 4, 4, 16)).domain == "sunny"


def test_solar_azimuth_hand_worked():
    """Equinox at the equator: the sun rises due east and sets due west; at 40 N the noon sun is due south."""
    import calendar

    from disam_ros.conditions import solar_position

    rise = calendar.timegm((2021, 3, 20, 6, 7, 0, 0, 0, 0))  # ~06:07 UTC at longitude 0
    e, az = solar_position(rise, 0.0, 0.0)
    assert abs(e) < 1.0 and az == pytest.approx(90.0, abs=1.0)
    e, az = solar_position(rise + 12 * 3600, 0.0, 0.0)
    assert abs(e) < 1.0 and az == pytest.approx(270.0, abs=1.0)
    noon = calendar.timegm((2021, 6, 21, 12, 2, 0, 0, 0, 0))  # solar noon at longitude 0 (equation of time ~ -2 min)
    e, az = solar_position(noon, 40.0, 0.0)
    assert az == pytest.approx(180.0, abs=1.5) and e == pytest.approx(90 - 40 + 23.44, abs=0.3)
