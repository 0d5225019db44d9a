"""The Nordland sequence target through `disam-sequence-eval`'s own code path, on the real held-out half.

SeqSLAM's patch-normalised pixels are weak single-frame features (about a quarter right); the sequence filter
must lift them above 90 % and publish, at the threshold chosen on the FIRST half, only right poses."""
from __future__ import annotations

import numpy as np
import pytest

from disam_ros.eval import sequence_eval as se

needs_data = pytest.mark.skipif(not (se.NORDLAND_DEFAULT / "winter").is_dir(),
                                reason="../shared/data/nordland_trimmed_dev is absent (real data is not shipped)")


@pytest.fixture(scope="module")
def rows():
    summer, winter, frames = se.nordland_frames(se.NORDLAND_DEFAULT)
    fn = se.patch_normalised_features()
    first, second = se.halves("patchnorm", fn(summer), fn(winter), frames)
    assert len(first.scores) >= 800 and len(second.scores) >= 800  # 1,729 kept frames, split in two
    return {r["mode"]: r for r in se.compare(first, second, se.NORDLAND_CONFIG, tol_m=2.0)}


@needs_data
def test_sequence_lifts_weak_frames_and_publishes_only_right_poses(rows):
    single, seq = rows["single"], rows["sequence"]
    assert single["r1"] < 0.5  # weak features: the point of the target
    assert seq["r1"] >= 0.90 and seq["r1"] - single["r1"] >= 0.40  # measured 23.6 -> 96.5 %
    assert seq["coverage"] >= 0.5 and seq["precision"] >= 0.99  # measured 89.9 % published, 100 % right
    assert seq["ece"] <= 0.05


@needs_data
def test_the_feature_is_chosen_by_auc_on_the_first_half(rows):
    for mode in ("sequence", "window"):
        table = rows[mode]["feature_table"]
        assert set(table) == {"support", "mass"}
        assert rows[mode]["feature"] == max(table, key=lambda k: table[k]["auc"])
    assert rows["single"]["feature"] == "distinctiveness"
    assert np.isfinite(rows["sequence"]["threshold"])


# ------------------------------------------------------------------ options, on made-up vectors (no data needed)

@pytest.mark.parametrize("text, ok", [("0:894", (0, 894)), ("10:11", (10, 11)), ("5:5", None), ("-1:4", None),
                                      ("a:4", None), ("894", None)])
def test_frame_range(text, ok):
    import argparse

    if ok is None:
        with pytest.raises(argparse.ArgumentTypeError, match="frame range A:B"):
            se.frame_range(text)
    else:
        assert se.frame_range(text) == ok


def test_segments_select_by_frame_number_and_refuse_overlap():
    frames = np.array([f for f in range(300) if f % 7])  # route frame numbers, every 7th dropped as dark
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(len(frames), 4))
    fit, test = se.segments("x", vec, vec, frames, (0, 100), (150, 300))
    assert fit.stamps.tolist() == [f for f in range(100) if f % 7]
    assert test.stamps.tolist() == [f for f in range(150, 300) if f % 7]
    np.testing.assert_allclose(fit.scores, vec[: len(fit.stamps)] @ vec[: len(fit.stamps)].T)
    assert test.truth[:, 0].tolist() == test.stamps.tolist()  # place i sits at (frame number, 0, 0) metres
    with pytest.raises(ValueError, match="overlap"):
        se.segments("x", vec, vec, frames, (0, 160), (150, 300))
    with pytest.raises(ValueError, match="holds 8 usable frames"):
        se.segments("x", vec, vec, frames, (0, 10), (150, 300))


@pytest.mark.parametrize("argv, words", [
    (["--fit", "0:100"], "give --fit and --test together"),
    (["--fit", "0:10:3", "--test", "5:9"], "frame range A:B"),
    (["--checkpoint", "/nonexistent/model.pt"], "--checkpoint /nonexistent/model.pt: no such file"),
    (["--sets", "nope"], "--sets ['nope']"),
    (["--route", "nowhere"], "--route: invalid choice"),
])
def test_cli_errors_are_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        se.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err, err


def test_missing_data_is_one_line(tmp_path, capsys):
    assert se.main(["--data", str(tmp_path), "--route", "scores", "--sets", "pixels"]) == 2
    err = capsys.readouterr().err.strip()
    assert "expected summer/ and winter/" in err and "\n" not in err, err


def test_the_table_leaves_nees_out_and_says_why():
    """Nordland's places are frame numbers shared by map and queries: NEES is not meaningful there, so the table
    names that in one line instead of printing a column of zeros (the JSON keeps the values)."""
    from disam_ros.eval.sequence_eval import render

    row = {"set": "s", "mode": "sequence", "r1": 0.5, "coverage": 0.25, "expected": 0.99, "precision": 1.0,
           "right": 2, "published": 2, "cv_coverage": 0.2, "cv_delivered": 1.0, "feature": "mass", "ece": 0.01,
           "ece_fit": 0.02, "nees_mean": 0.0, "nees_median": 0.0, "update_ms_median": 0.18}
    text = render([row])
    assert "NEES mean" not in text.splitlines()[0]
    assert text.splitlines()[-1].startswith("NEES: not shown (frame-number places")
    assert "| s | sequence | 50.0 % | 25.0 % | 99.0 % | 100.0 % (2/2) | 20.0 % / 100.0 % | mass |" in text


@needs_data
def test_pixels_have_no_node_route_and_say_so(capsys):
    assert se.main(["--sets", "pixels"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--sets pixels: not a model" in err and "--route scores" in err and "\n" not in err, err
