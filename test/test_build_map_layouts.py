"""`disam-build-map` accepts the dataset layouts training accepts: flat condition folders (ROOT/<condition>/*.png,
same name = same place) and folders without poses, placing image i at (i, 0, 0) m and saying so."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch

from disam_ros.data.tum import make_trajectory, write_tum
from disam_ros.maps import LocalizationMap
from disam_ros.maps import map_info as map_info_cli
from disam_ros.maps.build_map import main as build_map_main
from disam_ros.model import DisamNet, Encoder, ModelConfig, save_checkpoint
from disam_ros.retrieval import Localizer, SearchConfig

N = 5
NAMES = ["images-00010.png", "images-00002.png", "images-00007.png", "images-00001.png", "images-00005.png"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig(domains=("summer", "winter"), image_size=16, ngf=4, n_blocks=1, ndf=4, disc_layers=1)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "coarse.pt", DisamNet(cfg), cfg)


def _write_images(folder, names, seed=0):
    """Smooth random scenes written with cv2 (written in the given, unsorted order)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in names:
        low = rng.integers(0, 255, size=(4, 4, 3)).astype(np.uint8)
        assert cv2.imwrite(str(folder / name), cv2.resize(low, (24, 24), interpolation=cv2.INTER_CUBIC))


def _build(root, ckpt, out, *extra):
    return build_map_main(["--dataset", str(root), "--condition", "summer", "--coarse", str(ckpt),
                           "--out", str(out), "--quiet", "--device", "cpu", *extra])


def test_flat_folder_without_poses_builds_an_index_map(ckpt, tmp_path, caplog, capsys):
    _write_images(tmp_path / "data" / "summer", NAMES)
    _write_images(tmp_path / "data" / "winter", NAMES, seed=1)  # another condition beside it, as training has
    with caplog.at_level(logging.WARNING):
        assert _build(tmp_path / "data", ckpt, tmp_path / "map") == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no poses.txt" in w and "(i, 0, 0)" in w and "summer" in w for w in warnings), warnings
    m = LocalizationMap.load(tmp_path / "map")
    assert m.names == sorted(NAMES)
    np.testing.assert_array_equal(m.positions, [[i, 0, 0] for i in range(N)])
    np.testing.assert_array_equal(m.quats, np.tile([0.0, 0.0, 0.0, 1.0], (N, 1)))
    assert m.manifest["poses_source"] == "index"
    assert m.manifest["build"]["dataset"]["layout"] == "flat"
    capsys.readouterr()
    assert map_info_cli.main([str(tmp_path / "map"), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "poses          index" in out and "(i, 0, 0) m" in out
    enc = Encoder.from_checkpoint(ckpt, device="cpu")
    loc = Localizer(m, enc, None, SearchConfig(device="cpu"))
    for i, name in enumerate(sorted(NAMES)):  # each map image finds itself: images and places line up
        img = cv2.imread(str(tmp_path / "data" / "summer" / name))[:, :, ::-1]
        assert loc.localize(np.ascontiguousarray(img), "summer").index == i


def test_flat_folder_with_poses_uses_them(ckpt, tmp_path, caplog):
    cdir = tmp_path / "data" / "summer"
    _write_images(cdir, NAMES)
    pos = np.stack([np.arange(N) * 3.0, np.full(N, 2.0), np.zeros(N)], 1)
    quats = np.tile([0.0, 0.0, np.sin(0.25), np.cos(0.25)], (N, 1))
    write_tum(cdir / "poses.txt", make_trajectory(np.arange(N) + 50.0, pos, quats))
    with caplog.at_level(logging.WARNING):
        assert _build(tmp_path / "data", ckpt, tmp_path / "map") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "poses" in r.getMessage()]
    m = LocalizationMap.load(tmp_path / "map")
    np.testing.assert_allclose(m.positions, pos, atol=1e-6)  # k-th sorted name <-> k-th pose line
    np.testing.assert_allclose(m.stamps, np.arange(N) + 50.0)
    assert m.manifest["poses_source"] == "poses.txt" and m.spacing_m == pytest.approx(3.0)


def test_folders_layout_without_poses_is_accepted(ckpt, tmp_path):
    _write_images(tmp_path / "data" / "summer" / "images", NAMES[:3])
    assert _build(tmp_path / "data", ckpt, tmp_path / "map") == 0
    m = LocalizationMap.load(tmp_path / "map")
    assert m.manifest["poses_source"] == "index" and m.manifest["build"]["dataset"]["layout"] == "folders"
    np.testing.assert_array_equal(m.positions[:, 0], [0, 1, 2])


@pytest.mark.parametrize("case", ["wrong pose count", "no images", "no condition"])
def test_bad_folders_are_one_line_errors(ckpt, tmp_path, capsys, case):
    cdir = tmp_path / "data" / "summer"
    if case == "wrong pose count":
        _write_images(cdir, NAMES)
        two = make_trajectory(np.arange(2.0), np.zeros((2, 3)), np.tile([0, 0, 0, 1.0], (2, 1)))
        write_tum(cdir / "poses.txt", two)
    elif case == "no images":
        cdir.mkdir(parents=True)
        (cdir / "notes.txt").write_text("nothing here")
    else:
        (tmp_path / "data" / "winter").mkdir(parents=True)
    assert _build(tmp_path / "data", ckpt, tmp_path / "map") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "summer" in err, err
    assert not (tmp_path / "map").exists()
