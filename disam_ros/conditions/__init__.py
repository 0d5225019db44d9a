"""Query condition -> domain encoder selection (no ROS imports).

DISAM keeps one encoder per training condition; at query time the node must pick the encoder whose
condition best matches the camera's. The paper does this by hand (Table I maps each RobotCar condition to
the CMU-Seasons model with the most similar description and date, and falls back to the reference model
when none is close). Here the same decision is automatic:

* daylight comes from the image stamp and the map's latitude/longitude via the NOAA solar position
  algorithm, classified on the *geometric* (unrefracted) solar elevation:

  ============  ==============================  ==========================================================
  class         geometric elevation e (deg)     why
  ============  ==============================  ==========================================================
  ``day``       e >= 10                         shadows short enough that images look like "sunny/overcast"
  ``low_sun``   -0.833 <= e < 10                sun at or above the almanac horizon (-0.833 deg = sunrise/
                                                sunset: refraction + solar radius), long shadows, glare
  ``twilight``  -12 <= e < -0.833               civil + nautical twilight: sky still lit, no direct sun
  ``night``     e < -12                         artificial light only
  ============  ==============================  ==========================================================

  (thresholds are configurable in config/conditions.yaml, key ``daylight_thresholds_deg``);
* season (meteorological: DJF winter in the north) and foliage (by month) from the stamp's UTC date,
  flipped by six months in the southern hemisphere; foliage is ``full`` all year in the tropics;
* weather comes from the operator (node parameter ``weather``), or, with ``condition_source: auto``, from the
  recogniser stored beside the checkpoint fused with the solar prior (``disam_ros.conditions.fusion``);
* the attributes are matched against a table mapping each model domain to (weather, daylight, foliage),
  like Table I. The lowest cost wins; ties and costs above ``max_cost`` fall back to the reference domain;
  an explicit domain override always wins.

Parts: `vocabulary` (attribute values), `solar` (ephemeris, daylight classes), `calendar` (season,
foliage), `table` (the condition -> domain table), `selector` (the per-frame choice).
"""
from __future__ import annotations

from disam_ros.conditions.calendar import foliage, season
from disam_ros.conditions.selector import (
    ConditionSelector,
    QueryCondition,
    Selection,
    describe,
    match_cost,
    select_domain,
)
from disam_ros.conditions.solar import (
    DEFAULT_THRESHOLDS_DEG,
    SUNRISE_ELEVATION_DEG,
    daylight_class,
    solar_elevation,
    solar_position,
    sun_times,
)
from disam_ros.conditions.table import (
    ConditionConfig,
    ConditionTable,
    DomainAttributes,
    ScoringRule,
    default_conditions_path,
    load_config,
    parse_attributes,
    parse_config,
    pick_table,
)
from disam_ros.conditions.vocabulary import (
    DAYLIGHTS,
    DEFAULT_FOLIAGE_BY_MONTH,
    FOLIAGES,
    MIN_WALL_CLOCK_STAMP,
    SEASONS,
    TROPIC_DEG,
    UNKNOWN,
    WEATHERS,
)

__all__ = [
    "DAYLIGHTS", "DEFAULT_FOLIAGE_BY_MONTH", "DEFAULT_THRESHOLDS_DEG", "FOLIAGES", "MIN_WALL_CLOCK_STAMP",
    "SEASONS", "SUNRISE_ELEVATION_DEG", "TROPIC_DEG", "UNKNOWN", "WEATHERS", "ConditionConfig",
    "ConditionSelector", "ConditionTable", "DomainAttributes", "QueryCondition", "ScoringRule", "Selection",
    "daylight_class", "default_conditions_path", "describe", "foliage", "load_config", "match_cost",
    "parse_attributes", "parse_config", "pick_table", "season", "select_domain", "solar_elevation",
    "solar_position", "sun_times",
]
