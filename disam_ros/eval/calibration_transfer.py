"""Calibrate once, apply to many maps: copy a map's calibration onto another map built with the same model.

    disam-calibrate --map TARGET --from-map SOURCE

Why this is sound: a calibration maps a mode's raw score to "within the tolerance"; the score comes from the
coarse/fine models and the tracker settings, so two maps built with the same checkpoints (the sha256 their
manifests record) and tracked with the same settings share the fit and its threshold. The observation model is
not shared: it is estimated from a map's own images (how far a place's score stands out from the rest of ITS
map), so it is re-estimated on TARGET exactly as the tracker estimates it at start.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from disam_ros.maps.map_calibration import MapCalibration
from disam_ros.maps.observation import ObservationModel
from disam_ros.tracking.place_graph import PlaceGraph, headings_from_quats
from disam_ros.tracking.sequence import SequenceConfig
from disam_ros.tracking.track_parts import map_drives
from disam_ros.tracking.tracker import map_observation as tracker_observation

log = logging.getLogger(__name__)

_SHORT = 12  # hex digits of a checkpoint sha256 shown in messages


def model_fingerprint(loc_map: Any) -> tuple[str | None, str | None]:
    """(coarse sha256, fine sha256 or None) as the map's manifest records them: what says two maps were encoded
    by the same models (paths move, contents do not)."""
    coarse, fine = loc_map.model_info("coarse") or {}, loc_map.model_info("fine")
    return coarse.get("sha256"), (fine or {}).get("sha256")


def fingerprint_text(fp: tuple[str | None, str | None]) -> str:
    """'coarse 0123456789ab, fine none': short enough for a one-line error, long enough to tell models apart."""
    def short(h: str | None) -> str:
        return "none" if h is None else h[:_SHORT]

    return f"coarse {short(fp[0])}, fine {short(fp[1])}"


def check_same_model(source: Any, target: Any, source_name: str = "SOURCE", target_name: str = "TARGET") -> None:
    """ValueError (one line) unless both maps record the same, known coarse and fine checkpoints."""
    fs, ft = model_fingerprint(source), model_fingerprint(target)
    fix = f"calibrate {target_name} itself (disam-calibrate --map {target_name} --dataset/--bag ...)"
    if fs[0] is None or ft[0] is None:
        which = source_name if fs[0] is None else target_name
        raise ValueError(f"map {which} records no coarse checkpoint sha256, so its model cannot be matched; {fix}")
    if fs != ft:
        raise ValueError(f"map {source_name} was built with another model ({fingerprint_text(fs)}) than "
                         f"{target_name} ({fingerprint_text(ft)}): its calibration does not hold there; {fix}")


def settings_mismatch(cal: MapCalibration, summary: dict[str, Any]) -> list[str]:
    """Names of the tracker settings (`tracker.config_summary`) that differ from those `cal` was fitted with:
    a copied fit holds only for its own settings, so the tool is given the same ones as for the fit."""
    stored = (cal.config or {}).get("sequence") or {}
    ours = summary["sequence"]
    differ = sorted(k for k in ours if k in stored and stored[k] != ours[k])
    if not np.allclose(cal.tolerance, summary["tolerance"]):
        differ.append("tolerance")
    return differ


def map_observation(loc_map: Any, sequence: SequenceConfig) -> ObservationModel:
    """The observation model the tracker estimates from `loc_map` at start (the same place graph, the Tracker's
    own estimate and fallback), so a copied calibration stores what a fit on the map would."""
    positions = np.asarray(loc_map.positions, dtype=np.float64)
    graph = PlaceGraph.build(positions, map_drives(loc_map.stamps, sequence.max_gap_s), loc_map.stamps,
                             headings=headings_from_quats(loc_map.quats))
    try:
        return tracker_observation(loc_map.coarse_matrix(), positions, graph, sequence)
    except ValueError as exc:  # a map too small or too sparse: the tracker's default, as a fit there stores it
        log.warning("observation model not estimable from this map (%s); storing the default gain", exc)
        return ObservationModel()


def stored_sequence(cal: MapCalibration) -> SequenceConfig:
    """The SequenceConfig fields the observation estimate uses, as the calibration recorded them."""
    stored = (cal.config or {}).get("sequence") or {}
    d = SequenceConfig()
    return replace(d, max_gap_s=float(stored.get("max_gap_s", d.max_gap_s)),
                   mass_radius_m=float(stored.get("mass_radius_m", d.mass_radius_m)))


def transfer_calibration(source_map: Any, target_map: Any, source_name: str = "SOURCE",
                         target_name: str = "TARGET") -> MapCalibration:
    """SOURCE's calibration for TARGET: fits, thresholds, tolerance, verified records, settings and stats kept,
    the observation model re-estimated on TARGET (None stays None: no sequence mode was fitted), and `source`
    saying where it came from. ValueError (one line) when SOURCE has none or the models differ."""
    cal = source_map.calibration
    if cal is None:
        raise ValueError(f"map {source_name} has no calibration to copy; run disam-calibrate on it first")
    check_same_model(source_map, target_map, source_name, target_name)
    obs = None if cal.observation is None else map_observation(target_map, stored_sequence(cal))
    note = (f"copied from map {source_name} (models {fingerprint_text(model_fingerprint(source_map))}), "
            f"fitted there on {cal.source or 'unrecorded drives'}; observation model re-estimated on this map")
    config = {**cal.config, "copied_from": {"map": str(source_name), "fitted": cal.fitted}}
    return replace(cal, observation=obs, source=note, config=config)
