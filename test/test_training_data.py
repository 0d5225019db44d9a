"""Unpaired dataset, layouts, place split, keyed sampling across ranks, and the data errors."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_training_utils import make_world, micro_recipe

from disam_ros.training.datasets import PairBatchSampler, PairKey, UnpairedDataset, build_data
from disam_ros.training.layouts import detect_layout, discover


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world") / "root")


def _dataset(world: Path, *overrides: str) -> UnpairedDataset:
    r = micro_recipe("coarse", *overrides)
    data = build_data(r, world)
    return UnpairedDataset(data.train, 32, r.data.load_ratio, True, r.seed, r.schedule.num_negatives)


def test_samples_are_augmented_pairs_with_flip_negatives_and_k_candidates(world):
    ds = _dataset(world, "data.train_fraction=1.0")
    assert ds.load == 36  # 32 * 286 / 256, the paper's resize-then-crop ratio
    s = ds[PairKey(epoch=0, n=3, dom_i=0, dom_j=2, hard=True)]
    assert s["x_i"].shape == s["x_j"].shape == (3, 32, 32)
    assert s["x_i"].min() >= -1 and s["x_i"].max() <= 1
    assert s["neg_j"].shape == (3, 3, 32, 32) and s["neg_i"].shape == (3, 3, 32, 32)  # K = 3
    assert torch.equal(s["neg_j"][0], s["x_j"].flip(-1)) and torch.equal(s["neg_i"][0], s["x_i"].flip(-1))
    again = ds[PairKey(0, 3, 0, 2, True)]  # keyed randomness: same key, same sample
    assert all(torch.equal(s[k], again[k]) for k in s)
    other = ds[PairKey(1, 3, 0, 2, False)]
    assert "neg_j" not in other and not torch.equal(other["x_i"], s["x_i"])


def test_flip_state_of_negatives_is_opposite_to_the_anchor(world):
    ds = _dataset(world, "data.train_fraction=1.0", "num_negatives=2")
    ds.load = ds.size  # no crop: a flipped copy of an image can then be recognised exactly
    for n in range(8):
        s = ds[PairKey(0, n, 0, 1, True)]
        rng = np.random.default_rng([ds.seed, 0, n, 0, 1])
        flipped = bool(rng.random() < 0.5)
        ia = n % len(ds.domains[0])
        plain = ds.image(0, ia, np.random.default_rng(0), False)
        assert torch.equal(s["x_i"], plain.flip(-1) if flipped else plain)
        partner = [ds.image(1, k, np.random.default_rng(0), False) for k in range(len(ds.domains[1]))]
        for neg in s["neg_j"][1:]:  # random images of domain j, in the flip state opposite to x_i
            assert any(torch.equal(neg, c if flipped else c.flip(-1)) for c in partner)


def test_sampler_shares_the_domain_pair_across_ranks_and_splits_the_images():
    kw = dict(epoch_len=12, n_domains=4, batch_size=2, seed=3, start_step=0, total_steps=9, hard_from_step=99)
    r0, r1 = list(PairBatchSampler(rank=0, world=2, **kw)), list(PairBatchSampler(rank=1, world=2, **kw))
    for b0, b1 in zip(r0, r1):
        assert {(k.dom_i, k.dom_j) for k in b0 + b1} == {(b0[0].dom_i, b0[0].dom_j)}
        assert b0[0].dom_i != b0[0].dom_j
        assert not {k.n for k in b0} & {k.n for k in b1}
    resumed = list(PairBatchSampler(rank=1, world=2, **{**kw, "start_step": 4}))
    assert resumed == r1[4:]


def test_place_split_holds_out_the_same_stretch_of_road_in_every_condition(world):
    # 12 places 3 m apart; micro split: train [0, 4) | gap 1 | val [5, 8) | gap 1 | test [9, 12) (in places)
    data = build_data(micro_recipe("coarse"), world)
    assert data.reference == "sunny" and data.names == ("night", "snow", "sunny")
    for train, val, test in zip(data.train, data.val, data.test):
        assert train.positions[:, 0].tolist() == [0.0, 3.0, 6.0, 9.0]
        assert val.positions[:, 0].tolist() == [15.0, 18.0, 21.0]
        assert test.positions[:, 0].tolist() == [27.0, 30.0, 33.0]
    night = data.report["conditions"]["night"]
    assert night["in_gaps"] == 2 and night["train"] == {"kept": 4, "dark": 0}
    assert data.report["split"] == "train [0, 4) | val [5, 8) | test [9, 12) of 12 frames"


def test_layouts_flat_cmu_and_robotcar(tmp_path, world):
    flat = tmp_path / "flat"
    for c in ("summer", "winter"):
        shutil.copytree(world / "sunny" / "images", flat / c)
    assert detect_layout(flat) == "flat"
    doms = discover(flat)
    assert [d.name for d in doms] == ["summer", "winter"] and doms[1].positions[4, 0] == 4  # same name, same place
    cmu = tmp_path / "cmu"
    for c in ("train00", "train01"):
        shutil.copytree(world / "night" / "images", cmu / c)
    assert detect_layout(cmu) == "cmu_seasons" and discover(cmu)[0].positions is None
    rc = tmp_path / "rc"
    for c in ("overcast-reference", "night-rain"):
        shutil.copytree(world / "snow" / "images", rc / "images" / c / "rear")
    assert detect_layout(rc) == "robotcar_seasons"
    assert [d.name for d in discover(rc)] == ["night-rain", "overcast-reference"]


def test_empty_domain_folder_is_a_clear_error(tmp_path, world):
    root = tmp_path / "w"
    shutil.copytree(world, root)
    for p in (root / "night" / "images").iterdir():
        p.unlink()
    (root / "night" / "poses.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"no images .* in condition 'night'") as err:
        build_data(micro_recipe("coarse"), root)
    assert "\n" not in str(err.value)


def test_unreadable_image_is_a_clear_error_naming_the_file(tmp_path, world):
    root = tmp_path / "w"
    shutil.copytree(world, root)
    bad = root / "snow" / "images" / "000004.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"000004\.png: unreadable image .*re-export it") as err:
        build_data(micro_recipe("coarse"), root)
    assert "\n" not in str(err.value)


def test_missing_recipe_domain_and_dark_frames(tmp_path, world):
    with pytest.raises(FileNotFoundError, match=r"\['fog'\] not found"):
        build_data(micro_recipe("coarse", "data.domains=[sunny,fog]"), world)
    root = tmp_path / "w"
    shutil.copytree(world, root)
    cv2.imwrite(str(root / "night" / "images" / "000002.png"), np.zeros((30, 40, 3), np.uint8))
    data = build_data(micro_recipe("coarse", "data.min_brightness=10", "data.train_fraction=1.0",
                                   "data.val_fraction=0"), root)
    night = data.train[data.names.index("night")]
    assert len(night) == 11 and "000002.png" not in {p.name for p in night.paths}
    assert data.report["conditions"]["night"]["train"] == {"kept": 11, "dark": 1}


@pytest.mark.parametrize("layout", ["auto", "folders", "flat"])
def test_missing_root_is_one_clear_error_in_every_layout(tmp_path, layout):
    from disam_ros.training.layouts import discover

    with pytest.raises(FileNotFoundError, match=r"missing: dataset root not found: pass --data"):
        discover(tmp_path / "missing", layout=layout)
