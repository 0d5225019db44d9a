"""The closures ~/markers can still draw, kept up to date instead of re-read: the pose-graph node's markers at a
cost bounded by the nodes it holds (graph and ~/path), whatever the drive's length.

Why: ~/markers draws a closure from its keyframe to its node's position, read from the graph or, once the graph has
dropped the node, from the kept ~/path; a closure whose node left both cannot be drawn and is skipped. Re-reading
the newest `max_marker_closures` closures each publication meant walking (list copy, node lookups, NaN checks) every
closure of the drive up to that cap, most of them long undrawable: 1,000 closures at 100k messages, growing until the
cap (2,000 by default: 55 min of 1 Hz hints). Here each publication takes only the closures added since the last
(found from the newest back to the last one seen) and drops, oldest first, those whose node is older than anything
the graph or the path holds; that oldest node only grows, so a dropped closure never becomes drawable again.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import islice
from typing import Any


class DrawableClosures:
    """The newest `max_closures` closures minus those older than every node still held (module docstring).

    Closures arrive roughly in node order (a late hint can attach to a slightly older node), so dropping stops at
    the first drawable one from the oldest end; a late undrawable one behind it stays until it reaches that end
    and is skipped by the marker builder as before: the drawn set is unchanged, only the walk is shorter."""

    def __init__(self, max_closures: int) -> None:
        self.kept: deque[Any] = deque(maxlen=max(int(max_closures), 1))
        self._last: Any = None  # the newest closure taken so far (identity: Closure objects are not copied)

    def refresh(self, closures: Sequence[Any], oldest_held: int | None) -> list[Any]:
        """Take the closures added since the last call from `closures` (the graph's list, oldest first) and drop
        those whose node is older than `oldest_held` (None: nothing is held, nothing is dropped)."""
        new = []
        for c in islice(reversed(closures), self.kept.maxlen):
            if c is self._last:
                break
            new.append(c)
        if new:
            self._last = new[0]
            self.kept.extend(reversed(new))
        while oldest_held is not None and self.kept and self.kept[0].node < oldest_held:
            self.kept.popleft()
        return list(self.kept)


def oldest_held(graph: Any, path: Any) -> int | None:
    """The oldest node whose position ~/markers can still read: the older of the graph's first live node and the
    path's first kept pose; None when neither holds a node."""
    firsts = []
    if graph.newest_node is not None:
        firsts.append(graph.newest_node - len(graph) + 1)
    if path.poses:
        firsts.append(path.first_node)
    return min(firsts) if firsts else None
