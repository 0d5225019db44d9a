"""Late loop-closure hints (`verify_keyframes`): a keyframe verified after its frame was answered goes out as a
second hint at that frame's exact header stamp, with `"late": true` (docs/localizer.md).

Why apart from the frame worker: the worker answers frames; this remembers the recent frames' header stamps (a
float stamp cannot give back the exact nanoseconds) and encoders, so that a hint solved a second later carries its
own frame's. Memory is bounded by `LATE_STAMPS`; a stamp no longer remembered is rebuilt from the float."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from disam_ros.ros import messages as M

LATE_STAMPS = 256  # frames whose exact header stamp a late hint can still find (~8 s at 30 Hz)


class LateHints:
    """The recent frames' header stamps, and the publishing of late answers (`TrackStep.late`) as hints."""

    def __init__(self) -> None:
        self._stamps: OrderedDict[float, tuple[Any, str]] = OrderedDict()  # stamp s -> (header stamp, encoder)

    def remember(self, stamp_sec: float, stamp: Any, domain: str) -> None:
        self._stamps[stamp_sec] = (stamp, domain)
        while len(self._stamps) > LATE_STAMPS:
            self._stamps.popitem(last=False)

    def frame(self, stamp_sec: float) -> tuple[Any, str]:
        """A late answer's frame: its exact header stamp and encoder while remembered, else the float's stamp."""
        return self._stamps.get(stamp_sec, (M.sec_to_stamp(stamp_sec), ""))

    def publish(self, node: Any, late: Iterable[Any]) -> int:
        """A hint for each late answer whose frame's loop-closure gate was open; no pose topic gets them (a pose is
        published with its frame or not at all). Returns how many went out (counted as `late_loop_closures`)."""
        sent = 0
        for a in late:
            if not a.loop_closure or not M.pose_is_finite(a.result.position, a.result.quat):
                continue
            stamp, domain = self.frame(a.stamp)
            node.pub_loop.publish(M.loop_closure(a.result, stamp, domain, node.frame_id, node.map, late=True))
            node.stats.add("late_loop_closures")
            sent += 1
        return sent
