"""Verification beside the frame loop: keyframes solved against the map on their own thread.

Why: solving a frame against the map costs 100 ms in daylight and 1-2 s at night on one CPU core, while a
camera sends a frame every 33 ms. Verified inline, every frame behind a slow one waits (or is dropped) and its
pose is published late. Here the frame loop never waits longer than `wait_ms` for it: each frame is encoded,
retrieved and followed by optical flow from the last verified pose (a few ms; verify/flow_chain.py), and when
the thread is free the frame goes to it as a keyframe. A keyframe answered within `wait_ms` is that frame's
answer, as before; one answered later is never published as a pose (its frame has been answered), it renews the
flow chain instead, following the frames seen since up to the newest, and narrows the belief, more loosely the
older it is. Verified, it is handed on as a late answer (`TrackStep.late`): a loop closure at its own frame's
stamp for a SLAM back end.

The thread runs at a lower priority (nice +10, Linux) so that on one core the frame loop runs first. It needs the
rest of that core: one shared with a busy process leaves it a few per cent, and then nothing verifies, so the
thread measures the share of the time it could run that it did run while solving (Linux scheduler statistics),
and says so (`starved`).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.verify.result import PointTrack, Verification

log = logging.getLogger(__name__)

NICE = 10  # the keyframe thread's niceness above the frame loop's
RESET_WAIT_S = 1.0  # a reset waits this long at most for the dropped keyframe to end
RECENT_KEYFRAMES = 32  # verification times listed in diagnostics: a benchmark pools several runs' keyframes
RECENT_FRAMES = 64  # grey frames kept for the catch-up (~2 s at 30 Hz; 640x480: 0.3 MB each)
STARVED_SHARE = 0.2  # a keyframe that ran for less than this share of the time it was runnable was starved ...
STARVED_KEYFRAMES = 3  # ... and this many in a row get a warning (30 Hz, one core: 0.53-0.72; two threads
#                        on two cores: 0.11-0.86, median 0.70; beside a busy process at nice 0: 0.07-0.1)
SCHEDSTAT = Path("/proc/thread-self/schedstat")  # Linux: ns on the CPU, ns runnable but waiting for it, slices
STARVED_WARN_EVERY_S = 30.0  # ... at most this often


@dataclass(eq=False)
class Keyframe:
    """A frame handed to the thread, and, once solved, its answer."""

    rgb: np.ndarray
    grey: np.ndarray | None
    candidates: list[int]
    previous: PointTrack | None
    stamp: float
    dense: bool
    prior: tuple[np.ndarray, np.ndarray] | None = None  # the frame's own pose by flow (a renewal), matched around first
    answer: Verification | None = None
    taken: bool = False  # the frame loop used (or dropped) the answer: it is not applied again
    dropped: bool = False  # its drive was reset: it ends as a spent time box does, and it renews no chain
    drive: int = 0  # the flow chain's drive it was taken in (FlowChain.drive)
    result: Any = None  # the frame's answer (RetrievalResult) when it was handed over: a late answer's base
    loop_closure: bool = False  # the frame's loop-closure gate was open


class KeyframeThread:
    """One thread solving keyframes with the tracker's Verifier (module docstring). Every Verifier call but
    the flow chain's happens on this thread, so the verifier's own state needs no lock."""

    def __init__(self, verifier: Any) -> None:
        self.verifier = verifier
        self._cv = threading.Condition()
        self._job: Keyframe | None = None  # waiting or being solved
        self._done: deque[Keyframe] = deque(maxlen=4)  # solved, not yet taken by the frame loop
        self._recent: deque[tuple[float, np.ndarray]] = deque(maxlen=RECENT_FRAMES)
        self._closed = False
        self.solved = 0
        self.verified = 0  # of them verified (a dropped keyframe's answer is not counted)
        self.times_ms: deque[float] = deque(maxlen=200)  # the recent keyframes' verification times (diagnostics)
        self.cpu_shares: deque[float] = deque(maxlen=200)  # ... the share of a core they got (`run_share`) ...
        self.run_ms: deque[float] = deque(maxlen=200)  # ... and their time on a CPU: their cost on one thread
        self.verify_run_ms: deque[float] = deque(maxlen=200)  # ... of it the verification's, without the catch-up
        self._verify_run_text: deque[str] = deque(maxlen=RECENT_KEYFRAMES)  # ... the last ones, formatted once each
        self._warned = -float("inf")
        self.on_late: Callable[[], None] | None = None  # called (on this thread) when an answer no frame took is ready
        self.thread = threading.Thread(target=self._run, name="disam_keyframe_verify", daemon=True)
        self.thread.start()

    @property
    def idle(self) -> bool:
        with self._cv:
            return self._job is None

    def seen(self, stamp: float, grey: np.ndarray | None) -> None:
        """A frame the loop processed: the catch-up may follow it."""
        if grey is not None:
            with self._cv:
                self._recent.append((stamp, grey))

    def submit(self, job: Keyframe) -> bool:
        """Hand a keyframe over; False (nothing done) while another is being solved."""
        with self._cv:
            if self._job is not None or self._closed:
                return False
            job.drive = self.verifier.chain.drive
            self._job = job
            self._cv.notify_all()
            return True

    def wait(self, job: Keyframe, timeout_s: float) -> Verification | None:
        """The keyframe's answer if it comes within `timeout_s` (it is then taken), else None."""
        with self._cv:
            self._cv.wait_for(lambda: job.answer is not None or self._closed, timeout=max(timeout_s, 0.0))
            if job.answer is None:
                return None
            job.taken = True
            return job.answer

    def finished(self) -> list[Keyframe]:
        """Keyframes solved since the last call whose answer no frame took (oldest first)."""
        with self._cv:
            out = [k for k in self._done if not k.taken]
            self._done.clear()
            for k in out:
                k.taken = True
        return out

    def reset(self, wait_s: float | None = None) -> bool:
        """A new drive: forget the frames seen. A keyframe in flight is dropped: it ends as a spent time box does
        (after its first step, e.g. the first candidate's look), and neither its answer nor its time nor its seed
        is used. Waits up to `wait_s` (None: RESET_WAIT_S) for it to end, so that the caller may reset
        the verifier's state without racing it; False if it did not."""
        with self._cv:
            self._recent.clear()
            self._done.clear()
            self.times_ms.clear()
            self.cpu_shares.clear()
            self.run_ms.clear()
            self.verify_run_ms.clear()
            self._verify_run_text.clear()
            if self._job is not None:
                self._job.taken = self._job.dropped = True
                self._cv.notify_all()
            return self._cv.wait_for(lambda: self._job is None or self._closed,
                                     timeout=RESET_WAIT_S if wait_s is None else wait_s)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no keyframe is waiting or being solved (a paced replay: each keyframe then runs alone);
        False if one still is after `timeout_s`."""
        with self._cv:
            return self._cv.wait_for(lambda: self._job is None or self._closed, timeout=timeout_s)

    def times(self) -> tuple[int, int, list[float]]:
        """Keyframes solved so far, how many of them verified, and the recent ones' verification times (ms, since the
        last reset, newest last)."""
        with self._cv:
            return self.solved, self.verified, list(self.times_ms)

    def diagnostics(self) -> dict[str, Any]:
        """Keyframes solved and how many of them verified (a share far below one says the verifier cannot verify
        in these conditions, not that it is slow), whether one is in flight, and the median and p95 of their
        verification times (since the last reset); the last RECENT_KEYFRAMES verifications' CPU times, listed."""
        with self._cv:
            ms, busy = sorted(self.times_ms), self._job is not None
            out: dict[str, Any] = {"keyframes_solved": self.solved, "keyframes_verified": self.verified,
                                   "keyframe_in_flight": busy}
            if self.cpu_shares:
                out.update(keyframe_cpu_share=float(np.median(self.cpu_shares)),
                           keyframe_run_ms_median=float(np.median(self.run_ms)),
                           keyframe_verify_run_ms_median=float(np.median(self.verify_run_ms)),
                           keyframe_verify_run_ms_recent=" ".join(self._verify_run_text))
        if ms:
            out.update(keyframe_ms_median=float(np.median(ms)), keyframe_ms_p95=float(np.percentile(ms, 95)))
        return out

    def starved(self) -> float | None:
        """The median share of a core the last STARVED_KEYFRAMES keyframes got while solving, when every one of them
        got less than STARVED_SHARE; None otherwise (or fewer solved). Call with the lock held."""
        last = list(self.cpu_shares)[-STARVED_KEYFRAMES:]
        if len(last) < STARVED_KEYFRAMES or max(last) >= STARVED_SHARE:
            return None
        return float(np.median(last))

    def close(self, timeout_s: float = 2.0) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self.thread.join(timeout_s)

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)  # Linux: per thread
        except (AttributeError, OSError, PermissionError):
            log.debug("keyframe thread runs at the frame loop's priority")
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._job is not None or self._closed)
                if self._closed:
                    return
                job = self._job
            before = sched_times()
            answer, verify_cpu_ms = self._solve(job)
            after = sched_times()
            share = run_share(before, after)
            with self._cv:
                job.answer = answer
                self._job = None
                self.solved += 1
                if not job.dropped:
                    self.times_ms.append(float(answer.ms))
                    if share is not None:
                        self.cpu_shares.append(share)
                        self.run_ms.append((after[0] - before[0]) / 1e6)
                        self.verify_run_ms.append(verify_cpu_ms)
                        self._verify_run_text.append(f"{verify_cpu_ms:.1f}")
                    self.verified += bool(answer.verified)
                starved = self.starved()
                late = not job.taken
                if late:
                    self._done.append(job)
                self._cv.notify_all()
            if starved is not None:
                self._warn_starved(starved)
            if late and self.on_late is not None:  # outside the lock: the callback may wake the frame loop
                try:
                    self.on_late()
                except Exception as exc:  # noqa: BLE001  (a failing listener must not end the thread)
                    log.warning("keyframe %.3f: late-answer callback failed: %s", job.stamp, exc)

    def _warn_starved(self, share: float) -> None:
        if time.monotonic() - self._warned >= STARVED_WARN_EVERY_S:
            self._warned = time.monotonic()
            log.warning("keyframe verification is starved: it ran %.0f %% of the time it could over the last %d "
                        "keyframes, so its core is busy with other work: give the node a core of its own (taskset, "
                        "cpuset) or verify inline at a lower camera rate", 100 * share, STARVED_KEYFRAMES)

    def _solve(self, job: Keyframe) -> tuple[Verification, float]:
        """The keyframe's answer, after its seed renewed the flow chain (the catch-up), and the verification's own
        time on a CPU (ms): what the keyframe costs apart from following the frames that arrived meanwhile."""
        start = time.thread_time_ns()
        answer = self._verify(job)
        cpu_ms = (time.thread_time_ns() - start) / 1e6
        self._renew_chain(job, answer)
        return answer, cpu_ms

    def _verify(self, job: Keyframe) -> Verification:
        try:
            return self.verifier.verify(job.rgb, job.candidates, job.previous, job.stamp, job.dense, keyframe=True,
                                        prior=job.prior, stop=lambda: job.dropped)
        except Exception as exc:  # noqa: BLE001  (one bad keyframe must not end the thread)
            log.warning("keyframe %.3f: verification failed: %s: %s", job.stamp, type(exc).__name__, exc)
            return Verification("too_few_inliers", ms=0.0)

    def _renew_chain(self, job: Keyframe, answer: Verification) -> None:
        """The catch-up: the answer's seed follows the frames seen since the keyframe (FlowChain.settle)."""
        v = self.verifier
        try:  # a chain that cannot be renewed leaves the frames to keyframes; the thread must outlive it
            cam, _ = v.camera_for(job.rgb.shape[1], job.rgb.shape[0])
            if cam is not None:
                v.chain.settle(answer, job.grey, job.stamp, cam, self._since, drive=job.drive)
        except Exception as exc:  # noqa: BLE001
            log.warning("keyframe %.3f: renewing the flow chain failed: %s: %s", job.stamp, type(exc).__name__, exc)

    def _since(self, stamp: float) -> list[tuple[float, np.ndarray]]:
        """The frames the loop has seen after `stamp`, oldest first (the catch-up asks again as frames arrive)."""
        with self._cv:
            if self._job is None or self._job.dropped:  # a reset: the frames since belong to another drive
                return []
            return [(t, g) for t, g in self._recent if t > stamp]


def sched_times() -> tuple[int, int] | None:
    """This thread's nanoseconds on a CPU and runnable but waiting for one, since it started (None: not Linux).
    Why these and not CPU over wall time: a solve that waits on a library's worker threads is not starved."""
    try:
        run, wait = SCHEDSTAT.read_text().split()[:2]
        return int(run), int(wait)
    except (OSError, ValueError):
        return None


def run_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the time the thread was runnable between two `sched_times` that it ran: 1.0 with a core to
    itself, ~0.1 at nice +10 beside a busy process (None: unknown; 1.0 when it was never runnable)."""
    if before is None or after is None:
        return None
    run, wait = after[0] - before[0], after[1] - before[1]
    return 1.0 if run + wait <= 0 else min(max(run / (run + wait), 0.0), 1.0)
