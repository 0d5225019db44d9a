"""Replaying one query drive into the evaluated localizer nodes, paced by their answers or by the clock.

A node keeps only the newest frame (a mailbox of one): a frame that arrives while it works replaces the one
waiting, and is counted as dropped. Replayed in real time (`--pace realtime`, scaled by `--rate`), how many frames
a node drops depends on how busy the machine is, so the same drive scored 63 % on one run and 74-82 % on others.
Paced by answers (`--pace answer`, the default), the replay publishes a frame and waits until every node has
accounted for it (a pose published, or counted as not localized, junk, bad input, an error) or `--frame-timeout`
passed, before the next message: each node sees the same messages in the same order as in real time, with the
same stamps (the trackers follow stamps, not arrival times), just never faster than it can answer. A frame past
the timeout is counted and reported, and so are the frames a node dropped, in either mode.
"""
from __future__ import annotations

import math
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disam_ros.ros.client import LocalizerClient
from disam_ros.ros.eval_nodes import wait_for_nodes
from disam_ros.ros.pace import Pace
from disam_ros.ros.replay import BagPlayer


@dataclass(frozen=True)
class Drive:
    condition: str
    bag: Path
    weather: str | None
    image_topic: str
    compressed: bool


@dataclass
class DriveReplay:
    """What one drive's replay did: publish time (monotonic) per frame's log time in ns, and per node (in the
    clients' order) the frames it dropped and the log times of the frames past the per-frame timeout."""

    sent: dict[int, float] = field(default_factory=dict)
    dropped: list[int] = field(default_factory=list)
    timed_out: list[list[int]] = field(default_factory=list)


def processed_frames(client: LocalizerClient) -> int:
    """Frames the node has started work on so far, by its latest diagnostics. Frames sent minus these are the ones
    it dropped: its own drop counters miss frames lost before a publisher's first message reached it (a burst
    replaced in the subscription queue leaves no sequence gap to count)."""
    d = client.rx.diagnostics[-1][1] if client.rx.diagnostics else {}
    return int(d.get("processed", 0))


class AnswerGate:
    """The replay's gate in paced mode: after each frame, until every node has accounted for all frames sent
    (its diagnostics counters) or published a pose for this one (its stamp, the log time in bags from
    disam-bag), or the per-frame timeout passed. Waits on the clients' events, never a fixed sleep."""

    def __init__(self, clients: list[LocalizerClient], topic: str, timeout_s: float) -> None:
        self.topics, self.clients, self.timeout_s = (topic,), clients, timeout_s
        self.bases = [c.frames_done()[0] for c in clients]
        self.frames = 0
        self.timed_out: list[list[int]] = [[] for _ in clients]

    def __call__(self, topic: str, log_ns: int) -> None:
        self.frames += 1
        key = divmod(int(log_ns), 1_000_000_000)
        deadline = time.monotonic() + self.timeout_s
        for client, base, late in zip(self.clients, self.bases, self.timed_out):
            def accounted(c: LocalizerClient = client, b: int = base) -> bool:
                return key in c.rx.pose_cov or c.frames_done(0.0)[0] - b >= self.frames

            if not client.wait(accounted, max(0.0, deadline - time.monotonic())):
                late.append(int(log_ns))


def replay_drive(clients: list[LocalizerClient], drive: Drive, pace: Pace, idle_s: float,
                 procs: list[subprocess.Popen] = (), log: Any = None) -> DriveReplay:
    """Replay one bag's camera topic into every node (the nodes' weather set first, as a driver would); returns
    what was sent, dropped and timed out. Ends when every node has accounted for every frame (or idle_s passed
    without news)."""
    player = BagPlayer(clients[0].node, drive.bag, topics=[drive.image_topic],
                       rate=pace.rate if not pace.paced else math.inf, clock=False)
    out = DriveReplay()
    try:
        wait_for_nodes(player, list(procs), log)
        for client in clients:
            if drive.weather:
                ok = client.set_parameters({"weather": drive.weather})
                if not all(s for s, _ in ok):
                    raise ValueError(f"node refused weather {drive.weather!r}: {[r for _, r in ok]}")
        bases = [c.frames_done() for c in clients]
        processed = [processed_frames(c) for c in clients]
        gate = AnswerGate(clients, drive.image_topic, pace.frame_timeout_s) if pace.paced else None
        player.play(on_message=lambda _t, log_ns: out.sent.__setitem__(int(log_ns), time.monotonic()), gate=gate)
    finally:
        player.close()
    for client, base in zip(clients, bases):
        client.wait_frames_done(len(out.sent), base, idle_s)
    out.dropped = [max(0, len(out.sent) - processed_frames(c) + p) for c, p in zip(clients, processed)]
    out.timed_out = gate.timed_out if gate is not None else [[] for _ in clients]
    return out
