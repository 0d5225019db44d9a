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
* weather is given by the operator (node parameter ``weather``): no camera-only classifier is reliable;
* the attributes are matched against a table mapping each model domain to (weather, daylight, foliage),
  like Table I. The lowest cost wins; ties and costs above ``max_cost`` fall back to the reference domain;
  an explicit domain override always wins.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

WEATHERS = ("sunny", "overcast", "cloudy", "rain", "snow", "fog")
DAYLIGHTS = ("day", "low_sun", "twilight", "night")  # ordered: distance = darkness steps
FOLIAGES = ("none", "mixed", "full")  # ordered: distance = leaf-cover steps
SEASONS = ("winter", "spring", "summer", "autumn")
UNKNOWN = "unknown"

SUNRISE_ELEVATION_DEG = -0.833  # almanac horizon: 34' refraction + 16' solar semidiameter
DEFAULT_THRESHOLDS_DEG = {"day": 10.0, "low_sun": SUNRISE_ELEVATION_DEG, "twilight": -12.0}
MIN_WALL_CLOCK_STAMP = 946684800.0  # 2000-01-01: stamps before this are sim/monotonic time, not dates
TROPIC_DEG = 23.44

# Northern-hemisphere foliage by month (Jan..Dec), calibrated on CMU-Seasons (Pittsburgh): bare Dec-Apr,
# leaf-out in May, full June-September, turning Oct-Nov.
DEFAULT_FOLIAGE_BY_MONTH = ("none", "none", "none", "none", "mixed", "full",
                            "full", "full", "full", "mixed", "mixed", "none")


# --------------------------------------------------------------------------------------------- solar


def _julian_century(stamp: float) -> float:
    return (stamp / 86400.0 + 2440587.5 - 2451545.0) / 36525.0


def _sun_terms(T: float) -> tuple[float, float]:
    """Declination (deg) and equation of time (minutes) at Julian century T (NOAA spreadsheet terms)."""
    L0 = (280.46646 + T * (36000.76983 + T * 0.0003032)) % 360.0
    M = 357.52911 + T * (35999.05029 - 0.0001537 * T)
    e = 0.016708634 - T * (0.000042037 + 0.0000001267 * T)
    Mr = math.radians(M)
    C = (math.sin(Mr) * (1.914602 - T * (0.004817 + 0.000014 * T))
         + math.sin(2 * Mr) * (0.019993 - 0.000101 * T) + math.sin(3 * Mr) * 0.000289)
    omega = math.radians(125.04 - 1934.136 * T)
    lam = math.radians(L0 + C - 0.00569 - 0.00478 * math.sin(omega))
    eps0 = 23.0 + (26.0 + (21.448 - T * (46.815 + T * (0.00059 - T * 0.001813))) / 60.0) / 60.0
    eps = math.radians(eps0 + 0.00256 * math.cos(omega))
    decl = math.degrees(math.asin(math.sin(eps) * math.sin(lam)))
    y = math.tan(eps / 2) ** 2
    L0r = math.radians(L0)
    eot = 4.0 * math.degrees(
        y * math.sin(2 * L0r) - 2 * e * math.sin(Mr) + 4 * e * y * math.sin(Mr) * math.cos(2 * L0r)
        - 0.5 * y * y * math.sin(4 * L0r) - 1.25 * e * e * math.sin(2 * Mr)
    )
    return decl, eot


def _check_latlon(latitude: float, longitude: float) -> None:
    if not (math.isfinite(latitude) and -90.0 <= latitude <= 90.0):
        raise ValueError(f"latitude {latitude} is out of range: give degrees north in [-90, 90]")
    if not (math.isfinite(longitude) and -180.0 <= longitude <= 180.0):
        raise ValueError(f"longitude {longitude} is out of range: give degrees east in [-180, 180]")


def solar_elevation(stamp: float, latitude: float, longitude: float, refraction: bool = False) -> float:
    """Solar elevation in degrees at UTC `stamp` (s) seen from (latitude N, longitude E) in degrees.

    NOAA solar position algorithm (Meeus-based, ~0.01 deg for years 1800-2100). Geometric by default, since
    the daylight thresholds (sunrise at -0.833 deg) already include refraction; `refraction=True` adds
    NOAA's atmospheric refraction model (apparent elevation).
    """
    elev = solar_position(stamp, latitude, longitude)[0]
    if refraction:
        elev += _refraction_deg(elev)
    return elev


def solar_position(stamp: float, latitude: float, longitude: float) -> tuple[float, float]:
    """(geometric elevation, azimuth) of the sun in degrees; azimuth clockwise from north (east = 90).

    The one ephemeris of the package: the node's daylight classes and the synthetic world's light and
    capture times both come from here, so a rendered night is a night to the condition selector too.
    """
    _check_latlon(latitude, longitude)
    decl, eot = _sun_terms(_julian_century(stamp))
    minutes = (stamp % 86400.0) / 60.0
    tst = (minutes + eot + 4.0 * longitude) % 1440.0
    ha = math.radians(tst / 4.0 - 180.0)
    lat, dec = math.radians(latitude), math.radians(decl)
    cos_zen = math.sin(lat) * math.sin(dec) + math.cos(lat) * math.cos(dec) * math.cos(ha)
    elev = 90.0 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zen))))
    az = math.degrees(math.atan2(-math.sin(ha), math.tan(dec) * math.cos(lat) - math.sin(lat) * math.cos(ha)))
    return elev, az % 360.0


def _refraction_deg(e: float) -> float:
    if e > 85.0:
        return 0.0
    t = math.tan(math.radians(e))
    if e > 5.0:
        arcsec = 58.1 / t - 0.07 / t**3 + 0.000086 / t**5
    elif e > -0.575:
        arcsec = 1735.0 + e * (-518.2 + e * (103.4 + e * (-12.79 + e * 0.711)))
    else:
        arcsec = -20.774 / t
    return arcsec / 3600.0


def sun_times(stamp: float, latitude: float, longitude: float,
              elevation_deg: float = SUNRISE_ELEVATION_DEG) -> tuple[float | None, float | None]:
    """UTC stamps of the sun crossing `elevation_deg` upward (sunrise) and downward (sunset).

    The day is the UTC calendar day of `stamp` shifted by the longitude (so it is the local solar day).
    Iterates the NOAA hour-angle formula twice, re-evaluating declination at the event (within ~1 min of
    almanac values outside the polar circles). Returns (None, None) in polar day or night.
    """
    _check_latlon(latitude, longitude)
    # Local solar midnight that starts the day containing the local solar time of `stamp`.
    local_day = math.floor((stamp + longitude * 240.0) / 86400.0)
    day_start = local_day * 86400.0 - longitude * 240.0
    out: list[float | None] = []
    for sign in (-1.0, 1.0):
        t = day_start + 43200.0
        ok = True
        for _ in range(3):
            decl, eot = _sun_terms(_julian_century(t))
            lat, dec = math.radians(latitude), math.radians(decl)
            cos_ha = ((math.sin(math.radians(elevation_deg)) - math.sin(lat) * math.sin(dec))
                      / (math.cos(lat) * math.cos(dec)))
            if not -1.0 <= cos_ha <= 1.0:
                ok = False
                break
            ha = math.degrees(math.acos(cos_ha))
            noon_min = 720.0 - 4.0 * longitude - eot  # UTC minutes after the UTC midnight of this day
            utc_midnight = math.floor((day_start + 43200.0) / 86400.0) * 86400.0
            t = utc_midnight + 60.0 * (noon_min + sign * 4.0 * ha)
        out.append(t if ok else None)
    return out[0], out[1]


def daylight_class(elevation_deg: float, thresholds: Mapping[str, float] | None = None) -> str:
    """Map a geometric solar elevation (deg) to day / low_sun / twilight / night (see module table)."""
    th = {**DEFAULT_THRESHOLDS_DEG, **(thresholds or {})}
    if elevation_deg >= th["day"]:
        return "day"
    if elevation_deg >= th["low_sun"]:
        return "low_sun"
    if elevation_deg >= th["twilight"]:
        return "twilight"
    return "night"


# --------------------------------------------------------------------------------------------- calendar


def _utc(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, tz=timezone.utc)


def season(stamp: float, latitude: float) -> str:
    """Meteorological season of the stamp's UTC date (DJF = winter in the north, summer in the south)."""
    month = _utc(stamp).month
    if latitude < 0:
        month = (month + 5) % 12 + 1
    return SEASONS[(month % 12) // 3]


def foliage(stamp: float, latitude: float, by_month: Sequence[str] = DEFAULT_FOLIAGE_BY_MONTH) -> str:
    """Foliage class of the stamp's UTC date: table by month (northern), shifted six months south of the
    equator; evergreen (``full``) within the tropics where leaf cover does not follow the calendar."""
    if abs(latitude) < TROPIC_DEG:
        return "full"
    month = _utc(stamp).month
    if latitude < 0:
        month = (month + 5) % 12 + 1
    return by_month[month - 1]


# --------------------------------------------------------------------------------------------- table


@dataclass(frozen=True)
class DomainAttributes:
    """What a domain's training images looked like; each field a tuple of accepted values (empty = any)."""

    weather: tuple[str, ...] = ()
    daylight: tuple[str, ...] = ()
    foliage: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScoringRule:
    """Mismatch costs: daylight (per darkness step) > weather > foliage (per leaf step)."""

    daylight_weight: float = 3.0
    weather_weight: float = 2.0
    similar_weather_weight: float = 1.0
    foliage_weight: float = 1.0
    max_cost: float = 5.0
    similar_weather: tuple[frozenset[str], ...] = (
        frozenset({"overcast", "cloudy"}), frozenset({"overcast", "fog"}), frozenset({"overcast", "rain"}),
        frozenset({"cloudy", "rain"}), frozenset({"sunny", "cloudy"}),
    )


@dataclass(frozen=True)
class ConditionTable:
    """Domain name -> attributes, with the reference (map) domain; one per model family."""

    name: str
    reference: str
    domains: Mapping[str, DomainAttributes]


@dataclass(frozen=True)
class ConditionConfig:
    """Everything in config/conditions.yaml."""

    tables: Mapping[str, ConditionTable]
    rule: ScoringRule = field(default_factory=ScoringRule)
    thresholds_deg: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS_DEG))
    foliage_by_month: tuple[str, ...] = DEFAULT_FOLIAGE_BY_MONTH


@dataclass(frozen=True)
class QueryCondition:
    """Attributes of one query image; ``unknown`` entries cost nothing in the match."""

    weather: str = UNKNOWN
    daylight: str = UNKNOWN
    foliage: str = UNKNOWN
    season: str = UNKNOWN
    elevation_deg: float | None = None


@dataclass(frozen=True)
class Selection:
    """The chosen domain, its cost, and a human-readable why (logged and put in diagnostics)."""

    domain: str
    cost: float
    reason: str
    query: QueryCondition


def _as_tuple(value: Any, allowed: Sequence[str], what: str, where: str) -> tuple[str, ...]:
    if value is None or value == "any":
        return ()
    values = (value,) if isinstance(value, str) else tuple(value)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"{where}: {what} {bad} not in {list(allowed)}: fix config/conditions.yaml")
    return tuple(values)


def parse_attributes(d: Mapping[str, Any], where: str) -> DomainAttributes:
    """Attributes from a YAML mapping; values may be a string, a list (any of) or ``any``."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a mapping of weather/daylight/foliage, got {d!r}")
    unknown = sorted(set(d) - {"weather", "daylight", "foliage", "date", "description"})
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; use weather, daylight, foliage")
    return DomainAttributes(
        weather=_as_tuple(d.get("weather"), WEATHERS, "weather", where),
        daylight=_as_tuple(d.get("daylight"), DAYLIGHTS, "daylight", where),
        foliage=_as_tuple(d.get("foliage"), FOLIAGES, "foliage", where),
    )


def parse_config(data: Mapping[str, Any], where: str = "conditions") -> ConditionConfig:
    """Validate the YAML structure; every error names the key to fix.

    Also accepts a dataset's world.yaml (top-level `reference` and `conditions: {name: {weather, daylight,
    foliage, ...}}`, as disam_ros.data.synthetic writes it): it becomes a single table named `world`.
    """
    if isinstance(data, Mapping) and "tables" not in data and isinstance(data.get("conditions"), Mapping):
        keep = ("weather", "daylight", "foliage")
        domains = {k: {a: v.get(a) for a in keep if isinstance(v, Mapping) and a in v}
                   for k, v in data["conditions"].items()}
        data = {"tables": {"world": {"reference": data.get("reference"), "domains": domains}}}
    if not isinstance(data, Mapping) or not isinstance(data.get("tables"), Mapping) or not data["tables"]:
        raise ValueError(f"{where}: expected a top-level 'tables' mapping of table name -> {{reference, domains}}")
    tables = {}
    for tname, t in data["tables"].items():
        tw = f"{where}: tables.{tname}"
        if not isinstance(t, Mapping) or not isinstance(t.get("domains"), Mapping) or not t["domains"]:
            raise ValueError(f"{tw}: needs 'reference' and a non-empty 'domains' mapping")
        domains = {str(k): parse_attributes(v or {}, f"{tw}.domains.{k}") for k, v in t["domains"].items()}
        ref = str(t.get("reference", ""))
        if ref not in domains:
            raise ValueError(f"{tw}: reference {ref!r} is not one of its domains {list(domains)}")
        tables[str(tname)] = ConditionTable(str(tname), ref, domains)
    s = dict(data.get("scoring") or {})
    similar = s.pop("similar_weather", None)
    try:
        rule = ScoringRule(**{k: float(v) for k, v in s.items()})
    except TypeError as exc:
        raise ValueError(f"{where}: scoring: {exc}; keys are daylight_weight weather_weight "
                         "similar_weather_weight foliage_weight max_cost similar_weather") from None
    if similar is not None:
        pairs = tuple(frozenset(_as_tuple(p, WEATHERS, "similar_weather", where)) for p in similar)
        rule = replace(rule, similar_weather=pairs)
    th = {**DEFAULT_THRESHOLDS_DEG, **{k: float(v) for k, v in (data.get("daylight_thresholds_deg") or {}).items()}}
    if set(th) != set(DEFAULT_THRESHOLDS_DEG) or not th["day"] > th["low_sun"] > th["twilight"]:
        raise ValueError(f"{where}: daylight_thresholds_deg must be day > low_sun > twilight (deg), got {th}")
    fbm = tuple(data.get("foliage_by_month") or DEFAULT_FOLIAGE_BY_MONTH)
    if len(fbm) != 12 or any(f not in FOLIAGES for f in fbm):
        raise ValueError(f"{where}: foliage_by_month needs 12 entries from {list(FOLIAGES)}")
    return ConditionConfig(tables, rule, th, fbm)


def default_conditions_path() -> Path:
    """config/conditions.yaml of a source checkout, else of the installed share/disam_ros."""
    candidates = [Path(__file__).resolve().parents[1] / "config" / "conditions.yaml",
                  Path(sys.prefix) / "share" / "disam_ros" / "config" / "conditions.yaml"]
    for p in candidates:
        if p.is_file():
            return p
    return candidates[0]


def load_config(path: str | Path | None = None) -> ConditionConfig:
    path = Path(path) if path else default_conditions_path()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: unreadable condition table ({exc}); pass a valid conditions_file") from None
    return parse_config(data, str(path))


def pick_table(config: ConditionConfig, model_domains: Iterable[str], name: str = "") -> ConditionTable:
    """The named table, or the one that covers most of the model's domains (ties: file order)."""
    if name:
        if name not in config.tables:
            raise ValueError(f"condition table {name!r} not found: known tables are {list(config.tables)}")
        return config.tables[name]
    doms = set(model_domains)
    return max(config.tables.values(), key=lambda t: len(doms & set(t.domains)))


# --------------------------------------------------------------------------------------------- matching


def describe(stamp: float | None, weather: str, latitude: float | None, longitude: float | None,
             config: ConditionConfig | None = None) -> QueryCondition:
    """Attributes of a query from its stamp (UTC s), the operator's weather and the map's place.

    Daylight needs a wall-clock stamp and both coordinates; season/foliage need the stamp and latitude.
    Anything that cannot be known is ``unknown`` (e.g. sim-time stamps near 0).
    """
    cfg = config or ConditionConfig(tables={})
    if weather not in (*WEATHERS, UNKNOWN):
        raise ValueError(f"weather {weather!r} is not one of {[*WEATHERS, UNKNOWN]}")
    if stamp is None or not math.isfinite(stamp) or stamp < MIN_WALL_CLOCK_STAMP:
        return QueryCondition(weather=weather)
    lat_ok = latitude is not None and math.isfinite(latitude)
    lon_ok = longitude is not None and math.isfinite(longitude)
    daylight, elev = UNKNOWN, None
    if lat_ok and lon_ok:
        elev = solar_elevation(stamp, latitude, longitude)
        daylight = daylight_class(elev, cfg.thresholds_deg)
    if not lat_ok:
        return QueryCondition(weather=weather, daylight=daylight, elevation_deg=elev)
    return QueryCondition(weather=weather, daylight=daylight, foliage=foliage(stamp, latitude, cfg.foliage_by_month),
                          season=season(stamp, latitude), elevation_deg=elev)


def _ordinal_cost(value: str, accepted: tuple[str, ...], order: Sequence[str]) -> float:
    if value == UNKNOWN or not accepted:
        return 0.0
    return float(min(abs(order.index(value) - order.index(a)) for a in accepted))


def match_cost(query: QueryCondition, attrs: DomainAttributes, rule: ScoringRule) -> float:
    """Weighted attribute mismatch; 0 is a perfect match."""
    cost = rule.daylight_weight * _ordinal_cost(query.daylight, attrs.daylight, DAYLIGHTS)
    cost += rule.foliage_weight * _ordinal_cost(query.foliage, attrs.foliage, FOLIAGES)
    if query.weather != UNKNOWN and attrs.weather and query.weather not in attrs.weather:
        similar = any(frozenset({query.weather, w}) in rule.similar_weather for w in attrs.weather)
        cost += rule.similar_weather_weight if similar else rule.weather_weight
    return cost


def select_domain(query: QueryCondition, table: ConditionTable, model_domains: Sequence[str], fallback: str,
                  rule: ScoringRule, override: str = "") -> Selection:
    """Lowest-cost model domain of the table; the fallback on ties, above rule.max_cost, or if none match.

    `fallback` must be a model domain (the caller guarantees it; see ConditionSelector).
    """
    if override:
        if override not in model_domains:
            raise ValueError(f"domain override {override!r} is not a model domain: use one of {list(model_domains)}")
        return Selection(override, 0.0, "override (parameter 'domain')", query)
    scored = [(match_cost(query, table.domains[d], rule), d) for d in table.domains if d in model_domains]
    if not scored:
        return Selection(fallback, math.inf, "no model domain in the condition table: reference", query)
    best_cost = min(c for c, _ in scored)
    best = [d for c, d in scored if c == best_cost]
    if best_cost > rule.max_cost:
        return Selection(fallback, best_cost, f"no domain within max_cost {rule.max_cost:g} "
                         f"(best {best[0]} costs {best_cost:g}): reference", query)
    if fallback in best:
        return Selection(fallback, best_cost, f"best match (cost {best_cost:g}, reference wins ties)", query)
    return Selection(best[0], best_cost, f"best match (cost {best_cost:g})", query)


@dataclass
class ConditionSelector:
    """Picks the encoder for each query; built once per model, re-asked per frame (cheap, cached).

    Domains in the table but not in the model are ignored (one line each in `warnings`, for the caller to
    log where it logs); the fallback is the map's
    reference domain when the model has it, else the table's reference, else the model's first domain.
    """

    model_domains: tuple[str, ...]
    config: ConditionConfig
    table_name: str = ""
    reference: str = ""
    latitude: float | None = None
    longitude: float | None = None
    weather: str = "sunny"
    override: str = ""
    table: ConditionTable = field(init=False)
    fallback: str = field(init=False)
    warnings: list[str] = field(init=False, default_factory=list)
    _cache: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.model_domains = tuple(self.model_domains)
        if not self.model_domains:
            raise ValueError("the model has no domains: rebuild the checkpoint with at least one condition")
        self.table = pick_table(self.config, self.model_domains, self.table_name)
        missing = [d for d in self.table.domains if d not in self.model_domains]
        if missing:
            self.warnings.append(f"condition table '{self.table.name}': domains {missing} are not in the model "
                                 f"{list(self.model_domains)}; ignoring them")
        untabled = [d for d in self.model_domains if d not in self.table.domains]
        if untabled:
            self.warnings.append(f"model domains {untabled} have no attributes in table '{self.table.name}'; "
                                 "they are only used through the 'domain' override")
        for cand in (self.reference, self.table.reference, self.model_domains[0]):
            if cand and cand in self.model_domains:
                self.fallback = cand
                break
        self.set_weather(self.weather)
        self.set_override(self.override)

    def set_weather(self, weather: str) -> None:
        if weather not in (*WEATHERS, UNKNOWN):
            raise ValueError(f"weather {weather!r} is not one of {[*WEATHERS, UNKNOWN]}")
        self.weather = weather
        self._cache.clear()

    def set_override(self, domain: str) -> None:
        if domain and domain not in self.model_domains:
            raise ValueError(f"domain {domain!r} is not a model domain: use one of {list(self.model_domains)} "
                             "or '' for automatic selection")
        self.override = domain
        self._cache.clear()

    def select(self, stamp: float | None) -> Selection:
        query = describe(stamp, self.weather, self.latitude, self.longitude, self.config)
        key = (query.weather, query.daylight, query.foliage, self.override)
        hit = self._cache.get(key)
        if hit is None:
            hit = select_domain(query, self.table, self.model_domains, self.fallback, self.config.rule, self.override)
            self._cache[key] = hit
        return replace(hit, query=query)
