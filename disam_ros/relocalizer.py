"""One query, end to end and without ROS: pick the condition's encoder, retrieve, return the pose.

The localizer node and offline evaluation both run this object, so an offline score is a score of exactly
what the vehicle runs (the node adds only decoding, threading and message publishing around it). Per frame:
the junk-frame gate (disam_ros.retrieval.frame_gate: black, white, uniform, noise -> no pose), the encoder of
the frame's condition, a check that its features are finite, then coarse-to-fine retrieval.
"""
from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros import conditions
from disam_ros.data.world_yaml import world_yaml_if_present
from disam_ros.retrieval import Localizer, RetrievalResult, SearchConfig, SpatialPrior
from disam_ros.retrieval.frame_gate import GateConfig, check_frame, features_finite

NAN = float("nan")
JUNK = "junk frame"  # prefix of every gate refusal's reason (the node counts these apart)
log = logging.getLogger(__name__)


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
    gate: GateConfig = field(default_factory=GateConfig)  # junk-frame thresholds (enabled=False turns it off)
    allow_unverified_model: bool = False  # accept a map or checkpoint without a recorded sha256 (logged)


class Relocalizer:
    """Condition-aware coarse-to-fine relocalization against one map (thin: the state is real)."""

    def __init__(self, localizer: Localizer, selector: conditions.ConditionSelector,
                 source: tuple[Path, str] | None = None, gate: GateConfig | None = None) -> None:
        self.localizer = localizer
        self.selector = selector
        self.source = source  # (dataset root, condition) of the map images, when still on disk
        self.gate = gate or GateConfig()
        self._warned_outside = False  # map_image logs an escaping name once, not once per frame

    @classmethod
    def from_map(cls, map_dir: str | Path, cfg: RelocalizerConfig = RelocalizerConfig()) -> Relocalizer:
        """Load map and models, check they belong together, and build the condition selector.

        Raises the map/model errors (one line, naming the file) and ValueError for a bad domain."""
        loc = Localizer.from_map_dir(map_dir, coarse_ckpt=cfg.coarse_checkpoint or None,
                                     fine_ckpt=cfg.fine_checkpoint or None, config=cfg.search,
                                     allow_unverified_model=cfg.allow_unverified_model)
        lat, lon = cfg.latitude, cfg.longitude
        if math.isnan(lat) or math.isnan(lon):
            mlat, mlon = map_geolocation(loc.map)
            lat, lon = (mlat if math.isnan(lat) else lat), (mlon if math.isnan(lon) else lon)
        table = conditions.load_config(cfg.conditions_file or None)
        selector = conditions.ConditionSelector(  # validates weather and the domain override
            tuple(loc.coarse.domains), table, table_name=cfg.condition_table, reference=str(loc.map.domain),
            latitude=None if math.isnan(lat) else lat, longitude=None if math.isnan(lon) else lon,
            weather=cfg.weather, override=cfg.domain)
        return cls(loc, selector, map_source(loc.map), cfg.gate)

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
        """THE per-frame call (node and offline evaluation): gate, encoder of the stamp's condition, retrieval.

        A junk frame (frame_gate.check_frame) or an encoder output with NaN/inf is refused without a pose:
        ok=False and a reason starting with "junk frame: ". An unstamped frame (stamp None, NaN or <= 0, as
        drivers without a clock send) selects the encoder by the wall clock instead (`query_stamp`), so
        daylight still follows the real sun, online and offline alike. Raises ValueError for a bad image."""
        sel, res, _ = self.localize_scored(rgb, stamp, prior, shortlist=0)
        return sel, res

    def localize_scored(self, rgb: np.ndarray, stamp: float | None, prior: SpatialPrior | None = None,
                        shortlist: int = 256) -> tuple[conditions.Selection, RetrievalResult, Any]:
        """`localize`, plus the frame's place scores over the map from the same encoding (what the sequence
        tracker needs; see `Localizer.localize_and_score`). shortlist 0: no scores (plain `localize`).
        Scores are None whenever the frame gave no evidence (junk, non-finite features, map integrity)."""
        t0 = time.perf_counter()
        sel = self.selector.select(query_stamp(stamp))
        verdict = check_frame(rgb, self.gate)
        gate_ms = (time.perf_counter() - t0) * 1e3
        if not verdict.ok:
            return sel, _junk(verdict.reason, {"gate": gate_ms}, t0), None
        return sel, *self._retrieve(rgb, sel.domain, prior, {"gate": gate_ms}, t0, shortlist)

    def _retrieve(self, rgb: np.ndarray, domain: str, prior: SpatialPrior | None, timings: dict[str, float],
                  t0: float, shortlist: int = 0) -> tuple[RetrievalResult, Any]:
        """Localizer.localize, with the encoders' output checked before the search: NaN/inf features (a
        broken or half-precision-overflowing model on this frame) are a junk frame, not a search failure."""
        loc = self.localizer
        if loc.coarse is None:
            raise ValueError("this Relocalizer's Localizer has no coarse encoder: build it with Relocalizer.from_map")
        t = time.perf_counter()
        coarse = loc.coarse.encode(rgb, domain)
        ok = features_finite(coarse)  # reading the answer waits for a GPU, so the timing is the encoder's
        timings["encode_coarse"] = (time.perf_counter() - t) * 1e3
        fine = None
        if ok and loc.fine is not None:
            t = time.perf_counter()
            fine = loc.fine.encode(rgb, domain)
            ok = features_finite(fine)
            timings["encode_fine"] = (time.perf_counter() - t) * 1e3
        if not ok:
            return _junk("non-finite features (NaN/inf from the encoder): check the camera image and the model",
                         timings, t0), None
        scores = None
        if shortlist > 0:
            res, scores = loc.localize_and_score(coarse, fine, prior, shortlist)
        else:
            res = loc.localize_features(coarse, fine, prior)
        res.timings_ms.update(timings)
        res.timings_ms["total"] = (time.perf_counter() - t0) * 1e3
        return res, scores

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
        """The map image behind result `index`, if the dataset the map was built from is still on disk.

        Names come from the map's names.txt, which is data: one whose resolved path (symlinks followed)
        leaves ROOT/<condition>/images ('../../x.png', an absolute path, a link out of the folder) is refused
        (None, logged once), so a crafted map cannot make the debug image read other files."""
        from disam_ros.data.folders import read_image

        if self.source is None:
            return None
        folder = image_folder(self.map, self.source)
        name = str(self.map.names[int(index)])
        try:
            path = (folder / name).resolve()
            inside = not Path(name).is_absolute() and path.is_relative_to(folder.resolve())
        except (OSError, ValueError, RuntimeError):  # NUL bytes, symlink loops
            inside = False
        if not inside:
            if not self._warned_outside:
                self._warned_outside = True
                log.warning("map image name %r leaves %s: not reading it (the map's names.txt is damaged or "
                            "crafted; rebuild the map)", name, folder)
            return None
        try:
            return read_image(path) if path.is_file() else None
        except (ValueError, OSError):
            return None


def query_stamp(stamp: float | None) -> float:
    """The time a frame's condition is judged at: its own stamp, or the wall clock when it has none (None,
    NaN, inf or <= 0)."""
    if stamp is None or not math.isfinite(stamp) or stamp <= 0.0:
        return time.time()
    return float(stamp)


def _junk(why: str, timings: dict[str, float], t0: float) -> RetrievalResult:
    timings["total"] = (time.perf_counter() - t0) * 1e3
    return RetrievalResult.failure(f"{JUNK}: {why}", timings_ms=timings)


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


def image_folder(loc_map: Any, source: tuple[Path, str]) -> Path:
    """Where the map's images live: ROOT/<condition>/images, or ROOT/<condition> for a flat layout."""
    build = (getattr(loc_map, "manifest", None) or {}).get("build") or {}
    ds = build.get("dataset")
    flat = isinstance(ds, dict) and ds.get("layout") == "flat"
    return source[0] / source[1] if flat else source[0] / source[1] / "images"


def map_geolocation(loc_map: Any) -> tuple[float, float]:
    """(latitude, longitude) recorded with the map (its `site`), else from the source dataset's world.yaml,
    else NaN (then daylight cannot be derived from stamps and the selector says so)."""
    found = _geo_pair((getattr(loc_map, "manifest", None) or {}).get("site"))
    if found:
        return found
    src = map_source(loc_map)
    try:
        info = world_yaml_if_present(src[0]) if src else None
    except (OSError, ValueError) as exc:  # a broken world.yaml must not stop the node: no site, said once
        log.warning("%s; daylight will not come from it", exc)
        info = None
    site = info.site if info else None
    return (site.latitude, site.longitude) if site else (NAN, NAN)


def _geo_pair(site: Any) -> tuple[float, float] | None:
    if not isinstance(site, dict):
        return None
    try:
        lat, lon = float(site["latitude"]), float(site["longitude"])
    except (KeyError, TypeError, ValueError):
        return None
    return (lat, lon) if math.isfinite(lat) and math.isfinite(lon) else None
