"""Query attributes from stamp + weather, their cost against each domain, and the per-frame selector."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from disam_ros.conditions.calendar import foliage, season
from disam_ros.conditions.solar import daylight_class, solar_elevation
from disam_ros.conditions.table import ConditionConfig, ConditionTable, DomainAttributes, ScoringRule, pick_table
from disam_ros.conditions.vocabulary import DAYLIGHTS, FOLIAGES, MIN_WALL_CLOCK_STAMP, UNKNOWN, WEATHERS


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
