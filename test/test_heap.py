"""freeze_startup_heap: what exists at the call leaves the collector's generations; what comes later does not.

Run in a fresh interpreter: the permanent generation is process-wide, and in the suite's worker a node thread left
starting by an earlier in-process node test froze its own start-up heap in the middle of this check (the freeze
count moved by 2 between the call and the assertion, fresh-clone CI of 040025a)."""
from __future__ import annotations

import subprocess
import sys

CHECK = '''
import gc
from disam_ros.heap import freeze_startup_heap

def tracked(obj):
    return any(o is obj for o in gc.get_objects())

before = [["made before the freeze"]]  # a list of lists: always tracked (atomic dicts are not)
assert tracked(before)
frozen = freeze_startup_heap()
after = [["made after the freeze"]]
assert frozen == gc.get_freeze_count() and frozen > 0
assert not tracked(before)  # in the permanent generation: no collection walks it again
assert tracked(after)
assert freeze_startup_heap() >= frozen + 1  # a second call adds what was made since (at least `after`)
assert not tracked(after)
gc.unfreeze()
assert tracked(before) and gc.get_freeze_count() == 0
print("ok")
'''


def test_freeze_exempts_existing_objects_only():
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
