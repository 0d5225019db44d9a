"""What a Tracker reports (tracking/tracker.py): its calibration note and its /diagnostics; kept apart so the
stream localizer's module holds its per-frame logic."""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from disam_ros.maps.map_calibration import MapCalibration
from disam_ros.tracking.sequence import max_entropy
from disam_ros.tracking.tracker_config import TrackerConfig, config_summary

log = logging.getLogger("disam_ros.tracking.tracker")
NO_CALIBRATION = "none: heuristic confidence"


def calibration_note(cal: MapCalibration | None, cfg: TrackerConfig) -> tuple[str, MapCalibration | None]:
    """What diagnostics say of the map's calibration for this tracker, and the calibration it may use (None for
    one made for another tolerance); warns once where the calibration's settings differ from the tracker's."""
    if cal is None:
        return NO_CALIBRATION, None
    if not np.allclose(cal.tolerance, (cfg.tolerance_m, cfg.tolerance_deg)):
        log.warning("map calibration is for (%g m, %g deg), the tracker asks (%g m, %g deg): heuristic "
                    "confidence; re-run disam-calibrate with this tolerance", *cal.tolerance, cfg.tolerance_m,
                    cfg.tolerance_deg)
        return f"{NO_CALIBRATION} (map calibrated for another tolerance {cal.tolerance})", None
    note = cal.describe(cfg.mode)
    stored = cal.config.get("sequence") if cal.config else None
    ours = config_summary(cfg)["sequence"]
    if cfg.mode != "single" and stored and {k: stored.get(k) for k in ours} != ours:
        differ = sorted(k for k in ours if stored.get(k) != ours[k])
        log.warning("map calibration was fitted with other tracker settings (%s): its probabilities may be "
                    "off; re-run disam-calibrate with these settings", ", ".join(differ))
        note += f" (fitted with other settings: {', '.join(differ)})"
    return note, cal


def tracker_diagnostics(tracker: Any) -> dict[str, Any]:
    """What the node puts on /diagnostics: belief state, consistency, calibration, observation model."""
    est = tracker._last.estimate if tracker._last is not None else None
    n = len(tracker._positions)
    out: dict[str, Any] = {
        "mode": tracker.mode, "places": n, "frames": tracker.frames, "calibration": tracker._cal_note,
        "observation": tracker._obs_source, "belief_entropy": math.nan, "belief_entropy_max": max_entropy(n),
        "top_place_mass": math.nan, "consistent_frames": tracker._consistent, "reinitialised": "",
        "standstill": tracker.still,
    }
    if tracker._seq is not None:
        out["drives"] = int(len(np.unique(tracker._seq.graph.start)))
        out["consistent_frames"] = est.consistent_frames if est is not None else 0
        if est is not None:
            out.update(belief_entropy=est.entropy, top_place_mass=est.place_mass, mass_near_best=est.mass,
                       reinitialised=est.reinitialised)
        else:  # no frame since a reset: the belief as it is now
            p = tracker._seq.posterior()
            nz = p[p > 0]
            out.update(belief_entropy=float(-(nz * np.log(nz)).sum()), top_place_mass=float(p.max()))
    if tracker._keyframes is not None:
        out.update(tracker._keyframes.diagnostics())
    if tracker.suggested_min_confidence is not None:
        out["calibrated_min_confidence"] = tracker.suggested_min_confidence
    return out
