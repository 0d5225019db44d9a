"""Kidnap evaluation: the spliced stream (hand-worked stamps), recovery counting on hand-made frames, the
AT:SKIP parser's one-line error, and disam-eval --kidnap end to end on the tiny world."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from disam_ros.eval import offline
from disam_ros.eval.kidnap import kidnapped, parse_kidnap, recoveries
from disam_ros.eval.queries import Query
from disam_ros.eval.scoring import TrackedFrame

IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


def q(i: int, stamp: float) -> Query:
    return Query(f"{i}.png", "c", np.zeros((2, 2, 3), np.uint8), stamp, np.array([10.0 * i, 0, 0]), IDENTITY)


def test_kidnapped_stream_runs_on_without_a_gap():
    drive = [q(i, 100.0 + 0.5 * i) for i in range(10)]
    out = list(kidnapped(drive, 3, 4))  # keep 0, 1, 2, jump over 3..6, keep 7, 8, 9
    assert [x.name for x in out] == ["0.png", "1.png", "2.png", "7.png", "8.png", "9.png"]
    # frame 7 comes one interval (0.5 s) after frame 2 (101.0): 101.5, then 102.0, 102.5
    assert [x.stamp for x in out] == pytest.approx([100.0, 100.5, 101.0, 101.5, 102.0, 102.5])
    assert out[3].position[0] == 70.0  # ground truth is the real place: a 50 m jump
    assert [x.name for x in kidnapped(drive[:7], 3, 4)] == [x.name for x in drive[:7]]  # too short: unchanged


def tf(mode: str, k: int, right: bool, conf: float) -> TrackedFrame:
    gt = np.array([10.0 * k, 0, 0])
    est = gt + np.array([1.0 if right else 40.0, 0, 0])
    return TrackedFrame(mode, "c", f"{k}", gt, IDENTITY, est, IDENTITY, conf, conf, True, 1.0)


def test_recoveries_by_hand():
    # jump after 2 frames; after it: wrong (published), wrong (not), right, wrong (published), then 5 right
    pattern = [(True, 0.9), (True, 0.9), (False, 0.95), (False, 0.2), (True, 0.9), (False, 0.97)] + \
        [(True, 0.9)] * 5
    frames = [tf("sequence", k, r, c) for k, (r, c) in enumerate(pattern)]
    (rec,) = recoveries(frames, 2, {"sequence": 0.9}, (5.0, 10.0), run=5)
    assert rec.frames_to_relocalise == 4  # frames 6..10 are the first 5 right in a row: 4 frames after the jump
    assert rec.published == 3 and rec.wrong_published == 2  # frames 2 and 5 published wrong, 4 published right
    assert rec.jump_m == pytest.approx(10.0)
    never = recoveries(frames[:8], 2, {"sequence": 0.9}, (5.0, 10.0), run=5)[0]
    assert never.frames_to_relocalise is None and never.wrong_published == 2


def test_parse_kidnap():
    assert parse_kidnap("40:25") == (40, 25)
    for bad in ("40", "0:5", "a:b", "4:-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="AT:SKIP"):
            parse_kidnap(bad)


def test_disam_eval_kidnap_end_to_end(tiny_eval_world, tmp_path, capsys):
    w = tiny_eval_world
    out = tmp_path / "report"
    rc = offline.main(["--map", str(w["map"]), "--dataset", str(w["world"]), "--out", str(out), "--quiet",
                       "--device", "cpu", "--modes", "sequence", "--examples", "0", "--kidnap", "3:2"])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((out / "kidnap.json").read_text())
    assert (doc["at"], doc["skip"]) == (3, 2) and doc["drives"]
    assert all(d["mode"] == "sequence" and d["jump_m"] > 0 for d in doc["drives"])
    assert "kidnap recovery:" in capsys.readouterr().out
