"""The honest split: contiguous train / val / test segments with gaps, cut on all frames before any filter."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_training_utils import make_world, micro_recipe

from disam_ros.training import evaluate
from disam_ros.training.datasets import build_data
from disam_ros.training.layouts import DomainImages
from disam_ros.training.split import GAP, RouteSplit, nearest_labels, split_points, split_route


def test_split_with_gaps_by_hand():
    # 20 frames, test from 0.5: m = 10 -> test [10, 20); val ends a gap of 2 before it: [8 - 4, 8) = [4, 8)
    # (val_fraction 0.2 of 20 = 4 frames); train ends a gap of 2 before val: [0, 2)
    cut = split_points(20, 0.5, 0.2, 2)
    assert cut == RouteSplit(20, train=(0, 2), val=(4, 8), test=(10, 20))
    g = GAP
    assert cut.labels().tolist() == [0, 0, g, g, 1, 1, 1, 1, g, g, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    assert cut.describe() == "train [0, 2) | val [4, 8) | test [10, 20) of 20 frames"


@pytest.mark.parametrize("n, fraction, val, gap, train_, val_, test_", [
    (20, 1.0, 0.1, 1, (0, 17), (18, 20), (20, 20)),   # no test part: no gap after validation
    (20, 0.5, 0.0, 3, (0, 7), (7, 7), (10, 20)),      # no validation: one gap between train and test
    (20, 1.0, 0.0, 3, (0, 20), (20, 20), (20, 20)),   # everything trains
    (9, 0.5, 0.1, 1, (0, 1), (2, 3), (4, 9)),         # round(4.5) = 4 (half to even), round(0.9) = 1
])
def test_split_edge_cases_by_hand(n, fraction, val, gap, train_, val_, test_):
    cut = split_points(n, fraction, val, gap)
    assert (cut.train, cut.val, cut.test) == (train_, val_, test_)
    labels = cut.labels()
    assert (labels == 0).sum() == train_[1] - train_[0] and (labels == 2).sum() == test_[1] - test_[0]


def test_a_split_that_leaves_no_training_frame_is_one_clear_line():
    with pytest.raises(ValueError, match=r"route of 12 frames leaves no training frame .*lower data.gap") as e:
        split_points(12, 0.5, 0.25, 2)  # m = 6, val [1, 4), train [0, -1)
    assert "\n" not in str(e.value)


def test_other_conditions_follow_their_nearest_reference_frame():
    ref = np.array([[float(i), 0, 0] for i in range(10)])
    labels = np.array([0, 0, 0, GAP, 1, 1, GAP, 2, 2, 2])
    # 0.4 -> frame 0; 2.6 -> 3 (gap); 4.5 ties 4 and 5 (both val); 6.2 -> 6 (gap); 6.6 -> 7 (test); 12 -> 9
    others = np.array([[0.4, 0, 0], [2.6, 0, 0], [4.5, 0, 0], [6.2, 0, 0], [6.6, 0, 0], [12.0, 0, 0]])
    assert nearest_labels(others, ref, labels, chunk=4).tolist() == [0, GAP, 1, GAP, 2, 2]


def test_split_route_cuts_the_reference_and_routes_without_places_by_their_own_order(tmp_path):
    paths = tuple(tmp_path / f"{i:02d}.png" for i in range(10))
    ref = DomainImages("sunny", paths, np.array([[3.0 * i, 0, 0] for i in range(10)]))
    other = DomainImages("night", paths[:8], np.array([[3.0 * i + 1.0, 0, 0] for i in range(8)]))
    cut, parts = split_route([other, ref], "sunny", 0.6, 0.2, 1)
    # ref: m = 6, test [6, 10), val [5 - 2, 5) = [3, 5), train [0, 2)
    assert (cut.train, cut.val, cut.test) == ((0, 2), (3, 5), (6, 10))
    night, sunny = parts
    assert [p.name for p in sunny.val.paths] == ["03.png", "04.png"] and sunny.in_gaps == 2
    # night frame i sits at 3i + 1, nearest reference frame i: the same labels over its 8 frames
    assert [p.name for p in night.test.paths] == ["06.png", "07.png"] and night.in_gaps == 2
    unplaced = DomainImages("fog", paths, None)
    _, parts = split_route([ref, unplaced], "sunny", 0.6, 0.2, 1)
    assert [len(parts[1].train), len(parts[1].val), len(parts[1].test)] == [2, 2, 4]


def test_the_cut_is_on_all_frames_not_on_what_survives_the_dark_filter(tmp_path):
    root = make_world(tmp_path / "w", places=16)
    for i in (1, 2, 6):  # black reference frames: two in the training part, one in validation
        cv2.imwrite(str(root / "sunny" / "images" / f"{i:06d}.png"), np.zeros((30, 40, 3), np.uint8))
    r = ("data.train_fraction=0.5", "data.val_fraction=0.125", "data.gap=1")
    plain = build_data(micro_recipe("coarse", *r), root)
    filtered = build_data(micro_recipe("coarse", *r, "data.min_brightness=10"), root)
    # 16 frames: test [8, 16), val [7 - 2, 7) = [5, 7), train [0, 4) whatever the filter drops
    assert plain.report["split"] == filtered.report["split"] == "train [0, 4) | val [5, 7) | test [8, 16) of 16 frames"
    for a, b in zip(plain.test, filtered.test):
        assert a.paths == b.paths and len(a) == 8
    sunny = filtered.report["conditions"]["sunny"]
    assert sunny["train"] == {"kept": 2, "dark": 2} and sunny["val"] == {"kept": 1, "dark": 1}
    assert [p.name for p in filtered.train[filtered.names.index("sunny")].paths] == ["000000.png", "000003.png"]
    assert filtered.report["conditions"]["night"]["train"] == {"kept": 4, "dark": 0}


def test_evaluation_scores_exactly_the_test_part(tmp_path):
    root = make_world(tmp_path / "w", places=16)
    data = build_data(micro_recipe("coarse", "data.train_fraction=0.5", "data.val_fraction=0.125", "data.gap=1"),
                      root)
    args = evaluate.build_parser().parse_args(["custom", "--data", str(root), "--coarse", "unused",
                                               "--reference", "sunny", "--train-fraction", "0.5"])
    args.min_brightness = 0
    domains, reference = evaluate._held_out(args)
    assert reference == "sunny"
    by_name = {d.name: d for d in domains}
    for name, test in zip(data.names, data.test):
        assert by_name[name].paths == test.paths


def test_build_data_refuses_a_split_with_too_few_training_images(tmp_path):
    root = make_world(tmp_path / "w")
    with pytest.raises(ValueError, match="no training frame") as e:
        build_data(micro_recipe("coarse", "data.gap=4"), root)
    assert "\n" not in str(e.value)
