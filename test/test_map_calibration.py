"""calibration.json in the map: listed in the manifest with its sha256, checked like every map file, refused in one
line when corrupt or of another version, optional (a map without one loads and says so), removable, and written in
steps that each leave a loadable map."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from disam_ros.bench.table_encoder import TableEncoder, token_frames
from disam_ros.eval import calibrate as calibrate_cli
from disam_ros.maps import LocalizationMap, MapError, build_map, settings_for_mode
from disam_ros.maps.map_calibration import (
    MapCalibration,
    read_calibration,
    remove_calibration,
    write_calibration,
)
from disam_ros.maps.map_format import CALIBRATION_JSON, MANIFEST, check_files, read_manifest, sha256_file
from disam_ros.tracking.calibration import Calibration
from disam_ros.tracking.sequence import ObservationModel

CAL = MapCalibration(
    modes={"sequence": Calibration("isotonic", x=(0.0, 1.5), y=(0.2, 0.95), mode="sequence", samples=40,
                                   extra={"covariance_scale": 0.5}),
           "single": Calibration("logistic", a=2.0, b=-1.0, mode="single", samples=40)},
    min_confidence={"sequence": 0.95, "single": None}, tolerance=(5.0, 10.0),
    observation=ObservationModel(gain=0.4, self_separation=2.5, rows=6), fitted="2024-01-01T00:00:00Z",
    source="test drives", config={"sequence": {"max_speed_mps": 25.0}}, stats={"sequence": {"frames": 40}})


@pytest.fixture
def map_dir(tmp_path):
    feats = np.random.default_rng(0).standard_normal((6, 4, 2, 2)).astype(np.float32)
    build_map(token_frames(6), TableEncoder(feats), None, tmp_path / "map", "ref", settings_for_mode("exact"),
              progress=False, source="test")
    return tmp_path / "map"


def test_round_trip_through_the_map(map_dir):
    assert LocalizationMap.load(map_dir).calibration is None  # optional: a map without one loads
    path = write_calibration(map_dir, CAL)
    manifest = read_manifest(map_dir)
    assert manifest["files"][CALIBRATION_JSON]["sha256"] == sha256_file(path)
    got = LocalizationMap.load(map_dir).calibration
    assert got.to_dict() == CAL.to_dict()
    assert got.modes["sequence"].apply(2.0) == pytest.approx(0.95)
    assert got.modes["single"].apply(0.5) == pytest.approx(0.5)  # 1 / (1 + exp(-(2 * 0.5 - 1)))
    assert got.min_confidence == {"sequence": 0.95, "single": None}
    assert got.observation == CAL.observation and "isotonic on support, 40 frames" in got.describe("sequence")
    assert "none for mode window" in got.describe("window")
    assert check_files(map_dir, manifest, verify=True) == []  # every listed file hashed, the calibration too
    # refitting replaces it; removing it leaves the map as it was built
    write_calibration(map_dir, MapCalibration(modes={"window": CAL.modes["sequence"]}, min_confidence={}))
    assert set(LocalizationMap.load(map_dir).calibration.modes) == {"window"}
    assert remove_calibration(map_dir) and not (map_dir / CALIBRATION_JSON).exists()
    assert LocalizationMap.load(map_dir).calibration is None and remove_calibration(map_dir) is False


def test_unlisted_calibration_is_ignored(map_dir):
    """The first write step (file written, manifest not yet updated) leaves a map that loads without it."""
    (map_dir / CALIBRATION_JSON).write_text(CAL.to_json())
    assert LocalizationMap.load(map_dir).calibration is None


def _refused(map_dir) -> str:
    with pytest.raises(MapError) as err:
        LocalizationMap.load(map_dir)
    text = str(err.value)
    assert "\n" not in text and CALIBRATION_JSON in text
    return text


def test_corrupt_calibration_is_refused_in_one_line(map_dir):
    write_calibration(map_dir, CAL)
    path = map_dir / CALIBRATION_JSON
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01  # same size, other bytes: the manifest's sha256 no longer matches
    path.write_bytes(bytes(data))
    assert "checksum mismatch" in _refused(map_dir)


def _rewrite(map_dir, text: str) -> None:
    """Replace calibration.json and list it with a matching hash: only the content check can refuse it."""
    path = map_dir / CALIBRATION_JSON
    path.write_text(text)
    manifest = json.loads((map_dir / MANIFEST).read_text())
    manifest["files"][CALIBRATION_JSON] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    (map_dir / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(version=2), "version 2"),
    (lambda d: d.update(modes={"best": d["modes"]["sequence"]}), "field modes"),
    (lambda d: d["modes"]["sequence"].update(x=[1.5, 0.0]), "increasing step function"),
    (lambda d: d["modes"]["sequence"].update(y=[0.2, 1.5]), "increasing step function"),
    (lambda d: d.update(min_confidence={"sequence": 2.0}), "field min_confidence"),
    (lambda d: d.update(tolerance=[5.0]), "field tolerance"),
    (lambda d: d["observation"].update(version=9), "observation model version"),
])
def test_invalid_calibration_content_is_refused(map_dir, edit, words):
    write_calibration(map_dir, CAL)
    d = json.loads(CAL.to_json())
    edit(d)
    _rewrite(map_dir, json.dumps(d))
    assert words in _refused(map_dir)


def test_not_json_is_refused(map_dir):
    write_calibration(map_dir, CAL)
    _rewrite(map_dir, "{not json")
    assert "is not a valid calibration" in _refused(map_dir)
    with pytest.raises(MapError):
        read_calibration(map_dir, read_manifest(map_dir))


def test_only_calibration_json_is_optional(map_dir):
    manifest = json.loads((map_dir / MANIFEST).read_text())
    manifest["files"]["extra.json"] = manifest["files"]["names.txt"]
    (map_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(MapError, match="field files lists"):  # only calibration.json is optional
        LocalizationMap.load(map_dir)


def test_calibrate_cli_errors_are_one_line(map_dir, tmp_path, capsys):
    cases = [
        (["--map", str(map_dir), "--dataset", str(tmp_path)], "needs --conditions"),
        (["--map", str(map_dir)], "--dataset ROOT --conditions A,B or as --bag"),
        (["--map", str(tmp_path / "nope"), "--remove"], "no such map folder"),
        (["--map", str(map_dir), "--dataset", str(tmp_path), "--conditions", "a", "--precision", "1.5"],
         "--precision 1.5"),
    ]
    for argv, words in cases:
        assert calibrate_cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and words in err, err
    shutil.rmtree(map_dir)


def test_calibrate_refuses_a_domain_the_model_lacks_in_one_line(tiny_eval_world, tmp_path, capsys):
    """As disam-eval --domain: the selector refuses it before any drive runs, and the map keeps no calibration."""
    out = tmp_path / "map"
    shutil.copytree(tiny_eval_world["map"], out)
    argv = ["--map", str(out), "--dataset", str(tiny_eval_world["world"]), "--conditions", "snow", "--domain",
            "fog", "--quiet"]
    assert calibrate_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "domain 'fog' is not a model domain: use one of ['sunny', 'night', 'snow']" in err
    assert not (out / CALIBRATION_JSON).exists()


def test_calibrate_with_a_forced_domain_records_it(tiny_eval_world, tmp_path, monkeypatch, one_thread):
    """--domain night: every frame is encoded as night (the selector's answer whatever the stamp or weather),
    and the calibration says so in config and source."""
    out = tmp_path / "map"
    shutil.copytree(tiny_eval_world["map"], out)
    seen, real = [], calibrate_cli.calibrate

    def spy(reloc, *args, **kwargs):
        seen.append({reloc.selector.select(s).domain for s in (0.0, 43200.0, 1.7e9)})
        return real(reloc, *args, **kwargs)

    monkeypatch.setattr(calibrate_cli, "calibrate", spy)
    argv = ["--map", str(out), "--dataset", str(tiny_eval_world["world"]), "--conditions", "snow,sunny_repeat",
            "--modes", "single", "--weather", "snow", "--domain", "night", "--quiet"]
    assert calibrate_cli.main(argv) == 0
    assert seen == [{"night"}]
    cal = LocalizationMap.load(out).calibration
    assert cal.config["domain"] == "night" and cal.source.endswith("; encoder domain forced to night")
