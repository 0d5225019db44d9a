"""`disam-bench node --rate`: the fixed-rate publisher's schedule, the per-drive summary (latency, drops, accuracy
over sent frames), `--param` parsing and bad options, worked by hand; and one small real run (320x240, 4 frames,
one drive at 10 Hz, node pinned to one CPU) checked for every structural fact of its table and JSON.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest

from disam_ros.bench import node_rate as R
from disam_ros.geometry import yaw_pitch_roll_to_quat

# ------------------------------------------------------------------------------------------------ pure parts


@pytest.mark.parametrize("text, expected", [
    ("mode:=single", ("mode", "single")), ("threads:=2", ("threads", 2)), ("verify:=false", ("verify", False)),
    ("max_rate_hz:=7.5", ("max_rate_hz", 7.5)), ("odom_topic:=''", ("odom_topic", "")),
    ("frame_id:='007'", ("frame_id", "007")), (" top_n :=4", ("top_n", 4)),
])
def test_param_values_are_typed_as_yaml_scalars(text, expected):
    name, value = R.parse_param(text)
    assert (name, value) == expected and type(value) is type(expected[1])


@pytest.mark.parametrize("text, words", [("mode", "NAME:=VALUE"), (":=3", "NAME:=VALUE"), ("mode:=", "no value"),
                                         ("a:=[1, 2]", "got list"), ("a:={b: 1}", "got dict"),
                                         ("a:='x", "YAML scalar")])
def test_bad_params_are_refused_in_one_line(text, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[")):
        R.parse_param(text)


def test_schedule_is_start_plus_k_over_rate():
    assert np.allclose(R.schedule(4, 10.0, 5.0), [5.0, 5.1, 5.2, 5.3])
    assert R.schedule(0, 30.0, 1.0) == []


def test_publisher_keeps_the_fixed_schedule_and_sends_late_frames_at_once():
    """Fake clock; publishing frame 1 takes 0.25 s, so frames 2 and 3 (due 0.2, 0.3) go late, at once, and the
    schedule does not shift: sent at 0, 0.1, 0.35, 0.36."""
    now = [0.0]
    cost = [0.01, 0.25, 0.01, 0.01]
    order = []

    def sleep(s: float) -> None:
        assert s > 0
        now[0] += s

    def publish(k: int) -> None:
        order.append(k)
        now[0] += cost[k]

    sent = R.publish_at_rate(4, 10.0, publish, clock=lambda: now[0], sleep=sleep)
    assert order == [0, 1, 2, 3]
    assert np.allclose(sent, [0.0, 0.1, 0.35, 0.36])


def _frame(t_pub, t_recv=None, dx=0.0, yaw_deg=0.0, verified=False, refine_ms=math.nan):
    gt_p, gt_q = np.array([10.0, 5.0, 1.5]), yaw_pitch_roll_to_quat(0.3)
    rec = R.FrameRecord(t_pub, gt_p, gt_q)
    if t_recv is not None:
        rec.t_recv, rec.position = t_recv, gt_p + [dx, 0.0, 0.0]
        rec.quat = yaw_pitch_roll_to_quat(0.3 + math.radians(yaw_deg))
        rec.verified, rec.refine_ms = verified, refine_ms
    return rec


def hand_drive():
    """5 frames published 0.1 s apart: exact (50 ms, verified, 10 ms), 1 m off (200 ms, 30 ms), never answered,
    3 deg off (100 ms, verified, no time), 10 m off (150 ms)."""
    return [_frame(0.0, 0.05, verified=True, refine_ms=10.0), _frame(0.1, 0.3, dx=1.0, refine_ms=30.0), _frame(0.2),
            _frame(0.3, 0.4, yaw_deg=3.0, verified=True), _frame(0.4, 0.55, dx=10.0)]


def test_summary_of_a_hand_worked_drive():
    row = R.summarize_frames("night", hand_drive(), {"localized": 4})
    assert (row["drive"], row["sent"], row["answered"], row["dropped"]) == ("night", 5, 4, 1)
    assert row["publish_hz"] == pytest.approx(10.0)
    # latencies 50, 200, 100, 150 ms: median 125, p95 = 150 + 0.85 * 50 (numpy's linear interpolation), max 200
    assert row["latency_median_ms"] == pytest.approx(125.0)
    assert row["latency_p95_ms"] == pytest.approx(192.5)
    assert row["latency_max_ms"] == pytest.approx(200.0)
    # shares over the 5 SENT frames: (0.25 m, 2 deg) only the exact one; (5 m, 10 deg) exact, 1 m and 3 deg
    assert row["within_0.25m_2deg"] == pytest.approx(1 / 5)
    assert row["within_5m_10deg"] == pytest.approx(3 / 5)
    assert row["verified_share"] == pytest.approx(2 / 5)
    assert row["verify_ms_median"] == pytest.approx(20.0)
    assert row["node"] == {"localized": 4}


def test_keyframes_solved_and_verified_per_drive():
    """With verify_keyframes the node's keyframe counters (differences over the drive) become columns, and its
    keyframe times (wall clock, and on a CPU); an inline node solves none, and its row leaves the counters out."""
    row = R.summarize_frames("rain", hand_drive(), {"localized": 4, "keyframes_solved": 4, "keyframes_verified": 1,
                                                    "keyframe_ms_median": 300.0, "keyframe_run_ms_median": 120.0,
                                                    "keyframe_verify_run_ms_median": 80.0})
    assert (row["keyframes_solved"], row["keyframes_verified"]) == (4, 1)
    assert (row["keyframe_ms_median"], row["keyframe_run_ms_median"]) == (300.0, 120.0)  # wall, and on the CPU
    assert row["keyframe_verify_run_ms_median"] == 80.0  # of it the verification's, without the catch-up
    inline = R.summarize_frames("rain", hand_drive(), {"localized": 4, "keyframes_solved": 0})
    assert "keyframes_solved" not in inline and "keyframes_verified" not in inline
    head, _, line, other = R.table([row, inline]).splitlines()

    def cell(text: str, column: str) -> str:  # cells are right-aligned under their headers
        end = head.index(column) + len(column)
        return text[:end].split()[-1]

    assert (cell(line, "keyframes"), cell(line, "kf verified")) == ("4", "1")
    times = (cell(line, "keyframe ms"), cell(line, "kf run ms"), cell(line, "kf verify ms"))
    assert times == ("300.0", "120.0", "80.0")
    assert (cell(other, "keyframes"), cell(other, "kf verified")) == ("-", "-")


def test_verified_answers_off_and_their_nees():
    """Verified answers: exact (position sigma 0.1 m: NEES 0), 1 m off (sigma 0.2: NEES 1 / 0.04 = 25, outside the
    90 % ellipsoid at 6.251), 3 deg off (no covariance came: off, no NEES), 0.2 m off (sigma 0.1: NEES 4, inside and
    within 0.25 m); an unverified answer 1 m off counts for neither. 2 verified off; NEES median 4, 2 of 3 inside."""
    drive = [_frame(0.0, 0.05, verified=True), _frame(0.1, 0.15, dx=1.0, verified=True),
             _frame(0.2, 0.25, yaw_deg=3.0, verified=True), _frame(0.3, 0.35, dx=0.2, verified=True),
             _frame(0.4, 0.45, dx=1.0)]
    for f, sigma in zip(drive, (0.1, 0.2, None, 0.1, 0.1), strict=True):
        f.covariance = None if sigma is None else np.eye(3) * sigma ** 2
    row = R.summarize_frames("fog", drive)
    assert row["verified_wrong"] == 2
    assert row["nees_median"] == pytest.approx(4.0) and row["nees_inside_90"] == pytest.approx(2 / 3)
    head, _, line = R.table([row]).splitlines()
    assert line[:head.index("in 90 %") + len("in 90 %")].split()[-4:] == ["2", "4.0", "67", "%"]
    none = R.summarize_frames("fog", [_frame(0.0, 0.05, dx=1.0)])
    assert none["verified_wrong"] == 0 and none["nees_median"] is None and none["nees_inside_90"] is None


def test_summary_of_a_drive_nothing_answered():
    row = R.summarize_frames("fog", [_frame(0.0), _frame(0.1)])
    assert (row["sent"], row["answered"], row["dropped"]) == (2, 0, 2)
    assert row["latency_median_ms"] is None and row["verify_ms_median"] is None
    assert row["within_0.25m_2deg"] == 0.0 and row["verified_share"] == 0.0 and "node" not in row


def test_all_row_pools_the_frames_and_sums_the_counters():
    night = hand_drive()
    fog = [_frame(10.0, 10.02), _frame(10.05)]  # 20 Hz, one answered (20 ms, exact)
    n1, n2 = dict.fromkeys(R.COUNTERS, 1), dict.fromkeys(R.COUNTERS, 2)
    row = R.summarize_all([("night", night, n1), ("fog", fog, n2)])
    assert (row["drive"], row["sent"], row["answered"], row["dropped"]) == ("all", 7, 5, 2)
    assert row["publish_hz"] == pytest.approx(15.0)  # the drives' mean, not across the gap between drives
    assert row["latency_max_ms"] == pytest.approx(200.0) and row["latency_median_ms"] == pytest.approx(100.0)
    assert row["within_0.25m_2deg"] == pytest.approx(2 / 7)
    assert row["node"] == dict.fromkeys(R.COUNTERS, 3)


def test_after_the_first_verified_frame():
    """1 m off, never answered, exact and verified (published at 0.2 s), exact, 0.5 m off, listed out of order:
    the first verified frame came 0.2 s into the drive and 2 of the 3 frames from it on are within (0.25 m, 2 deg),
    where the whole drive has 2 of 5. A drive that never verified has neither figure."""
    drive = [_frame(0.3, 0.35), _frame(0.0, 0.1, dx=1.0), _frame(0.1), _frame(0.2, 0.3, verified=True),
             _frame(0.4, 0.5, dx=0.5)]
    assert [f.t_pub for f in R.from_first_verified(drive)] == [0.2, 0.3, 0.4]
    row = R.summarize_frames("dusk", drive)
    assert row["first_verified_s"] == pytest.approx(0.2)
    assert row["within_0.25m_2deg_after_first"] == pytest.approx(2 / 3)
    assert row["within_0.25m_2deg"] == pytest.approx(2 / 5)
    never = R.summarize_frames("fog", [_frame(0.0, 0.1), _frame(0.1, 0.2)])
    assert never["first_verified_s"] is None and never["within_0.25m_2deg_after_first"] is None
    # all: each drive from its own first verified frame (3 + 2 frames, 2 + 1 within); the drives' median start
    fog = [_frame(10.0, 10.05, verified=True), _frame(10.05, 10.1, dx=1.0)]
    every = R.summarize_all([("dusk", drive, None), ("fog", fog, None), ("snow", [_frame(20.0, 20.1)], None)])
    assert every["within_0.25m_2deg_after_first"] == pytest.approx(3 / 5)
    assert every["first_verified_s"] == pytest.approx(0.1)
    text = R.table([row, never, every]).splitlines()
    assert text[2].split()[-6:] == ["0.2", "67", "%", "0", "20", "%"]  # ... late hints 0, hinted 1 of 5
    assert text[3].split()[-5:] == ["-", "-", "0", "0", "%"]


def test_late_hints_count_for_slam_not_for_the_published_pose():
    """Verified in time and exact; answered 1 m off, then a late hint exact; never answered, a late hint 0.5 m off;
    answered exact but unverified. SLAM got a verified closure within (0.25 m, 2 deg) for frames 1 and 2 (2 of 4),
    two late hints came, and the published poses' share is frames 1 and 4 (a late hint is no published pose)."""
    drive = [_frame(0.0, 0.05, verified=True), _frame(0.1, 0.15, dx=1.0), _frame(0.2), _frame(0.3, 0.35)]
    drive[1].late_position, drive[1].late_quat = drive[1].gt_position.copy(), drive[1].gt_quat.copy()
    drive[2].late_position, drive[2].late_quat = drive[2].gt_position + [0.5, 0.0, 0.0], drive[2].gt_quat.copy()
    row = R.summarize_frames("rain", drive)
    assert row["late_hints"] == 2 and row["hinted_0.25m_2deg"] == pytest.approx(2 / 4)
    assert row["within_0.25m_2deg"] == pytest.approx(2 / 4) and row["verified_share"] == pytest.approx(1 / 4)


def test_counters_from_diagnostics_and_their_difference():
    before = R.counters({"received": "5", "localized": "3", "rss_mb": "300"})
    after = R.counters({"received": "9", "localized": "6", "dropped_by_node": "1"})
    assert before["received"] == 5 and before["dropped_by_node"] == 0 and "rss_mb" not in before
    d = R.delta(before, after)
    assert (d["received"], d["localized"], d["dropped_by_node"], d["errors"]) == (4, 3, 1, 0)


def test_cpu_split_between_node_and_publisher():
    assert R.split_cpus({3, 1, 0, 2}, 1) == ([0], [1, 2, 3])
    assert R.split_cpus([0, 1], 2) == ([0, 1], [0, 1])  # nothing left: the publisher is not pinned away


def test_table_has_a_row_per_drive_and_percentages():
    rows = [R.summarize_frames("night", hand_drive()), R.summarize_all([("night", hand_drive(), None)])]
    text = R.table(rows).splitlines()
    assert len(text) == 4 and text[2].split()[0] == "night" and text[3].split()[0] == "all"
    assert "20 %" in text[2] and "125.0" in text[2]


def test_runs_combine_into_medians_and_the_share_range():
    """Three runs of two drives by hand: every numeric field's median, None where no run has a value, the node
    counters' medians, the (0.25 m, 2 deg) share's [min, max], the first run's drive order; the table gains the
    range beside the median."""
    def row(drive, share, p95, node=None, verify=None):
        out = {"drive": drive, "sent": 48, "within_0.25m_2deg": share, "latency_p95_ms": p95,
               "verify_ms_median": verify}
        return {**out, "node": node} if node is not None else out
    runs = [[row("fog", 0.5, 70.0, {"received": 48, "localized": 40}), row("all", 0.2, 80.0)],
            [row("fog", 0.25, 60.0, {"received": 48, "localized": 46}, 5.0), row("all", 0.1, 90.0)],
            [row("all", 0.3, 85.0), row("fog", 0.75, 65.0, {"received": 48, "localized": 44})]]
    fog, all_ = R.combine_runs(runs)
    assert (fog["drive"], all_["drive"], fog["runs"], all_["runs"]) == ("fog", "all", 3, 3)
    assert fog["within_0.25m_2deg"] == 0.5 and fog["within_0.25m_2deg_range"] == [0.25, 0.75]
    assert fog["latency_p95_ms"] == 65.0 and fog["sent"] == 48 and fog["verify_ms_median"] == 5.0
    assert fog["node"] == {"received": 48, "localized": 44}
    assert all_["within_0.25m_2deg"] == 0.2 and all_["within_0.25m_2deg_range"] == [0.1, 0.3]
    assert all_["verify_ms_median"] is None and "node" not in all_
    text = R.table([fog, all_]).splitlines()
    assert "range" in text[0] and "25-75 %" in text[2] and "10-30 %" in text[3]


def test_keyframe_times_pool_over_runs():
    """The keyframes' verification median over three runs is the median of all their keyframes (here 40 ms: five
    of nine at or below it), not the median of the runs' medians (125 ms); a run without the list still counts
    in the other fields."""
    def row(each, median):
        return {"drive": "night", "keyframe_verify_run_ms": each, "keyframe_verify_run_ms_median": median}
    runs = [[row([10.0, 20.0, 30.0, 40.0], 25.0)], [row([100.0, 200.0], 150.0)], [row([100.0, 35.0, 300.0], 100.0)],
            [{"drive": "night", "keyframe_verify_run_ms_median": 999.0}]]
    (night,) = R.combine_runs(runs)
    assert night["keyframe_verify_run_ms_median"] == 40.0 and len(night["keyframe_verify_run_ms"]) == 9
    (one,) = R.combine_runs(runs[3:])
    assert one["keyframe_verify_run_ms_median"] == 999.0  # nodes that list no times: the runs' medians as before


def test_plot_panels_from_hand_made_rows(tmp_path):
    """Shares in % of the SENT frames, latency as given, keyframe quartiles over the pooled times (numpy's linear
    percentiles: 25 % of [10, 20, 30, 40] is 17.5, 75 % is 32.5), NaN for a drive without keyframes; `all` left out."""
    from disam_ros.bench.node_rate_plot import plot_rate, rate_panels

    rows = [{"drive": "night", "sent": 40, "answered": 30, "within_0.25m_2deg": 0.25, "hinted_0.25m_2deg": 0.5,
             "latency_median_ms": 40.0, "latency_p95_ms": 90.0, "keyframe_verify_run_ms": [40.0, 10.0, 30.0, 20.0],
             "keyframe_verify_run_ms_median": 25.0},
            {"drive": "fog", "sent": 8, "answered": 2, "within_0.25m_2deg": 0.0, "hinted_0.25m_2deg": None,
             "latency_median_ms": None, "latency_p95_ms": None},
            {"drive": "all", "sent": 48, "answered": 32}]
    p = rate_panels(rows)
    assert p.drives == ["night", "fog"]
    assert p.shares["answered"] == [75.0, 25.0] and p.shares["within_0.25m_2deg"] == [25.0, 0.0]
    assert p.shares["hinted_0.25m_2deg"][0] == 50.0 and math.isnan(p.shares["hinted_0.25m_2deg"][1])
    assert p.latency_median[0] == 40.0 and p.latency_p95[0] == 90.0 and math.isnan(p.latency_p95[1])
    assert (p.keyframe_median[0], p.keyframe_q1[0], p.keyframe_q3[0]) == (25.0, 17.5, 32.5)
    assert math.isnan(p.keyframe_median[1]) and math.isnan(p.keyframe_q1[1])
    png = plot_rate(rows, 30.0, tmp_path / "sub" / "rate.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(png.parent.glob("*.tmp*"))


def _saved_run(path, rows, rate=30.0, **params):
    doc = {"suite": "node", "mode": "rate", "rate_hz": rate, "node_parameters": {"threads": 1, **params},
           "results": rows}
    path.write_text(json.dumps(doc))
    return path


def test_another_run_is_aligned_by_drive_and_named_by_what_differs(tmp_path):
    """The other run's panels follow this run's drives (NaN for one it lacks, its extra drive left out); the labels
    are the node parameters whose values differ, `defaults` for a run that set none of them, else the rate."""
    from disam_ros.bench.node_rate_plot import aligned, plot_rate, rate_panels, run_labels

    mine = [{"drive": "night", "sent": 10, "answered": 10, "latency_median_ms": 30.0},
            {"drive": "fog", "sent": 10, "answered": 5, "latency_median_ms": 50.0}]
    other = [{"drive": "dusk", "sent": 4, "answered": 1, "latency_median_ms": 900.0},
             {"drive": "night", "sent": 10, "answered": 2, "latency_median_ms": 700.0}]
    q = aligned(rate_panels(other), rate_panels(mine).drives)
    assert q.drives == ["night", "fog"] and q.shares["answered"][0] == 20.0 and math.isnan(q.shares["answered"][1])
    assert q.latency_median[0] == 700.0 and math.isnan(q.latency_median[1]) and math.isnan(q.keyframe_q3[0])
    kf = {"node_parameters": {"threads": 1, "verify_keyframes": True}, "rate_hz": 30.0}
    assert run_labels(kf, {"node_parameters": {"threads": 1}, "rate_hz": 30.0}) == ("verify_keyframes: true",
                                                                                     "defaults")
    assert run_labels(kf, {**kf, "rate_hz": 15.0}) == ("30 Hz", "15 Hz") and run_labels(kf, kf) == ("", "")
    png = plot_rate(mine, 30.0, tmp_path / "both.png", against=other, labels=("a", "b"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_saved_run_is_redrawn_without_measuring(tmp_path, capsys):
    from disam_ros.bench import main

    rows = [{"drive": "night", "sent": 10, "answered": 9, "keyframe_verify_run_ms": [80.0, 120.0]}]
    a = _saved_run(tmp_path / "a.json", rows, verify_keyframes=True)
    b = _saved_run(tmp_path / "b.json", rows)
    assert main(["node", "--from", str(a), "--against", str(b), "--plot", str(tmp_path / "ab.png")]) == 0
    assert (tmp_path / "ab.png").read_bytes()[:4] == b"\x89PNG" and not list(tmp_path.glob("*.tmp*"))
    assert f"plot: {tmp_path / 'ab.png'}" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["--from", "{other}", "--plot", "{png}"], "not a camera-rate run"),
    (["--from", "{missing}", "--plot", "{png}"], "cannot read it as JSON"),
    (["--from", "{run}"], "give --plot OUT.png"), (["--rate", "30", "--against", "{run}"], "give --plot OUT.png"),
    (["--from", "{run}", "--plot", "{png}", "--json", "{out}"], "not --json"),
    (["--from", "{run}", "--plot", "{png}", "--rate", "15"], "measured at 30.0 Hz"),
    (["--rate", "30", "--plot", "{png}", "--against", "{other}"], "not a camera-rate run"),
])
def test_bad_saved_runs_are_refused_in_one_line(tmp_path, argv, words, capsys):
    from disam_ros.bench import main

    files = {"run": _saved_run(tmp_path / "run.json", [{"drive": "night", "sent": 1, "answered": 1}]),
             "other": tmp_path / "other.json", "missing": tmp_path / "nosuch.json", "png": tmp_path / "x.png",
             "out": tmp_path / "x.json"}
    files["other"].write_text(json.dumps({"suite": "node", "results": [{"preset": "tiny"}]}))  # the latency suite's
    with pytest.raises(SystemExit) as exc:
        main(["node", *(a.format(**files) for a in argv)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and words in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("argv, words", [
    (["--rate", "0"], "--rate"), (["--rate", "30", "--conditions", "nosuch"], "unknown nosuch"),
    (["--rate", "30", "--param", "x"], "NAME:=VALUE"), (["--rate", "30", "--param", "map:=/m"], "set by the"),
    (["--rate", "30", "--frames", "1"], "at least 2"), (["--rate", "30", "--cores", "100000"], "--cores"),
    (["--ra", "30"], "in full"),
])
def test_bad_options_are_one_line_and_exit_2(argv, words, capsys):
    from disam_ros.bench import main

    with pytest.raises(SystemExit) as exc:
        main(["node", *argv])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("disam-bench node: error:") and words in err


# ------------------------------------------------------------------------------------------------ a real run


@pytest.mark.ros  # ~8 s on 2 cores
def test_small_real_run_at_camera_rate(tmp_path):
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-c", "import sys; from disam_ros.bench import main; sys.exit(main(sys.argv[1:]))",
           "node", "--rate", "10", "--image-size", "320x240", "--frames", "4", "--conditions", "sunny_repeat",
           "--cores", "1", "--param", "mode:=sequence", "--runs", "2", "--workdir", str(tmp_path / "w"),
           "--json", str(out), "--plot", str(tmp_path / "rate.png")]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    wall_ms = 1e3 * (time.monotonic() - t0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "rate.png").read_bytes()[:4] == b"\x89PNG" and f"plot: {tmp_path / 'rate.png'}" in proc.stderr
    doc = json.loads(out.read_text())
    assert {"suite", "mode", "rate_hz", "image", "frames_per_drive", "cores", "node_cpus", "publisher_cpus",
            "node_parameters", "thresholds", "node_stage_median_ms", "node_exit_code", "results"} <= set(doc)
    assert (doc["mode"], doc["rate_hz"], doc["image"], doc["node_exit_code"]) == ("rate", 10.0, "320x240", 0)
    assert len(doc["node_cpus"]) == 1 and doc["node_parameters"]["threads"] == 1
    assert doc["node_parameters"]["mode"] == "sequence"
    rows = {r["drive"]: r for r in doc["results"]}
    assert list(rows) == ["sunny_repeat", "all"] and doc["runs"] == 2 and len(doc["results_per_run"]) == 2
    for drive, r in rows.items():  # the medians of the two runs, each run with a fresh node
        each = [next(x for x in run if x["drive"] == drive) for run in doc["results_per_run"]]
        assert r["runs"] == 2 and r["within_0.25m_2deg_range"] == sorted(x["within_0.25m_2deg"] for x in each)
        assert r["answered"] == pytest.approx((each[0]["answered"] + each[1]["answered"]) / 2)
    for r in rows.values():
        assert r["sent"] == 4 and r["sent"] == r["answered"] + r["dropped"] and r["answered"] >= 1
        assert 0 <= r["latency_median_ms"] <= r["latency_p95_ms"] <= r["latency_max_ms"] < wall_ms
        for k in ("within_0.25m_2deg", "within_5m_10deg", "verified_share"):
            assert 0.0 <= r[k] <= 1.0
        assert r["within_0.25m_2deg"] <= r["within_5m_10deg"]
        assert r["publish_hz"] == pytest.approx(10.0, rel=0.2)
        assert 0 <= r["verified_wrong"] <= r["answered"]
        if r["verified_share"]:  # each verified pose came with its covariance on pose_with_covariance
            assert r["nees_median"] >= 0 and 0 <= r["nees_inside_90"] <= 1
        node = r["node"]
        assert node["received"] + node["dropped_in_queue"] <= 4 and node["localized"] >= r["answered"]
    assert rows["all"]["verify_ms_median"] is None or rows["all"]["verify_ms_median"] >= 0
    table = proc.stdout.split("{", 1)[0].splitlines()
    assert [line.split()[0] for line in table[2:4]] == ["sunny_repeat", "all"]
    from disam_ros.bench import main  # the saved run redrawn beside itself: a real document reads back

    assert main(["node", "--from", str(out), "--against", str(out), "--plot", str(tmp_path / "again.png")]) == 0
    assert (tmp_path / "again.png").read_bytes()[:4] == b"\x89PNG"
