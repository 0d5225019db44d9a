"""How a replay into localizer nodes is paced (`--pace`, `--rate`, `--frame-timeout` of disam-demo and
disam-eval-online): by the nodes' answers (the default) or by the bag's clock. No ROS imports here, so the
command-line tools check these options before rclpy is loaded; drive_replay.py does the replaying and says why
answers pace it by default.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from disam_ros.cliutil import positive_float

PACES = ("answer", "realtime")
DEFAULT_FRAME_TIMEOUT_S = 30.0  # a 640x480 frame takes ~0.3 s on a 2-core CPU: 100x that is a stuck node


@dataclass(frozen=True)
class Pace:
    """How a drive is replayed: `answer` (each frame waits for every node, at most frame_timeout_s) or
    `realtime` (the bag's log times divided by rate; frames a busy node cannot take are dropped)."""

    mode: str = "answer"
    rate: float = 5.0
    frame_timeout_s: float = DEFAULT_FRAME_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.mode not in PACES:
            raise ValueError(f"--pace {self.mode}: choose one of {', '.join(PACES)}")
        if not (self.rate > 0 and self.frame_timeout_s > 0 and math.isfinite(self.frame_timeout_s)):
            raise ValueError(f"--rate {self.rate:g} and --frame-timeout {self.frame_timeout_s:g} must be > 0")

    @property
    def paced(self) -> bool:
        return self.mode == "answer"

    def describe(self) -> str:
        """One line for the report and the terminal."""
        if self.paced:
            return f"paced by the nodes' answers (each frame waits for every node, at most {self.frame_timeout_s:g} s)"
        return f"real time at rate {self.rate:g} (a busy node drops frames)"


PACED = Pace()  # the default: answers pace the replay


def add_pace_options(p: argparse.ArgumentParser, rate: float) -> None:
    """--pace, --rate, --frame-timeout: shared with disam-demo, which replays the same way."""
    p.add_argument("--pace", choices=PACES, default="answer", help="answer (default): each frame waits until every "
                   "node has accounted for it, so figures do not depend on how busy the machine is; realtime: the "
                   "bag's clock scaled by --rate (a busy node drops frames, reported)")
    p.add_argument("--rate", type=positive_float, help=f"with --pace realtime: replay time factor (default {rate:g}; "
                   "higher = faster, frames may drop)")
    p.add_argument("--frame-timeout", type=positive_float, default=DEFAULT_FRAME_TIMEOUT_S, help="with --pace answer:"
                   f" seconds a frame may wait for the nodes (default {DEFAULT_FRAME_TIMEOUT_S:g}; counted, reported)")
    p.set_defaults(default_rate=rate)


def pace_from_args(args: argparse.Namespace) -> Pace:
    """The Pace of the options; ValueError (one line) for --rate without --pace realtime (it would be ignored)."""
    if args.rate is not None and args.pace != "realtime":
        raise ValueError(f"--rate {args.rate:g} sets the real-time replay's speed: add --pace realtime (the default, "
                         "--pace answer, waits for each answer instead)")
    return Pace(args.pace, args.rate or args.default_rate, args.frame_timeout)
