"""Evaluation of tracker modes side by side: hand-worked metrics (coverage, precision, ECE, NEES), the report's
modes table, plots and per-frame records, disam-eval end to end with two modes, and the synthetic world's
motion drives (twice the speed, stops) plus disam-synth's one-line error for an --out under a file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from disam_ros.data.synthetic import WorldConfig, make_world
from disam_ros.data.synthetic import generate as synth
from disam_ros.data.synthetic.route import (
    STOP_EVERY,
    STOP_FRAMES,
    drive_distances,
    frame_period,
    motion_frames,
    split_motion,
)
from disam_ros.data.tum import read_tum
from disam_ros.eval import offline
from disam_ros.eval.metrics import ALL, QueryResult, in_map, nees, per_condition, summarize_mode
from disam_ros.eval.report import markdown_report, report_dict
from disam_ros.eval.scoring import TrackedFrame, mode_summaries, write_mode_artefacts

IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


def test_nees_by_hand():
    assert nees(np.array([1.0, 2.0, 0.0]), np.diag([1.0, 4.0, 1.0])) == pytest.approx(2.0)  # 1/1 + 4/4
    assert np.isnan(nees(np.array([np.nan, 0, 0]), np.eye(3)))


def test_summarize_mode_by_hand():
    # five frames: errors (m), rotation 0, confidence; the fourth got no answer
    t = np.array([1.0, 2.0, 9.0, np.nan, 4.0])
    r = np.zeros(5)
    r[3] = np.nan
    conf = np.array([0.95, 0.85, 0.9, np.nan, 0.3])
    v = np.array([1.0, 2.0, 30.0, np.nan, 5.0])
    s = summarize_mode("c", "sequence", t, r, conf, v, threshold=0.8, tolerance=(5.0, 10.0), calibrated=True)
    assert s.frames == 5 and s.answered == 4
    assert s.shares[-1] == pytest.approx(3 / 5)  # within 5 m: frames 0, 1, 4 of all five
    assert s.published == 3 and s.coverage == pytest.approx(3 / 5)  # conf >= 0.8: frames 0, 1, 2
    assert s.precision == pytest.approx(2 / 3)  # frame 2 (9 m) is wrong
    # ECE over the 4 answered, 10 bins: (0.85, ok), (0.9, wrong) share bin 8; 0.95 bin 9; 0.3 bin 2
    # bin 8: |0.5 - 0.875| x 2/4; bin 9: |1 - 0.95| x 1/4; bin 2: |1 - 0.3| x 1/4
    assert s.ece == pytest.approx(0.375 * 0.5 + 0.05 * 0.25 + 0.7 * 0.25)
    assert s.nees_mean == pytest.approx(11.0) and s.nees_median == pytest.approx(2.0)  # published: 1, 2, 30


def yaw_quat(deg):
    return np.array([0.0, 0.0, np.sin(np.radians(deg) / 2), np.cos(np.radians(deg) / 2)])


def test_in_map_by_hand():
    # map poses at x = 0 (yaw 0) and x = 10 (yaw 0); tolerance 5 m and 10 degrees, both inclusive
    mp, mq = np.array([[0.0, 0, 0], [10.0, 0, 0]]), np.stack([IDENTITY, IDENTITY])
    gp = np.array([[4.0, 0, 0], [5.0, 3.0, 0], [0.0, 0, 0], [10.0, 0, 0], [13.0, 4.0, 0], [-20.0, 0, 0]])
    gq = np.stack([IDENTITY, IDENTITY, yaw_quat(20.0), yaw_quat(9.0), IDENTITY, IDENTITY])
    # 4 m: in; (5, 3) is 5.83 m from both: out; right place, 20 deg: out; 9 deg: in; (13, 4): exactly 5 m: in; -20: out
    assert in_map(gp, gq, mp, mq, (5.0, 10.0), chunk=4).tolist() == [True, False, False, True, True, False]
    # R@1 over in-map frames: frames 0 and 4 in map, 0 right (1 m), 4 wrong (9 m); frame 1 off map, answered
    t, r = np.array([1.0, 6.0, 9.0]), np.zeros(3)
    s = summarize_mode("c", "sequence", t[[0, 1, 2]], r, np.ones(3), np.ones(3), 0.5, (5.0, 10.0), True,
                       in_map_mask=np.array([True, False, True]))
    assert s.in_map == 2 and s.in_map_share == pytest.approx(0.5) and s.shares[-1] == pytest.approx(1 / 3)
    assert summarize_mode("c", "m", t, r, np.ones(3), np.ones(3), 0.5, (5.0, 10.0), True).in_map is None


def test_mode_summaries_count_frames_past_the_map():
    # gt at x = 0 for every frame() below; a map pose at x = 3 covers them, one at x = 30 does not
    frames = [frame("sequence", "a", 1.0, 0.9), frame("sequence", "a", 8.0, 0.9)]
    near = mode_summaries(frames, {}, (5.0, 10.0), (np.array([[3.0, 0, 0]]), IDENTITY[None]))
    far = mode_summaries(frames, {}, (5.0, 10.0), (np.array([[30.0, 0, 0]]), IDENTITY[None]))
    assert (near[-1].in_map, near[-1].in_map_share) == (2, pytest.approx(0.5))
    assert far[-1].in_map == 0 and np.isnan(far[-1].in_map_share)


def frame(mode, cond, err, conf, nees_value=1.0, answered=True):
    gt = np.zeros(3)
    est = np.array([err, 0.0, 0.0]) if answered else None
    return TrackedFrame(mode, cond, f"{cond}{err}", gt, IDENTITY, est, IDENTITY if answered else None,
                        conf if answered else float("nan"), conf, True, nees_value if answered else float("nan"))


def test_modes_table_json_and_plots(tmp_path):
    frames = [frame("single", "a", 1.0, 0.9), frame("single", "a", 8.0, 0.7), frame("single", "b", 0.0, 0.2),
              frame("sequence", "a", 1.0, 0.99), frame("sequence", "a", 2.0, 0.97), frame("sequence", "b", 0, 0,
                                                                                          answered=False)]
    rows = mode_summaries(frames, {"single": 0.5, "sequence": 0.98}, (5.0, 10.0))
    assert [(r.condition, r.mode) for r in rows] == [("a", "single"), ("a", "sequence"), ("b", "single"),
                                                     ("b", "sequence"), (ALL, "single"), (ALL, "sequence")]
    every = {r.mode: r for r in rows if r.condition == ALL}
    assert every["single"].published == 2 and every["single"].precision == pytest.approx(0.5)
    assert every["sequence"].published == 1 and every["sequence"].coverage == pytest.approx(1 / 3)
    assert every["sequence"].shares[-1] == pytest.approx(2 / 3)
    summaries = per_condition([QueryResult("q", "a", np.zeros(3), IDENTITY)])
    text = markdown_report(summaries, modes=rows)
    assert "## Modes side by side" in text and "| a | sequence | 2 |" in text
    js = report_dict(summaries, {}, rows)
    assert js["modes"][-1]["mode"] == "sequence" and js["modes"][-1]["coverage"] == pytest.approx(1 / 3)
    paths = write_mode_artefacts(tmp_path, frames, rows, (5.0, 10.0))
    assert len((tmp_path / "modes.jsonl").read_text().splitlines()) == len(frames)
    for key in ("reliability", "precision_coverage"):
        assert paths[key].stat().st_size > 5000


def test_disam_eval_two_modes_end_to_end(tiny_eval_world, tmp_path, capsys):
    w = tiny_eval_world
    out = tmp_path / "report"
    rc = offline.main(["--map", str(w["map"]), "--dataset", str(w["world"]), "--out", str(out), "--quiet",
                       "--device", "cpu", "--modes", "single,sequence", "--examples", "0"])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "sequence" in printed and "coverage" in printed
    report = json.loads((out / "report.json").read_text())
    modes = [(r["condition"], r["mode"]) for r in report["modes"]]
    conds = list(report["conditions"])  # sorted, then "all"
    assert modes == [(c, m) for c in conds for m in ("single", "sequence")]
    tracked = [json.loads(line) for line in (out / "modes.jsonl").read_text().splitlines()]
    assert len(tracked) == 2 * 30  # 3 drives x 10 frames, two modes
    # the detailed tables are the first mode's: its R@1 at (5 m, 10 deg) is the report's coarsest share
    for row in report["modes"]:
        if row["mode"] == "single":
            assert row["within"][-1]["share"] == pytest.approx(report["conditions"][row["condition"]]["within"][-1]
                                                               ["share"])
        assert row["calibrated"] is False and row["threshold"] == 0.0  # no calibration: publish every answer
        assert row["coverage"] == pytest.approx(row["answered"] / row["frames"])
    for png in ("reliability.png", "precision_coverage.png"):
        assert (out / png).stat().st_size > 5000


def test_bad_mode_is_one_line(tiny_eval_world, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        offline.main(["--map", str(tiny_eval_world["map"]), "--dataset", str(tiny_eval_world["world"]), "--out",
                      str(tmp_path / "r"), "--modes", "single,best"])
    text = capsys.readouterr().err.strip()
    assert err.value.code == 2 and "\n" not in text and "unknown mode(s) best" in text


# ---------------------------------------------------------------------------------------------- motion drives
def test_drive_distances_by_hand():
    np.testing.assert_allclose(drive_distances(2.0, 4), [0, 2, 4, 6])
    np.testing.assert_allclose(drive_distances(2.0, 4, "2x"), [0, 4, 8, 12])
    np.testing.assert_allclose(drive_distances(2.0, 4, "dense"), [0, 0.25, 0.5, 0.75])  # 2 m / DENSE_RATE 8
    assert frame_period("dense", 0.4) == pytest.approx(0.05) and frame_period("2x", 0.4) == 0.4
    d = drive_distances(1.0, 2 * STOP_EVERY, "stops")
    moving = STOP_EVERY - STOP_FRAMES  # frames 0..16 move on by one step each, then 8 frames stand still
    np.testing.assert_allclose(d[:moving], np.arange(moving))
    np.testing.assert_allclose(d[moving:STOP_EVERY + 1], moving)  # still from frame 17 to frame 25 ...
    assert d[STOP_EVERY + 1] == moving + 1  # ... and on again
    assert motion_frames("2x", 100) == 50 and motion_frames("stops", 100) == 100
    known = {"overcast": 1, "sunny_repeat": 1}
    assert split_motion("overcast_2x", known) == ("overcast", "2x")
    assert split_motion("sunny_repeat_stops", known) == ("sunny_repeat", "stops")
    assert split_motion("sunny_repeat", known) == ("sunny_repeat", "steady")
    assert split_motion("fog_2x", known) == ("fog_2x", "steady")  # unknown base: not a motion drive
    with pytest.raises(ValueError):
        drive_distances(1.0, 3, "reverse")


def test_motion_drives_in_a_world(tmp_path):
    root = make_world(WorldConfig(seed=1, image_size=32, frames=30, blocks=3, workers=1,
                                  conditions=("sunny", "sunny_repeat", "sunny_repeat_2x", "sunny_repeat_stops",
                                              "sunny_repeat_dense")),
                      tmp_path / "w", progress=False)
    trajs = {c: read_tum(root / c / "poses.txt")
             for c in ("sunny_repeat", "sunny_repeat_2x", "sunny_repeat_stops", "sunny_repeat_dense")}
    assert len(trajs["sunny_repeat_2x"]) == 15 and len(list((root / "sunny_repeat_2x" / "images").iterdir())) == 15
    step = {c: np.linalg.norm(np.diff(t.positions, axis=0), axis=1) for c, t in trajs.items()}
    period = {c: float(np.median(np.diff(t.stamps))) for c, t in trajs.items()}
    speed = {c: float(np.median(step[c][step[c] > 0.1])) / period[c] for c in trajs}
    assert speed["sunny_repeat_2x"] / speed["sunny_repeat"] == pytest.approx(2.0, rel=0.3)
    # dense: the same speed, 8x the frames a second, so steps and periods an eighth
    assert speed["sunny_repeat_dense"] / speed["sunny_repeat"] == pytest.approx(1.0, rel=0.3)
    assert period["sunny_repeat"] / period["sunny_repeat_dense"] == pytest.approx(8.0, rel=0.3)  # drives' own periods
    assert np.median(step["sunny_repeat"]) / np.median(step["sunny_repeat_dense"]) == pytest.approx(8.0, rel=0.3)
    assert len(trajs["sunny_repeat_dense"]) == 30
    still = step["sunny_repeat_stops"] < 1e-6
    assert still.sum() == STOP_FRAMES  # one stop of 8 frames in 30
    yaml_text = (root / "world.yaml").read_text()
    assert "motion: 2x" in yaml_text and "looks_like: sunny_repeat" in yaml_text


def test_synth_out_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert synth.main(["--out", str(tmp_path / "afile" / "x"), "--frames", "1", "--size", "16", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is a file" in err and "Errno" not in err


def test_disam_eval_single_frames_answer_inside_their_simulated_fix(tiny_eval_world, tmp_path, capsys):
    """`--prior-sigma-m 1`: every single-mode answer is a map image inside its frame's 3-sigma gate around the
    fix (recomputed here from PriorNoise: the same fix for the same frame), unless no map image was inside."""
    from disam_ros.eval.prior_sim import PriorNoise
    from disam_ros.maps import LocalizationMap

    w, out = tiny_eval_world, tmp_path / "report"
    rc = offline.main(["--map", str(w["map"]), "--dataset", str(w["world"]), "--out", str(out), "--quiet",
                       "--device", "cpu", "--modes", "single", "--examples", "0", "--no-verify",
                       "--prior-sigma-m", "1"])
    assert rc == 0, capsys.readouterr().err
    positions = np.asarray(LocalizationMap.load(w["map"]).positions, float)
    noise, gated = PriorNoise(1.0), 0
    for line in (out / "modes.jsonl").read_text().splitlines():
        f = json.loads(line)
        fix = noise.prior_for(f["condition"], f["name"], np.asarray(f["gt_position"])).position
        if np.linalg.norm(positions - fix, axis=1).min() <= 3.0:
            gated += 1
            assert np.linalg.norm(np.asarray(f["place_position"]) - fix) <= 3.0 + 1e-9, f["name"]
    assert gated >= 10  # most frames had map images inside their gate
    assert "sigma 1 m" in json.dumps(json.loads((out / "report.json").read_text()))
