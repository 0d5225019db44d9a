"""world.yaml: one schema for the generator and every reader; round trip, and one line per malformed key.

Expected values come from outside the schema module: the synthetic condition table (CONDITIONS), the
generator's own config, and the raw YAML text.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from disam_ros.data.folders import CameraIntrinsics
from disam_ros.data.synthetic import WorldConfig, load_world, make_world
from disam_ros.data.synthetic.conditions import CONDITIONS
from disam_ros.data.synthetic.sheet import _captions
from disam_ros.data.world_yaml import (
    KEY_ORDER,
    ConditionInfo,
    Site,
    Town,
    WorldInfo,
    read_world_yaml,
    world_yaml_if_present,
    write_world_yaml,
)
from disam_ros.eval.queries import world_weather

FULL = WorldInfo(
    conditions={"sunny": ConditionInfo("sunny", "day", "none", {"local_start": "2011-04-04T11:40:00-04:00",
                                                                  "start_utc": 1301931600.25}),
                "night": ConditionInfo("cloudy", "night", "none", {"sun_elevation_deg": -40.5})},
    reference="sunny", site=Site(40.4406, -79.9959, "America/New_York"), generator="disam_ros.data.synthetic",
    version=1, seed=3, image_size=(64, 48), fov_deg=70.0, camera=CameraIntrinsics(64, 48, 45.7, 45.7, 31.5, 23.5),
    frames=5, town=Town(6, 64.0, 1234.5, 321, 3.0, 1.5, "x east, y north, z up"),
    landmarks=({"name": "church", "kind": "tower", "ids": [3, 4], "lo": [0.0, 1.0, 0.0], "hi": [1.0, 2.0, 9.0]},),
)


def write_raw(root: Path, doc) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "world.yaml").write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return root


def test_round_trip_keeps_every_field_and_the_file_layout(tmp_path):
    path = write_world_yaml(tmp_path, FULL)
    assert read_world_yaml(tmp_path) == FULL
    raw = yaml.safe_load(path.read_text())
    assert list(raw) == list(KEY_ORDER)  # the order disam-synth has always written
    assert raw["conditions"]["night"] == {"weather": "cloudy", "daylight": "night", "foliage": "none",
                                          "sun_elevation_deg": -40.5}
    assert raw["camera"] == {"width": 64, "height": 48, "fx": 45.7, "fy": 45.7, "cx": 31.5, "cy": 23.5}
    assert raw["site"] == {"latitude": 40.4406, "longitude": -79.9959, "timezone": "America/New_York"}
    assert raw["conditions"]["sunny"]["start_utc"] == 1301931600.25


def test_a_hand_written_file_may_hold_only_a_site_or_only_conditions(tmp_path):
    write_raw(tmp_path / "a", {"site": {"latitude": -33.9, "longitude": 18.4}})
    assert read_world_yaml(tmp_path / "a") == WorldInfo(site=Site(-33.9, 18.4))
    write_raw(tmp_path / "b", {"conditions": {"rainy_drive": {"weather": "rain"}, "bare": None}})
    info = read_world_yaml(tmp_path / "b")
    assert info.conditions == {"rainy_drive": ConditionInfo(weather="rain"), "bare": ConditionInfo()}
    assert info.site is None and info.reference is None


def test_the_generator_writes_the_schema_and_its_readers_use_it(tmp_path):
    cfg = WorldConfig(seed=5, image_size=32, frames=3, conditions=("sunny", "night", "snow"), workers=1,
                      sheet_places=2)
    root = make_world(cfg, tmp_path / "w", progress=False)
    info = read_world_yaml(root)
    assert info.seed == 5 and info.frames == 3 and info.reference == "sunny" and info.image_size == (32, 32)
    assert info.site == Site(cfg.latitude, cfg.longitude, cfg.timezone) and info.camera == cfg.camera()
    for name in ("sunny", "night", "snow"):
        want = CONDITIONS[name]
        got = info.conditions[name]
        assert (got.weather, got.daylight, got.foliage) == (want.weather, want.daylight, want.foliage)
        assert got.local_start.startswith(want.date)
        assert world_weather(root, name) == want.weather  # what eval/online set on the node's parameter
    assert world_weather(root, "fog") is None and world_weather(None, "night") is None
    world, loaded = load_world(root)
    assert loaded == info and loaded.town.objects == world.n_objects
    caption = _captions(root)["night"]
    assert caption == [f"{CONDITIONS['night'].date} {CONDITIONS['night'].local_time}", "cloudy, none"]


def test_readers_take_what_a_partial_file_says(tmp_path):
    write_raw(tmp_path, {"conditions": {"sunny": {"weather": "sunny", "foliage": "none"}}})
    assert _captions(tmp_path) == {"sunny": ["sunny, none"]}  # no local_start: the date line is left out
    assert world_weather(tmp_path, "sunny") == "sunny"
    assert world_yaml_if_present(tmp_path / "nowhere") is None


BASE = {"reference": "sunny", "site": {"latitude": 40.0, "longitude": -80.0},
        "conditions": {"sunny": {"weather": "sunny"}, "night": {"weather": "cloudy", "daylight": "night"}},
        "camera": {"width": 64, "height": 48, "fx": 40.0, "fy": 40.0, "cx": 31.5, "cy": 23.5},
        "town": {"blocks": 6, "block_m": 64.0, "route_length_m": 900.0, "objects": 10, "spacing_m": 3.0,
                 "camera_height_m": 1.5}}


def _set(path: str, value):
    """BASE with the dotted key set to value (None deletes it)."""
    doc = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return doc


MALFORMED = [
    (_set("site.latitude", "north"), "site.latitude"),
    (_set("site.latitude", 95.0), "site.latitude"),
    (_set("site.longitude", None), "site.longitude"),
    (_set("site.timezone", 5), "site.timezone"),
    (_set("conditions.night.weather", "hail"), "conditions.night.weather"),
    (_set("conditions.night.daylight", 3), "conditions.night.daylight"),
    (_set("conditions.night", ["cloudy"]), "conditions.night"),
    (_set("conditions", ["sunny", "night"]), "conditions"),
    (_set("reference", "moon"), "reference"),
    (_set("image_size", [64]), "image_size"),
    (_set("image_size", [64, -1]), "image_size[1]"),
    (_set("fov_deg", 200), "fov_deg"),
    (_set("camera.fx", "wide"), "camera.fx"),
    (_set("camera.height", None), "camera.height"),
    (_set("frames", 0), "frames"),
    (_set("seed", 1.5), "seed"),
    (_set("version", True), "version"),
    (_set("town.objects", None), "town.objects"),
    (_set("town.block_m", float("nan")), "town.block_m"),
    (_set("landmarks", {"church": 1}), "landmarks"),
    (_set("landmarks", [{"kind": "tower"}]), "landmarks[0]"),
    (_set("sites", {"latitude": 1.0}), "sites"),
    ([1, 2], "expected a mapping"),
    ("", "expected a mapping"),
    ("site: {latitude: [1, 2\n", "unreadable YAML"),
]


@pytest.mark.parametrize("doc,key", MALFORMED, ids=[k for _, k in MALFORMED])
def test_each_malformed_key_is_one_line_naming_it_and_the_fix(tmp_path, doc, key):
    root = write_raw(tmp_path, doc)
    with pytest.raises(ValueError) as err:
        read_world_yaml(root)
    msg = str(err.value)
    assert "\n" not in msg and key in msg and str(root / "world.yaml") in msg
    assert "disam-synth" in msg or "known keys are" in msg  # the fix
    with pytest.raises(ValueError):  # optional lookups do not hide a broken file either
        world_weather(root, "night")


def test_the_base_document_itself_is_valid(tmp_path):
    info = read_world_yaml(write_raw(tmp_path, BASE))  # so each MALFORMED case fails for its one key
    assert info.conditions["night"].daylight == "night" and info.town.objects == 10


def test_missing_file_and_non_synthetic_file_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no world.yaml; generate the dataset with disam-synth") as err:
        read_world_yaml(tmp_path)
    assert "\n" not in str(err.value)
    write_raw(tmp_path, BASE)  # valid, but no generator/seed: nothing to rebuild a town from
    with pytest.raises(ValueError, match="not a synthetic world description.*regenerate") as err:
        load_world(tmp_path)
    assert "\n" not in str(err.value)


def test_writing_refuses_what_a_reader_would_refuse(tmp_path):
    bad = WorldInfo(conditions={"sunny": ConditionInfo("sunny")}, reference="moon")
    with pytest.raises(ValueError, match="reference 'moon' is not one of the conditions"):
        write_world_yaml(tmp_path, bad)
    assert not (tmp_path / "world.yaml").exists()
