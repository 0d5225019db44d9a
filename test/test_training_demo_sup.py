"""The demo_sup recipes on a world whose drives do not share frame indices (as the synthetic world's drives).

The synthetic world's query drives run at other speeds and beside the reference lane, so "same place" cannot mean
"same file index": the positive must be the partner drive's nearest pose, and every candidate must lie farther
than `supervised.pos_radius` (the benchmark's 5 m). Expected indices and distances are computed here by hand from
the poses written below, not by the dataset code.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_training_utils import make_world
from torch.utils.data import default_collate

from disam_ros.data.tum import make_trajectory, write_tum
from disam_ros.training.config import load_recipe
from disam_ros.training.datasets import PairKey, UnpairedDataset
from disam_ros.training.layouts import discover
from disam_ros.training.trainer import Trainer

PLACES = 24
LATERAL = 0.8  # metres beside the reference lane


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """sunny at x = 3 m per frame; night drives 2 m per frame, 0.8 m to the side (other speed, other lane)."""
    root = make_world(tmp_path_factory.mktemp("offset") / "root", ("sunny", "night"), places=PLACES, size=(32, 32))
    pos = np.stack([np.arange(PLACES) * 2.0, np.full(PLACES, LATERAL), np.full(PLACES, 1.5)], 1)
    write_tum(root / "night" / "poses.txt",
              make_trajectory(np.arange(PLACES, dtype=float), pos, np.tile([0.0, 0.0, 0.0, 1.0], (PLACES, 1))))
    return root


def _micro(*overrides: str):
    return load_recipe("demo_sup", ["model.preset=micro", "data.domains=[sunny,night]", "batch_size=2", "steps=6",
                                    "progress=false", "threads=1", "num_candidates=4", "mined=3",
                                    "data.train_fraction=0.75", "data.val_fraction=0.25", "data.gap=1",
                                    *overrides])


def _file_pixels(path: Path) -> torch.Tensor:
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)


def test_demo_sup_positive_is_the_nearest_pose_of_the_partner_drive(world):
    r = _micro()
    domains = {d.name: d for d in discover(world)}
    sunny, night = domains["sunny"], domains["night"]
    ds = UnpairedDataset((sunny, night), 32, r.data.load_ratio, flip=False, seed=0, num_negatives=3,
                         supervised=r.supervised)
    for ia in (0, 1, 2, 7, 11):
        # night frame ia at x = 2 ia: the nearest sunny frame is round(2 ia / 3) (no ties: 2 ia mod 3 is 0, 1 or 2)
        q = round(2 * ia / 3)
        expected = np.hypot(3.0 * q - 2.0 * ia, LATERAL)
        s = ds[PairKey(0, ia, 1, 0, False)]
        assert torch.allclose(s["sup_pos"], _file_pixels(sunny.paths[q]), atol=1e-6)
        assert float(s["sup_pos_dist"]) == pytest.approx(expected, abs=1e-5)
        assert s["sup_cand"].shape == (4, 3, 32, 32)
        assert (s["sup_cand_dist"] > r.supervised.pos_radius).all()
        # every candidate is one of sunny's images, at the distance its pose says
        for img, d in zip(s["sup_cand"], s["sup_cand_dist"]):
            match = [k for k in range(PLACES) if torch.equal(img, _file_pixels(sunny.paths[k]))]
            assert match and float(d) == pytest.approx(np.hypot(3.0 * match[0] - 2.0 * ia, LATERAL), abs=1e-5)


def test_demo_sup_half_the_candidates_come_from_the_mined_table(world):
    r = _micro()
    domains = {d.name: d for d in discover(world)}
    ds = UnpairedDataset((domains["sunny"], domains["night"]), 32, 1.0, flip=False, seed=0, num_negatives=3,
                         supervised=r.supervised)
    mined = np.full((PLACES, 3), -1, np.int64)
    mined[5] = [20, 21, 22]  # sunny frames at 60-66 m, far from night frame 5 (x = 10 m)
    ds.hard = {(1, 0): mined}
    s = ds[PairKey(0, 5, 1, 0, False)]
    dists = sorted(round(float(d), 4) for d in s["sup_cand_dist"])
    far_mined = {round(float(np.hypot(3.0 * k - 10.0, LATERAL)), 4) for k in (20, 21, 22)}
    assert sum(d in far_mined for d in dists) >= 2  # num_candidates // 2 from the table


def test_in_batch_items_bring_the_positive_and_a_mined_place_seen_in_both_conditions(world):
    r = _micro("supervised.in_batch=true")
    domains = {d.name: d for d in discover(world)}
    sunny, night = domains["sunny"], domains["night"]
    ds = UnpairedDataset((sunny, night), 32, 1.0, flip=False, seed=0, num_negatives=3, supervised=r.supervised)
    # before any mining: the other place is any sunny frame farther than pos_radius from night frame 5 (x = 10 m)
    s = ds[PairKey(0, 5, 1, 0, False)]
    assert "sup_cand" not in s and s["sup_xy"].shape == (4, 3)
    assert s["sup_xy"][1].tolist() == pytest.approx([9.0, 0.0, 1.5])  # sunny frame 3 (x = 9) is nearest to x = 10
    assert torch.allclose(s["sup_pos"], _file_pixels(sunny.paths[3]), atol=1e-6)
    assert float(np.linalg.norm(s["sup_xy"][3] - s["sup_xy"][0])) > r.supervised.pos_radius
    # with a mined table: the other place is one of the anchor's mined frames, and its night view is the night
    # frame nearest to it (sunny 20 at x = 60 m -> night 30 would be past the end: night 23 at x = 46 m)
    mined = np.full((PLACES, 3), -1, np.int64)
    mined[5] = [20, -1, -1]
    ds.hard = {(1, 0): mined}
    s = ds[PairKey(0, 5, 1, 0, False)]
    assert s["sup_xy"][3].tolist() == pytest.approx([60.0, 0.0, 1.5])
    assert torch.allclose(s["sup_hard_j"], _file_pixels(sunny.paths[20]), atol=1e-6)
    assert s["sup_xy"][2].tolist() == pytest.approx([46.0, LATERAL, 1.5])
    assert torch.allclose(s["sup_hard_i"], _file_pixels(night.paths[23]), atol=1e-6)


def test_in_batch_step_moves_only_the_two_encoders(world, tmp_path):
    t = Trainer(_micro("supervised.in_batch=true", "lr=0.001", "lr_decay_start=1.0"), world, tmp_path / "run")
    batch = default_collate([t.dataset[PairKey(0, n, 1, 0, False)] for n in range(2)])
    assert batch["sup_hard_j"].shape == (2, 3, 32, 32)
    params = {k: v.clone() for k, v in t.net.state_dict().items()}
    stats = t.train_step(batch)
    assert stats["sup"] > 0 and stats["total"] == pytest.approx(stats["sup"])
    changed = {".".join(k.split(".")[:2]) for k, v in t.net.state_dict().items() if not torch.equal(v, params[k])}
    assert changed == {"encoders.sunny", "encoders.night"}


def test_in_batch_needs_the_soft_contrastive_loss():
    with pytest.raises(ValueError, match="supervised.in_batch needs supervised.kind=soft_contrastive"):
        _micro("supervised.in_batch=true", "supervised.kind=geo_local")


def test_demo_sup_steps_move_only_the_two_encoders(world, tmp_path):
    """No GAN, no cycle: a demo_sup step is the supervised term alone, so it must move the anchor's and the
    partner's encoders and nothing else (no decoder, no discriminator, no third domain)."""
    t = Trainer(_micro("data.domains=[sunny,night,snow]", "lr=0.001", "lr_decay_start=1.0"), world_with_snow(world),
                tmp_path / "run")
    batch = default_collate([t.dataset[PairKey(0, n, 1, 0, False)] for n in range(2)])
    assert "sup_pos" in batch and "neg_j" not in batch
    params = {k: v.clone() for k, v in t.net.state_dict().items()}
    stats = t.train_step(batch)
    assert stats["sup"] > 0 and stats["total"] == pytest.approx(stats["sup"])
    changed = {".".join(k.split(".")[:2]) for k, v in t.net.state_dict().items() if not torch.equal(v, params[k])}
    assert changed == {"encoders.sunny", "encoders.night"}


def world_with_snow(world: Path) -> Path:
    """The offset world plus a snow drive on the reference poses (a third domain that the step must not touch)."""
    if not (world / "snow").exists():
        make_world(world.parent / "snow_src", ("snow",), places=PLACES, size=(32, 32))
        (world.parent / "snow_src" / "snow").rename(world / "snow")
    return world
