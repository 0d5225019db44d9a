"""A map built straight from a bag of the reference drive equals the map built from its dataset folder."""
from __future__ import annotations

import shutil

import numpy as np

from disam_ros.data.bags import BagWriteOptions, write_folder_bag
from disam_ros.maps import LocalizationMap
from disam_ros.maps.build_map import main as build_map_main


def test_map_from_bag_equals_map_from_folder(tiny_eval_world, tmp_path, capsys):
    w = tiny_eval_world
    bag = tmp_path / "sunny_bag"
    write_folder_bag(w["world"], "sunny", bag, BagWriteOptions(compression="png", storage="mcap"))
    rc = build_map_main(["--bag", str(bag), "--domain", "sunny", "--coarse", str(w["coarse"]), "--fine",
                         str(w["fine"]), "--out", str(tmp_path / "map"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    from_bag, from_folder = LocalizationMap.load(tmp_path / "map"), LocalizationMap.load(w["map"])
    assert len(from_bag) == len(from_folder) == 10
    np.testing.assert_allclose(from_bag.positions, from_folder.positions, atol=1e-6)
    np.testing.assert_allclose(from_bag.quats, from_folder.quats, atol=1e-6)
    np.testing.assert_allclose(from_bag.stamps, from_folder.stamps, atol=1e-6)
    for i in (0, 5, 9):  # png is lossless: identical images, identical features
        np.testing.assert_array_equal(from_bag.fine_feature(i), from_folder.fine_feature(i))
    assert from_bag.names[0].endswith(".png") and len(from_bag.names[0]) == 24  # stamp in ns, 20 digits


def test_map_from_bag_without_poses_is_one_line(tiny_eval_world, tmp_path, capsys):
    w = tiny_eval_world
    root = tmp_path / "root"  # a drive recorded without ground truth: images only
    shutil.copytree(w["world"] / "sunny" / "images", root / "sunny" / "images")
    bag = tmp_path / "noposes"
    write_folder_bag(root, "sunny", bag)
    rc = build_map_main(["--bag", str(bag), "--domain", "sunny", "--coarse", str(w["coarse"]), "--out",
                         str(tmp_path / "map"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "pose" in err
    assert not (tmp_path / "map").exists()
