"""disam-bench real: the sets are cut as documented and scored right (hand-made cases), and the CI subset runs on
the real images of ../shared/data when they are there."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from disam_ros.bench import real as R
from disam_ros.training.layouts import DomainImages

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path


def places(tmp_path: Path, name: str, imgs: list[np.ndarray], xs: list[float]) -> DomainImages:
    paths = tuple(write(tmp_path / name / f"{i}.png", im) for i, im in enumerate(imgs))
    pos = np.zeros((len(xs), 3))
    pos[:, 0] = xs
    return DomainImages(name, paths, pos)


def test_raw_pixels_find_exact_copies_and_unplaced_queries_are_not_scored(tmp_path):
    rng = np.random.default_rng(0)
    scenes = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(4)]
    db = places(tmp_path, "db", scenes, [0, 10, 20, 30])
    # queries: copies of scenes 2, 0, 3 (right), scene 1's copy placed at 11 (within tolerance 1), and one at 50
    # whose place has no map image: it is left out, not counted as wrong
    q = places(tmp_path, "q", [scenes[2], scenes[0], scenes[3], scenes[1], scenes[0]], [20, 0, 30, 11, 50])
    s = R.RealSet("toy", "validation", db, {"a": q}, "night", 1.0)
    m = R.Method("raw pixels", R.raw_pixels, 32, metric="cosine")
    got = R.score_set(m, s, {})
    assert got.pop("hits").tolist() == [1.0] * 4 and got == {"a": 1.0, "pooled": 1.0, "queries": 4}
    # the same query placed 3 away from its copy is wrong at tolerance 1: 3 of 4
    q2 = places(tmp_path, "q2", [scenes[2], scenes[0], scenes[3], scenes[1]], [20, 0, 30, 13])
    got = R.score_set(m, R.RealSet("toy2", "validation", db, {"a": q2}, "night", 3.0), {})
    assert got["pooled"] == 1.0
    got = R.score_set(m, R.RealSet("toy3", "validation", db, {"a": q2}, "night", 1.0), {})
    assert got["queries"] == 3 and got["pooled"] == 1.0  # 13 has no map place within 1: not scored


def test_one_models_figure_carries_the_95_interval_its_query_count_allows():
    # Wilson, worked by hand for 3 of 10: centre (0.3 + z^2/20) / (1 + z^2/10) = 0.35551, half-width
    # z sqrt(0.021 + z^2/400) / (1 + z^2/10) = 0.24771 -> [0.1078, 0.6032]
    assert R.interval95(0.3, 10) == pytest.approx([0.1078, 0.6032], abs=1e-4)
    assert R.interval95(1.0, 4) == pytest.approx([0.5101, 1.0], abs=1e-4)  # 4 of 4: z^2/4 / (4 + z^2) below 1
    lo, hi = R.interval95(0.836, 865)
    assert hi - lo < 0.05 < 0.45 < R.interval95(0.3, 10)[1] - R.interval95(0.3, 10)[0]  # 865 queries resolve more
    rows = [{"method": "untrained", "draws": 3, "gp": 0.4, "gp:range": [0.3, 0.5], "gp:queries": 10},
            {"method": "mine", "draws": 1, "gp": 0.3, "gp:queries": 10, "gp:ci95": R.interval95(0.3, 10)}]
    table = R.format_table(rows, [R.RealSet("gp", "test", None, {}, "night", 0.0)])
    assert "| untrained | 40.0 (30-50) |" in table and "| mine | 30.0 [11-60] |" in table


def test_webcams_map_is_each_cameras_brightest_frame_and_queries_its_night_frames(tmp_path):
    root = tmp_path / "webcams"
    rows = [("A", "a1.jpg", 120.0), ("A", "a2.jpg", 30.0), ("A", "a3.jpg", 150.0), ("B", "b1.jpg", 90.0),
            ("C", "c1.jpg", 39.9), ("C", "c2.jpg", 60.0), ("C", "c3.jpg", 40.0)]
    for cam, f, _ in rows:
        write(root / cam / f, np.zeros((8, 8, 3), np.uint8))
    (root / "frames.csv").write_text("camera,file,original_width,original_height,mean_gray\n"
                                     + "".join(f"{c},{f},8,8,{g}\n" for c, f, g in rows))
    s = R.webcams_set(root)
    assert [p.name for p in s.db.paths] == ["a3.jpg", "b1.jpg", "c2.jpg"]
    assert {c: [p.name for p in d.paths] for c, d in s.queries.items()} == {"A": ["a2.jpg"], "C": ["c1.jpg"]}
    assert s.queries["C"].positions[0, 0] == s.db.positions[2, 0] != s.db.positions[0, 0]
    assert s.part == "validation"


def test_model_encoders_day_for_the_map_condition_or_fallback_for_queries():
    assert R.map_domain(("summer", "winter")) == "summer" and R.map_domain(("night", "sunny")) == "sunny"
    assert R.query_domain(("summer", "winter"), "winter") == "winter"
    assert R.query_domain(("summer", "winter"), "night") == "summer"  # the paper's fallback: the map's encoder
    assert R.query_domain((), "night") == ""


def test_the_small_encoding_batch_gives_the_features_one_batch_gives():
    """evaluate.ENCODE_BATCH (the battery's and training validation's) is a speed choice only: an untrained small
    encoder's features of 11 images encoded a batch at a time equal those encoded in one batch (eval mode: no image
    sees another)."""
    import torch

    from disam_ros.training.evaluate import ENCODE_BATCH, encode_all

    m = R.untrained("small", 0)
    x = torch.rand(11, 3, m.size, m.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    one = m.features(x, "")
    batched = encode_all(m.features, x, "")
    assert len(x) > ENCODE_BATCH and batched.shape == one.shape
    torch.testing.assert_close(batched, one.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not (SHARED / "nordland_trimmed_dev").is_dir(), reason="needs ../shared/data (real images)")
@pytest.mark.long
def test_sets_are_told_by_their_layout_and_held_out_copies_are_test_sets(tmp_path, monkeypatch):
    """Data nobody here has (another route part, the collection's other cameras, another pair set) in the shared
    README's layouts: each becomes a test set named after its folder, scored whole."""
    rng = np.random.default_rng(3)
    for cond in ("summer", "winter"):  # a route: 6 frames, frame 2 near-black (dropped, as in the dev half)
        for i in range(6):
            write(tmp_path / "route_b" / cond / f"images-{i:05d}.png",
                  np.full((8, 16, 3), 5, np.uint8) if i == 2 else rng.integers(60, 255, (8, 16, 3), dtype=np.uint8))
    for folder, names in (("query", ["b", "a", "c"]), ("ref", ["a", "b", "c"])):  # pairs named, not numbered
        for n in names:
            write(tmp_path / "pairs_b" / folder / f"{n}.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    for cam, f in (("X", "x1.jpg"), ("X", "x2.jpg"), ("Y", "y1.jpg"), ("Y", "y2.jpg")):
        write(tmp_path / "cams_b" / cam / f, np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "cams_b" / "frames.csv").write_text("camera,file,original_width,original_height,mean_gray\n"
                                                    "X,x1.jpg,8,8,100\nX,x2.jpg,8,8,10\nY,y1.jpg,8,8,90\n"
                                                    "Y,y2.jpg,8,8,20\n")
    (tmp_path / "notes").mkdir()  # a folder of no known layout is passed over
    sets = {s.name: s for s in R.real_sets(tmp_path, quick=False)}
    assert list(sets) == ["route_b", "pairs_b_night>day", "pairs_b_day>night", "cams_b_night"]  # routes, pairs, cams
    assert {s.part for s in sets.values()} == {"test"}
    route = sets["route_b"]
    assert route.db.positions[:, 0].tolist() == [0, 1, 3, 4, 5] and route.tolerance == 2.0
    pair = sets["pairs_b_night>day"]
    assert [p.stem for p in pair.db.paths] == ["a", "b", "c"] == [p.stem for p in pair.queries["night"].paths]
    np.testing.assert_array_equal(pair.db.positions[:, 0], pair.queries["night"].positions[:, 0])
    assert {c: [p.name for p in d.paths] for c, d in sets["cams_b_night"].queries.items()} == {"X": ["x2.jpg"],
                                                                                               "Y": ["y2.jpg"]}
    assert R.real_sets(tmp_path / "absent", quick=False) == []
    monkeypatch.setattr(R, "QUICK_FRAMES", 1)  # --quick keeps CI short whatever is mounted: its first queries
    quick = {s.name: s for s in R.real_sets(tmp_path, quick=True)}
    assert [len(quick["route_b"].db), len(quick["pairs_b_night>day"].db), len(quick["cams_b_night"].db)] == [1, 1, 2]
    assert [len(g) for s in quick.values() for g in s.queries.values()] == [1, 1, 1, 1, 1]


def test_a_route_with_four_seasons_scores_each_against_summer(tmp_path):
    """The full Nordland route has spring and fall beside summer and winter: each becomes a set against summer.
    Spring's frames are summer's own (raw pixels find all 5); fall frame i shows summer frame (i + 3) mod 5, so
    frames 0 and 1 find their copy 3 on (beyond the +-2 tolerance) and frames 2-4 find it 2 back: 3 of 5."""
    rng = np.random.default_rng(5)
    summer = [rng.integers(60, 255, (8, 16, 3), dtype=np.uint8) for _ in range(5)]
    seasons = {"summer": summer, "winter": summer, "spring": summer,
               "fall": [summer[(i + 3) % 5] for i in range(5)]}
    for season, imgs in seasons.items():
        for i, im in enumerate(imgs):
            write(tmp_path / "route_c" / season / f"images-{i:05d}.png", im)
    write(tmp_path / "route_d" / "summer" / "images-00000.png", summer[0])  # summer alone: no route
    sets = {s.name: s for s in R.real_sets(tmp_path, quick=False)}
    assert list(sets) == ["route_c", "route_c_spring", "route_c_fall"]  # winter keeps the route's name
    assert [(s.part, s.query_condition, list(s.queries)) for s in sets.values()] == [
        ("test", "winter", ["winter"]), ("test", "spring", ["spring"]), ("test", "fall", ["fall"])]
    raw = R.Method("raw pixels", R.raw_pixels, 16, metric="cosine")
    got = {n: R.score_set(raw, s, {})["pooled"] for n, s in sets.items()}
    assert got == {"route_c": 1.0, "route_c_spring": 1.0, "route_c_fall": 0.6}
    assert R.query_domain(("summer", "winter"), "spring") == "summer"  # a season the model lacks: its day encoder


def test_nordland_parts_are_trainings_and_the_ci_subset_runs(tmp_path):
    sets = {s.name: s for s in R.real_sets(SHARED, quick=False)}
    val, test = sets["nordland_val"], sets["nordland_test"]
    # 1788 frames: test from round(0.5 * 1788) = 894, val ends 5 before it (889) and holds round(0.1 * 1788) = 179
    # frames: [710, 889); dark frames are dropped inside the parts
    assert val.db.positions[:, 0].min() >= 710 and val.db.positions[:, 0].max() < 889
    assert test.db.positions[:, 0].min() >= 894 and test.db.positions[:, 0].max() < 1788
    assert (val.part, test.part) == ("validation", "test")
    out, png = tmp_path / "real.json", tmp_path / "real.png"
    assert R.main(["--quick", "--json", str(out), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(out.read_text())["results"]
    assert [r["method"] for r in rows] == ["raw pixels", "untrained tiny", "untrained small", "shipped real"]
    for r in rows:
        assert all(0.0 <= r[s] <= 1.0 for s in ("nordland_val", "nordland_test", "gp_night>day", "webcams_night"))
    webcams = sets["webcams_night"]
    assert sum(len(q) for q in webcams.queries.values()) == 122  # the README's night frames
    assert rows[0]["webcams_night:queries"] == sum(min(R.QUICK_FRAMES, len(q)) for q in webcams.queries.values())
    names = [s.name for s in R.real_sets(SHARED, quick=True)]  # the dev copies keep their names, in this order
    dev = ["nordland_val", "nordland_test", "gp_night>day", "gp_day>night", "webcams_night"]
    assert [n for n in names if n in dev] == dev
    n = rows[-1]["webcams_night:queries"]
    assert rows[-1]["webcams_night:ci95"] == pytest.approx(R.interval95(rows[-1]["webcams_night"], n))
    assert all(("webcams_night:ci95" in r) == (r["draws"] == 1) for r in rows)  # a mean of draws gives its range


def test_battery_bars_sit_in_their_set_slot_with_the_draws_range(tmp_path):
    from disam_ros.bench.real_plot import WIDTH, bar_layout, plot_battery

    rows = [{"method": "raw pixels", "draws": 1, "a": 0.2, "b": 0.5},
            {"method": "untrained", "draws": 3, "a": 0.4, "a:range": [0.3, 0.6], "b": 0.7, "b:range": [0.7, 0.7]}]
    bars = {(b.method, b.column): b for b in bar_layout(rows, ["a", "b", "missing"])}
    assert set(bars) == {("raw pixels", "a"), ("raw pixels", "b"), ("untrained", "a"), ("untrained", "b")}
    # two methods share a slot of WIDTH around x = k: centres at k -/+ WIDTH / 4
    assert bars["raw pixels", "a"].x == pytest.approx(-WIDTH / 4)
    assert bars["untrained", "b"].x == pytest.approx(1 + WIDTH / 4)
    assert all(b.width == pytest.approx(WIDTH / 2) for b in bars.values())
    raw, rnd = bars["raw pixels", "a"], bars["untrained", "a"]
    assert (raw.height, raw.low, raw.high) == pytest.approx((20.0, 20.0, 20.0))  # one draw: no range
    assert (rnd.height, rnd.low, rnd.high) == pytest.approx((40.0, 30.0, 60.0))
    png = plot_battery(rows, {"a": "validation", "b": "test"}, tmp_path / "sub" / "bars.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and not list(png.parent.glob("*.tmp*"))


def folder_condition(root: Path, name: str, images: list[Path], xs: list[float]) -> None:
    """A condition folder of links to `images`, each at (x, 0, 0): what disam-build-map and disam-eval read."""
    (root / name / "images").mkdir(parents=True)
    for k, src in enumerate(images):
        (root / name / "images" / f"{k:05d}{src.suffix}").symlink_to(src.resolve())
    (root / name / "poses.txt").write_text("".join(f"{k}.0 {x} 0 0 0 0 0 1\n" for k, x in enumerate(xs)))


@pytest.mark.skipif(not (SHARED / "gardens_point_mini").is_dir(), reason="needs ../shared/data (real images)")
@pytest.mark.long
def test_the_battery_scores_what_the_product_answers(tmp_path):
    """Gardens Point both ways through the battery's own loading and scoring, and through `disam-build-map --coarse
    real --domain summer` then `disam-eval` (the node's preprocessing and encoder choice): the same R@1, so the
    battery's table is what a user of the shipped default gets."""
    from disam_ros.eval.offline import main as eval_main
    from disam_ros.maps.build_map import main as build_main
    from disam_ros.shipped import checkpoint_arg

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "gardens_point_mini").symlink_to(SHARED / "gardens_point_mini")
    sets = R.real_sets(tmp_path / "data", quick=True)
    row = R.run(sets, [("real", [R.checkpoint_method("real", checkpoint_arg("real"))])])[0]
    gp = SHARED / "gardens_point_mini"
    day, night = (sorted((gp / sub).iterdir(), key=lambda p: int(p.stem)) for sub in ("query", "ref"))
    xs = [100.0 * int(p.stem) for p in day]  # place i at x = 100 i: within 5 m is the exact place
    assert [int(p.stem) for p in night] == [int(p.stem) for p in day]
    root = tmp_path / "root"
    folder_condition(root, "day", day, xs)
    folder_condition(root, "night", night, xs)
    for name, (ref, query) in {"gp_night>day": ("day", "night"), "gp_day>night": ("night", "day")}.items():
        m = tmp_path / f"map_{ref}"
        assert build_main(["--dataset", str(root), "--condition", ref, "--coarse", "real", "--domain", "summer",
                           "--geometry", "none", "--quiet", "--out", str(m)]) == 0
        assert eval_main(["--map", str(m), "--dataset", str(root), "--conditions", query, "--modes", "single",
                          "--no-verify", "--quiet", "--out", str(tmp_path / f"report_{ref}")]) == 0
        report = json.loads((tmp_path / f"report_{ref}" / "report.json").read_text())
        within_5m = report["modes"][0]["within"][-1]
        assert within_5m["max_t_m"] == 5.0 and report["modes"][0]["frames"] == 10
        assert within_5m["share"] == pytest.approx(row[name]), name


def test_paired_difference_is_the_t_interval_of_per_query_differences():
    from disam_ros.bench.real_paired import paired_difference

    # 3 of 10 against 0 of 10: d = 1 three times, 0 seven; mean 0.3, sd sqrt(2.1 / 9), t(0.975, 9) = 2.262157
    mean, lo, hi = paired_difference(np.r_[np.ones(3), np.zeros(7)], np.zeros(10))
    half = 2.262157 * np.sqrt(2.1 / 9) / np.sqrt(10)
    assert (mean, lo, hi) == pytest.approx((0.3, 0.3 - half, 0.3 + half), abs=1e-6)
    assert lo < 0 < hi  # 3 places of 10 do not tell the two apart
    # a mean over draws as the base; the interval never leaves [-1, 1]
    assert paired_difference(np.array([1.0, 0.0]), np.array([2 / 3, 1 / 3])) == pytest.approx([0.0, -1.0, 1.0])
    assert np.isnan(paired_difference(np.zeros(0), np.zeros(0))).all()  # a set with no scored query says nothing
    with pytest.raises(ValueError, match="same queries"):
        paired_difference(np.ones(3), np.ones(4))


def test_each_model_row_carries_its_difference_from_the_untrained_small_draws(tmp_path):
    rng = np.random.default_rng(1)
    scenes = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(4)]
    s = R.RealSet("toy", "test", places(tmp_path, "db", scenes, [0, 10, 20, 30]),
                  {"a": places(tmp_path, "q", scenes[::-1], [30, 20, 10, 0])}, "night", 0.0)
    same = R.Method("raw pixels", R.raw_pixels, 32, metric="cosine")
    rows = R.run([s], [("untrained small", [same, same]), ("model", [same])])
    assert "toy:vs_small" not in rows[0] and rows[1]["toy:vs_small"] == [0.0, 0.0, 0.0]  # the same answers
    assert "model - untrained small, paired over the same queries (points, 95 %): toy +0.0 [+0, +0]" in \
        R.format_table(rows, [s])
