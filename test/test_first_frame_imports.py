"""The verifier's libraries are imported with it, not at a node's first verification. Why: scipy.spatial,
imported inside the first call that needed its k-d tree, cost that call 0.35 s on one core: the first night
keyframe of a node took 0.58 s instead of 0.26 s, long enough at 30 Hz for the frame loop to leave the chain it
started behind (docs/notes/pose.md, "In real time on a slower core")."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["disam_ros.verify.verifier", "disam_ros.verify.support", "disam_ros.pose.guided"])
def test_the_k_d_tree_comes_with_the_module(module):
    code = f"import sys, {module}; sys.exit(0 if 'scipy.spatial' in sys.modules else 3)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
