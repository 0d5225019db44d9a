"""Pseudo places for conditions without poses (pseudo_places.py): a hand-worked match table, and the trainer
using them (places replaced, saved, restored on resume)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_training_utils import make_world, micro_recipe

from disam_ros.training.layouts import DomainImages, discover
from disam_ros.training.pseudo_places import consistent_matches, pseudo_places, relabel, route_matches, window_scores
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


# Route windows, worked by hand on a 4 x 4 score table, window 1 (two frames), speed 1:
Z = np.array([[1.0, 0.0, 2.0, 0.0],
              [0.0, 3.0, 0.0, 1.0],
              [4.0, 0.0, 1.0, 0.0],
              [0.0, 2.0, 0.0, 5.0]])


def test_window_scores_average_a_straight_path_forwards_or_backwards():
    ahead = window_scores(Z, window=1, speeds=(1.0,), direction=1)
    # (0, 0): mean(z00, z11) = 2; (1, 2): mean(z12, z23) = 0; last row / column: only the cell itself is inside
    assert ahead[0, 0] == 2.0 and ahead[1, 2] == 0.0 and ahead[2, 2] == 3.0
    assert ahead[3, 1] == 2.0 and ahead[0, 3] == 0.0
    back = window_scores(Z, window=1, speeds=(1.0,), direction=-1)
    assert back[3, 3] == 3.0 and back[2, 1] == 0.0 and back[0, 2] == 2.0 and back[1, 1] == 2.0
    # speed 2 advances two reference frames per query frame; the better speed wins:
    # (0, 0): speed 1 mean(z00, z11) = 2, speed 2 mean(z00, z12) = 0.5; (0, 1): speed 1 mean(z01, z12) = 0,
    # speed 2 mean(z01, z13) = 0.5
    both = window_scores(Z, window=1, speeds=(1.0, 2.0), direction=1)
    assert both[0, 0] == 2.0 and both[0, 1] == 0.5
    # a window of 3 frames needs 2 inside: the last query row has only itself
    assert np.isneginf(window_scores(Z, window=2, speeds=(1.0,), direction=1)[3]).all()


def _noisy_route(n=120, offset=10, signal=2.0, seed=0) -> torch.Tensor:
    """Query i shows reference place i + offset under noise strong enough that a single frame is mostly wrong; the
    last 30 queries are somewhere the map never went."""
    rng = np.random.default_rng(seed)
    sim = rng.normal(0.0, 1.0, (n, n + offset))
    sim[np.arange(n - 30), np.arange(n - 30) + offset] += signal
    return torch.from_numpy(sim)


def test_route_matches_recover_a_route_that_single_frames_miss_and_drop_what_is_off_the_map():
    sim, ref = _noisy_route(), np.arange(130, dtype=float)[:, None]
    truth = np.arange(90) + 10
    assert np.mean(sim[:90].argmax(1).numpy() == truth) < 0.4  # single frames: mostly wrong
    keep, matched = route_matches(sim, ref, window=8, tolerance=2.0)
    on_route = keep[:90]
    assert on_route.mean() > 0.8
    assert np.all(np.abs(matched[:90][on_route] - truth[on_route]) <= 2)
    assert keep[95:].mean() < 0.2  # off the map: the two windows rarely agree
    got = pseudo_places(sim, ref, window=8, tolerance=2.0, match="route")
    assert got.kept.tolist() == np.flatnonzero(keep).tolist() and got.matched.tolist() == matched[keep].tolist()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world") / "root", ("sunny", "snow", "overcast"), places=24)


@pytest.mark.parametrize("match", ["mutual", "route"])
def test_trainer_gives_every_other_condition_the_reference_places_of_its_matches(world, tmp_path, match):
    r = micro_recipe("soft_contrastive", "steps=4", "supervised.pseudo=true", "pseudo_window=1",
                     "pseudo_tolerance=100", "mine_every=2", "mined=2", "ramp_keys=[]", f"pseudo_match={match}")
    first = Trainer(r, world, tmp_path / "run")
    if match == "route":  # two windows always agree within 100 places: every image is kept
        assert all(rep["kept"] == rep["images"] for rep in first.data.report["pseudo"].values())
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



def test_pseudo_val_relabels_the_validation_segment_from_the_start_and_resume_keeps_it(world, tmp_path):
    r = micro_recipe("soft_contrastive", "steps=4", "supervised.pseudo=true", "pseudo_window=1", "pseudo_tolerance=100",
                     "supervised.pseudo_val=true", "pseudo_val_window=1", "pseudo_val_tolerance=100", "ramp_keys=[]",
                     "val_every=2")
    first = Trainer(r, world, tmp_path / "run")
    ref = first.data.names.index("sunny")
    assert set(first.pseudo_val) == {"snow", "overcast"}
    # validation is matched by route windows whatever pseudo_match says: within 100 places they keep every image
    assert all(rep["kept"] == rep["images"] for rep in first.data.report["pseudo_val"].values())
    for k, name in enumerate(first.data.names):
        if k != ref:  # validation now scores against the matched reference places, not the condition's own
            np.testing.assert_array_equal(first.data.val[k].positions,
                                          first.data.val[ref].positions[first.pseudo_val[name].matched])
            assert first.data.report["pseudo_val"][name]["kept"] == len(first.data.val[k])
    first.fit(until=2)
    saved = {k: v.matched.tolist() for k, v in first.pseudo_val.items()}
    resumed = Trainer(r, world, tmp_path / "run", resume=True)
    assert {k: v.matched.tolist() for k, v in resumed.pseudo_val.items()} == saved


def test_pseudo_val_needs_pseudo_places_and_a_single_start():
    with pytest.raises(ValueError, match="supervised.pseudo_val"):
        micro_recipe("soft_contrastive", "supervised.pseudo_val=true")
    with pytest.raises(ValueError, match="start_candidates=1"):
        micro_recipe("soft_contrastive", "supervised.pseudo=true", "supervised.pseudo_val=true",
                     "model.start_candidates=2")


def test_a_query_drive_without_poses_trains_and_validates_on_pseudo_places_alone(tmp_path):
    """The user's case: a mapped reference drive (poses.txt) and a new drive with images only."""
    root = make_world(tmp_path / "root", ("sunny", "snow"), places=12)
    (root / "snow" / "poses.txt").unlink()
    domains = {d.name: d for d in discover(root, "folders", None, "auto")}
    assert domains["snow"].positions is None  # not placed by file name: the reference keeps its metres
    np.testing.assert_array_equal(domains["sunny"].positions[:, 0], np.arange(12) * 3.0)
    with pytest.raises(ValueError, match="supervised.pseudo=true"):
        Trainer(micro_recipe("soft_contrastive", "steps=2", "ramp_keys=[]"), root, tmp_path / "labelled")
    r = micro_recipe("unlabelled", "steps=2", "pseudo_window=1", "pseudo_tolerance=100", "pseudo_val_window=1",
                     "pseudo_val_tolerance=100", "mine_every=1", "mined=2", "num_candidates=3", "val_every=1",
                     "min_brightness=0")
    t = Trainer(r, root, tmp_path / "run")
    snow, sunny = t.data.names.index("snow"), t.data.names.index("sunny")
    assert "right" not in t.data.report["pseudo"]["snow"]  # nothing to check the labels against
    np.testing.assert_array_equal(t.data.val[snow].positions, t.data.val[sunny].positions[t.pseudo_val["snow"].matched])
    summary = t.fit()
    assert summary["val_start"]["snow"] >= 0.0 and (tmp_path / "run" / "model.pt").is_file()

def test_pseudo_needs_a_kept_image_budget():
    with pytest.raises(ValueError, match="supervised.pseudo_window"):
        micro_recipe("soft_contrastive", "supervised.pseudo=true", "pseudo_window=0")


def test_pseudo_match_must_be_known():
    with pytest.raises(ValueError, match="supervised.pseudo_match"):
        micro_recipe("soft_contrastive", "supervised.pseudo=true", "supervised.pseudo_match=dtw")
