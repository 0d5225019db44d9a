"""disam-slam-eval on hand-made drives: modes.jsonl rows written here from a known ground truth, so every figure
the report gives can be checked against values computed in the test (relative poses, which closures are
wrong, how far a wrong keyframe is)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from disam_ros.eval.slam_inputs import between, choose_wrong, corrupt, keyframe_pool, read_drives
from disam_ros.geometry import quat_to_rot, rot_to_quat, yaw_pitch_roll_to_quat

OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # optical axes in a z-up body frame


def _drive_truth(n: int = 60, step: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """A z-up road: 30 steps east, a 90 deg left turn over 6 steps, then north; camera optical frames."""
    pos, quats, heading, p = [], [], 0.0, np.zeros(3)
    for k in range(n):
        pos.append(p.copy())
        R = quat_to_rot(yaw_pitch_roll_to_quat(heading)) @ OPTICAL
        quats.append(rot_to_quat(R))
        if 30 <= k < 36:
            heading += np.pi / 12
        p = p + step * np.array([np.cos(heading), np.sin(heading), 0.0])
    return np.array(pos) + [0, 0, 1.5], np.array(quats)


def _rows(condition: str, pos: np.ndarray, quats: np.ndarray, verified_every: int = 3) -> list[dict]:
    """modes.jsonl rows: every `verified_every`-th frame verified against the map keyframe 1 m to its side
    (keyframe id = frame index), with the exact pose and a 5 cm / 0.5 deg covariance."""
    cov = np.diag([0.05**2] * 3 + [np.radians(0.5) ** 2] * 3)
    rows = []
    for k, (p, q) in enumerate(zip(pos, quats)):
        row = {"mode": "sequence", "condition": condition, "name": f"{k:06d}.png", "stamp": 100.0 + k,
               "gt_position": p.tolist(), "gt_quat": q.tolist(), "est_position": p.tolist(), "est_quat": q.tolist(),
               "covariance": cov.tolist(), "verified": k % verified_every == 0, "keyframe_index": None}
        if row["verified"]:
            row.update(keyframe_index=k, keyframe_position=(p + [0, 1.0, 0]).tolist(), keyframe_quat=q.tolist())
        rows.append(row)
    return rows


@pytest.fixture
def results(tmp_path: Path) -> Path:
    pos, quats = _drive_truth()
    rows = _rows("night", pos, quats) + _rows("snow", pos[:40], quats[:40], verified_every=5)
    rows.append({**rows[0], "mode": "single"})
    path = tmp_path / "modes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_read_drives_rebuilds_the_hints(results):
    drives = read_drives(results, "sequence")
    assert [d.condition for d in drives] == ["night", "snow"]
    night = drives[0]
    assert len(night.stamps) == 60 and len(night.closures) == 20
    assert night.length_m == pytest.approx(59 * 2.0, rel=1e-9)
    c = night.closures[1]  # frame 3: keyframe 1 m to the +y side of the camera, same orientation
    R = quat_to_rot(night.gt_quats[3])
    np.testing.assert_allclose(c.rel_position, R.T @ np.array([0, -1.0, 0]), atol=1e-12)
    np.testing.assert_allclose(abs(np.dot(c.rel_quat, [0, 0, 0, 1])), 1.0, atol=1e-12)
    # The relative covariance is the absolute one in the keyframe's axes (isotropic here: unchanged).
    np.testing.assert_allclose(c.covariance, np.diag([0.05**2] * 3 + [np.radians(0.5) ** 2] * 3), atol=1e-15)
    assert len(read_drives(results, "single")) == 1


def test_a_late_hint_is_a_closure_at_its_own_frame(tmp_path):
    """Frame 1 unverified in time, its keyframe verified late against map keyframe 1 m ahead (east): one between
    closure at frame 1's stamp, the late pose seen from that keyframe (1 m behind it along the optical axis, by
    hand); frame 2 unverified with no late hint gives none; frame 0's own verified hint wins over a late one."""
    pos, quats = _drive_truth(n=3)
    rows = _rows("rain", pos, quats)  # frame 0 verified, 1 and 2 not
    late_cov = np.diag([0.2**2] * 3 + [np.radians(1.0) ** 2] * 3)
    for k in (0, 1):
        rows[k]["late"] = {"position": pos[k].tolist(), "quat": quats[k].tolist(), "covariance": late_cov.tolist(),
                           "keyframe_index": 40 + k, "keyframe_position": (pos[k] + [1.0, 0, 0]).tolist(),
                           "keyframe_quat": quats[k].tolist(), "arrived_stamp": 102.0}
    path = tmp_path / "modes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    [drive] = read_drives(path, "sequence")
    assert [(c.t, c.kind, c.keyframe_id) for c in drive.closures] == [(100.0, "between", 0), (101.0, "between", 41)]
    late = drive.closures[1]
    np.testing.assert_allclose(late.rel_position, [0.0, 0.0, -1.0], atol=1e-12)  # optical z points east
    np.testing.assert_allclose(late.covariance, late_cov, atol=1e-15)
    assert late.arrives == 102.0 and np.isnan(drive.closures[0].arrives)


def test_late_hints_reach_the_graph_when_they_arrived():
    """run_graph gives a late hint to the back end at the frame it arrived with (and one that came after the last
    frame before the final smoothing), stamped at its own frame: on a straight road with odometry 10 % too long,
    an exact hint at frame 1 (one closure anchors here) that arrives with frame 4 leaves the online poses of frames
    0-3 pure odometry (0.1 m more error a metre) and takes frame 4's 0.1 m back (the offset at frame 1; one hint
    cannot fix the scale); arriving after the drive, it leaves every online pose odometry and still corrects the
    final trajectory at frame 1; at its own stamp it corrects frame 1 online."""
    from disam_ros.eval.slam_eval import run_graph
    from disam_ros.eval.slam_inputs import Drive
    from disam_ros.posegraph.graph import PoseGraphConfig

    pos, quats = _drive_truth(n=6, step=1.0)
    odom_p = pos[0] + (pos - pos[0]) * 1.1
    cov = np.diag([0.01**2] * 3 + [np.radians(0.1) ** 2] * 3)
    hint = between(101.0, 7, pos[1] + [1.0, 0, 0], quats[1], pos[1], quats[1], cov)
    stamps = 100.0 + np.arange(6)

    def online_and_final(arrives):
        from dataclasses import replace
        d = Drive("rain", stamps, pos, quats, (replace(hint, arrives=arrives),))
        r = run_graph(d, odom_p, quats, PoseGraphConfig(anchor_agree=1))  # one hint anchors
        return np.linalg.norm(r.online_p - pos, axis=1), np.linalg.norm(r.final_p - pos, axis=1)

    online, final = online_and_final(104.0)
    np.testing.assert_allclose(online[:5], [0.0, 0.1, 0.2, 0.3, 0.3], atol=2e-3)
    assert final[1] < 2e-3
    online, final = online_and_final(float("inf"))
    np.testing.assert_allclose(online, 0.1 * np.arange(6), atol=1e-6)
    assert final[1] < 2e-3
    online, _ = online_and_final(float("nan"))
    assert online[1] < 2e-3


def test_between_composes_back_to_the_camera_pose():
    rng = np.random.default_rng(3)
    kq, q = (rot_to_quat(quat_to_rot(yaw_pitch_roll_to_quat(*rng.uniform(-1, 1, 3)))) for _ in range(2))
    kp, p = rng.normal(size=3) * 10, rng.normal(size=3) * 10
    c = between(5.0, 7, kp, kq, p, q, np.eye(6) * 0.01)
    Rk = quat_to_rot(kq)
    np.testing.assert_allclose(kp + Rk @ c.rel_position, p, atol=1e-9)
    np.testing.assert_allclose(Rk @ quat_to_rot(c.rel_quat), quat_to_rot(q), atol=1e-9)


def test_wrong_closures_are_a_share_of_all_and_point_far_away(results):
    drives = read_drives(results, "sequence")
    pool = keyframe_pool(drives)
    assert sorted(pool) == sorted(set(range(0, 60, 3)) | set(range(0, 40, 5)))  # one entry per keyframe id
    chosen = choose_wrong(drives, 0.1, np.random.default_rng(0))
    assert sum(map(len, chosen)) == 3  # 10 % of the 28 closures of both drives, rounded
    assert all(i < len(d.closures) for d, c in zip(drives, chosen) for i in c)
    assert sum(map(len, choose_wrong(drives, 0.001, np.random.default_rng(0)))) == 1  # at least one
    night = drives[0]
    wrong = corrupt(night, {0, 4}, pool, np.random.default_rng(0))
    bad = [(a, b) for a, b in zip(night.closures, wrong.closures) if b.wrong]
    assert [night.closures.index(a) for a, _ in bad] == [0, 4]
    for a, b in bad:
        assert np.linalg.norm(b.keyframe_position - a.keyframe_position) >= 10.0
        np.testing.assert_allclose(b.rel_position, a.rel_position)  # the measurement is kept, the place is wrong
        Rk = quat_to_rot(b.keyframe_quat)
        np.testing.assert_allclose(b.position, b.keyframe_position + Rk @ b.rel_position, atol=1e-9)
    assert corrupt(night, set(), pool, np.random.default_rng(0)) is night


def test_added_wrong_closures_keep_every_right_one(results):
    """--wrong-mode add: the right hints all stay; each wrong one (far keyframe, the measurement of the hint it
    was drawn from) comes at a frame that had no hint, in time order."""
    night = read_drives(results, "sequence")[0]
    pool = keyframe_pool([night])
    wrong = corrupt(night, {0, 4}, pool, np.random.default_rng(1), add=True)
    right = [c for c in wrong.closures if not c.wrong]
    bad = [c for c in wrong.closures if c.wrong]
    assert right == list(night.closures) and len(bad) == 2
    hinted = {float(c.t) for c in night.closures}
    assert all(float(c.t) not in hinted and float(c.t) in set(map(float, night.stamps)) for c in bad)
    assert len({float(c.t) for c in bad}) == 2
    assert [float(c.t) for c in wrong.closures] == sorted(float(c.t) for c in wrong.closures)
    for c, src in zip(bad, (night.closures[0], night.closures[4])):
        np.testing.assert_allclose(c.rel_position, src.rel_position)
        assert np.linalg.norm(c.keyframe_position - src.keyframe_position) >= 10.0


@pytest.mark.parametrize("text, message", [
    ("{not json\n", "not JSON"),
    ('{"mode": "single", "condition": "x"}\n', "no frames of mode 'sequence'"),
    ('{"mode": "sequence", "condition": "x", "gt_position": [0, 0, 0]}\n', "without 'stamp'"),
])
def test_bad_results_files_name_the_fix(tmp_path, text, message):
    path = tmp_path / "modes.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_drives(path, "sequence")
    with pytest.raises(FileNotFoundError, match="modes.jsonl that disam-eval wrote"):
        read_drives(tmp_path / "missing.jsonl", "sequence")


def test_closures_remove_the_drift_and_the_kernel_survives_wrong_ones(results, tmp_path, capsys):
    from disam_ros.eval.slam_eval import main

    out = tmp_path / "slam"
    assert main(["--results", str(results), "--out", str(out), "--wrong-share", "0.1", "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    night = rep["drives"][0]
    assert night["condition"] == "night" and night["closures"] == 20
    snow = rep["drives"][1]
    assert night["wrong"] + snow["wrong"] == 3  # 10 % of 28, drawn over both drives
    assert night["wrong"] >= 1, "seed 0 draws wrong closures in the night drive (the checks below need one)"
    assert night["drift_pct"] >= 2.0
    # Exact closures every third frame: what is left is the odometry between them, a few cm.
    assert night["runs"]["clean"]["final"]["ate_rmse"] < 0.1 < night["odometry"]["ate_rmse"] / 5
    assert night["reduction"] >= 5
    clean = night["runs"]["clean"]["final"]["ate_rmse"]
    assert night["runs"]["wrong_robust"]["final"]["ate_rmse"] <= 1.5 * clean + 0.02
    assert night["runs"]["wrong_plain"]["final"]["ate_rmse"] > 5 * clean
    assert night["rejected"]["wrong_robust"][0] == night["wrong"]  # every wrong closure down-weighted
    assert night["rejected"]["wrong_robust"][1] == 0  # and no right one
    # The control: the wrong hints left out. The kernel must make them cost (almost) nothing beyond that.
    dropped = night["runs"]["wrong_dropped"]["final"]["ate_rmse"]
    assert night["runs"]["wrong_robust"]["final"]["ate_rmse"] <= 1.1 * dropped + 0.005
    assert rep["summary"]["max_wrong_over_control_robust"] <= 1.1 + 0.005 / min(
        d["runs"]["wrong_dropped"]["final"]["ate_rmse"] for d in rep["drives"])
    assert night["rejected"]["wrong_dropped"] == [0, 0]  # nothing wrong in it, no right one rejected

    for name in ("gt", "odometry", "corrected"):
        assert (out / "trajectories" / "night" / f"{name}.tum").is_file()
    assert (out / "trajectories.png").stat().st_size > 10_000
    assert "Pose-graph back end" in (out / "report.md").read_text()
    assert "night" in capsys.readouterr().out
    least = min(rep["drives"], key=lambda d: d["reduction"])  # the summary names the drive least reduced
    assert rep["summary"]["min_reduction_drive"] == least["condition"]
    assert rep["summary"]["min_reduction_odometry_ate"] == pytest.approx(least["odometry"]["ate_rmse"])
    assert f"{least['reduction']:.1f}x: {least['condition']}, odometry ATE " in (out / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--wrong-share", "2"], "between 0 and 1"),
    (["--wrong-share", "-1"], "not a number >= 0"),
])
def test_cli_bad_options_are_one_line(results, tmp_path, capsys, args, message):
    from disam_ros.eval.slam_eval import main

    with pytest.raises(SystemExit) as exc:
        main(["--results", str(results), "--out", str(tmp_path / "o"), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_added_wrong_hints_leave_the_clean_result(results, tmp_path):
    """With the wrong hints given besides the right ones, the kernel run must match the clean run closely (nothing
    is lost), and without a kernel the wrong ones still pull it far off."""
    from disam_ros.eval.slam_eval import main

    out = tmp_path / "slam_add"
    assert main(["--results", str(results), "--out", str(out), "--wrong-share", "0.1", "--wrong-mode", "add",
                 "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"]["wrong_mode"] == "add"
    night = rep["drives"][0]
    clean = night["runs"]["clean"]["final"]["ate_rmse"]
    assert night["runs"]["wrong_dropped"]["final"]["ate_rmse"] == pytest.approx(clean, rel=1e-9)  # control = clean
    assert night["runs"]["wrong_robust"]["final"]["ate_rmse"] <= 1.1 * clean + 0.005
    assert night["runs"]["wrong_plain"]["final"]["ate_rmse"] > 5 * clean
    assert night["rejected"]["wrong_robust"] == [night["wrong"], 0]


def test_cli_missing_results_is_one_line(tmp_path, capsys):
    from disam_ros.eval.slam_eval import main

    assert main(["--results", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "modes.jsonl that disam-eval wrote" in err and "\n" not in err
