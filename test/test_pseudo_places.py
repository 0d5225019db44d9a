"""Pseudo places for conditions without poses (pseudo_places.py): a hand-worked match table, and the trainer
using them (places replaced, saved, restored on resume)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_training_utils import make_world, micro_recipe

from disam_ros.training.layouts import DomainImages
from disam_ros.training.pseudo_places import consistent_matches, pseudo_places, relabel
from disam_ros.training.trainer import Trainer

# 5 queries x 5 reference images at places 0..4. Nearest: q0 -> r0, q1 -> r1, q2 -> r4, q3 -> r3, q4 -> r3.
# Back (each reference image's nearest query): r0 -> q0, r1 -> q1, r2 -> q0 (ties: first), r3 -> q4, r4 -> q2,
# so q3 is not mutual. Matched places 0, 1, 4, 3, 3; medians over one frame either side: 0.5, 1, 3, 3, 3.
SIM = torch.tensor([[0.9, 0.1, 0.1, 0.1, 0.1],
                    [0.1, 0.9, 0.1, 0.1, 0.1],
                    [0.1, 0.1, 0.1, 0.1, 0.9],
                    [0.1, 0.1, 0.1, 0.5, 0.1],
                    [0.1, 0.1, 0.1, 0.8, 0.2]])
REF = np.arange(5, dtype=float)[:, None]


def test_a_match_is_kept_when_mutual_and_near_the_median_of_its_neighbours():
    # q2 is mutual but 1 away from its neighbourhood's median: kept at tolerance 1.5, dropped at 0.5
    assert consistent_matches(SIM, REF, window=1, tolerance=0.5).tolist() == [True, True, False, False, True]
    assert consistent_matches(SIM, REF, window=1, tolerance=1.5).tolist() == [True, True, True, False, True]
    got = pseudo_places(SIM, REF, window=1, tolerance=0.5)
    assert got.kept.tolist() == [0, 1, 4] and got.matched.tolist() == [0, 1, 3]
    assert got.positions[:, 0].tolist() == [0.0, 1.0, 3.0]


def test_relabel_keeps_the_matched_images_with_their_new_places_and_scores_them_only_in_the_report():
    dom = DomainImages("night", tuple(Path(f"{i}.png") for i in range(5)), np.arange(5, dtype=float)[:, None] + 0.4)
    out, rep = relabel(dom, pseudo_places(SIM, REF, window=1, tolerance=0.5), true_radius=0.5)
    assert [p.name for p in out.paths] == ["0.png", "1.png", "4.png"]
    assert out.positions[:, 0].tolist() == [0.0, 1.0, 3.0]  # the matched places, not the condition's own
    # own places 0.4, 1.4, 4.4 against 0, 1, 3: two of three within 0.5
    assert rep == {"images": 5, "kept": 3, "right": pytest.approx(2 / 3)}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world") / "root", ("sunny", "snow", "overcast"), places=24)


def test_trainer_gives_every_other_condition_the_reference_places_of_its_matches(world, tmp_path):
    r = micro_recipe("soft_contrastive", "steps=4", "supervised.pseudo=true", "pseudo_window=1",
                     "pseudo_tolerance=100", "mine_every=2", "mined=2", "ramp_keys=[]")
    first = Trainer(r, world, tmp_path / "run")
    ref = first.data.names.index("sunny")
    assert set(first.pseudo) == {"snow", "overcast"}
    for k, name in enumerate(first.data.names):
        if k == ref:
            continue
        labels = first.pseudo[name]
        assert len(first.data.train[k]) == len(labels.kept) >= 2
        np.testing.assert_array_equal(first.data.train[k].positions, first.data.train[ref].positions[labels.matched])
        assert first.data.report["pseudo"][name]["kept"] == len(labels.kept)
    first.fit(until=2)
    saved = {k: (v.kept.tolist(), v.matched.tolist()) for k, v in first.pseudo.items()}
    # resumed weights are no longer the start: the places must come from the saved state, not a new matching
    resumed = Trainer(r, world, tmp_path / "run", resume=True)
    assert {k: (v.kept.tolist(), v.matched.tolist()) for k, v in resumed.pseudo.items()} == saved
    resumed.fit()
    assert resumed.step == 4 and torch.isfinite(torch.tensor(resumed.last_val.get("mean", 0.0)))


def test_pseudo_needs_a_kept_image_budget():
    with pytest.raises(ValueError, match="supervised.pseudo_window"):
        micro_recipe("soft_contrastive", "supervised.pseudo=true", "pseudo_window=0")
