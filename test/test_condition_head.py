"""The condition recogniser: features on hand-made images, training on two clearly different conditions,
storage beside the checkpoint, block folds, and the evaluation helpers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from disam_ros.eval.condition_eval import brute_force_domain, distinctiveness, recognition_rows
from disam_ros.model.condition_head import (
    N_FEATURES,
    ConditionHead,
    bright_enough,
    find_condition_head,
    image_features,
    load_condition_head,
    save_condition_head,
    sidecar_path,
)
from disam_ros.training.condition import (
    ConditionTrainConfig,
    accuracy,
    block_folds,
    leave_one_place_out,
    load_labelled,
    select_indices,
    train_head,
    train_range,
)


def test_features_of_flat_images():
    black = image_features(np.zeros((48, 64, 3), np.uint8))
    white = image_features(np.full((48, 64, 3), 255, np.uint8))
    assert black.shape == (N_FEATURES,)
    assert black[-1] == pytest.approx(math.log(1e-3), rel=1e-5)  # log brightness of black
    assert white[-1] == pytest.approx(math.log(1.0 + 1e-3), abs=1e-6)
    hist = slice(64 + 6, 64 + 14)  # after the 4x4 layout (RGB + contrast) and the colour moments
    assert white[hist].tolist() == [0, 0, 0, 0, 0, 0, 0, 1]
    assert black[hist].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="uint8"):
        image_features(np.zeros((8, 8), np.float32))


def _write(root, name, images):
    import cv2
    d = root / name / "images"
    d.mkdir(parents=True)
    for i, im in enumerate(images):
        cv2.imwrite(str(d / f"{i:03d}.png"), im[:, :, ::-1])


@pytest.fixture
def two_conditions(tmp_path):
    rng = np.random.default_rng(0)
    day = [rng.integers(120, 255, (40, 60, 3), dtype=np.uint8) for _ in range(20)]
    night = [rng.integers(0, 40, (40, 60, 3), dtype=np.uint8) for _ in range(20)]
    _write(tmp_path, "day", day)
    _write(tmp_path, "night", night)
    (tmp_path / "world.yaml").write_text("reference: day\nconditions:\n  day: {daylight: day}\n"
                                         "  night: {daylight: night}\n")
    return tmp_path


def test_trains_and_recognises_held_out_frames(two_conditions, tmp_path):
    torch.set_num_threads(1)
    train = load_labelled(two_conditions, None, (0.0, 0.5), attributes={"day": {"daylight": "day"},
                                                                       "night": {"daylight": "night"}})
    assert train.tasks == {"domain": ("day", "night"), "daylight": ("day", "night")}
    assert train.labels["domain"].tolist() == [0] * 10 + [1] * 10
    head = train_head(train, ConditionTrainConfig(steps=100))
    test = load_labelled(two_conditions, ["day", "night"], (0.5, 1.0), attributes={})
    assert accuracy(head, test)["domain"] == {"all": 1.0, "day": 1.0, "night": 1.0}
    rows = recognition_rows(head, two_conditions, ["night"], frame_filter=lambda i, n: i >= n // 2)
    assert (rows[0].frames, rows[0].accuracy) == (10, 1.0)
    dark = np.full((30, 30, 3), 10, np.uint8)
    p = head.predict(dark)
    assert p["domain"]["night"] > 0.9 and p["daylight"]["night"] > 0.9

    ckpt = tmp_path / "coarse.pt"
    assert find_condition_head(ckpt) is None  # no recogniser: today's behaviour
    save_condition_head(sidecar_path(ckpt), head)
    assert sidecar_path(ckpt).name == "coarse.condition.pt"
    again = find_condition_head(ckpt)
    assert again.tasks == head.tasks
    assert again.predict(dark)["domain"]["night"] == pytest.approx(p["domain"]["night"], abs=1e-6)


def test_world_yaml_labels_are_read(two_conditions):
    data = load_labelled(two_conditions, ["night", "day"], (0.0, 0.1))
    assert data.tasks["daylight"] == ("day", "night")
    assert data.labels["daylight"].tolist() == [1, 1, 0, 0]  # night folder first, 2 frames each


def test_bad_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "x.condition.pt"
    torch.save({"format": "something else"}, bad)
    with pytest.raises(ValueError, match="not a condition recogniser"):
        load_condition_head(bad)
    with pytest.raises(ValueError, match="domain"):
        ConditionHead({"weather": ("sunny",)})


def test_spans_and_block_folds():
    assert select_indices(10, (0.0, 0.5)) == range(0, 5)
    assert select_indices(10, (0.5, 1.0)) == range(5, 10)
    with pytest.raises(ValueError):
        select_indices(10, (0.6, 0.5))
    assert block_folds(np.array([0, 0, 0, 0, 1, 1]), 2).tolist() == [0, 0, 1, 1, 0, 1]


def test_brute_force_keeps_the_most_distinctive_retrieval():
    assert distinctiveness(np.array([0.2, 0.9, 0.5])) == pytest.approx(0.4)
    sims = {"ref": np.array([0.80, 0.78, 0.1]), "snow": np.array([0.7, 0.2, 0.1]), "night": np.array([0.5])}
    assert brute_force_domain(sims.__getitem__, ["ref", "snow", "night"]) == ("snow", pytest.approx(0.5))
    flat = {"ref": np.array([0.5, 0.5]), "snow": np.array([0.6, 0.6])}
    assert brute_force_domain(flat.__getitem__, ["ref", "snow"])[0] == "ref"  # tie: the first


def test_train_range_leaves_a_gap_before_the_test_part():
    # 1788 frames at 0.5: the test part starts at round(894) = 894, training stops 5 frames earlier
    assert train_range(1788, 0.5, 5) == range(0, 889)
    assert train_range(10, 1.0, 5) == range(10)
    with pytest.raises(ValueError, match="no training frame"):
        train_range(10, 0.5, 5)


def test_bright_enough_uses_the_99th_percentile():
    frame = np.zeros((10, 10, 3), np.uint8)
    frame[0, 0] = 255  # one bright pixel of 100: a watermark on a tunnel frame, below the 99th percentile
    assert not bright_enough(frame, 20)
    frame[:2] = 30  # 20 % of the pixels at 30 or more: percentile 99 = 30
    assert bright_enough(frame, 20) and not bright_enough(frame, 31)
    assert bright_enough(np.zeros((4, 4, 3), np.uint8), 0)  # threshold 0: no filter


def _write_flat(root, name, images):
    import cv2
    (root / name).mkdir(parents=True)
    for i, im in enumerate(images):
        cv2.imwrite(str(root / name / f"images-{i:05d}.png"), im[:, :, ::-1])


def test_flat_layout_frames_and_keep(tmp_path):
    rng = np.random.default_rng(1)
    summer = [rng.integers(100, 200, (16, 32, 3), dtype=np.uint8) for _ in range(6)]
    winter = [rng.integers(150, 255, (16, 32, 3), dtype=np.uint8) for _ in range(6)]
    winter[1][:] = 3  # a tunnel frame: dropped by the brightness rule
    _write_flat(tmp_path, "summer", summer)
    _write_flat(tmp_path, "winter", winter)
    data = load_labelled(tmp_path, ["summer", "winter"], frames=lambda n: train_range(n, 0.5, 1),
                         keep=lambda im: bright_enough(im, 20))
    # frames [0, 2) of each folder, winter's frame 1 dropped
    assert data.labels["domain"].tolist() == [0, 0, 1]
    assert data.places.tolist() == ["images-00000.png", "images-00001.png", "images-00000.png"]
    with pytest.raises(FileNotFoundError, match="autumn"):
        load_labelled(tmp_path, ["summer", "autumn"])


def test_leave_one_place_out_scores_every_frame_unseen(two_conditions):
    torch.set_num_threads(1)
    data = load_labelled(two_conditions, ["day", "night"], (0.0, 0.2))  # 4 places x 2 conditions
    pred = leave_one_place_out(data, ConditionTrainConfig(steps=60))
    assert pred.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]  # bright vs dark noise: separable from 3 other places
    data.places = None
    with pytest.raises(ValueError, match="place names"):
        leave_one_place_out(data)
