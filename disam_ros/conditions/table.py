"""The condition -> domain table (config/conditions.yaml or a dataset's world.yaml): parsing, validation,
loading, choosing the table that fits a model."""
from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from disam_ros.conditions.solar import DEFAULT_THRESHOLDS_DEG
from disam_ros.conditions.vocabulary import DAYLIGHTS, DEFAULT_FOLIAGE_BY_MONTH, FOLIAGES, WEATHERS


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
    candidates = [Path(__file__).resolve().parents[2] / "config" / "conditions.yaml",
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

