"""One query, end to end and without ROS: pick the condition's encoder, retrieve, return the pose.

The localizer node and offline evaluation both run this object, so an offline score is a score of exactly
what the vehicle runs (the node adds only decoding, threading and message publishing around it).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from disam_ros import conditions
from disam_ros.retrieval import Localizer, RetrievalResult, SearchConfig, SpatialPrior

NAN = float("nan")


@dataclass(frozen=True)
class RelocalizerConfig:
    """What a deployment chooses besides the map: models, search, and how the condition is found."""

    coarse_checkpoint: str = ""  # "" -> the checkpoint recorded in the map's manifest
    fine_checkpoint: str = ""
    search: SearchConfig = field(default_factory=SearchConfig)
    weather: str = "sunny"
    domain: str = ""  # explicit encoder override; "" selects from stamp + weather
    latitude: float = NAN  # NaN -> the site recorded with the map
    longitude: float = NAN
    conditions_file: str = ""  # "" -> the packaged config/conditions.yaml
    condition_table: str = ""  # "" -> the table covering most of the model's domains


class Relocalizer:
    """Condition-aware coarse-to-fine relocalization against one map (thin: the state is real)."""

    def __init__(self, localizer: Localizer, selector: conditions.ConditionSelector,
                 source: tuple[Path, str] | None = None) -> None:
        self.localizer = localizer
        self.selector = selector
        self.source = source  # (dataset root, condition) of the map images, when still on disk

    @classmethod
    def from_map(cls, map_dir: str | Path, cfg: RelocalizerConfig = RelocalizerConfig()) -> Relocalizer:
        """Load map and models, check they belong together, and build the condition selector.

        Raises the map/model errors (one line, naming the file) and ValueError for a bad domain."""
        loc = Localizer.from_map_dir(map_dir, coarse_ckpt=cfg.coarse_checkpoint or None,
                                     fine_ckpt=cfg.fine_checkpoint or None, config=cfg.search)
        lat, lon = cfg.latitude, cfg.longitude
        if math.isnan(lat) or math.isnan(lon):
            mlat, mlon = map_geolocation(loc.map)
            lat, lon = (mlat if math.isnan(lat) else lat), (mlon if math.isnan(lon) else lon)
        table = conditions.load_config(cfg.conditions_file or None)
        selector = conditions.ConditionSelector(  # validates weather and the domain override
            tuple(loc.coarse.domains), table, table_name=cfg.condition_table, reference=str(loc.map.domain),
            latitude=None if math.isnan(lat) else lat, longitude=None if math.isnan(lon) else lon,
            weather=cfg.weather, override=cfg.domain)
        return cls(loc, selector, map_source(loc.map))

    @property
    def map(self) -> Any:
        return self.localizer.map

    @property
    def has_site(self) -> bool:
        return self.selector.latitude is not None and self.selector.longitude is not None

    def select(self, stamp: float | None) -> conditions.Selection:
        return self.selector.select(stamp)

    def localize(self, rgb: np.ndarray, stamp: float | None, prior: SpatialPrior | None = None,
                 ) -> tuple[conditions.Selection, RetrievalResult]:
        """Encoder for this stamp's condition, then coarse-to-fine retrieval."""
        sel = self.selector.select(stamp)
        return sel, self.localizer.localize(rgb, sel.domain, prior)

    def warm_up(self) -> None:
        """One throw-away query, so the first real frame does not pay torch's lazy initialisation (~1 s)."""
        size = int(self.localizer.coarse.config.image_size)
        self.localizer.localize(np.zeros((size, size, 3), np.uint8), self.selector.fallback)

    def activation_maps(self, res: RetrievalResult) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Grad-SAM maps (eqs. 16-18) of the query and of the matched map image, each given the other as
        reference (paper Fig. 1): where the two fine feature maps agree. (None, None) without a fine model."""
        if getattr(res, "query_fine", None) is None:
            return None, None
        import torch

        from disam_ros.model.gradsam import similarity_activation_maps

        zq = torch.as_tensor(np.asarray(res.query_fine, np.float32))[None]
        zm = torch.as_tensor(np.asarray(self.map.fine_feature(res.index), np.float32))[None]
        lq, lm = similarity_activation_maps(zq, zm)
        return lq[0].numpy(), lm[0].numpy()

    def map_image(self, index: int) -> np.ndarray | None:
        """The map image behind result `index`, if the dataset the map was built from is still on disk."""
        from disam_ros.data.folders import read_image

        if self.source is None:
            return None
        path = self.source[0] / self.source[1] / "images" / self.map.names[int(index)]
        try:
            return read_image(path) if path.is_file() else None
        except ValueError:
            return None


def map_source(loc_map: Any) -> tuple[Path, str] | None:
    """(dataset root, condition) the map was built from, when its manifest records a folder source that
    still exists; None for bags, merges of moved data, or maps built from other iterators."""
    build = (getattr(loc_map, "manifest", None) or {}).get("build") or {}
    ds = build.get("dataset")
    if isinstance(ds, dict) and ds.get("root") and ds.get("condition"):
        root, cond = Path(ds["root"]), str(ds["condition"])
    else:  # maps written before the structured field: "<root> condition <name>"
        hit = re.match(r"^(.+) condition (\S+)", str(build.get("source") or ""))
        if not hit:
            return None
        root, cond = Path(hit.group(1)), hit.group(2)
    return (root, cond) if (root / cond).is_dir() else None


def map_geolocation(loc_map: Any) -> tuple[float, float]:
    """(latitude, longitude) recorded with the map (its `site`), else from the source dataset's world.yaml,
    else NaN (then daylight cannot be derived from stamps and the selector says so)."""
    found = _geo_pair((getattr(loc_map, "manifest", None) or {}).get("site"))
    if found:
        return found
    src = map_source(loc_map)
    world = src[0] / "world.yaml" if src else None
    if world is not None and world.is_file():
        try:
            found = _geo_pair((yaml.safe_load(world.read_text()) or {}).get("site"))
        except (OSError, yaml.YAMLError):
            found = None
    return found or (NAN, NAN)


def _geo_pair(site: Any) -> tuple[float, float] | None:
    if not isinstance(site, dict):
        return None
    try:
        lat, lon = float(site["latitude"]), float(site["longitude"])
    except (KeyError, TypeError, ValueError):
        return None
    return (lat, lon) if math.isfinite(lat) and math.isfinite(lon) else None
