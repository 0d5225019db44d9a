"""freeze_startup_heap: what exists at the call leaves the collector's generations; what comes later does not."""
from __future__ import annotations

import gc

from disam_ros.heap import freeze_startup_heap


def _tracked(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())


def test_freeze_exempts_existing_objects_only():
    before = [["made before the freeze"]]  # a list of lists: always tracked (atomic dicts are not)
    assert _tracked(before)
    try:
        frozen = freeze_startup_heap()
        after = [["made after the freeze"]]
        assert frozen == gc.get_freeze_count() and frozen > 0
        assert not _tracked(before)  # in the permanent generation: no collection walks it again
        assert _tracked(after)
        assert freeze_startup_heap() >= frozen + 1  # a second call adds what was made since (at least `after`)
        assert not _tracked(after)
    finally:
        gc.unfreeze()
    assert _tracked(before)
