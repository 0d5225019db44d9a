"""Never ship worse than the start: best-point selection, best.pt / model.pt, the loud warning, `--recipe init`."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from test_training_utils import make_world, micro_recipe
from torch.utils.data import default_collate

from disam_ros.model import Encoder, load_checkpoint
from disam_ros.training import cli
from disam_ros.training.best import best_index, improves, summarize
from disam_ros.training.datasets import PairKey
from disam_ros.training.evaluate import Method, encoder_features, recall_table
from disam_ros.training.export import export
from disam_ros.training.runlog import RunLogger
from disam_ros.training.trainer import Trainer


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world") / "root")


def _h(*scores: float) -> list[dict]:
    return [{"step": 100 * k, "night": s, "mean": s} for k, s in enumerate(scores)]


def test_best_point_of_a_hand_made_history():
    assert best_index(_h(0.5, 0.4, 0.7, 0.7, math.nan, 0.65)) == 2  # first of the tied maxima; NaN never wins
    assert best_index(_h(0.5, 0.5, 0.3)) == 0  # the start wins ties: equal is not better
    assert best_index(_h(math.nan, 0.2)) == 1 and best_index(_h(math.nan)) is None and best_index([]) is None
    assert improves(_h(0.5, 0.6), {"step": 300, "mean": 0.61}) and not improves(_h(0.5, 0.6), {"step": 3, "mean": 0.6})
    assert improves([], {"step": 0, "mean": 0.0}) and not improves([], {"step": 0, "mean": math.nan})


def test_summary_states_start_best_last_and_warns_when_the_best_is_the_start():
    good = summarize(_h(0.5, 0.4, 0.7, 0.6))
    assert good["improved"] is True and good["warning"] is None
    assert (good["val_start"]["step"], good["val_best"]["step"], good["val_last"]["step"]) == (0, 200, 300)
    bad = summarize(_h(0.62, 0.55, 0.62, 0.4))
    assert bad["improved"] is False and bad["val_best"]["step"] == 0
    assert bad["warning"].startswith("validation R@1 never rose above the start (0.620 at step 0; last 0.400 at "
                                     "step 300)") and "did not help" in bad["warning"]
    assert summarize([])["improved"] is None and "unselected" in summarize([])["warning"]


def _snapshot(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in t.net.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("scores, best_step", [([0.5, 0.4, 0.7, 0.7, 0.6], 2), ([0.5, 0.4, 0.5, 0.3], 0)])
def test_the_shipped_model_holds_the_weights_of_the_best_validation_point(world, tmp_path, scores, best_step):
    """Real training steps between hand-made validation results: best.pt and model.pt are the best step's weights
    (the start's when nothing beat it), and no shipped model has a score below the start's."""
    t = Trainer(micro_recipe("coarse", "lr=0.01", "lr_decay_start=1.0", "hard_negatives_from=0.0"), world,
                tmp_path / "run")
    batch = default_collate([t.dataset[PairKey(0, n, 0, 2, True)] for n in range(2)])
    logger, weights = RunLogger(t.paths, 0, enabled=True), {}
    for k, s in enumerate(scores):
        if k:
            t.train_step(batch)
        weights[t.step] = _snapshot(t)
        t._record(logger, {"night": s, "mean": s})
    logger.close()
    assert not _same(weights[0], weights[len(scores) - 1])  # the steps did change the weights
    t.save_model()
    for path in (t.paths.best, t.paths.model):
        net, _, meta = load_checkpoint(path)
        assert meta["extra"]["step"] == best_step and meta["extra"]["selected"] == "best"
        assert meta["extra"]["val"]["mean"] == scores[best_step] >= meta["extra"]["val_start"]["mean"] == scores[0]
        assert _same(net.state_dict(), weights[best_step])
    assert [h["step"] for h in json.loads(t.paths.val.read_text())] == list(range(len(scores)))


def test_a_run_that_never_beats_its_start_ships_the_start_and_says_so_once(world, tmp_path, caplog):
    r = micro_recipe("coarse", "lr=0.0", "steps=3", "val_every=1")  # lr 0: every point scores exactly the start
    t = Trainer(r, world, tmp_path / "run")
    start = _snapshot(t)
    with caplog.at_level(logging.WARNING, logger="disam_ros"):
        summary = t.fit()
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 1 and "never rose above the start" in warnings[0]
    assert [h["step"] for h in t.history] == [0, 1, 2, 3] and len({h["mean"] for h in t.history}) == 1
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["improved"] is False and saved["warning"] == warnings[0] == summary["warning"]
    assert saved["val_start"] == saved["val_best"] == t.history[0] and saved["val_last"] == t.history[-1]
    net, _, meta = load_checkpoint(tmp_path / "run" / "model.pt")
    assert meta["extra"]["step"] == 0 and _same(net.state_dict(), start)


def test_no_exported_checkpoint_scores_below_the_start_on_its_validation_split(world, tmp_path):
    """A real run (high lr, validation every step); the exported model is re-scored independently, from the file,
    on the run's validation split: its R@1 is the recorded best, and not below the recorded start."""
    r = micro_recipe("coarse", "lr=0.01", "lr_decay_start=1.0", "steps=4", "val_every=1", "model.shared_init=true")
    t = Trainer(r, world, tmp_path / "run")
    summary = t.fit()
    export(tmp_path / "run" / "model.pt", tmp_path / "c.pt", half=False)
    enc = Encoder.from_checkpoint(tmp_path / "c.pt", device="cpu")
    val = {d.name: d for d in t.data.val}
    table = recall_table({"m": Method(encoder_features(enc, "sunny"))}, val["sunny"],
                         [val["night"], val["snow"]], enc.config.image_size, "sunny", [0.5])
    rescored = table["m"]["mean"]["R@1@0.5"]
    assert rescored == pytest.approx(summary["val_best"]["mean"]) and rescored >= summary["val_start"]["mean"]
    assert summary["improved"] == (summary["val_best"]["step"] > 0)


def test_init_recipe_exports_the_untrained_start(world, tmp_path, capsys):
    out = tmp_path / "init"
    assert cli.main(["--recipe", "init", "--data", str(world), "--out", str(out), "model.preset=micro",
                     "data.reference=sunny", "data.val_fraction=0.25", "data.gap=1", "data.train_fraction=0.75",
                     "val_tolerance=0.5", "progress=false"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 0 and summary["improved"] is None and summary["warning"] is None
    assert summary["val_start"]["step"] == 0 and summary["data"]["split"].startswith("train [0, 4)")
    net, _, meta = load_checkpoint(out / "model.pt")
    assert meta["extra"]["step"] == 0 and meta["extra"]["val"] == {k: v for k, v in summary["val_start"].items()
                                                                   if k != "step"}
    sunny, night = net.encoders["sunny"].state_dict(), net.encoders["night"].state_dict()
    assert _same(sunny, night)  # shared init: every condition starts from one and the same random encoder


def test_init_on_metric_poses_with_the_default_tolerance_warns_instead_of_crashing(tmp_path, caplog):
    """Query drives on another lane (1 m beside every reference image) and the default val_tolerance 0: no query
    is scorable. That is a setting to change, said in one warning, not a KeyError from the validation table."""
    from disam_ros.data.tum import make_trajectory, read_tum, write_tum

    root = make_world(tmp_path / "root")
    for cond in ("night", "snow"):
        t = read_tum(root / cond / "poses.txt")
        write_tum(root / cond / "poses.txt", make_trajectory(t.stamps, t.positions + [0.0, 1.0, 0.0], t.quats))
    with caplog.at_level(logging.WARNING):
        code = cli.main(["--recipe", "init", "--data", str(root), "--out", str(tmp_path / "init"),
                         "model.preset=micro", "data.reference=sunny", "data.val_fraction=0.25", "data.gap=1",
                         "data.train_fraction=0.75", "progress=false"])
    assert code == 0
    assert any("no query has a reference image within val_tolerance 0" in r.message and
               "train.val_tolerance=5" in r.message for r in caplog.records), caplog.text
