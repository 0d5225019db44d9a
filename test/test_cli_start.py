"""The tools people run to look at a map or check their arguments start without torch (or matplotlib).

Why: importing torch costs ~1.5 s on these machines (matplotlib ~0.3 s); `disam-map-info` never needs it, and
`--help` or a one-line argument error of `disam-build-map`, `disam-eval`, `disam-calibrate`, `disam-train`,
`disam-train-condition`, `disam-train-keypoints` or `disam-match-eval` should not wait for it. torch is imported
where vectors are made or searched (maps/descriptors.py, retrieval/), where a run starts (training/cli.py) or a
step runs (the condition head's and keypoint net's training, match_eval's dense methods), matplotlib with the first
figure (eval/plots.py), so a new module-level import of either on these paths fails here.
"""
from __future__ import annotations

import subprocess
import sys

LIGHT = ("disam_ros.maps.map_info", "disam_ros.maps.build_map", "disam_ros.eval.offline", "disam_ros.eval.calibrate",
         "disam_ros.eval.sequence_eval", "disam_ros.relocalizer", "disam_ros.tracking.tracker",
         "disam_ros.retrieval", "disam_ros.training.cli", "disam_ros.training.condition",
         "disam_ros.training.keypoint_train", "disam_ros.pose.match_eval")


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_tool_modules_import_without_torch():
    code = ("import importlib, sys\n"
            "for m in sys.argv[1:]:\n"
            "    importlib.import_module(m)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'matplotlib'}))")
    out = run_python(code, *LIGHT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"torch or matplotlib imported at start-up by one of {LIGHT}"


def test_the_check_sees_torch_when_a_search_runs(tmp_path):
    """The same probe reports torch once vectors are made: the test above is not blind."""
    code = ("import sys, numpy as np\n"
            "from disam_ros.maps.descriptors import coarse_vectors\n"
            "v = coarse_vectors(np.ones((2, 3, 4), np.float32))\n"
            "print('torch' in sys.modules, tuple(v.shape))")
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "(1,", "24)"]


def test_map_info_refuses_a_missing_map_in_one_line_without_torch(tmp_path):
    code = ("import sys\n"
            "from disam_ros.maps.map_info import main\n"
            "try:\n"
            "    rc = main([sys.argv[1]])\n"
            "except SystemExit as e:\n"
            "    rc = e.code\n"
            "print('rc', rc, 'torch' in sys.modules)")
    out = run_python(code, str(tmp_path / "no_map"))
    assert out.stdout.split() == ["rc", "2", "False"], (out.stdout, out.stderr)
    assert len(out.stderr.strip().splitlines()) == 1 and "no_map" in out.stderr
