"""The Table VI ablation tools: the constant-margin triplet (alpha_f = 0), tied encoders and the validation plot.

Why: the constant-margin row of the paper's Table VI is run as `loss.alpha_f=0` (exp(-0 * d) = 1 turns eq. 22's
adaptive margin into the constant m_f), so that spelling must reach the objective and give the constant-margin
value; tied encoders must stay equal to the mean of the stepped pair; the plot's table must report the best
point the way best.py selects it (the earliest wins ties).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_training_utils import make_world, micro_recipe
from torch.utils.data import default_collate

from disam_ros.model import DisamNet, preset
from disam_ros.model.losses import adaptive_triplet
from disam_ros.training.ablation_plot import load_curve, main, plot_curves, table
from disam_ros.training.config import load_recipe
from disam_ros.training.datasets import PairKey
from disam_ros.training.trainer import Trainer, tie_encoders


def test_alpha_zero_is_the_constant_margin() -> None:
    # d_pos = 1, d_neg = 3, m = 5: constant margin 1 - 3 / (1 + 5) = 0.5;
    # adaptive (alpha 2): 1 - 3 / (1 + 5 e^-2) = 1 - 3 / 1.6767 < 0 -> clamped to 0
    d_pos, d_neg = torch.tensor([1.0]), torch.tensor([3.0])
    assert adaptive_triplet(d_pos, d_neg, 5.0, 0.0).item() == pytest.approx(0.5)
    assert adaptive_triplet(d_pos, d_neg, 5.0, 2.0).item() == 0.0


def test_constant_margin_override_reaches_the_objective() -> None:
    w = load_recipe("rail_coarse", ["loss.alpha_f=0"]).loss
    assert w.alpha_f == 0.0 and w.m_f == 5.0 and w.triplet_fcl == 1.0


def test_tie_encoders_copies_the_mean_of_the_stepped_pair() -> None:
    net = DisamNet(preset("micro", ("a", "b", "c")))
    with torch.no_grad():
        for d, v in (("a", 1.0), ("b", 3.0), ("c", 7.0)):
            for p in net.encoders[d].parameters():
                p.fill_(v)
    tie_encoders(net, ("a", "b"))
    for d in ("a", "b", "c"):  # (1 + 3) / 2; c did not step, so its 7 is not averaged in
        assert all(torch.all(p == 2.0) for p in net.encoders[d].parameters())


def test_trainer_step_keeps_tied_encoders_equal(tmp_path: Path) -> None:
    world = make_world(tmp_path / "world")
    t = Trainer(micro_recipe("coarse", "model.shared_init=true", "model.tie_encoders=true"), world, tmp_path / "run")
    start = {k: v.clone() for k, v in t.net.encoders["sunny"].state_dict().items()}
    t.train_step(default_collate([t.dataset[PairKey(0, n, 0, 2, False)] for n in range(2)]))
    a, b = t.net.encoders["sunny"].state_dict(), t.net.encoders["night"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], start[k]) for k in a)  # they moved, together
    with pytest.raises(ValueError, match="shared_init"):
        micro_recipe("coarse", "model.tie_encoders=true")


def _run(tmp_path: Path, name: str, points: list[tuple[int, float]]) -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "val.json").write_text(json.dumps([{"step": s, "winter": v, "mean": v} for s, v in points]))
    return run


def test_curve_start_best_last_and_plot(tmp_path: Path) -> None:
    a = load_curve(_run(tmp_path, "a", [(0, 0.8), (50, 0.85), (100, 0.85), (150, 0.7)]))
    assert (a.start, a.best, a.last) == (0.8, (50, 0.85), 0.7)  # the earlier of the tied 0.85 points
    b = load_curve(_run(tmp_path, "b", [(0, 0.8), (50, math.nan), (100, 0.6)]), label="never rose")
    assert b.steps == (0, 100) and b.best == (0, 0.8)  # NaN point dropped; the start wins
    assert table([a, b]).splitlines()[2:] == ["| a | 0.800 | 0.850 | 50 | 0.700 |",
                                              "| never rose | 0.800 | 0.800 | 0 | 0.600 |"]
    png = plot_curves([a, b], tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_writes_png_and_rejects_a_run_without_val(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(tmp_path, "r", [(0, 0.5), (50, 0.6)])
    out = tmp_path / "o.png"
    assert main([f"mine={run}", "--out", str(out)]) == 0
    assert out.is_file() and "| mine | 0.500 | 0.600 | 50 | 0.600 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing"), "--out", str(out)])
