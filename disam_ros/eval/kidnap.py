"""Kidnapped-vehicle evaluation: cut a stretch out of every query drive and measure how the tracker recovers.

Why: a sequence filter is only safe for SLAM if, after the vehicle is carried somewhere its motion model did not
predict (a ferry, a tow truck, a wrong loop in the map, a restart after a long tunnel), it (1) finds its place
again within a few frames and (2) publishes nothing wrong meanwhile. `disam-eval --kidnap AT:SKIP` drops
frames [AT, AT+SKIP) of each drive and moves the later stamps back by the time cut out, so the stream runs on at
its own frame rate without a stamp gap (a gap would restart the belief and hide the problem). The filter sees a
vehicle that jumped SKIP frames ahead between two ordinary frames.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from disam_ros.eval.queries import Query
from disam_ros.fsutil import atomic_write_text

RUN = 5  # correct frames in a row that count as re-localised


def parse_kidnap(text: str) -> tuple[int, int]:
    """'40:25' -> (40, 25): jump after 40 frames over the next 25 (argparse type; one-line error)."""
    at, sep, skip = text.partition(":")
    try:
        a, s = int(at), int(skip)
    except ValueError:
        a = s = -1
    if not sep or a < 1 or s < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not AT:SKIP with positive frame counts (e.g. 40:25: "
                                         "after frame 40, jump over 25 frames)")
    return a, s


def kidnapped(queries: Iterable[Query], at: int, skip: int) -> Iterator[Query]:
    """The drive without frames [at, at+skip), later stamps moved back so that the frame after the jump comes
    one ordinary frame interval after the one before it. Drives shorter than at+skip+1 frames pass unchanged
    (there is nothing to jump to; `recoveries` then reports no jump for them)."""
    frames = list(queries)
    if len(frames) <= at + skip:
        yield from frames
        return
    yield from frames[:at]
    step = frames[at].stamp - frames[at - 1].stamp
    shift = frames[at + skip].stamp - frames[at - 1].stamp - step
    for q in frames[at + skip:]:
        yield replace(q, stamp=q.stamp - shift)


class KidnappedQueries:
    """Re-iterable `kidnapped` view of a re-iterable query stream (a QueryGroup's queries)."""

    def __init__(self, queries: Iterable[Query], at: int, skip: int) -> None:
        self.queries, self.at, self.skip = queries, at, skip

    def __iter__(self) -> Iterator[Query]:
        return kidnapped(self.queries, self.at, self.skip)


@dataclass(frozen=True)
class Recovery:
    """One (drive, mode) after the jump: metres jumped, frames until RUN correct answers in a row began (0: the
    jump frame itself starts one; None: never), and frames published wrong from the jump until then."""

    condition: str
    mode: str
    jump_m: float
    frames_to_relocalise: int | None
    wrong_published: int
    published: int


def recoveries(tracked: Sequence, at: int, publish: Mapping[str, float], tolerance: tuple[float, float],
               run: int = RUN) -> list[Recovery]:
    """Per (mode, condition) in the order first seen, for drives long enough to have had the jump.

    `tracked`: `scoring.TrackedFrame`s in stream order; `publish`: each mode's publishing threshold (a frame
    is published when answered with confidence >= it)."""
    groups: dict[tuple[str, str], list] = {}
    for f in tracked:
        groups.setdefault((f.mode, f.condition), []).append(f)
    out = []
    for (mode, cond), fs in groups.items():
        if len(fs) <= at:
            continue
        ok = np.array([f.correct(tolerance) for f in fs[at:]], bool)
        start = next((i for i in range(len(ok) - run + 1) if ok[i:i + run].all()), None)
        until = len(ok) if start is None else start
        thr = publish.get(mode, 0.0)
        pub = np.array([f.est_position is not None and f.confidence >= thr for f in fs[at:at + until]], bool)
        jump = float(np.linalg.norm(fs[at].gt_position - fs[at - 1].gt_position))
        out.append(Recovery(cond, mode, jump, start, int((pub & ~ok[:until]).sum()), int(pub.sum())))
    return out


def recovery_rows(recs: Sequence[Recovery], run: int = RUN) -> list[str]:
    """Terminal table: one line per (drive, mode)."""
    if not recs:
        return []
    head = ["condition", "mode", "jump", f"frames to {run} right in a row", "published meanwhile", "wrong"]
    rows = [head] + [[r.condition, r.mode, f"{r.jump_m:.0f} m",
                      "never" if r.frames_to_relocalise is None else str(r.frames_to_relocalise),
                      str(r.published), str(r.wrong_published)] for r in recs]
    widths = [max(len(x[i]) for x in rows) for i in range(len(head))]
    return ["", "kidnap recovery:", *("  ".join(c.ljust(w) for c, w in zip(x, widths)) for x in rows)]


def write_recoveries(path: Path, recs: Sequence[Recovery], at: int, skip: int, run: int = RUN) -> Path:
    doc = {"at": at, "skip": skip, "run": run, "drives": [asdict(r) for r in recs]}
    return atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
