"""model.start_candidates: several random starts validated, the best one trained from (trainer._pick_start)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_training_utils import make_world, micro_recipe

from disam_ros.training.trainer import Trainer


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """80 places; night is drowned in noise (std 130) so that random starts differ on validation (measured:
    0.9, 0.95, 0.85, 0.8 for the first four seeds: the best is not the first)."""
    root = make_world(tmp_path_factory.mktemp("world") / "root", ("sunny", "night"), places=80)
    rng = np.random.default_rng(1)
    for f in sorted((root / "night" / "images").glob("*.png")):
        img = cv2.imread(str(f)).astype(np.float32)
        cv2.imwrite(str(f), np.clip(img + rng.normal(0, 130, img.shape), 0, 255).astype(np.uint8))
    return root


def _weights(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in t.net.state_dict().items()}


def test_the_start_with_the_best_validation_is_kept_and_is_that_seeds_start(world, tmp_path):
    r = micro_recipe("soft_contrastive", "model.shared_init=true", "model.start_candidates=4", "ramp_keys=[]")
    t = Trainer(r, world, tmp_path / "pick")
    scores = t.start_scores
    assert len(scores) == 4 and len(set(scores)) > 1  # the choice is not a tie-break
    # each candidate's score is that seed's own start, validated alone
    singles = [Trainer(micro_recipe("soft_contrastive", "model.shared_init=true", f"seed={r.seed + k}",
                                    "ramp_keys=[]"), world, tmp_path / f"s{k}") for k in range(4)]
    assert scores == pytest.approx([s.validate()["mean"] for s in singles])
    best = max(range(4), key=lambda k: (scores[k], -k))
    chosen = _weights(t)
    expected = singles[best].net.state_dict()
    assert all(torch.equal(chosen[k], expected[k]) for k in chosen)
    assert t.data.report["start_candidates"]["chosen_seed"] == r.seed + best
    # the optimisers hold the kept weights (a step moves exactly them)
    t.fit(until=1)
    assert any(not torch.equal(v, chosen[k]) for k, v in t.net.state_dict().items() if k.startswith("encoders."))


def test_one_candidate_is_the_seeds_start_as_before(world, tmp_path):
    a = Trainer(micro_recipe("soft_contrastive", "model.shared_init=true"), world, tmp_path / "a")
    b = Trainer(micro_recipe("soft_contrastive", "model.shared_init=true", "model.start_candidates=1"), world,
                tmp_path / "b")
    assert a.start_scores == b.start_scores == []
    wa, wb = a.net.state_dict(), b.net.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_start_candidates_must_be_positive():
    with pytest.raises(ValueError, match="model.start_candidates"):
        micro_recipe("soft_contrastive", "model.start_candidates=0")
