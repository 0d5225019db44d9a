"""ROOT/world.yaml, a dataset's description: one schema for the synthetic generator that writes it and for
every reader (the site for daylight, the weather of each drive, contact-sheet captions, rebuilding the town).

Why one place: several modules used to pick keys out of the raw YAML, each with its own idea of what is
optional and of what a broken file means (often: silently nothing). Here every key has one type, one check
and one error line that names the key and the fix. Every top-level key is optional, so a hand-written
world.yaml may hold only `site` or only `conditions` (weather/daylight/foliage of each condition folder);
the synthetic generator fills them all. The file layout is unchanged from what disam-synth always wrote.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from disam_ros.conditions.vocabulary import DAYLIGHTS, FOLIAGES, WEATHERS
from disam_ros.data.folders import CameraIntrinsics

WORLD_YAML = "world.yaml"
FIX = "correct it in world.yaml, or regenerate the dataset with disam-synth"
ATTRIBUTES = {"weather": WEATHERS, "daylight": DAYLIGHTS, "foliage": FOLIAGES}


@dataclass(frozen=True)
class Site:
    """Where the data was recorded: what turns an image stamp into daylight and season."""

    latitude: float
    longitude: float
    timezone: str | None = None  # IANA name; only the synthetic generator needs it (local capture times)


@dataclass(frozen=True)
class ConditionInfo:
    """One condition folder's labels (the vocabulary of disam_ros.conditions) and what its drive recorded."""

    weather: str | None = None
    daylight: str | None = None
    foliage: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)  # generator's record: local_start, sun, lane ...

    @property
    def local_start(self) -> str | None:
        value = self.details.get("local_start")
        return str(value) if value is not None else None


@dataclass(frozen=True)
class Town:
    """The synthetic town's parameters: enough to rebuild it (blocks, block_m) and to check it (objects)."""

    blocks: int
    block_m: float
    route_length_m: float
    objects: int
    spacing_m: float
    camera_height_m: float
    map_frame: str = ""


@dataclass(frozen=True)
class WorldInfo:
    """Everything world.yaml may hold; None (or empty) = the file does not say."""

    conditions: Mapping[str, ConditionInfo] = field(default_factory=dict)
    reference: str | None = None
    site: Site | None = None
    generator: str | None = None
    version: int | None = None
    seed: int | None = None
    image_size: tuple[int, int] | None = None  # (width, height)
    fov_deg: float | None = None
    camera: CameraIntrinsics | None = None
    frames: int | None = None
    town: Town | None = None
    landmarks: tuple[Mapping[str, Any], ...] = ()


# File order of the top-level keys: what disam-synth has always written (readable top to bottom).
KEY_ORDER = ("generator", "version", "seed", "image_size", "fov_deg", "camera", "frames", "reference",
             "conditions", "site", "town", "landmarks")


# ------------------------------------------------------------------------------------------ reading


def read_world_yaml(root: str | Path) -> WorldInfo:
    """ROOT/world.yaml parsed and validated; a missing or malformed file is one line naming the fix."""
    path = Path(root) / WORLD_YAML
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no world.yaml; generate the dataset with disam-synth or write one "
                                "with `site:` and/or `conditions:`")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: unreadable YAML ({' '.join(str(exc).split())}); {FIX}") from None
    return parse_world(data, str(path))


def world_yaml_if_present(root: str | Path | None) -> WorldInfo | None:
    """For optional lookups (a site or weather to fall back on): None when there is no world.yaml, but a
    broken one is still an error, so a typo never silently changes which encoder runs."""
    if root is None or not (Path(root) / WORLD_YAML).is_file():
        return None
    return read_world_yaml(root)


def parse_world(data: Any, where: str = WORLD_YAML) -> WorldInfo:
    """Validate a loaded world.yaml mapping; each error names the key (dotted path) and the fix."""
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{where}: expected a mapping with keys {', '.join(KEY_ORDER)} (got {_short(data)}); "
                         f"{FIX}")
    unknown = sorted(str(k) for k in data if k not in KEY_ORDER)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys are {', '.join(KEY_ORDER)}")
    conditions = _conditions(data.get("conditions"), where)
    reference = _opt(data, "reference", _text, where)
    if reference is not None and conditions and reference not in conditions:
        raise ValueError(f"{where}: reference {reference!r} is not one of the conditions {list(conditions)}; {FIX}")
    return WorldInfo(
        conditions=conditions, reference=reference,
        site=_opt(data, "site", _site, where),
        generator=_opt(data, "generator", _text, where),
        version=_opt(data, "version", _integer, where),
        seed=_opt(data, "seed", _integer, where),
        image_size=_opt(data, "image_size", _size, where),
        fov_deg=_opt(data, "fov_deg", lambda v, k, w: _number(v, k, w, 0.0, 180.0, open_ends=True), where),
        camera=_opt(data, "camera", _camera, where),
        frames=_opt(data, "frames", lambda v, k, w: _integer(v, k, w, low=1), where),
        town=_opt(data, "town", _town, where),
        landmarks=_opt(data, "landmarks", _landmarks, where) or (),
    )


def _opt(data: Mapping, key: str, parse, where: str):
    """Absent or null key -> None; otherwise the parsed value (or the parser's one-line error)."""
    value = data.get(key)
    return None if value is None else parse(value, key, where)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(where: str, key: str, want: str, value: Any) -> ValueError:
    return ValueError(f"{where}: {key} must be {want} (got {_short(value)}); {FIX}")


def _text(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(where, key, "a non-empty string", value)
    return value


def _integer(value: Any, key: str, where: str, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        raise _bad(where, key, "an integer" + (f" >= {low}" if low is not None else ""), value)
    return int(value)


def _number(value: Any, key: str, where: str, low: float = -math.inf, high: float = math.inf,
            open_ends: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = low < value < high if open_ends else low <= value <= high
    if not ok:
        brackets = "()" if open_ends else "[]"
        span = f" in {brackets[0]}{low:g}, {high:g}{brackets[1]}"
        if math.isinf(high):
            span = "" if math.isinf(low) else f" {'>' if open_ends else '>='} {low:g}"
        raise _bad(where, key, f"a finite number{span}", value)
    return float(value)


def _mapping(value: Any, key: str, where: str, required: tuple[str, ...] = ()) -> Mapping:
    if not isinstance(value, Mapping):
        raise _bad(where, key, "a mapping" + (f" with keys {', '.join(required)}" if required else ""), value)
    missing = [k for k in required if k not in value]
    if missing:
        raise ValueError(f"{where}: {', '.join(f'{key}.{k}' for k in missing)} missing; {FIX}")
    return value


def _site(value: Any, key: str, where: str) -> Site:
    v = _mapping(value, key, where, ("latitude", "longitude"))
    tz = v.get("timezone")
    return Site(_number(v["latitude"], f"{key}.latitude", where, -90.0, 90.0),
                _number(v["longitude"], f"{key}.longitude", where, -180.0, 180.0),
                None if tz is None else _text(tz, f"{key}.timezone", where))


def _size(value: Any, key: str, where: str) -> tuple[int, int]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise _bad(where, key, "[width, height] in pixels", value)
    return _integer(value[0], f"{key}[0]", where, 1), _integer(value[1], f"{key}[1]", where, 1)


def _camera(value: Any, key: str, where: str) -> CameraIntrinsics:
    names = ("width", "height", "fx", "fy", "cx", "cy")  # the renderer's ideal pinhole: no distortion keys
    v = _mapping(value, key, where, names)
    return CameraIntrinsics(_integer(v["width"], f"{key}.width", where, 1),
                            _integer(v["height"], f"{key}.height", where, 1),
                            *(_number(v[k], f"{key}.{k}", where) for k in ("fx", "fy", "cx", "cy")))


def _town(value: Any, key: str, where: str) -> Town:
    names = tuple(f.name for f in fields(Town) if f.name != "map_frame")
    v = _mapping(value, key, where, names)
    frame = v.get("map_frame")
    return Town(blocks=_integer(v["blocks"], f"{key}.blocks", where, 1),
                block_m=_number(v["block_m"], f"{key}.block_m", where, 0),
                route_length_m=_number(v["route_length_m"], f"{key}.route_length_m", where, 0),
                objects=_integer(v["objects"], f"{key}.objects", where, 0),
                spacing_m=_number(v["spacing_m"], f"{key}.spacing_m", where, 0),
                camera_height_m=_number(v["camera_height_m"], f"{key}.camera_height_m", where),
                map_frame="" if frame is None else _text(frame, f"{key}.map_frame", where))


def _landmarks(value: Any, key: str, where: str) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list):
        raise _bad(where, key, "a list of landmarks", value)
    for i, mark in enumerate(value):
        _mapping(mark, f"{key}[{i}]", where, ("name", "ids"))
    return tuple(dict(m) for m in value)


def _conditions(value: Any, where: str) -> dict[str, ConditionInfo]:
    if value is None:
        return {}
    _mapping(value, "conditions", where)
    out = {}
    for name, entry in value.items():
        key = f"conditions.{name}"
        if not isinstance(name, str) or not name:
            raise _bad(where, "conditions", "a mapping keyed by condition folder names", name)
        entry = _mapping({} if entry is None else entry, key, where)
        labels = {}
        for attr, allowed in ATTRIBUTES.items():
            got = entry.get(attr)
            if got is not None and got not in allowed:
                raise ValueError(f"{where}: {key}.{attr} {_short(got)} is not one of {', '.join(allowed)}; {FIX}")
            labels[attr] = got
        details = {k: v for k, v in entry.items() if k not in ATTRIBUTES}
        out[name] = ConditionInfo(**labels, details=details)
    return out


# ------------------------------------------------------------------------------------------ writing


def world_to_dict(info: WorldInfo) -> dict[str, Any]:
    """The YAML document, in KEY_ORDER, None fields left out, numbers as plain Python numbers."""
    cam = info.camera
    out: dict[str, Any] = {
        "generator": info.generator, "version": _int_or_none(info.version), "seed": _int_or_none(info.seed),
        "image_size": None if info.image_size is None else [int(v) for v in info.image_size],
        "fov_deg": None if info.fov_deg is None else float(info.fov_deg),
        "camera": None if cam is None else {"width": int(cam.width), "height": int(cam.height),
                                            **{k: float(getattr(cam, k)) for k in ("fx", "fy", "cx", "cy")}},
        "frames": _int_or_none(info.frames), "reference": info.reference,
        "conditions": {name: _condition_dict(c) for name, c in info.conditions.items()} or None,
        "site": None if info.site is None else _drop_none({"latitude": float(info.site.latitude),
                                                           "longitude": float(info.site.longitude),
                                                           "timezone": info.site.timezone}),
        "town": None if info.town is None else _town_dict(info.town),
        "landmarks": [dict(m) for m in info.landmarks] or None,
    }
    return _drop_none(out)


def _town_dict(t: Town) -> dict[str, Any]:
    """Plain ints/floats/str per the dataclass's field types (numpy scalars would not serialise)."""
    cast = {"int": int, "float": float, "str": str}
    return {f.name: cast[str(f.type)](getattr(t, f.name)) for f in fields(Town)
            if f.name != "map_frame" or t.map_frame}  # no map_frame line rather than an empty one


def _condition_dict(c: ConditionInfo) -> dict[str, Any]:
    return {**_drop_none({"weather": c.weather, "daylight": c.daylight, "foliage": c.foliage}), **c.details}


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def write_world_yaml(root: str | Path, info: WorldInfo) -> Path:
    """Write ROOT/world.yaml; the document is validated first, so nothing a reader would refuse is written."""
    doc = world_to_dict(info)
    path = Path(root) / WORLD_YAML
    parse_world(doc, str(path))
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path
