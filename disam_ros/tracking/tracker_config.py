"""The Tracker's configuration and the record of one tracked frame (tracking/tracker.py): plain data, kept apart
so that the stream localizer's module holds its logic only."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from disam_ros import conditions
from disam_ros.retrieval import RetrievalResult
from disam_ros.tracking.sequence import SequenceConfig, SequenceEstimate
from disam_ros.verify.config import VerifyConfig

TRACKER_MODES = ("single", "sequence", "window")


@dataclass(frozen=True)
class TrackerConfig:
    mode: str = "sequence"  # "single" | "sequence" | "window"
    sequence: SequenceConfig = field(default_factory=SequenceConfig)  # disam_ros.tracking.sequence
    loop_closure_min_consecutive: int = 3  # a loop-closure hint only after k consistent frames
    tolerance_m: float = 5.0  # what "correct" means for the calibrated confidence
    tolerance_deg: float = 10.0
    place_contrast_frames: float = 20.0  # sequence/window: discount places high for ~this many frames (0: off)
    standstill_ratio: float = 0.1  # sequence/window: a frame this close to the last one holds (0: off)
    verify: VerifyConfig = field(default_factory=VerifyConfig)  # metric pose + verification (maps with geometry)
    keyframes: bool = False  # verify beside the frame loop (tracking/keyframes.py) instead of inline
    keyframe_wait_ms: float = 50.0  # ... a frame waits at most this long for its own keyframe's answer
    keyframe_flow_frames: int = 30  # ... a flow chain runs at most this many frames between keyframes
    keyframe_flow_window_px: int = 11  # ... followed with this Lucas-Kanade patch (VerifyConfig.flow_window_px;
    #                                    21 inline): at 30 Hz a chain runs 10-30 frames, and with 21 px it drifted
    #                                    (validation town 7: 44.7 -> 55.4 % of frames within 0.25 m, verified poses
    #                                    over 0.25 m 28.8 -> 9.0 a replay; docs/notes/pose.md)
    flow_skips_retrieval: bool = True  # ... sequence mode: a frame flow verifies is answered without retrieval
    late_keyframe_max_age_s: float = 2.0  # ... sequence mode: a keyframe verified after later frames moved the belief
    #                                       narrows it with its sigma widened by max speed x its age, up to this age
    #                                       (0: only a keyframe no frame has passed)

    def __post_init__(self) -> None:
        if self.mode not in TRACKER_MODES:
            raise ValueError(f"tracker mode {self.mode!r} is unknown: use one of {list(TRACKER_MODES)}")
        if isinstance(self.loop_closure_min_consecutive, bool) or int(self.loop_closure_min_consecutive) < 1:
            raise ValueError(f"loop_closure_min_consecutive={self.loop_closure_min_consecutive!r} must be >= 1")
        if not (self.place_contrast_frames == 0 or self.place_contrast_frames >= 1):
            raise ValueError(f"place_contrast_frames={self.place_contrast_frames!r} must be 0 (off) or >= 1 frame")
        if not 0.0 <= self.standstill_ratio < 1.0:
            raise ValueError(f"standstill_ratio={self.standstill_ratio!r} must lie in [0, 1) (0: off)")
        if not (self.keyframe_wait_ms >= 0 and self.keyframe_flow_frames >= 0):
            raise ValueError(f"keyframe_wait_ms={self.keyframe_wait_ms!r} and keyframe_flow_frames="
                             f"{self.keyframe_flow_frames!r} must be >= 0")
        if not self.late_keyframe_max_age_s >= 0:
            raise ValueError(f"late_keyframe_max_age_s={self.late_keyframe_max_age_s!r} must be >= 0 (0: off)")
        if not (self.keyframe_flow_window_px >= 5 and self.keyframe_flow_window_px % 2 == 1):
            raise ValueError(f"keyframe_flow_window_px={self.keyframe_flow_window_px!r} must be an odd number of "
                             "pixels >= 5 (Lucas-Kanade's patch is centred on the point)")
        if not (self.tolerance_m > 0 and self.tolerance_deg > 0):
            raise ValueError(f"tolerance ({self.tolerance_m} m, {self.tolerance_deg} deg) must be positive")


@dataclass(frozen=True, eq=False)
class LateAnswer:
    """A keyframe verified after its frame was answered (keyframes mode): its own frame's stamp, the frame's answer
    with the verified pose, and whether that frame's loop-closure gate was open. Why kept: the frame's pose went out
    on time without it, but a SLAM back end takes a loop closure at a past stamp (docs/localizer.md)."""

    stamp: float
    result: RetrievalResult
    loop_closure: bool
    image: np.ndarray | None = None  # the keyframe's own image: the debug picture draws its inliers on it


@dataclass(frozen=True, eq=False)
class TrackStep:
    selection: conditions.Selection  # encoder chosen for this frame
    result: RetrievalResult  # ok=False: no pose; ok=True: the tracker's answer (see the module docstring)
    estimate: SequenceEstimate | None  # None in single mode (and for frames that gave no evidence)
    calibrated: bool  # confidence is a calibrated probability
    loop_closure: bool  # consistent_frames >= loop_closure_min_consecutive (single: result.ok)
    late: tuple[LateAnswer, ...] = ()  # keyframes mode: earlier frames' keyframes verified since the last step


def config_summary(cfg: TrackerConfig) -> dict[str, Any]:
    """The settings a calibration depends on (stored with it, compared at load)."""
    seq = {f.name: getattr(cfg.sequence, f.name) for f in fields(cfg.sequence) if f.name != "mode"}
    seq["place_contrast_frames"] = cfg.place_contrast_frames
    seq["standstill_ratio"] = cfg.standstill_ratio
    return {"sequence": seq, "tolerance": [cfg.tolerance_m, cfg.tolerance_deg]}
