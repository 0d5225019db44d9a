"""disam-bench match (disam_ros/bench/match*.py): cases whose answers are known by hand, a tiny real-data run, the
registry a learned method will plug into, and the CLI's one-line errors."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from disam_ros.bench import match as bench
from disam_ros.bench.match_gardens import summarise as gardens_row
from disam_ros.bench.match_methods import METHODS, LocalFeatures, match, method_names, register
from disam_ros.bench.match_metrics import corner_error, fit_homography, mma, pose_error, within
from disam_ros.bench.match_synth import visible
from disam_ros.bench.match_webcams import run_webcams, score_pair
from disam_ros.pose.backproject import backproject
from disam_ros.pose.camera import Intrinsics


def texture(h: int = 260, w: int = 320, seed: int = 0) -> np.ndarray:
    """Blobs of random grey at several scales: many distinct corners and blobs for SIFT and ORB."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w), np.float32)
    for cell in (4, 9, 23):
        small = rng.uniform(0, 255, (h // cell + 1, w // cell + 1)).astype(np.float32)
        img += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[:h, :w]
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def test_corner_error_by_hand():
    shift = np.array([[1.0, 0, 3], [0, 1, 4], [0, 0, 1]])
    assert corner_error(shift, 100, 50) == pytest.approx(5.0)  # every corner moves by (3, 4)
    assert corner_error(np.eye(3), 100, 50) == 0.0
    # doubling about (0, 0) on a 3x3 image: corners (0,0) (2,0) (2,2) (0,2) move by 0, 2, 2*sqrt(2), 2
    assert corner_error(np.diag([2.0, 2.0, 1.0]), 3, 3) == pytest.approx((4 + 2 * np.sqrt(2)) / 4)
    assert corner_error(shift, 100, 50, H_true=shift) == pytest.approx(0.0)


def test_mma_leaves_unknown_truth_out_and_scores_nothing_as_zero():
    assert mma(np.array([0.5, 2.9, 3.0, 7.0, np.nan]), (3.0, 5.0, 10.0)) == [0.5, 0.75, 1.0]
    assert mma(np.zeros(0), (3.0,)) == [0.0]


@pytest.mark.parametrize("method", ["sift", "orb"])
def test_known_translation_gives_that_homography(method):
    big = texture()
    a, b = big[10:250, 10:300], big[14:254, 17:307]  # a's pixel (x, y) is b's (x - 7, y - 4)
    fa, fb = METHODS[method](a), METHODS[method](b)
    pairs = match(fa, fb)
    pa, pb = fa.keypoints[pairs[:, 0]], fb.keypoints[pairs[:, 1]]
    H, inliers = fit_homography(pa, pb)
    truth = np.array([[1.0, 0, -7], [0, 1, -4], [0, 0, 1]])
    assert inliers >= 50 and corner_error(H, 290, 240, H_true=truth) < 0.5
    err = np.linalg.norm(pb - (pa + [-7.0, -4.0]), axis=1)
    assert mma(err, (3.0,))[0] >= (0.995 if method == "sift" else 0.97)  # of ~1400 SIFT matches, one may be wrong


def test_an_image_against_itself_is_recovered_exactly():
    img = texture(seed=1)
    f = METHODS["sift"](img)
    got = score_pair(f, f, img.shape[::-1])
    assert got["recovered"] and got["mma"] == [1.0, 1.0, 1.0] and got["corner_px"] < 1e-6
    assert got["inliers"] == got["matches"] == len(f)


def test_fronto_parallel_plane_projects_by_the_closed_form():
    """Map camera at the origin looking down +z at a plane 10 m away; the query camera 1 m to the right
    (optical x): a pixel moves left by fx * 1 / 10 = 10 px, at the same row."""
    cam = Intrinsics(100.0, 100.0, 63.5, 47.5, 128, 96)
    depth = np.full((96, 128), 10.0)
    uv = np.array([[20.0, 30.0], [64.0, 48.0], [100.5, 70.25]])
    ident = np.array([0.0, 0.0, 0.0, 1.0])
    bp = backproject(uv, depth, cam, np.zeros(3), ident)
    assert bp.ok.all()
    R, t = np.eye(3), -np.array([1.0, 0.0, 0.0])  # camera-from-map of a camera centred at x = 1
    got, ok = visible(bp.points, R, t, cam, depth)
    assert ok.all() and np.allclose(got, uv - [10.0, 0.0], atol=1e-6)
    hidden, ok = visible(bp.points, R, t, cam, np.full((96, 128), 5.0))  # something 5 m away hides the plane
    assert not ok.any() and np.isnan(hidden).all()


def test_pose_error_and_buckets_by_hand():
    Rz = cv2.Rodrigues(np.array([0.0, 0.0, np.radians(3.0)]))[0]
    m, deg = pose_error(Rz, np.array([0.0, 0.0, 0.2]), np.eye(3), np.zeros(3))
    assert m == pytest.approx(0.2) and deg == pytest.approx(3.0)
    assert within([(0.2, 1.0), (0.2, 3.0), (float("inf"), float("inf"))]) == pytest.approx([1 / 3, 2 / 3, 2 / 3])


def test_gardens_row_sets_the_right_place_against_the_best_wrong_one():
    counts = np.array([[30, 10, 12], [9, 8, 20], [5, 6, 40]])
    row = gardens_row("sift", counts)
    assert row["right_wins"] == pytest.approx(2 / 3)
    assert row["median_right_inliers"] == 30 and row["median_best_wrong_inliers"] == 12


def test_a_new_method_plugs_in_by_registering(monkeypatch):
    monkeypatch.setitem(METHODS, "learned", lambda img: LocalFeatures(np.zeros((0, 2), np.float32),
                                                                      np.zeros((0, 64), np.float32), "l2"))
    assert method_names("sift,learned") == ("sift", "learned")
    with pytest.raises(ValueError, match="choose from"):
        method_names("sift,superpoint")
    assert register("learned", METHODS["learned"]) is METHODS["learned"]


def test_missing_data_folder_is_one_line_naming_the_fix(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--data", str(tmp_path), "--parts", "webcams", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert "webcams_dev" in err and "--data" in err and "--parts" in err and "--webcams DIR" in err
    with pytest.raises(SystemExit) as exc:
        bench.main(["--webcams", str(tmp_path / "held_back"), "--parts", "webcams", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "--webcams" in err and "frames.csv" in err


def test_unknown_method_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--methods", "sift,surf"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "surf" in err and "orb" in err


def test_webcams_tiny_subset(shared_data, tmp_path, capsys):
    root = shared_data / "webcams_dev"
    if not (root / "frames.csv").is_file():
        pytest.skip(f"webcams_dev not found at {root}")
    rows = run_webcams(root, ("orb",), 1, lambda: None)
    assert [r["group"] for r in rows] == ["00009291", "00009403", "00011331", "pooled"]
    assert rows[-1]["frames"] == 3 and 0.0 <= rows[-1]["mma@3"] <= rows[-1]["mma@10"] <= 1.0
    out = tmp_path / "m.json"
    assert bench.main(["--parts", "webcams", "--frames", "1", "--methods", "orb", "--quiet", "--data",
                       str(shared_data), "--json", str(out)]) == 0
    blob = json.loads(out.read_text())
    assert blob["suite"] == "match" and len(blob["results"]) == 4
    assert "| orb | pooled | 3 |" in capsys.readouterr().out
    held = tmp_path / "held_back"  # another collection in the same layout: one camera of this one, by --webcams
    held.mkdir()
    (held / "00009403").symlink_to(root / "00009403", target_is_directory=True)
    (held / "frames.csv").write_text("".join(line for i, line in enumerate((root / "frames.csv").open())
                                             if i == 0 or line.startswith("00009403,")))
    assert bench.main(["--parts", "webcams", "--frames", "1", "--methods", "orb", "--quiet", "--webcams",
                       str(held)]) == 0
    assert "| orb | 00009403 | 1 |" in capsys.readouterr().out


def test_synthetic_part_end_to_end_on_a_tiny_town(tmp_path):
    from disam_ros.bench.match_synth import render_town, run_synth

    world = render_town(tmp_path / "town", 11, (160, 120), 4, ("sunny_repeat",))
    rows = run_synth(world, ("orb",), ("sunny_repeat",), 2, lambda: None)
    assert [r["group"] for r in rows] == ["sunny_repeat", "all"] and rows[0]["pairs"] == 2
    assert 0.0 <= rows[0]["mma@5"] <= rows[0]["mma@20"] <= 1.0
    table = bench.format_table(rows)
    assert "| orb | sunny_repeat | 2 |" in table


def test_each_method_matches_with_its_own_ratio():
    """Query (1, 0) has its nearest neighbour at distance 0.9 and the second at 1.0 (ratio 0.9): Lowe's 0.8 drops
    it, mutual nearest neighbours alone (1.0) keep it; features of two different rules are not matched."""
    kp = np.zeros((1, 2), np.float32)
    q = np.array([[1.0, 0.0]], np.float32)
    db = np.array([[1.0, 0.9], [1.0, -1.0]], np.float32)
    db_kp = np.zeros((2, 2), np.float32)
    assert len(match(LocalFeatures(kp, q, "l2"), LocalFeatures(db_kp, db, "l2"))) == 0
    kept = match(LocalFeatures(kp, q, "l2", 1.0), LocalFeatures(db_kp, db, "l2", 1.0))
    assert kept.tolist() == [[0, 0]]
    with pytest.raises(ValueError, match="use one method on both images"):
        match(LocalFeatures(kp, q, "l2", 1.0), LocalFeatures(db_kp, db, "l2"))
