"""Offline evaluation: every answer equals an independent numpy recomputation of the paper's pipeline, with
the encoder the condition calls for, and the report's numbers follow from the answers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from disam_ros.data.folders import iter_frames, load_condition
from disam_ros.eval import offline
from disam_ros.geometry import quat_angle_deg
from disam_ros.model import Encoder

# Hand-worked domain choice for the tiny world: night is stamped 23:00 local (sun far below the horizon)
# -> the night encoder; snow is a snow-weather drive by day -> snow; sunny_repeat is the reference condition.
EXPECTED_DOMAIN = {"sunny_repeat": "sunny", "night": "night", "snow": "snow"}


def eq16(za: np.ndarray, zb: np.ndarray) -> float:
    """Mean over channels of the cosine of the channel maps, written as a plain loop."""
    return float(np.mean([np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b))
                          for a, b in zip(za, zb)]))


def reference_codes(world, coarse):
    """The reference drive's images and their coarse codes (the map side of the brute force, query-independent)."""
    refs = [f.image for f in iter_frames(load_condition(world, "sunny"))]
    return refs, coarse.encode(np.stack(refs), "sunny").numpy()


def brute_force(refs, zm, coarse, fine, image, domain, top_n=3):
    zq = coarse.encode(image, domain)[0].numpy()
    scores = np.array([eq16(zq, z) for z in zm])
    top = np.argsort(-scores, kind="stable")[:top_n]
    fq = fine.encode(image, domain)[0].numpy().ravel()
    fm = fine.encode(np.stack([refs[i] for i in top]), "sunny").numpy().reshape(len(top), -1)
    fm = (fm / np.linalg.norm(fm, axis=1, keepdims=True)).astype(np.float16).astype(np.float64)  # map storage
    cos = fm @ fq / (np.linalg.norm(fm, axis=1) * np.linalg.norm(fq))
    return int(top[int(np.argmax(cos))])


@pytest.mark.slow
def test_offline_report_matches_brute_force(tiny_eval_world, tmp_path, capsys, one_thread):
    w = tiny_eval_world
    out = tmp_path / "report"
    rc = offline.main(["--map", str(w["map"]), "--dataset", str(w["world"]), "--out", str(out), "--quiet",
                       "--device", "cpu", "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    assert "report:" in capsys.readouterr().out
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted({r["condition"] for r in results}) == sorted(EXPECTED_DOMAIN)
    coarse = Encoder.from_checkpoint(w["coarse"], device="cpu")
    fine = Encoder.from_checkpoint(w["fine"], device="cpu")
    ref = load_condition(w["world"], "sunny")
    ref_names = [p.name for p in ref.image_paths]
    refs, zm = reference_codes(w["world"], coarse)
    for cond, domain in EXPECTED_DOMAIN.items():
        frames = list(iter_frames(load_condition(w["world"], cond)))
        rs = [r for r in results if r["condition"] == cond]
        assert len(rs) == len(frames) == 10
        for f, r in zip(frames, rs):
            best = brute_force(refs, zm, coarse, fine, f.image, domain)
            assert r["match_name"] == ref_names[best], (cond, f.path.name)
            # the answer is the matched map image's ground-truth pose, untouched
            np.testing.assert_allclose(r["est_position"], ref.trajectory.positions[best], atol=1e-6)
    # the report's 5 m / 10 deg share is the share of answers within those tolerances
    report = json.loads((out / "report.json").read_text())
    for cond in EXPECTED_DOMAIN:
        rs = [r for r in results if r["condition"] == cond]
        t = [np.linalg.norm(np.subtract(r["est_position"], r["gt_position"])) for r in rs]
        a = [quat_angle_deg(np.array(r["est_quat"]), np.array(r["gt_quat"])) for r in rs]
        expect = np.mean([(ti <= 5.0) and (ai <= 10.0) for ti, ai in zip(t, a)])
        coarsest = report["conditions"][cond]["within"][-1]
        assert (coarsest["max_t_m"], coarsest["max_r_deg"]) == (5.0, 10.0)
        assert coarsest["share"] == pytest.approx(expect)
    assert len((out / "visloc_submission.txt").read_text().splitlines()) == len(results)
    for png in ("error_cdf.png", "trajectory.png", "examples.png"):
        assert (out / png).stat().st_size > 5000


def test_offline_bad_condition_is_one_line(tiny_eval_world, tmp_path, capsys):
    rc = offline.main(["--map", str(tiny_eval_world["map"]), "--dataset", str(tiny_eval_world["world"]),
                       "--conditions", "winter", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "no condition winter" in err and "present:" in err
    assert not (tmp_path / "r" / "report.md").exists()
