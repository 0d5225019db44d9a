"""The structure-keeping term (keep_structure.py): hand values, the frozen start, and exact resume."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_training_utils import make_world, micro_recipe

from disam_ros.model.related_losses import coarse_descriptor
from disam_ros.training.config import load_recipe
from disam_ros.training.keep_structure import similarity_drift
from disam_ros.training.trainer import Trainer


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world") / "root")


def test_similarity_drift_is_the_mean_squared_change_of_the_off_diagonal_similarities():
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    teacher = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    # pairs (0,1) (0,2) (1,2): student 0, 1, 0; teacher 0.6, 0, 0.8; each pair twice in the 6 off-diagonal cells
    expected = (0.6 ** 2 + 1.0 ** 2 + 0.8 ** 2) * 2 / 6
    assert similarity_drift(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    assert similarity_drift(student, student).item() == 0.0
    assert similarity_drift(student[:1], teacher[:1]).item() == 0.0  # one image: nothing to keep
    with pytest.raises(ValueError, match="one shape"):
        similarity_drift(student, teacher[:2])


def test_keep_term_is_zero_at_the_start_and_anchors_to_the_frozen_start(world, tmp_path):
    r = micro_recipe("coarse", "steps=3", "keep.weight=5.0", "lr=0.01", "lr_decay_start=1.0")
    t = Trainer(r, world, tmp_path / "run")
    start = {k: v.clone() for k, v in t.keeper.teacher.state_dict().items()}
    x = torch.rand(4, 3, t.cfg.image_size, t.cfg.image_size) * 2 - 1
    dom = t.cfg.domains[0]
    assert t.keeper(t.net, {dom: x}).item() == pytest.approx(0.0, abs=1e-12)  # student == teacher
    t.fit()
    # the teacher did not move; the student did, and the term now measures that by the formula
    assert all(torch.equal(v, start[k]) for k, v in t.keeper.teacher.state_dict().items())
    with torch.no_grad():
        s = coarse_descriptor(t.net.encode(x, dom))
        tt = coarse_descriptor(t.keeper.teacher[dom](x))
        got = t.keeper(t.net, {dom: x}).item()
    assert got > 0 and got == pytest.approx(similarity_drift(s, tt).item(), rel=1e-6)
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert "keep" in rows[0].split(",")


def test_resume_restores_the_frozen_start(world, tmp_path):
    r = micro_recipe("coarse", "steps=4", "keep.weight=5.0")
    straight = Trainer(r, world, tmp_path / "a")
    straight.fit()
    first = Trainer(r, world, tmp_path / "b")
    first.fit(until=2)
    resumed = Trainer(r, world, tmp_path / "b", resume=True)
    a, b = first.keeper.teacher.state_dict(), resumed.keeper.teacher.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # not a copy of the step-2 weights
    resumed.fit()
    sa, sb = straight.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_keep_weight_must_not_be_negative():
    with pytest.raises(ValueError, match="keep.weight"):
        load_recipe("coarse", ["keep.weight=-1"])
