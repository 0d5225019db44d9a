"""Evaluation of verified, refined poses: on a rendered drive with a depth-geometry map, `disam-eval`
scores the retrieval-only pose (the answered map place's) beside the published, refined one, and every number
of the new rows follows from the per-frame records; `--no-verify` gives the retrieval-only rows alone. Online,
the rows come from the nodes' loop-closure hints, checked on hand-made hints against hand-computed values."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from disam_ros.eval import offline
from disam_ros.eval.poses import OLD_HINTS, pose_rows, poses_dict, poses_markdown, poses_text
from disam_ros.eval.queries import Query
from disam_ros.eval.scoring import mode_summaries
from disam_ros.verify.verifier import OUTCOMES

THRESHOLDS = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))


@pytest.fixture(scope="module")
def geo_world(geometry_world):
    """The shared 320x240 town and its depth-geometry map (conftest), as (world, map, folder for outputs)."""
    return geometry_world["world"], geometry_world["map"], geometry_world["tmp"]


def run_eval(geo_world, name: str, *extra: str) -> tuple[Path, str]:
    world, map_dir, tmp = geo_world
    out = tmp / name
    rc = offline.main(["--map", str(map_dir), "--dataset", str(world), "--out", str(out), "--quiet", "--device",
                       "cpu", "--modes", "single", "--examples", "0", *extra])
    assert rc == 0
    return out, (out / "report.md").read_text()


def angle_deg(q1, q2) -> float:
    """Geodesic angle between two unit quaternions, written out: 2 acos |<q1, q2>|."""
    d = abs(float(np.dot(np.asarray(q1) / np.linalg.norm(q1), np.asarray(q2) / np.linalg.norm(q2))))
    return math.degrees(2.0 * math.acos(min(1.0, d)))


def err(rec: dict, pos_key: str, quat_key: str) -> tuple[float, float]:
    if rec[pos_key] is None:
        return math.inf, math.inf
    return (float(np.linalg.norm(np.subtract(rec[pos_key], rec["gt_position"]))),
            angle_deg(rec[quat_key], rec["gt_quat"]))


def share(errs: list[tuple[float, float]], t: float, r: float) -> float:
    return sum(1 for a, b in errs if a <= t + 1e-9 and b <= r + 1e-9) / len(errs)


def test_refined_rows_follow_from_the_frames(geo_world, capsys):
    out, md = run_eval(geo_world, "verified")
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    frames = [json.loads(line) for line in (out / "modes.jsonl").read_text().splitlines()]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    poses = report["poses"]
    assert poses["refined"] is True and poses["note"] is None
    assert [(r["condition"], r["mode"]) for r in poses["rows"]] == [("sunny_repeat", "single"), ("all", "single")]
    assert "## Retrieval-only and refined poses" in md and "| sunny_repeat | single | refined | 14 |" in md
    assert "refined" in printed and "retrieval" in printed
    # the detailed tables and results.jsonl keep the retrieval-only pose: the answered map place's
    assert [r["est_position"] for r in results] == [f["place_position"] for f in frames]
    for row in poses["rows"]:
        fs = [f for f in frames if row["condition"] in ("all", f["condition"])]
        ret = [err(f, "place_position", "place_quat") for f in fs]
        pub = [err(f, "est_position", "est_quat") for f in fs]
        ver = [e for f, e in zip(fs, pub) if f["verified"]]
        for key, errs in (("retrieval_only", ret), ("refined", pub)):
            got = [(w["max_t_m"], w["max_r_deg"], w["share"]) for w in row[key]["within"]]
            assert got == [(t, r, pytest.approx(share(errs, t, r))) for t, r in THRESHOLDS], key
        assert row["frames"] == len(fs) == 14
        assert row["verified"] == len(ver) and row["verified_share"] == pytest.approx(len(ver) / len(fs))
        right = sum(1 for a, b in ver if a <= 5.0 and b <= 10.0)
        assert row["verified_within_precision_threshold"] == right
        assert row["verified_precision"] == pytest.approx(right / len(ver))
        assert row["verified_max_t_m"] == pytest.approx(max(a for a, _ in ver))
        assert row["verified_max_r_deg"] == pytest.approx(max(b for _, b in ver))
        ms = [f["refine_ms"] for f in fs if f["refine_ms"] is not None]
        assert row["refine_ms_median"] == pytest.approx(float(np.median(ms)))
        # the modes table's R@1 is the retrieval-only pose's
        mode_row = next(m for m in report["modes"] if m["condition"] == row["condition"])
        assert mode_row["within"] == row["retrieval_only"]["within"]
    every = poses["rows"][-1]
    assert every["verified"] >= 3, every  # a same-condition repeat drive: most frames verify
    assert every["refined"]["within"][0]["share"] >= every["retrieval_only"]["within"][0]["share"]
    assert every["refined"]["within"][0]["share"] > 0.0
    assert all(f["verification"] is not None for f in frames if f["est_position"] is not None)
    # every frame keeps the candidates it tried; a verified frame's pose is one of its attempts', whose errors
    # against the ground truth are recomputed here from the published pose
    for f in (f for f in frames if f["est_position"] is not None):
        solved_at_all = f["verification"] in ("verified", "too_few_inliers", "uncertain", "inconsistent")
        assert (len(f["attempts"]) >= 1) == solved_at_all and all(a["outcome"] in OUTCOMES for a in f["attempts"])
        if f["verified"]:
            t, r = err(f, "est_position", "est_quat")
            assert any(a["outcome"] == "verified" and a["keyframe"] == f["keyframe_index"]
                       and a["t_m"] == pytest.approx(t, abs=1e-6) and a["r_deg"] == pytest.approx(r, abs=1e-3)
                       for a in f["attempts"]), f["attempts"]
        for a in f["attempts"]:
            assert (a["t_m"] is None) == (a["r_deg"] is None)
            assert 0 <= a["inliers"] <= a["matches"]


def test_no_verify_gives_retrieval_rows_only(geo_world, capsys):
    out, md = run_eval(geo_world, "retrieval", "--no-verify")
    printed = capsys.readouterr().out
    poses = json.loads((out / "report.json").read_text())["poses"]
    assert poses["refined"] is False and "--no-verify" in poses["note"]
    assert all("refined" not in r and "verified" not in r for r in poses["rows"])
    assert "Refined rows omitted: verification off (--no-verify)" in md and "| refined |" not in md
    assert "refined rows omitted" in printed
    frames = [json.loads(line) for line in (out / "modes.jsonl").read_text().splitlines()]
    assert all(f["verification"] is None and not f["verified"] for f in frames)
    assert all(f["est_position"] == f["place_position"] for f in frames)  # nothing refined
    assert all(f["attempts"] == [] for f in frames)


def test_paced_keyframes_answer_every_frame_and_time_every_keyframe(geo_world, capsys):
    """`--keyframes`: verification beside the frame loop, paced. No frame is left `pending` (each waits for its own
    keyframe); the frames a keyframe answered (their attempts are listed, flow's are not) carry that keyframe's
    time, so each is among the drive's keyframe times in keyframes.json, whose median is theirs."""
    out, md = run_eval(geo_world, "keyframes", "--keyframes", "--modes", "sequence")
    printed = capsys.readouterr().out
    [row] = json.loads((out / "keyframes.json").read_text())["drives"]
    frames = [json.loads(line) for line in (out / "modes.jsonl").read_text().splitlines()]
    assert (row["mode"], row["condition"]) == ("sequence", "sunny_repeat") and len(frames) == 14
    assert all(f["verification"] not in (None, "pending") for f in frames)
    own = [f["refine_ms"] for f in frames if f["attempts"]]
    assert own and row["keyframes"] == len(row["times_ms"]) >= len(own)
    assert all(any(ms == pytest.approx(t) for t in row["times_ms"]) for ms in own)
    assert row["median_ms"] == pytest.approx(float(np.median(row["times_ms"])))
    assert "keyframes (paced, one thread)" in printed and "beside the frame loop, paced" in md
    world, map_dir, tmp = geo_world
    assert offline.main(["--map", str(map_dir), "--dataset", str(world), "--out", str(tmp / "kf_no"), "--quiet",
                         "--keyframes", "--no-verify"]) == 2
    text = capsys.readouterr().err.strip()
    assert "\n" not in text and "--keyframes" in text and "--no-verify" in text


def test_late_answers_at_a_camera_rate_count_against_their_own_frames():
    """Three frames at 30 Hz, hand-worked: 0 verified and exact (hinted in time); 1 unverified 1 m off, its keyframe
    answered late with frame 2 and exact (hinted late: the published share does not move); 2 unverified and exact
    (published right, no verified hint), its keyframe answered late after the drive's end (`end_drive`). A late answer
    for a stamp the drive never answered counts nowhere."""
    from disam_ros.eval.keyframe_replay import KeyframeReplay
    from disam_ros.eval.scoring import TrackedFrame
    from disam_ros.tracking.tracker_config import LateAnswer

    gt_q = np.array([0.0, 0.0, 0.0, 1.0])

    def frame(stamp, dx, verified):
        gt = np.array([float(stamp), 0.0, 0.0])
        return TrackedFrame("sequence", "rain", f"{stamp}", gt, gt_q, gt + [dx, 0.0, 0.0], gt_q, 0.5, 0.0, False,
                            0.0, verified=verified, stamp=float(stamp))

    def late(stamp):
        return LateAnswer(float(stamp), SimpleNamespace(position=np.array([float(stamp), 0.0, 0.0]), quat=gt_q), True)

    tracker = SimpleNamespace(keyframe_times=lambda: (0, 0, []))
    replay = KeyframeReplay(30.0)
    replay.new_drive(tracker, "sequence", "rain")
    replay.drives[-1].sent = 3
    replay.after_frame(tracker, frame(1, 0.0, True), 0.01)
    replay.after_frame(tracker, frame(2, 1.0, False), 0.02)
    two, seven = late(2), late(7)
    assert replay.after_frame(tracker, frame(3, 0.0, False), 0.03, [two, seven]) == [two]  # 7: not this drive's
    row = replay.drives[-1].row(30.0)
    assert row["late"] == 1 and row["hinted_share"] == pytest.approx(2 / 3)
    assert row["within_share"] == pytest.approx(2 / 3)
    assert replay.rows_text()[1].split()[-2:] == ["1", "66.7"]
    # the drive ends: the keyframe in flight for frame 3 is waited for and its late answer (exact) scored too
    waited = []
    tracker.wait_keyframes = lambda timeout_s: waited.append(timeout_s) or True
    tracker.take_late = lambda: (late(3),)
    replay.end_drive(tracker)
    row = replay.drives[-1].row(30.0)
    assert waited and row["late"] == 2 and row["hinted_share"] == pytest.approx(3 / 3)
    assert row["within_share"] == pytest.approx(2 / 3)


def test_answers_published_as_verified_outside_the_bound_are_counted():
    """At 30 Hz, four frames by hand: verified and exact; verified 0.3 m off; verified in place but turned 3 deg;
    unverified 1 m off. Two answers were published as verified outside (0.25 m, 2 deg); the unverified one is not
    counted (it is no verified hint), and the table prints the count."""
    from disam_ros.eval.keyframe_replay import KeyframeReplay
    from disam_ros.eval.scoring import TrackedFrame

    q = np.array([0.0, 0.0, 0.0, 1.0])
    turned = np.array([0.0, 0.0, np.sin(np.radians(1.5)), np.cos(np.radians(1.5))])  # 3 deg about z

    def frame(stamp, dx, quat, verified):
        gt = np.array([float(stamp), 0.0, 0.0])
        return TrackedFrame("sequence", "night", f"{stamp}", gt, q, gt + [dx, 0.0, 0.0], quat, 0.5, 0.0, False,
                            0.0, verified=verified, stamp=float(stamp))

    tracker = SimpleNamespace(keyframe_times=lambda: (0, 0, []))
    replay = KeyframeReplay(30.0)
    replay.new_drive(tracker, "sequence", "night")
    replay.drives[-1].sent = 4
    for i, (dx, quat, verified) in enumerate([(0.0, q, True), (0.3, q, True), (0.0, turned, True), (1.0, q, False)]):
        replay.after_frame(tracker, frame(i, dx, quat, verified), 0.01 * (i + 1))
    row = replay.drives[-1].row(30.0)
    assert row["verified_off"] == 2 and row["within_share"] == pytest.approx(1 / 4)
    assert replay.rows_text()[1].split()[-3:] == ["2", "0", "25.0"]


def test_a_late_answer_is_recorded_on_its_own_frame_for_the_back_end():
    """`late_on_frames`: frame 1's late answer (verified against map image 1) lands on frame 1's record with that map
    image's pose; an unverified late answer and one for a stamp not in the drive record nothing; modes.jsonl
    carries it (lists), and frames without one say null."""
    from disam_ros.eval.keyframe_replay import late_on_frames
    from disam_ros.eval.report import tracked_to_dict
    from disam_ros.eval.scoring import TrackedFrame
    from disam_ros.tracking.tracker_config import LateAnswer

    gt_q = np.array([0.0, 0.0, 0.0, 1.0])
    frames = [TrackedFrame("sequence", "rain", f"{k}", np.array([float(k), 0, 0]), gt_q, None, None, 0.5, 0.0, False,
                           0.0, stamp=float(k)) for k in range(3)]
    map_poses = (np.array([[0.0, 0, 0], [5.0, 1, 0]]), np.array([gt_q, [0.0, 0.0, 1.0, 0.0]]))

    def answer(stamp, verified):
        v = SimpleNamespace(verified=verified, index=1)
        res = SimpleNamespace(position=np.array([stamp, 0.1, 0]), quat=gt_q, covariance=np.eye(6) * 0.04,
                              verification=v)
        return LateAnswer(float(stamp), res, True)

    late_on_frames(frames, {0.0: 0, 1.0: 1, 2.0: 2}, [answer(1, True), answer(2, False), answer(9, True)], map_poses)
    assert frames[0].late is None and frames[2].late is None
    rec = frames[1].late
    assert rec["keyframe_index"] == 1
    np.testing.assert_allclose(rec["keyframe_position"], [5.0, 1, 0])
    np.testing.assert_allclose(rec["keyframe_quat"], [0.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(rec["position"], [1.0, 0.1, 0])
    doc = tracked_to_dict(frames[1])["late"]
    assert doc["keyframe_index"] == 1 and doc["covariance"][0][0] == pytest.approx(0.04)
    assert tracked_to_dict(frames[0])["late"] is None


def test_keyframes_at_a_camera_rate_count_the_sent_frames(geo_world, capsys):
    """`--keyframes --rate`: frames arrive at the rate while the loop runs and it takes the newest when free. At a
    million frames a second all 14 have arrived before the first step ends, so the loop answers the first it took
    and then the last (or the last alone): 1 or 2 answered, the rest dropped. The share within (0.25 m, 2 deg) is
    over the SENT frames, recomputed here from the answered frames' records."""
    out, _ = run_eval(geo_world, "keyframes_rate", "--keyframes", "--modes", "sequence", "--rate", "1e6",
                      "--wait-ms", "20")
    printed = capsys.readouterr().out
    doc = json.loads((out / "keyframes.json").read_text())
    [row] = doc["drives"]
    frames = [json.loads(line) for line in (out / "modes.jsonl").read_text().splitlines()]
    names = sorted(p.name for p in (geo_world[0] / "sunny_repeat" / "images").iterdir())
    assert doc["rate_hz"] == 1e6 and doc["wait_ms"] == 20.0 and row["sent"] == len(names) == 14
    assert row["answered"] == len(frames) in (1, 2) and row["dropped"] == 14 - row["answered"]
    assert Path(frames[-1]["name"]).stem == Path(names[-1]).stem  # the newest frame is always taken last
    right = sum(1 for f in frames if f["est_position"] is not None
                and err(f, "est_position", "est_quat")[0] <= 0.25 and err(f, "est_position", "est_quat")[1] <= 2.0)
    assert row["within_share"] == pytest.approx(right / 14)
    assert row["latency_p95_ms"] >= row["latency_median_ms"] > 0
    assert "at 1e+06 Hz, one loop, wait 20 ms" in printed
    world, map_dir, tmp = geo_world
    assert offline.main(["--map", str(map_dir), "--dataset", str(world), "--out", str(tmp / "rate_no"), "--quiet",
                         "--rate", "30"]) == 2
    text = capsys.readouterr().err.strip()
    assert "\n" not in text and "add --keyframes" in text
    assert offline.main(["--map", str(map_dir), "--dataset", str(world), "--out", str(tmp / "wait_no"), "--quiet",
                         "--keyframes", "--wait-ms", "100"]) == 2
    text = capsys.readouterr().err.strip()
    assert "\n" not in text and "--wait-ms 100" in text and "--rate" in text


def test_cli_errors_stay_one_line(geo_world, tmp_path, capsys):
    world, map_dir, _ = geo_world
    base = ["--map", str(map_dir), "--dataset", str(world), "--out", str(tmp_path / "r"), "--no-verify"]
    with pytest.raises(SystemExit) as exc:
        offline.main([*base, "--modes", "single,best"])
    text = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in text and "unknown mode(s) best" in text
    assert offline.main([*base, "--conditions", "winter", "--quiet"]) == 2
    text = capsys.readouterr().err.strip()
    assert "\n" not in text and "no condition winter" in text
    assert not (tmp_path / "r" / "report.md").exists()


def test_why_refined_rows_are_left_out():
    bare = SimpleNamespace(has_geometry=False, geometry_note="built before map geometry: rebuild")
    geo = SimpleNamespace(has_geometry=True, geometry_note=None)
    assert offline.refine_reason(SimpleNamespace(no_verify=False), bare) == \
        "the map has no geometry (built before map geometry: rebuild)"
    assert offline.refine_reason(SimpleNamespace(no_verify=False), geo) is None
    assert "--no-verify" in offline.refine_reason(SimpleNamespace(no_verify=True), geo)
    assert offline.tracker_config(offline.build_parser().parse_args(
        ["--map", "m", "--dataset", "d", "--out", "o", "--no-verify"])).verify.enabled is False


def test_verification_options_reach_the_verifier_config():
    from disam_ros.verify.verifier import VerifyConfig

    def parsed(*extra):
        return offline.tracker_config(offline.build_parser().parse_args(
            ["--map", "m", "--dataset", "d", "--out", "o", *extra])).verify

    assert parsed() == VerifyConfig()  # no option: the verifier's own defaults
    got = parsed("--track-frames", "2", "--turn-search", "0", "--unguided-candidates", "3", "--belief-sigma", "1.5",
                 "--first-scale", "1", "--first-min-inliers", "20", "--first-max-std", "0.2", "--first-candidates", "2",
                 "--first-probe-every", "4", "--first-max-trials", "500")
    assert (got.track_frames, got.turn_search_deg, got.unguided_candidates, got.belief_sigma_m, got.first_scale) == \
        (2, 0.0, 3, 1.5, 1.0)
    assert (got.first_min_inliers, got.first_max_std_m, got.first_candidates, got.first_probe_every,
            got.first_max_trials) == (20, 0.2, 2, 4, 500)
    dense = parsed("--dense-candidates", "0", "--dense-min-inliers", "80")
    assert (dense.gradient_candidates, dense.gradient_min_inliers) == (0, 80)
    more = parsed("--dense-single", "on", "--dense-polish-points", "0", "--motion-speed-factor", "0")
    assert (more.gradient_single, more.gradient_polish_points, more.motion_speed_factor) == (True, 0, 0.0)
    assert parsed("--dense-single", "OFF").gradient_single is False
    with pytest.raises(SystemExit):
        parsed("--dense-single", "maybe")


# ------------------------------------------------------------------------------------ online: recorded hints
IDENTITY = [0.0, 0.0, 0.0, 1.0]
MAP_X = (0.0, 3.0, 6.0)  # three map places along x, identity orientation


def _pose(x: float) -> SimpleNamespace:
    return SimpleNamespace(position=SimpleNamespace(x=x, y=0.0, z=0.0),
                           orientation=SimpleNamespace(x=0.0, y=0.0, z=0.0, w=1.0))


def _client(published: dict[int, float | None], hints: dict[int, dict], late: dict[int, dict] | None = None
            ) -> SimpleNamespace:
    """A LocalizerClient stand-in: per frame stamp (ns) its published x (None: no pose), its hint, its late hint."""
    pose_cov, loop = {}, {}
    for ns, x in published.items():
        if x is None:
            continue
        key = divmod(ns, 1_000_000_000)
        pose_cov[key] = (1.0, SimpleNamespace(pose=SimpleNamespace(pose=_pose(x), covariance=list(np.eye(6).ravel()))))
        loop[key] = (1.0, hints[ns])
    rx = SimpleNamespace(diagnostics=[(0.0, {"confidence_threshold": "0.0", "confidence_calibrated": "False"})],
                         pose_cov=pose_cov, candidates={}, loop=loop,
                         late={divmod(ns, 1_000_000_000): (2.0, doc) for ns, doc in (late or {}).items()})
    return SimpleNamespace(rx=rx)


def _online(new_keys: bool, late: bool = False):
    """Four frames, ground truth at x = 0.4, 3.6, 6.2, 9.0. Retrieval answers places 0, 1, 2 (errors 0.4, 0.6,
    0.2 m) and nothing for the last frame. Verification refines frame 0 to x = 0.45 (0.05 m off), fails on frame
    1, and 'verifies' frame 2 at x = 12.2 (6 m off, a wrong verified pose). Old hints: the map places only.
    `late`: late hints for frame 1 at x = 3.62 (0.02 m off) and frame 2 at 6.9 (0.7 m off), and an unverified one
    for frame 3 (never scored)."""
    from disam_ros.data.stamps import name_for_stamp_ns
    from disam_ros.ros.online_collect import ModeRun, collect

    gt = (0.4, 3.6, 6.2, 9.0)
    stamps = [(k + 1) * 1_000_000_000 for k in range(4)]
    queries = [Query(name_for_stamp_ns(ns), "night", np.zeros((2, 2, 3), np.uint8), ns / 1e9,
                     np.array([x, 0.0, 0.0]), np.array(IDENTITY)) for ns, x in zip(stamps, gt)]
    refined = (0.45, None, 12.2)
    outcome = ("verified", "too_few_inliers", "verified")
    published, hints = {stamps[3]: None}, {}
    for k in range(3):
        hint = {"map_index": k, "confidence": 0.5, "domain": "night", "position": [MAP_X[k], 0, 0],
                "orientation_xyzw": IDENTITY}
        x = MAP_X[k]
        if new_keys:
            ok = outcome[k] == "verified"
            x = refined[k] if ok else MAP_X[k]
            hint.update(position=[x, 0, 0], verified=ok, verification=outcome[k], inliers=50 if ok else None,
                        place_position=[MAP_X[k], 0.0, 0.0], place_orientation_xyzw=IDENTITY)
        published[stamps[k]], hints[stamps[k]] = x, hint
    run = ModeRun()
    positions = np.array([[x, 0.0, 0.0] for x in MAP_X])
    late_hints = {stamps[k]: {"late": True, "verified": k < 3, "position": [x, 0.0, 0.0], "orientation_xyzw": IDENTITY}
                  for k, x in ((1, 3.62), (2, 6.9), (3, 9.0))} if late else {}
    collect(run, "single", _client(published, hints, late_hints), queries, {}, positions)
    return run


def test_online_rows_from_new_hints_by_hand():
    from disam_ros.ros.online_eval import refine_reason_online

    run = _online(new_keys=True)
    # the Answer (detailed tables) is the retrieval-only map place, also where the published pose was refined
    assert [a.index for a in run.answers] == [0, 1, 2, None]
    np.testing.assert_allclose(run.answers[0].position, [0.0, 0.0, 0.0])
    np.testing.assert_allclose(run.tracked[0].est_position, [0.45, 0.0, 0.0])
    geo_map = SimpleNamespace(has_geometry=True, geometry_note=None)
    note = refine_reason_online(geo_map, run.tracked)
    assert note is None
    row = pose_rows(run.tracked)[-1]
    assert (row.condition, row.frames) == ("all", 4)
    assert row.retrieval == pytest.approx((1 / 4, 2 / 4, 3 / 4))  # 0.2 m | 0.4, 0.2 m | 0.4, 0.6, 0.2 m
    assert row.refined == pytest.approx((1 / 4, 1 / 4, 2 / 4))  # 0.05 m | 0.05 m | 0.05, 0.6 m
    assert (row.verified, row.verified_right) == (2, 1) and row.verified_precision == pytest.approx(0.5)
    assert row.verified_max_t_m == pytest.approx(6.0) and row.verified_max_r_deg == pytest.approx(0.0)
    assert math.isnan(row.refine_ms_median)  # the hints carry no timing
    assert [f.inliers for f in run.tracked] == [50, 0, 50, 0]
    doc = poses_dict(pose_rows(run.tracked), note)["rows"][-1]
    assert doc["verified_share"] == pytest.approx(0.5) and doc["verified_within_precision_threshold"] == 1
    assert doc["refined"]["within"][2]["share"] == pytest.approx(0.5) and doc["refine_ms_median"] is None
    md = "\n".join(poses_markdown(pose_rows(run.tracked), note))
    assert "| **all** | single | refined | 4 | 25.0 | 25.0 | 50.0 | 50.0 | 50.0 (1 of 2) | 6.00 m, 0.0° |" in md
    # the modes table: R@1 scores the map place, precision the published (refined) pose
    m = mode_summaries(run.tracked, {"single": 0.0}, (5.0, 10.0))[-1]
    assert m.shares == pytest.approx((1 / 4, 2 / 4, 3 / 4))
    assert (m.published, m.precision) == (3, pytest.approx(2 / 3))
    assert run.tracked[1].verification == "too_few_inliers" and not run.tracked[1].verified


def test_online_hint_rows_count_late_hints_against_their_own_frames_by_hand():
    """`_online` with late hints: frame 0 hinted in time (0.05 m), frame 1 late (0.02 m), frame 2's own hint 6 m off
    and its late one 0.7 m off (received, not within), frame 3's late hint unverified (not kept): 2 of 4 hinted."""
    from disam_ros.eval.hints import hint_rows, hints_dict, hints_markdown, hints_text

    run = _online(new_keys=True, late=True)
    assert sorted(run.late) == [("night", run.tracked[1].name), ("night", run.tracked[2].name)]
    [night, total] = hint_rows(run.tracked, {"single": run.late})
    assert night.condition == "night" and total.condition == "all"
    assert (total.frames, total.in_time, total.late, total.late_within, total.hinted) == (4, 1, 2, 1, 2)
    assert total.hinted_share == pytest.approx(0.5)
    assert hints_dict([total])[0]["hinted_share"] == pytest.approx(0.5)
    assert "| **all** | single | 4 | 1 | 2 | 1 | 50.0 |" in hints_markdown([night, total])
    assert hints_text([night, total]) == ["hints single: 2/4 frames hinted within 0.25 m, 2 deg (50.0 %; 1 in time, "
                                          "1 of 2 late)"]
    assert hint_rows(run.tracked, {})[-1].hinted == 1  # without the late hints: frame 0 alone


def test_online_rows_from_old_hints_by_hand():
    from disam_ros.ros.online_eval import refine_reason_online

    run = _online(new_keys=False)
    assert [a.index for a in run.answers] == [0, 1, 2, None]
    assert all(f.verification == "" and not f.verified for f in run.tracked)
    note = refine_reason_online(SimpleNamespace(has_geometry=True, geometry_note=None), run.tracked)
    assert note == OLD_HINTS
    rows = pose_rows(run.tracked)
    assert rows[-1].retrieval == pytest.approx((1 / 4, 2 / 4, 3 / 4))
    doc = poses_dict(rows, note)
    assert doc["refined"] is False and all("refined" not in r for r in doc["rows"])
    text = poses_text(run.tracked, note)
    assert text[-1] == f"refined rows omitted: {OLD_HINTS}" and not any(" refined " in t for t in text[:-1])
    bare = SimpleNamespace(has_geometry=False, geometry_note="built without geometry")
    assert refine_reason_online(bare, run.tracked) == "the map has no geometry (built without geometry)"
