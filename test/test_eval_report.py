"""Report writers: per-condition Markdown/JSON numbers, visuallocalization.net lines, per-query results, PNG plots."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from test_eval_metrics import hand_results

from disam_ros.eval.metrics import ALL, QueryResult, per_condition
from disam_ros.eval.plots import ExamplePair, plot_error_cdf, plot_examples, plot_trajectory
from disam_ros.eval.report import (
    markdown_report,
    read_results,
    visloc_line,
    visloc_lines,
    world_to_camera,
    write_json,
    write_markdown,
    write_results,
    write_visloc,
)


@pytest.fixture()
def summaries():
    return per_condition(hand_results(), recall_ns=(1, 2), recall_radii=(0.5, 5.0), latency_ps=(50, 90))


def test_markdown_has_per_condition_rows_with_the_right_numbers(tmp_path, summaries):
    path = write_markdown(tmp_path / "report.md", summaries, meta={"model": "coarse2fine", "map": "town.npz"})
    text = path.read_text()
    assert "| condition | queries | answered | abstained % | 0.25 m, 2° % | 0.5 m, 5° % | 5 m, 10° % |" in text
    assert "| night | 4 | 3 | 25.0 | 25.0 | 50.0 | 75.0 | 0.400 | 4.00 |" in text
    assert "| day | 2 | 2 | 0.0 | 50.0 | 50.0 | 50.0 | 10.050 | 15.25 |" in text
    assert "| **all** | 6 | 5 | 16.7 | 33.3 | 50.0 | 66.7 | 0.400 | 4.00 |" in text
    # recall@N table: night R@1<=0.5 m 25 %, R@2<=0.5 m 50 %; latency p50 25 ms
    assert "| night | 25.0 | 50.0 | 50.0 | 75.0 |" in text
    assert "| night | 25.0 | 37.0 |" in text
    assert "- model: coarse2fine" in text
    assert not list(tmp_path.glob(".*tmp*")), "temp file left behind"


def test_json_report_numbers(tmp_path, summaries):
    d = json.loads(write_json(tmp_path / "report.json", summaries, meta={"run": 1}).read_text())
    night = d["conditions"]["night"]
    assert d["meta"] == {"run": 1} and list(d["conditions"]) == ["day", "night", ALL]
    assert (night["queries"], night["answered"], night["abstained"], night["abstain_rate"]) == (4, 3, 1, 0.25)
    assert [w["share"] for w in night["within"]] == [0.25, 0.5, 0.75]
    assert night["within"][0] == {"max_t_m": 0.25, "max_r_deg": 2.0, "share": 0.25}
    assert {(r["n"], r["radius_m"]): r["share"] for r in night["recall"]}[(2, 0.5)] == 0.5
    assert night["latency_s"]["p50"] == pytest.approx(0.025)
    assert night["median_t_m"] == pytest.approx(0.4)


def test_json_is_strict_when_a_condition_has_no_answer(tmp_path):
    r = QueryResult("q.png", "fog", np.zeros(3), np.array([0, 0, 0, 1.0]))
    d = json.loads(write_json(tmp_path / "r.json", per_condition([r])).read_text())
    assert d["conditions"]["fog"]["median_t_m"] is None and d["conditions"]["fog"]["abstain_rate"] == 1.0
    assert "| fog | 1 | 0 | 100.0 | 0.0 | 0.0 | 0.0 | n/a | n/a |" in markdown_report(per_condition([r]))


def test_visloc_line_is_world_to_camera():
    # camera at p = (1, 2, 3) rotated 90 deg about z: R_cw = Rz(-90), t = -R_cw p = -(2, -1, 3)
    s = math.sqrt(0.5)
    q_map_cam = np.array([0.0, 0.0, s, s])
    q, t = world_to_camera(np.array([1.0, 2.0, 3.0]), q_map_cam)
    assert np.allclose(q, [s, 0.0, 0.0, -s]) and np.allclose(t, [-2.0, 1.0, -3.0])
    line = visloc_line("img_00001.jpg", np.array([1.0, 2.0, 3.0]), q_map_cam)
    name, *nums = line.split(" ")
    assert name == "img_00001.jpg" and np.allclose([float(x) for x in nums], [s, 0, 0, -s, -2, 1, -3], atol=1e-9)
    with pytest.raises(ValueError, match="whitespace"):
        visloc_line("bad name.jpg", np.zeros(3), q_map_cam)


def test_visloc_file_leaves_out_abstentions(tmp_path):
    results = hand_results()
    lines = write_visloc(tmp_path / "submission.txt", results).read_text().splitlines()
    assert len(lines) == 5 and "n3.png" not in " ".join(lines) and lines == visloc_lines(results)
    # n0: camera at (10.2, 5, 0) yawed 1 deg -> t = -Rz(1)^T p = -(c*10.2 + s*5, -s*10.2 + c*5, 0)
    n0 = [float(x) for x in lines[0].split()[1:]]
    c, s = math.cos(math.radians(1.0)), math.sin(math.radians(1.0))
    assert np.allclose(n0[4:], [-(c * 10.2 + s * 5.0), -(-s * 10.2 + c * 5.0), 0.0], atol=1e-9)
    assert np.allclose(n0[:4], [math.cos(math.radians(0.5)), 0, 0, -math.sin(math.radians(0.5))], atol=1e-9)


def test_per_query_results_round_trip(tmp_path):
    results = hand_results()
    back = read_results(write_results(tmp_path / "results.jsonl", results))
    assert [r.name for r in back] == [r.name for r in results]
    assert back[3].est_position is None and np.allclose(back[1].candidate_positions, results[1].candidate_positions)
    assert per_condition(back)["night"].shares == per_condition(results)["night"].shares


def _png_ok(path, min_bytes=8000):
    img = cv2.imread(str(path))
    return path.is_file() and path.stat().st_size > min_bytes and img is not None and img.shape[0] > 200


def test_plots_are_written(tmp_path):
    results = hand_results()
    map_xyz = np.stack([np.linspace(0, 40, 50), 5 + np.sin(np.linspace(0, 3, 50)), np.zeros(50)], axis=1)
    assert _png_ok(plot_error_cdf(results, tmp_path / "cdf.png"))
    assert _png_ok(plot_trajectory(map_xyz, results, tmp_path / "traj.png", threshold=(0.5, 5.0)))
    yy, xx = np.mgrid[0:48, 0:64]
    img = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=2).astype(np.uint8)
    heat = np.exp(-((xx - 40) ** 2 + (yy - 20) ** 2) / 100.0)[::4, ::4]  # lower resolution than the image
    pairs = [ExamplePair(img, img[:, ::-1].copy(), "n0 (0.2 m)", True, heat, heat),
             ExamplePair(img, 255 - img, "d1 (20 m)", False)]
    assert _png_ok(plot_examples(pairs, tmp_path / "examples.png"))
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(ValueError, match="2-D"):
        plot_examples([ExamplePair(img, img, query_heatmap=np.zeros((2, 2, 2)))], tmp_path / "bad.png")


def test_curve_styles_distinct_for_many_conditions():
    from disam_ros.eval.plots import curve_style

    styles = [tuple(sorted(curve_style(k).items())) for k in range(25)]
    assert len(set(styles)) == 25  # no two conditions drawn alike, even past the ten colours
    assert curve_style(0)["linestyle"] == "-" and curve_style(10)["linestyle"] == "--"


def _tolerance_frames():
    """Five single-mode frames, all confident (1.0), ground truth at the origin (E at x = 10), by hand:
    A 1 m off and yawed 90°; B 3 m off; C unanswered; D 0.1 m off; E 4 m off (its truth is 10 m from the map)."""
    from disam_ros.eval.scoring import TrackedFrame

    s = math.sqrt(0.5)
    ident, yaw90 = np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.0, 0.0, s, s])
    rows = [("A", (0, 0, 0), (1, 0, 0), yaw90), ("B", (0, 0, 0), (3, 0, 0), ident), ("C", (0, 0, 0), None, None),
            ("D", (0, 0, 0), (0.1, 0, 0), ident), ("E", (10, 0, 0), (14, 0, 0), ident)]
    return [TrackedFrame("single", "c", name, np.array(gt, float), ident, None if est is None else np.array(est, float),
                         q, 1.0 if est is not None else float("nan"), 0.0, True, float("nan"))
            for name, gt, est, q in rows]


def test_modes_tables_show_r1_at_a_tolerance_off_the_benchmark_thresholds():
    """--tolerance 2,180 is none of the three benchmark thresholds: R@1 at it used to read "-" in the terminal (and
    was missing from the Markdown) while "R@1 in map" beside it had a value."""
    from disam_ros.eval.report import modes_table
    from disam_ros.eval.scoring import mode_rows_text, mode_summaries

    frames, tol = _tolerance_frames(), (2.0, 180.0)
    map_poses = (np.zeros((1, 3)), np.array([[0.0, 0.0, 0.0, 1.0]]))  # one map pose at the origin: E is off the map
    # within (2 m, 180°): A, D -> 2 of 5 = 40 %; in map: A, B, C, D (4), of which A, D right -> 50 %
    text = mode_rows_text(frames, {"single": 0.5}, tol, map_poses)
    row = next(line.split() for line in text if line.startswith("c "))
    assert row[:6] == ["c", "single", "5", "40.0%", "4", "50.0%"]
    # Markdown: the benchmark's (0.25, 2°) D 20 %, (0.5, 5°) D 20 %, (5, 10°) B, D, E 60 %, then the tolerance's 40 %
    md = "\n".join(modes_table(mode_summaries(frames, {"single": 0.5}, tol, map_poses), tol))
    assert "| R@1 5 m, 10° % | R@1 2 m, 180° % | in map | R@1 in map 2 m, 180° % |" in md
    assert "| c | single | 5 | 20.0 | 20.0 | 60.0 | 40.0 | 4 | 50.0 |" in md
