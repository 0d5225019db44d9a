"""Every `disam-bench <suite>` answers `--help` and a mistyped option without importing torch.

Why: importing torch costs ~2 s here; a typo or `--help` should answer as fast as the other command lines do
(test_cli_start.py), so torch and the modules that import it come after the arguments are parsed. One fresh
interpreter per suite and flag: a suite that imported torch would hide another that does too.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from disam_ros.bench import SUITES

CODE = ("import sys\n"
        "from disam_ros.bench import main\n"
        "try:\n"
        "    rc = main(sys.argv[1:])\n"
        "except SystemExit as e:\n"
        "    rc = e.code\n"
        "print('rc', rc, 'torch' in sys.modules)")


@pytest.mark.parametrize("flag, code", [("--nosuch-option", 2), ("--help", 0)], ids=["typo", "help"])
@pytest.mark.parametrize("suite", [*sorted(SUITES), "retrieval accuracy", "retrieval scale"])
def test_suite_answers_without_torch(suite, flag, code):
    out = subprocess.run([sys.executable, "-c", CODE, *suite.split(), flag], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].split() == ["rc", str(code), "False"], (out.stdout[-500:], out.stderr)
    if code == 2:
        assert len(out.stderr.strip().splitlines()) == 1 and flag in out.stderr, out.stderr
