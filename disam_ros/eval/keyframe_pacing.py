"""`disam-eval --keyframes`: the node's verification beside the frame loop (`verify_keyframes`), replayed paced.

Why: with `verify_keyframes` a node answers each frame from optical flow or the belief at once and solves keyframes
on a second thread; how much of a drive it verifies then depends on how busy the core is. Paced, each frame waits
for its own keyframe (flow failed) and for a renewal in flight before the next frame comes, so every keyframe runs
alone on the thread and the figures repeat. Per drive this records each keyframe's verification time: the median
is the cost a camera-rate node must fit beside its frame loop (docs/benchmarks.md measures the real-time side,
`disam-bench node --rate`)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.fsutil import atomic_write_text
from disam_ros.tracking.tracker import TrackerConfig

log = logging.getLogger(__name__)

PACED_WAIT_MS = 3_600_000.0  # a frame waits for its own keyframe: none is answered `pending` for want of time
IDLE_TIMEOUT_S = 600.0  # ... and for a renewal in flight before the next frame (a stuck keyframe: warn, go on)


def paced(config: TrackerConfig) -> TrackerConfig:
    """The tracker settings with verification beside the frame loop, each frame waiting for its keyframe."""
    return replace(config, keyframes=True, keyframe_wait_ms=PACED_WAIT_MS)


@dataclass
class DriveKeyframes:
    """One drive's keyframe verification times in one tracker mode."""

    mode: str
    condition: str
    times_ms: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        t = np.asarray(self.times_ms, float)
        return {"mode": self.mode, "condition": self.condition, "keyframes": int(len(t)),
                "median_ms": float(np.median(t)) if len(t) else None,
                "p95_ms": float(np.percentile(t, 95)) if len(t) else None, "times_ms": [float(x) for x in t]}


class PacedKeyframes:
    """Waits for the keyframe in flight after every frame and keeps each drive's keyframe times."""

    def __init__(self) -> None:
        self.drives: list[DriveKeyframes] = []
        self._seen = 0

    def new_drive(self, tracker: Any, mode: str, condition: str) -> None:
        """Call after the tracker's reset for the drive."""
        self._seen = tracker.keyframe_times()[0]
        self.drives.append(DriveKeyframes(mode, condition))

    def after_frame(self, tracker: Any) -> None:
        if not tracker.wait_keyframes(IDLE_TIMEOUT_S):
            log.warning("a keyframe still runs after %.0f s; the replay goes on", IDLE_TIMEOUT_S)
        solved, times = tracker.keyframe_times()
        new = min(solved - self._seen, len(times))
        self._seen = solved
        if new > 0:
            self.drives[-1].times_ms.extend(times[-new:])

    def rows_text(self) -> list[str]:
        """The per-drive table disam-eval prints."""
        lines = ["keyframes (paced, one thread): mode / drive / keyframes / median ms / p95 ms"]
        for d in (d.row() for d in self.drives):
            med = "-" if d["median_ms"] is None else f"{d['median_ms']:.0f}"
            p95 = "-" if d["p95_ms"] is None else f"{d['p95_ms']:.0f}"
            lines.append(f"  {d['mode']:<9} {d['condition']:<20} {d['keyframes']:>5}  {med:>6}  {p95:>6}")
        return lines

    def write(self, path: Path) -> Path:
        return atomic_write_text(path, json.dumps({"drives": [d.row() for d in self.drives]}, indent=1) + "\n")


__all__ = ["IDLE_TIMEOUT_S", "PACED_WAIT_MS", "DriveKeyframes", "PacedKeyframes", "paced"]
