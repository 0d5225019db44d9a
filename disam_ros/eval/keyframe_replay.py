"""`disam-eval --keyframes [--rate HZ]`: the node's verification beside the frame loop (`verify_keyframes`), replayed.

Why: with `verify_keyframes` a node answers each frame from optical flow or the belief at once and solves keyframes
on a second thread; how much of a drive it verifies then depends on how busy the core is.
* Paced (no `--rate`): each frame waits for its own keyframe (flow failed) and for a renewal in flight before the
  next frame comes, so every keyframe runs alone on the thread and the figures repeat. Each keyframe's verification
  time is recorded: the median is the cost a camera-rate node must fit beside its frame loop.
* At a camera rate: the drive's frames arrive `rate` times a second while the loop runs; the loop takes the newest
  frame when it is free (a node's one-deep queue) and frames it never took are dropped. Per drive: frames sent,
  answered, dropped, latency from a frame's arrival to its answer, and the share of SENT frames answered within
  (0.25 m, 2 deg); then the late answers (keyframes verified after their frames: the node's late loop-closure
  hints) and the share of sent frames a SLAM back end got a verified pose within (0.25 m, 2 deg) for, in time or
  late. The same measure as `disam-bench node --rate` without DDS and on any drives, so that a real-time
  choice can be made on validation drives and reported on others (the bench has one world)."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.fsutil import atomic_write_text
from disam_ros.tracking.tracker import TrackerConfig

log = logging.getLogger(__name__)

PACED_WAIT_MS = 3_600_000.0  # paced: a frame waits for its own keyframe, none is `pending` for want of time
IDLE_TIMEOUT_S = 600.0  # ... and for a renewal in flight before the next frame (a stuck keyframe: warn, go on)
WITHIN = (0.25, 2.0)  # the real-time share's tolerance (m, deg): a verified pose's, as the bench's


def replay_config(config: TrackerConfig, rate_hz: float = 0.0, wait_ms: float | None = None) -> TrackerConfig:
    """Verification beside the frame loop; paced (rate 0), each frame waits for its keyframe; at a camera rate as
    the node does, a frame waiting `wait_ms` (None: the config's `keyframe_wait_ms`)."""
    wait = PACED_WAIT_MS if rate_hz <= 0 else config.keyframe_wait_ms if wait_ms is None else float(wait_ms)
    return replace(config, keyframes=True, keyframe_wait_ms=wait)


@dataclass
class DriveKeyframes:
    """One drive's keyframe verification times in one tracker mode, and at a camera rate what its frames got."""

    mode: str
    condition: str
    times_ms: list[float] = field(default_factory=list)
    verified: int = 0  # keyframes that verified (in time or late)
    sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # answered frames, arrival to answer
    within: int = 0  # answered within WITHIN
    late: int = 0  # late answers (keyframes verified after their frames were answered)
    hinted: int = 0  # frames a SLAM back end got a verified pose within WITHIN for: in time, or late
    verified_off: int = 0  # frames answered as verified outside WITHIN (what a SLAM back end should not trust)

    def row(self, rate_hz: float = 0.0) -> dict[str, Any]:
        t = np.asarray(self.times_ms, float)
        row = {"mode": self.mode, "condition": self.condition, "keyframes": int(len(t)), "verified": self.verified,
               "median_ms": float(np.median(t)) if len(t) else None,
               "p95_ms": float(np.percentile(t, 95)) if len(t) else None, "times_ms": [float(x) for x in t]}
        if rate_hz > 0:
            lat = np.asarray(self.latencies_ms, float)
            row.update(sent=self.sent, answered=int(len(lat)), dropped=self.sent - int(len(lat)),
                       latency_median_ms=float(np.median(lat)) if len(lat) else None,
                       latency_p95_ms=float(np.percentile(lat, 95)) if len(lat) else None,
                       within_share=self.within / self.sent if self.sent else None, late=self.late,
                       hinted_share=self.hinted / self.sent if self.sent else None, verified_off=self.verified_off)
        return row


class KeyframeReplay:
    """Feeds a drive's frames (paced, or at `rate_hz`), waits for keyframes when paced, and keeps per-drive
    records (module docstring)."""

    def __init__(self, rate_hz: float = 0.0, wait_ms: float = TrackerConfig.keyframe_wait_ms) -> None:
        self.rate_hz = float(rate_hz)
        self.wait_ms = float(wait_ms)  # at a camera rate: the tracker's keyframe_wait_ms (the record says it)
        self.drives: list[DriveKeyframes] = []
        self._seen = 0  # the tracker's keyframes solved, and verified, when last counted
        self._verified = 0
        self._arrival = 0.0
        self._frames: dict[float, Any] = {}  # this drive's answered frames by stamp: a late answer's ground truth

    def new_drive(self, tracker: Any, mode: str, condition: str) -> None:
        """Call after the tracker's reset for the drive."""
        self._seen, self._verified, _ = tracker.keyframe_times()
        self._frames = {}
        self.drives.append(DriveKeyframes(mode, condition))

    def frames(self, queries: Iterable[Any]) -> Iterator[Any]:
        """The frames the loop gets: all in order when paced; at a camera rate, each time the loop asks, the newest
        that has arrived (waiting for the next when none is new); the rest are dropped."""
        qs = list(queries)
        self.drives[-1].sent = len(qs)
        if self.rate_hz <= 0:
            yield from qs
            return
        t0, k = time.perf_counter(), -1
        while k < len(qs) - 1:
            wait = t0 + (k + 1) / self.rate_hz - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            k = min(len(qs) - 1, int((time.perf_counter() - t0) * self.rate_hz))
            self._arrival = t0 + k / self.rate_hz
            yield qs[k]

    def after_frame(self, tracker: Any, frame: Any, answered_at: float, late: Iterable[Any] = ()) -> list[Any]:
        """Record the frame's answer (`frame`: its eval/scoring.TrackedFrame; `answered_at`: perf_counter time) and
        the late answers its step brought (`TrackStep.late`, scored against their own frames) at a camera rate, or
        wait for the keyframe in flight (paced); then the new keyframe times. Returns the late answers whose frames
        this drive answered (the caller records them on those frames)."""
        d, matched = self.drives[-1], []
        if self.rate_hz > 0:
            d.latencies_ms.append(1e3 * (answered_at - self._arrival))
            d.within += int(frame.correct(WITHIN))
            d.hinted += int(frame.verified and frame.correct(WITHIN))
            d.verified_off += int(frame.verified and not frame.correct(WITHIN))
            self._frames[float(frame.stamp)] = frame
            matched = self._score_late(late)
        elif not tracker.wait_keyframes(IDLE_TIMEOUT_S):
            log.warning("a keyframe still runs after %.0f s; the replay goes on", IDLE_TIMEOUT_S)
        self._new_times(tracker)
        return matched

    def end_drive(self, tracker: Any) -> list[Any]:
        """After a drive's last frame at a camera rate: the keyframe in flight ends and its late answer is scored, as
        the node sends it once solved, frames arriving or not (`Tracker.take_late`). Returns it as `after_frame`
        does."""
        if self.rate_hz <= 0:
            return []
        if not tracker.wait_keyframes(IDLE_TIMEOUT_S):
            log.warning("a keyframe still runs after %.0f s; its late answer is not scored", IDLE_TIMEOUT_S)
        matched = self._score_late(tracker.take_late())
        self._new_times(tracker)
        return matched

    def _new_times(self, tracker: Any) -> None:
        """The verification times of the keyframes solved since the last call, into the drive's record."""
        solved, verified, times = tracker.keyframe_times()
        new = min(solved - self._seen, len(times))
        self.drives[-1].verified += verified - self._verified
        self._seen, self._verified = solved, verified
        if new > 0:
            self.drives[-1].times_ms.extend(times[-new:])

    def _score_late(self, late: Iterable[Any]) -> list[Any]:
        """Late answers against their own frames' ground truth (a frame not answered in this drive: none); returns
        those scored."""
        d, matched = self.drives[-1], []
        for a in late:
            own = self._frames.get(float(a.stamp))
            if own is not None:
                d.late += 1
                d.hinted += int(replace(own, est_position=np.asarray(a.result.position, float),
                                        est_quat=np.asarray(a.result.quat, float)).correct(WITHIN))
                matched.append(a)
        return matched

    def rows_text(self) -> list[str]:
        """The per-drive table disam-eval prints."""
        real = self.rate_hz > 0
        head = f"at {self.rate_hz:g} Hz, one loop, wait {self.wait_ms:g} ms" if real else "paced, one thread"
        lines = [f"keyframes ({head}): mode / drive / keyframes / verified / median ms / p95 ms"
                 + (" / answered of sent / latency p95 ms / % of sent within 0.25 m, 2 deg / answered as verified "
                    "outside it / late answers / % of sent with a verified hint within 0.25 m, 2 deg (in time or late)"
                    if real else "")]
        for r in (d.row(self.rate_hz) for d in self.drives):
            cells = [str(r["verified"]), _ms(r["median_ms"]), _ms(r["p95_ms"])]
            if real:
                share = "-" if r["within_share"] is None else f"{100 * r['within_share']:.1f}"
                hinted = "-" if r["hinted_share"] is None else f"{100 * r['hinted_share']:.1f}"
                cells += [f"{r['answered']}/{r['sent']}", _ms(r["latency_p95_ms"]), share, str(r["verified_off"]),
                          str(r["late"]), hinted]
            lines.append(f"  {r['mode']:<9} {r['condition']:<20} {r['keyframes']:>5}  " + "  ".join(
                f"{c:>6}" for c in cells))
        return lines

    def write(self, path: Path) -> Path:
        doc = {"rate_hz": self.rate_hz or None, "wait_ms": self.wait_ms if self.rate_hz > 0 else None,
               "drives": [d.row(self.rate_hz) for d in self.drives]}
        return atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def late_on_frames(tracked: list[Any], at: dict[float, int], late: Sequence[Any],
                   map_poses: tuple[np.ndarray, np.ndarray], arrived: float | None = None) -> None:
    """Each late answer (tracking/tracker_config.LateAnswer) recorded on its own frame's TrackedFrame (`at`: index
    by stamp), with the map keyframe it was solved against: what the node's late hint carries for a back end, and
    `arrived`: the stamp of the frame whose step returned it (None: after the drive's last frame), when a back end
    could first have used it."""
    for a in late:
        i, v = at.get(float(a.stamp)), a.result.verification
        if i is None or v is None or not v.verified:
            continue
        tracked[i] = replace(tracked[i], late={
            "position": np.asarray(a.result.position, float), "quat": np.asarray(a.result.quat, float),
            "covariance": np.asarray(a.result.covariance, float).reshape(6, 6), "keyframe_index": int(v.index),
            "keyframe_position": np.asarray(map_poses[0][v.index], float),
            "keyframe_quat": np.asarray(map_poses[1][v.index], float), "arrived_stamp": arrived})


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


__all__ = ["IDLE_TIMEOUT_S", "PACED_WAIT_MS", "WITHIN", "DriveKeyframes", "KeyframeReplay", "replay_config"]
