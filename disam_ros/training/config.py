"""Training recipes read: YAML (a shipped name or a path), overridden by `section.key=value`, validated.

A recipe is everything that determines the numbers a run produces (model shape, data split, schedule, loss
weights, seed). It is saved next to every checkpoint, so `--resume` never depends on remembering flags,
and a resumed run refuses overrides that would silently change the maths.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from . import RECIPE_DIR
from .recipe import RESUME_SAFE, Recipe
from .recipe_checks import validate


def recipe_path(name_or_path: str) -> Path:
    """`coarse` -> disam_ros/training/recipes/coarse.yaml; anything with a suffix or separator is a file path."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path = Path(name_or_path)
    else:
        path = RECIPE_DIR / f"{name_or_path}.yaml"
    known = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
    if path.is_dir():
        raise ValueError(f"recipe {name_or_path!r} is a directory: give a recipe YAML file inside it "
                         f"(e.g. {path / 'my_recipe.yaml'}) or one of {known}")
    if not path.is_file():
        raise FileNotFoundError(f"recipe {name_or_path!r} not found ({path}): use one of {known} or a YAML path")
    return path


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file, apply `key=value` overrides, validate."""
    path = recipe_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}): fix the recipe file") from None
    recipe = recipe_from_dict(data, source=str(path))
    return apply_overrides(recipe, overrides or [])


def recipe_from_dict(data: dict[str, Any], source: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a recipe must be a mapping of sections, got {type(data).__name__}")
    recipe = _build(Recipe, data, source)
    validate(recipe)
    return recipe


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid keys are {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ValueError(f"{where}.{name} must be a mapping, got {value!r}")
            kwargs[name] = _build(hint, value, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, hint, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a YAML value against a field type; ints are accepted for floats, nothing else is converted."""
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ValueError(f"{where} may not be null: give a value")
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    base = typing.get_origin(base) or base
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
        list: isinstance(value, list),
        dict: isinstance(value, dict),
    }.get(base, True)
    if not ok:
        raise ValueError(f"{where} must be {base.__name__}, got {value!r}")
    return float(value) if base is float else value


def apply_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    """`schedule.steps=500`, `steps=500` (unique key names need no section), `data.domains=[a,b]`."""
    data = recipe.to_dict()
    for item in overrides:
        key, value = _parse_override(item)
        section, name = _resolve_key(data, key)
        target = data if section is None else data[section]
        target[name] = value
    return recipe_from_dict(data, source="recipe (with overrides)")


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ValueError(f"override {item!r} is not key=value: write e.g. schedule.steps=500")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _resolve_key(data: dict[str, Any], key: str) -> tuple[str | None, str]:
    if "." in key:
        section, name = key.split(".", 1)
        if section not in data or not isinstance(data[section], dict) or name not in data[section]:
            raise ValueError(f"unknown recipe key {key!r}: valid keys are {', '.join(all_keys(data))}")
        return section, name
    if key in data and not isinstance(data[key], dict):
        return None, key
    owners = [s for s, v in data.items() if isinstance(v, dict) and key in v]
    if len(owners) != 1:
        why = "is ambiguous" if owners else "is unknown"
        raise ValueError(f"recipe key {key!r} {why}: use section.key, one of {', '.join(all_keys(data))}")
    return owners[0], key


def all_keys(data: dict[str, Any]) -> list[str]:
    out = []
    for k, v in data.items():
        if isinstance(v, dict) and k != "overrides":
            out += [f"{k}.{n}" for n in v]
        else:
            out.append(k)
    return out


def diff_recipes(saved: Recipe, new: Recipe) -> list[str]:
    """Dotted keys whose values differ and that matter for the numbers (used to guard --resume)."""
    a, b = saved.to_dict(), new.to_dict()
    out = []
    for key in all_keys(a):
        va, vb = _lookup(a, key), _lookup(b, key)
        if va != vb and key not in RESUME_SAFE:
            out.append(key)
    return out


def _lookup(data: dict[str, Any], key: str) -> Any:
    cur: Any = data
    for part in key.split("."):
        cur = cur[part]
    return cur
