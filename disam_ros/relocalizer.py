"""One query, end to end and without ROS: pick the condition's encoder, retrieve, return the pose.

The localizer node and offline evaluation both run this object, so an offline score is a score of exactly
what the vehicle runs (the node adds only decoding, threading and message publishing around it). Per frame:
the junk-frame gate (disam_ros.retrieval.frame_gate: black, white, uniform, noise -> no pose), the encoder of
the frame's condition, a check that its features are finite, then coarse-to-fine retrieval.

The condition comes from one of three sources (`condition_source`): `clock` (the stamp's daylight and season plus
the operator's `weather`), `auto` (the recogniser stored beside the coarse checkpoint, fused with the stamp's
solar-elevation prior and held with hysteresis, so one misread frame does not swap the encoder), `fixed` (the
`domain` parameter). A model without a recogniser keeps `clock`, with one warning.
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros import conditions
from disam_ros.conditions.fusion import Hysteresis, argmax, fuse_domain
from disam_ros.data.world_yaml import world_yaml_if_present
from disam_ros.retrieval import Localizer, RetrievalResult, SearchConfig, SpatialPrior
from disam_ros.retrieval.frame_gate import GateConfig, check_frame, features_finite

NAN = float("nan")
JUNK = "junk frame"  # prefix of every gate refusal's reason (the node counts these apart)
CONDITION_SOURCES = ("clock", "auto", "fixed")
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
    condition_source: str = "clock"  # clock | auto | fixed (module docstring)
    hysteresis_margin: float = 0.2  # auto: a new domain must lead the current one by this smoothed probability ...
    hysteresis_hold: int = 3  # ... for this many consecutive frames
    prior_weight: float = 1.0  # auto: exponent of the solar prior (0: the image alone decides)

    def __post_init__(self) -> None:
        if self.condition_source not in CONDITION_SOURCES:
            raise ValueError(f"condition_source {self.condition_source!r} is not valid: use one of "
                             f"{', '.join(CONDITION_SOURCES)}")
        if self.condition_source == "fixed" and not self.domain:
            raise ValueError("condition_source 'fixed' needs the model domain to use: set parameter 'domain'")
        if not (math.isfinite(self.prior_weight) and self.prior_weight >= 0.0):
            raise ValueError(f"condition_prior_weight must be >= 0, got {self.prior_weight}")
        Hysteresis(margin=self.hysteresis_margin, hold=self.hysteresis_hold)  # validates margin and hold


@dataclass
class AutoCondition:
    """The `auto` source's state: the recogniser (a `ConditionHead`), the hysteresis over frames, and what the
    last frame was recognised as (for diagnostics)."""

    head: Any
    hysteresis: Hysteresis
    prior_weight: float = 1.0
    last: dict[str, Any] = field(default_factory=dict)

    def select(self, rgb: np.ndarray, sel: conditions.Selection,
               selector: conditions.ConditionSelector) -> conditions.Selection:
        """The recognised domain for this frame, or `sel` (the clock's) when the recogniser names no model
        domain. Image evidence over the model's domains, times the solar prior of `sel`'s stamp, then held."""
        p = self.head.predict(rgb)
        img = {d: p["domain"][d] for d in selector.model_domains if d in p.get("domain", {})}
        if not img:
            return sel
        cfg = selector.config
        post = fuse_domain(img, sel.query.elevation_deg, selector.table, cfg.rule, cfg.thresholds_deg,
                           prior_weight=self.prior_weight)
        dom, prob = self.hysteresis.update(post)
        self.last = {"recognised_domain": dom, "recognised_probability": prob}
        for task, probs in p.items():
            if task != "domain" and probs:
                name, tp = argmax(probs)
                self.last[f"recognised_{task}"] = f"{name} {tp:.2f}"
        return conditions.Selection(dom, sel.cost, f"auto: recognised {dom} p={prob:.2f}", sel.query)

    def held(self, sel: conditions.Selection) -> conditions.Selection:
        """Frames the recogniser does not see (junk, a re-selection after a parameter change) keep the held
        domain; `sel` before the first recognised frame."""
        dom = self.hysteresis.current
        if dom is None:
            return sel
        return conditions.Selection(dom, sel.cost, f"auto: holding {dom}", sel.query)

    def reset(self) -> None:
        self.hysteresis.reset()
        self.last = {}


class Relocalizer:
    """Condition-aware coarse-to-fine relocalization against one map (thin: the state is real)."""

    def __init__(self, localizer: Localizer, selector: conditions.ConditionSelector,
                 source: tuple[Path, str] | None = None, gate: GateConfig | None = None,
                 auto: AutoCondition | None = None, condition_source: str = "clock") -> None:
        self.localizer = localizer
        self.selector = selector
        self.source = source  # (dataset root, condition) of the map images, when still on disk
        self.gate = gate or GateConfig()
        self.auto = auto  # None: no recogniser in use (clock or fixed)
        self.condition_source = "auto" if auto is not None else condition_source  # the source in effect
        self.warnings: list[str] = list(selector.warnings)  # for the caller to log where it logs (the node)
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
        reloc = cls(loc, selector, map_source(loc.map), cfg.gate, condition_source=cfg.condition_source)
        if cfg.condition_source == "auto":
            reloc._use_recogniser(cfg, loc)
        return reloc

    def _use_recogniser(self, cfg: RelocalizerConfig, loc: Localizer) -> None:
        """`auto`: the recogniser beside the coarse checkpoint; without one, `clock` and a warning."""
        from disam_ros.model.condition_head import find_condition_head, sidecar_path

        info = loc.map.model_info("coarse") or {}
        ckpt = cfg.coarse_checkpoint or info.get("path") or ""
        head = find_condition_head(ckpt, getattr(loc.coarse, "checkpoint_sha256", None)) if ckpt else None
        if head is not None and head.checkpoint_sha256 is None:
            self.warnings.append(f"condition recogniser {sidecar_path(ckpt)} records no encoder checkpoint sha256 "
                                 "(written before it was recorded), so nothing shows it was trained for this model: "
                                 f"using it; retrain it (disam-train-condition --data ROOT --checkpoint {ckpt})")
        if head is None:
            self.condition_source = "clock"
            self.warnings.append(f"condition_source 'auto' but the coarse model has no condition recogniser "
                                 f"({sidecar_path(ckpt) if ckpt else 'no checkpoint path'} not found): using "
                                 "'clock' (stamp + weather); train one with disam-train-condition")
            return
        self.auto = AutoCondition(head, Hysteresis(margin=cfg.hysteresis_margin, hold=cfg.hysteresis_hold),
                                  cfg.prior_weight)
        self.condition_source = "auto"

    @property
    def map(self) -> Any:
        return self.localizer.map

    @property
    def has_site(self) -> bool:
        return self.selector.latitude is not None and self.selector.longitude is not None

    def select(self, stamp: float | None) -> conditions.Selection:
        """The encoder for a frame not seen by the recogniser: the clock rule, or auto's held domain."""
        sel = self.selector.select(stamp)
        return sel if self.auto is None or self.selector.override else self.auto.held(sel)

    def select_frame(self, rgb: np.ndarray, stamp: float | None) -> conditions.Selection:
        """The encoder for this frame (a `domain` override always wins, as in every source)."""
        sel = self.selector.select(query_stamp(stamp))
        return sel if self.auto is None or self.selector.override else self.auto.select(rgb, sel, self.selector)

    def reset_condition(self) -> None:
        """Forget the held recognised condition (tracker reset, lifecycle deactivate)."""
        if self.auto is not None:
            self.auto.reset()

    def condition_diagnostics(self) -> dict[str, Any]:
        """`condition_source` and, in auto, what the last frame was recognised as."""
        out: dict[str, Any] = {"condition_source": self.condition_source}
        if self.auto is not None:
            out.update({"recognised_domain": "", "recognised_probability": NAN, **self.auto.last})
        return out

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
                        shortlist: int = 256, fine: bool = True) -> tuple[conditions.Selection, RetrievalResult, Any]:
        """`localize`, plus the frame's place scores over the map from the same encoding (what the sequence
        tracker needs; see `Localizer.localize_and_score`). shortlist 0: no scores (plain `localize`).
        Scores are None whenever the frame gave no evidence (junk, non-finite features, map integrity).
        `fine` False: the fine encoder is not run (the scores are coarse; only the result's own ranking would
        change: a stream tracker answers from its belief over the scores and discards that ranking)."""
        t0 = time.perf_counter()
        verdict = check_frame(rgb, self.gate)
        timings = {"gate": (time.perf_counter() - t0) * 1e3}
        if not verdict.ok:  # the recogniser never sees a junk frame: it would read a covered lens as night
            return self.select(query_stamp(stamp)), _junk(verdict.reason, timings, t0), None
        t = time.perf_counter()
        sel = self.select_frame(rgb, stamp)
        timings["condition"] = (time.perf_counter() - t) * 1e3
        return sel, *self._retrieve(rgb, sel.domain, prior, timings, t0, shortlist, fine)

    def _retrieve(self, rgb: np.ndarray, domain: str, prior: SpatialPrior | None, timings: dict[str, float],
                  t0: float, shortlist: int = 0, use_fine: bool = True) -> tuple[RetrievalResult, Any]:
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
        if ok and use_fine and loc.fine is not None:
            t = time.perf_counter()
            fine = loc.fine.encode(rgb, domain)
            ok = features_finite(fine)
            timings["encode_fine"] = (time.perf_counter() - t) * 1e3
        if not ok:
            return _junk("non-finite features (NaN/inf from the encoder): check the camera image and the model",
                         timings, t0), None
        scores = None
        if shortlist > 0:
            res, scores = loc.localize_and_score(coarse, fine, prior, shortlist, domain=domain)
        else:
            res = loc.localize_features(coarse, fine, prior, domain=domain)
        res.timings_ms.update(timings)
        res.timings_ms["total"] = (time.perf_counter() - t0) * 1e3
        return res, scores

    def warm_up(self) -> None:
        """One throw-away query, so the first real frame does not pay torch's lazy initialisation (~1 s)."""
        size = int(self.localizer.coarse.config.image_size)
        self.localizer.localize(np.zeros((size, size, 3), np.uint8), self.selector.fallback)

    def activation_maps(self, res: RetrievalResult, rgb: np.ndarray | None = None, domain: str = ""
                        ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Grad-SAM maps (eqs. 16-18) of the query and of the matched map image, each given the other as
        reference (paper Fig. 1): where the two fine feature maps agree. (None, None) without a fine model.
        A result without the query's fine code (a stream tracker skips the fine encoder) gets it from `rgb`
        encoded under `domain`, when they are given."""
        if getattr(res, "query_fine", None) is None and rgb is not None and domain:
            res.query_fine = self.localizer.query_fine(rgb, domain)
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

        Names come from the map's names.txt, which is data: one that leaves ROOT/<condition>/images by its own
        words ('../../x.png', an absolute path) is refused (None, logged once), so a crafted map cannot make the
        debug image read other files. Links the image folder itself holds are followed: a dataset made of links
        to where the frames live is the dataset owner's choice, not the map's."""
        from disam_ros.data.folders import read_image

        if self.source is None:
            return None
        folder = image_folder(self.map, self.source)
        name = str(self.map.names[int(index)])
        base = os.path.normpath(os.path.abspath(folder))
        path = Path(os.path.normpath(os.path.join(base, name)))  # by the words alone: links are not resolved
        inside = "\0" not in name and not os.path.isabs(name) and path.is_relative_to(base) and str(path) != base
        if not inside:
            if not self._warned_outside:
                self._warned_outside = True
                log.warning("map image name %r leaves %s: not reading it (the map's names.txt is damaged or "
                            "crafted; rebuild the map)", name, folder)
            return None
        try:
            return read_image(path) if path.is_file() else None
        except (ValueError, OSError, RuntimeError):  # symlink loops
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
