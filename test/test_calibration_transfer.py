"""disam-calibrate --map TARGET --from-map SOURCE: a calibration fitted once holds for every map built with the same
models; the observation model is the one part estimated from the map itself, so TARGET gets its own."""
from __future__ import annotations

import json

import numpy as np
import pytest

from disam_ros.bench.table_encoder import TableEncoder, token_frames
from disam_ros.conditions import ConditionSelector, load_config
from disam_ros.eval import calibrate as calibrate_cli
from disam_ros.maps import build_map, settings_for_mode
from disam_ros.maps.localization_map import LocalizationMap
from disam_ros.maps.map_calibration import MapCalibration, write_calibration
from disam_ros.maps.map_format import CALIBRATION_JSON
from disam_ros.relocalizer import Relocalizer
from disam_ros.retrieval import Localizer, SearchConfig
from disam_ros.retrieval.frame_gate import GateConfig
from disam_ros.tracking.calibration import Calibration
from disam_ros.tracking.sequence import ObservationModel
from disam_ros.tracking.tracker import Tracker, TrackerConfig, config_summary

N = 40
SHA_A, SHA_B = "a" * 64, "b" * 64
SOURCE_CAL = MapCalibration(
    modes={"sequence": Calibration("isotonic", x=(0.0, 1.5), y=(0.2, 0.95), mode="sequence", samples=40,
                                   extra={"covariance_scale": 0.5, "feature_key": "support"}),
           "single": Calibration("logistic", a=2.0, b=-1.0, mode="single", samples=40)},
    min_confidence={"sequence": 0.95, "single": None}, tolerance=(5.0, 10.0),
    observation=ObservationModel(gain=0.4, self_separation=2.5, rows=6), fitted="2024-01-01T00:00:00Z",
    source="drives dusk,night", config=config_summary(TrackerConfig()), stats={"sequence": {"frames": 40}})


def table_map(path, seed: int, spacing: float, sha: str):
    """A map of N places `spacing` m apart along x, features from a seeded table, 'built by' checkpoint `sha`."""
    feats = np.random.default_rng(seed).standard_normal((N, 4, 2, 2)).astype(np.float32)
    enc = TableEncoder(feats, checkpoint_sha256=sha)
    pos = np.stack([spacing * np.arange(N), np.zeros(N), np.zeros(N)], 1)
    frames = [(img, 0.3 * i, p, q, name) for i, (img, _, p, q, name) in enumerate(token_frames(N, pos))]
    build_map(frames, enc, None, path, "ref", settings_for_mode("exact"), progress=False, source="test")
    return path, enc


@pytest.fixture
def source_map(tmp_path):
    path, _ = table_map(tmp_path / "source", 0, 3.0, SHA_A)
    write_calibration(path, SOURCE_CAL)
    return path


def tracker_observation(map_dir, enc) -> ObservationModel:
    """What the tracker estimates at start on a map without a calibration (independent of the copy)."""
    m = LocalizationMap.load(map_dir)
    selector = ConditionSelector(("ref", "query"), load_config(None), reference="ref", override="query")
    reloc = Relocalizer(Localizer(m, enc, None, SearchConfig(device="cpu")), selector, None, GateConfig(enabled=False))
    obs = Tracker(reloc, TrackerConfig(mode="sequence")).observation
    m.close()
    return obs


def test_copy_keeps_the_fit_and_re_estimates_the_observation(source_map, tmp_path, capsys):
    target, enc = table_map(tmp_path / "target", 5, 4.0, SHA_A)  # other places, same model
    own = tracker_observation(target, enc)
    assert calibrate_cli.main(["--map", str(target), "--from-map", str(source_map)]) == 0
    assert "copied from map" in capsys.readouterr().out
    got = LocalizationMap.load(target).calibration
    assert {m: c.to_dict() for m, c in got.modes.items()} == {m: c.to_dict() for m, c in SOURCE_CAL.modes.items()}
    assert got.min_confidence == {"sequence": 0.95, "single": None} and got.tolerance == (5.0, 10.0)
    assert got.observation.to_dict() == own.to_dict() != SOURCE_CAL.observation.to_dict()
    assert got.stats == SOURCE_CAL.stats and got.config["sequence"] == SOURCE_CAL.config["sequence"]
    assert str(source_map) in got.source and "drives dusk,night" in got.source
    # the source map is untouched
    assert LocalizationMap.load(source_map).calibration.observation.to_dict() == SOURCE_CAL.observation.to_dict()


def _one_line_error(argv, capsys) -> str:
    assert calibrate_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("disam-calibrate: error: "), err
    return err


def test_a_map_of_another_model_is_refused_in_one_line(source_map, tmp_path, capsys):
    target, _ = table_map(tmp_path / "target", 5, 4.0, SHA_B)
    err = _one_line_error(["--map", str(target), "--from-map", str(source_map)], capsys)
    assert f"coarse {SHA_A[:12]}" in err and f"coarse {SHA_B[:12]}" in err and "calibrate" in err.split(";")[-1]
    assert not (target / CALIBRATION_JSON).exists()


def test_other_tracker_settings_and_fitting_options_are_refused(source_map, tmp_path, capsys):
    target, _ = table_map(tmp_path / "target", 5, 4.0, SHA_A)
    err = _one_line_error(["--map", str(target), "--from-map", str(source_map), "--max-speed-mps", "30"], capsys)
    assert "other tracker settings (max_speed_mps)" in err
    err = _one_line_error(["--map", str(target), "--from-map", str(source_map), "--tolerance", "2,180"], capsys)
    assert "other tracker settings (tolerance)" in err
    err = _one_line_error(["--map", str(target), "--from-map", str(source_map), "--domain", "night"], capsys)
    assert "drop --dataset/--bag/--domain" in err
    err = _one_line_error(["--map", str(source_map), "--from-map", str(target)], capsys)  # target: uncalibrated
    assert "has no calibration to copy" in err
    assert not (target / CALIBRATION_JSON).exists()
    assert json.loads((source_map / CALIBRATION_JSON).read_text())["source"] == "drives dusk,night"


def test_a_copied_fit_equals_the_target_maps_own_fit_where_their_numbers_agree(tiny_eval_world, tmp_path, capsys,
                                                                                one_thread):
    """Fit once on map A's drives, copy to map B; fit B on its own drives: B's numbers are A's (same model, same
    places, same drives), so the copy must be exactly B's own fit, margin and bounds included."""
    import shutil

    maps = {k: shutil.copytree(tiny_eval_world["map"], tmp_path / k) for k in ("a", "b_copy", "b_own")}
    drives = ["--dataset", str(tiny_eval_world["world"]), "--conditions", "snow,night,sunny_repeat", "--quiet",
              "--modes", "single,sequence", "--folds", "2"]
    for k in ("a", "b_own"):
        assert calibrate_cli.main(["--map", str(maps[k]), *drives]) == 0
    assert "held-out segments (2 folds" in capsys.readouterr().out
    assert calibrate_cli.main(["--map", str(maps["b_copy"]), "--from-map", str(maps["a"]), "--modes",
                               "single,sequence"]) == 0
    copied, own = (LocalizationMap.load(maps[k]).calibration for k in ("b_copy", "b_own"))
    assert {m: c.to_dict() for m, c in copied.modes.items()} == {m: c.to_dict() for m, c in own.modes.items()}
    assert copied.min_confidence == own.min_confidence and copied.stats == own.stats
    assert copied.observation.to_dict() == own.observation.to_dict()
    assert all(c.extra["bound"]["kind"] == "clopper_pearson" for c in own.modes.values() if c.kind == "isotonic")


def test_folds_below_two_are_refused_in_one_line(source_map, tmp_path, capsys):
    err = _one_line_error(["--map", str(source_map), "--dataset", str(tmp_path), "--conditions", "a", "--folds",
                           "1"], capsys)
    assert "--folds 1" in err and "at least 2" in err


def test_a_copy_takes_the_sources_tracker_settings_unless_others_are_written(tmp_path, capsys):
    """A source fitted with non-default settings (max speed 30 m/s, window 7): a plain copy takes them (no need to
    repeat them by hand); a setting written on the command line that differs is still refused."""
    import dataclasses

    from disam_ros.tracking.sequence import SequenceConfig

    fitted = config_summary(TrackerConfig(sequence=SequenceConfig(max_speed_mps=30.0, window_frames=7)))
    path, _ = table_map(tmp_path / "source", 0, 3.0, SHA_A)
    write_calibration(path, dataclasses.replace(SOURCE_CAL, config=fitted))
    target, _ = table_map(tmp_path / "target", 5, 4.0, SHA_A)
    assert calibrate_cli.main(["--map", str(target), "--from-map", str(path)]) == 0
    capsys.readouterr()
    got = LocalizationMap.load(target).calibration.config["sequence"]
    assert (got["max_speed_mps"], got["window_frames"]) == (30.0, 7)
    assert calibrate_cli.main(["--map", str(target), "--from-map", str(path), "--max-speed-mps=30"]) == 0  # same
    capsys.readouterr()
    err = _one_line_error(["--map", str(target), "--from-map", str(path), "--window-frames", "5"], capsys)
    assert "other tracker settings (window_frames)" in err and "drop those options" in err
