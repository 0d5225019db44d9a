"""Every `disam-bench <suite>` answers `--help` and a mistyped option without importing torch.

Why: importing torch costs ~2 s here; a typo or `--help` should answer as fast as the other command lines do
(test_cli_start.py), so torch and the modules that import it come after the arguments are parsed. One fresh
interpreter per suite (a suite that imported torch would hide another that does too); in it `--help` first, then
the typo, torch looked for after each.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from disam_ros.bench import SUITES

CODE = ("import sys\n"
        "from disam_ros.bench import main\n"
        "for flag in ('--help', '--nosuch-option'):\n"
        "    try:\n"
        "        rc = main([*sys.argv[1:], flag])\n"
        "    except SystemExit as e:\n"
        "        rc = e.code\n"
        "    print('rc', flag, rc, 'torch' in sys.modules)")


@pytest.mark.parametrize("suite", [*sorted(SUITES), "retrieval accuracy", "retrieval scale"])
def test_suite_answers_without_torch(suite):
    out = subprocess.run([sys.executable, "-c", CODE, *suite.split()], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    lines = [line.split() for line in out.stdout.splitlines() if line.startswith("rc ")]
    assert lines == [["rc", "--help", "0", "False"], ["rc", "--nosuch-option", "2", "False"]], (out.stdout[-500:],
                                                                                             out.stderr)
    assert len(out.stderr.strip().splitlines()) == 1 and "--nosuch-option" in out.stderr, out.stderr


def test_model_help_lists_every_preset_without_torch():
    """The presets live in the torch-free `disam_ros.model.config`; the model package loads its other names on first
    use, so importing the presets must not bring torch (nor the networks) in."""
    code = ("import sys\n"
            "from disam_ros.model.config import PRESETS\n"
            "from disam_ros.bench import main\n"
            "try:\n"
            "    main(['model', '--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "print('presets', ','.join(PRESETS), 'torch' in sys.modules, 'disam_ros.model.networks' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    last = out.stdout.splitlines()[-1].split()
    assert last[0] == "presets" and last[2:] == ["False", "False"], out.stdout[-500:]
    names = last[1].split(",")
    assert len(names) >= 3 and all(name in " ".join(out.stdout.split()) for name in names), out.stdout[-800:]


def test_the_model_package_loads_its_names_on_first_use():
    import disam_ros.model as model
    from disam_ros.model import checkpoint, config, inference, networks

    for name, home in (("PRESETS", config), ("preset", config), ("DisamNet", networks), ("Encoder", inference),
                       ("save_checkpoint", checkpoint), ("seeded_net", networks)):
        assert getattr(model, name) is getattr(home, name), name
    assert set(model.__all__) <= set(dir(model))
    with pytest.raises(AttributeError, match="no attribute 'Encodr'"):
        model.Encodr  # noqa: B018
