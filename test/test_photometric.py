"""Photometric augmentation (data.photometric): closed-form effects, keyed determinism, off = unchanged samples,
the recipe checks, and a real training step on augmented batches."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_training_utils import make_world, micro_recipe
from torch.utils.data import default_collate

from disam_ros.training import photometric as ph
from disam_ros.training.config import load_recipe
from disam_ros.training.datasets import PairKey, UnpairedDataset, build_data, to_tensor
from disam_ros.training.trainer import Trainer


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world") / "root")


def _image(seed: int = 0, shape: tuple[int, int] = (24, 20)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3)).astype(np.uint8)


def _dataset(world: Path, p: float, strength: float = 1.0, *overrides: str) -> UnpairedDataset:
    r = micro_recipe("soft_contrastive", "data.train_fraction=1.0", *overrides)
    data = build_data(r, world)
    return UnpairedDataset(data.train, 32, r.data.load_ratio, True, r.seed, r.schedule.num_negatives, r.supervised,
                           photometric=p, photometric_strength=strength)


def test_gamma_and_night_on_a_constant_image_match_the_closed_form():
    x = np.full((4, 5, 3), 0.25, np.float32)
    np.testing.assert_allclose(ph.adjust_gamma(x, 2.0), 0.0625, rtol=1e-6)
    np.testing.assert_allclose(ph.adjust_gamma(x, 0.5), 0.5, rtol=1e-6)
    night = ph.darken_to_night(x, 2.0, 0.5, (1.0, 0.8, 0.5))
    np.testing.assert_allclose(night[0, 0], [0.03125, 0.025, 0.015625], rtol=1e-6)  # 0.5 * 0.0625 * tint
    assert night.dtype == np.float32 and night.shape == x.shape


def test_contrast_haze_speckle_blur_and_noise_by_hand():
    x = np.zeros((2, 2, 3), np.float32)
    x[0] = 0.2
    x[1] = 0.6  # mean 0.4
    out = ph.contrast_brightness(x, 2.0, 0.1)
    np.testing.assert_allclose(out[0, 0], 0.1, atol=1e-6)  # (0.2 - 0.4) * 2 + 0.4 + 0.1
    np.testing.assert_allclose(out[1, 1], 0.9, atol=1e-6)  # (0.6 - 0.4) * 2 + 0.4 + 0.1
    np.testing.assert_allclose(ph.haze(x, 0.25, 1.0)[0, 0], 0.4, atol=1e-6)  # 0.75 * 0.2 + 0.25
    mask = np.array([[True, False], [False, False]])
    snow = ph.speckle(x, mask, 0.95)
    assert np.all(snow[0, 0] == np.float32(0.95)) and np.array_equal(snow[~mask], x[~mask])
    flat = np.full((9, 9, 3), 0.3, np.float32)
    np.testing.assert_allclose(ph.gaussian_blur(flat, 1.0), 0.3, atol=1e-6)  # a constant stays constant
    assert ph.gaussian_blur(x, 0.0) is x
    step = np.zeros((1, 9, 3), np.float32)
    step[:, 4] = 1.0
    blurred = ph.gaussian_blur(step, 1.0)[0, :, 0]
    g = np.exp(-0.5 * (np.arange(-4, 5) ** 2))  # a unit impulse becomes the normalised Gaussian kernel
    np.testing.assert_allclose(blurred, g / g.sum(), atol=2e-3)
    np.testing.assert_allclose(ph.add_noise(x, np.full_like(x, -0.1)), x - 0.1, atol=1e-7)
    assert np.array_equal(ph.to_uint8(np.array([-0.5, 0.5, 1.5], np.float32)), [0, 128, 255])


@pytest.mark.parametrize("strength", [0.5, 1.0, 2.0])
def test_augment_keeps_shape_dtype_and_is_a_function_of_the_generator(strength):
    for seed in range(20):
        img = _image(seed)
        a = ph.augment(img, np.random.default_rng(seed), strength)
        b = ph.augment(img, np.random.default_rng(seed), strength)
        assert a.dtype == np.uint8 and a.shape == img.shape
        assert np.array_equal(a, b)
    for extreme in (np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)):
        assert ph.augment(extreme, np.random.default_rng(1), strength).dtype == np.uint8
    img = _image()
    outs = {ph.augment(img, np.random.default_rng(s), strength).tobytes() for s in range(10)}
    assert len(outs) == 10  # different draws, different images


def test_augment_leaves_its_input_untouched():
    img = _image(3)
    before = img.copy()
    ph.augment(img, np.random.default_rng(0))
    assert np.array_equal(img, before)


def test_off_gives_the_samples_of_a_dataset_without_the_option(world):
    plain = _dataset(world, 0.0)
    r = micro_recipe("soft_contrastive", "data.train_fraction=1.0")
    legacy = UnpairedDataset(build_data(r, world).train, 32, r.data.load_ratio, True, r.seed, 3, r.supervised)
    for n in range(4):
        key = PairKey(0, n, 0, 2, True)
        a, b = plain[key], legacy[key]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # and off draws nothing: the crop is the generator's first two integers, as before the option existed
    rng, ref = np.random.default_rng(5), np.random.default_rng(5)
    top, left = ref.integers(0, plain.load - plain.size + 1, size=2)
    img = plain._decoded(1, 2)
    assert torch.equal(plain.image(1, 2, rng, False), to_tensor(img[top:top + 32, left:left + 32]))
    assert rng.random() == ref.random()


def test_on_is_keyed_and_changes_every_image_of_a_sample(world):
    on, off = _dataset(world, 1.0), _dataset(world, 0.0)
    key = PairKey(1, 2, 0, 1, True)
    s, again = on[key], on[key]
    assert all(torch.equal(s[k], again[k]) for k in s)  # same key, same sample
    assert s["x_i"].dtype == torch.float32 and s["x_i"].min() >= -1 and s["x_i"].max() <= 1
    assert not torch.equal(s["x_i"], off[key]["x_i"])
    assert not torch.equal(s["x_i"], on[PairKey(2, 2, 0, 1, True)]["x_i"])  # another epoch, another draw
    cached = on._decoded(0, 2 % len(on.domains[0])).copy()
    on[key]
    assert np.array_equal(on._decoded(0, 2 % len(on.domains[0])), cached)  # the decoded cache is never changed


def test_probability_is_the_share_of_changed_images(world):
    ds = _dataset(world, 0.5)
    ds.load = ds.size  # no crop: an unchanged image equals its decoded source
    changed = 0
    for k in range(200):
        rng = np.random.default_rng([9, k])
        t = ds.image(0, 0, rng, False)
        changed += not torch.equal(t, to_tensor(ds._decoded(0, 0)))
    assert 70 <= changed <= 130  # binomial(200, 0.5): mean 100, sd ~7


def test_recipe_keys_default_off_and_are_range_checked():
    r = load_recipe("rail_pseudo")
    assert r.data.photometric == 0.0 and r.data.photometric_strength == 1.0
    assert load_recipe("real_starter").data.photometric > 0
    with pytest.raises(ValueError, match=r"^data.photometric=1.5 is out of range"):
        load_recipe("rail_pseudo", ["data.photometric=1.5"])
    with pytest.raises(ValueError, match=r"^data.photometric_strength=0.0 is out of range"):
        load_recipe("rail_pseudo", ["data.photometric_strength=0.0"])


def test_a_training_step_on_augmented_batches_moves_the_step_domains(world, tmp_path):
    r = micro_recipe("soft_contrastive", "schedule.ramp_keys=[]", "lr_decay_start=1.0", "lr=0.001",
                     "hard_negatives_from=0.0", "data.photometric=1.0")
    t = Trainer(r, world, tmp_path / "run")
    t.dataset = UnpairedDataset(t.data.train, t.cfg.image_size, r.data.load_ratio, r.data.flip, r.seed,
                                r.schedule.num_negatives, r.supervised, photometric=r.data.photometric)
    batch = default_collate([t.dataset[PairKey(0, n, 0, 2, True)] for n in range(2)])
    params = {k: v.clone() for k, v in t.net.state_dict().items()}
    stats = t.train_step(batch)
    assert np.isfinite(stats["total"]) and t.step == 1
    changed = {k.split(".")[1] for k, v in t.net.state_dict().items() if not torch.equal(v, params[k])}
    assert changed == {"night", "sunny"}


def test_the_trainer_passes_the_recipe_option_to_its_dataset(world, tmp_path):
    t = Trainer(micro_recipe("soft_contrastive", "data.photometric=0.7", "data.photometric_strength=1.5"), world,
                tmp_path / "run")
    assert (t.dataset.photometric, t.dataset.photometric_strength) == (0.7, 1.5)
