"""Inference export (small, loadable by Encoder.from_checkpoint) and the retrieval evaluation."""
from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training_utils import make_world, micro_recipe

from disam_ros.model import CheckpointError, Encoder, load_checkpoint
from disam_ros.training import evaluate
from disam_ros.training.evaluate import correct, mean_channel_similarity, rerank
from disam_ros.training.export import export
from disam_ros.training.export import main as export_main
from disam_ros.training.trainer import Trainer

NORDLAND = Path(__file__).resolve().parents[2] / "shared" / "data" / "nordland_trimmed_dev"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("export")
    world = make_world(tmp / "world")
    Trainer(micro_recipe("coarse", "steps=2"), world, tmp / "run").fit()
    return world, tmp / "run" / "model.pt"


def test_export_keeps_only_encoders_in_float16_and_loads_for_inference(trained, tmp_path):
    _, model = trained
    demo = tmp_path / "demo.pt"
    report = export(model, demo, role="coarse")
    assert report["bytes"] == demo.stat().st_size < 0.4 * model.stat().st_size and report["dtype"] == "float16"
    assert report["max_abs_code_error"] < 1e-2
    assert stat.S_IMODE(demo.stat().st_mode) == 0o644  # a shipped file, readable by other users
    payload = torch.load(demo, weights_only=True)
    assert payload["parts"] == ["encoders"] and payload["dtype"] == "float16"
    assert payload["extra"]["kind"] == "inference_export" and payload["extra"]["role"] == "coarse"
    assert "placeholders" not in payload["extra"]
    src = torch.load(model, weights_only=True)["state_dict"]
    assert set(payload["state_dict"]) == {k for k in src if k.startswith("encoders.")}
    for k, v in payload["state_dict"].items():  # the stored weights are the source's, rounded to float16
        assert v.dtype == torch.float16 and torch.equal(v, src[k].half()), k
    enc = Encoder.from_checkpoint(demo, device="cpu")
    assert enc.domains == ("night", "snow", "sunny") and enc.dtype == torch.float32
    with pytest.raises(CheckpointError, match="holds only the encoders") as e:
        load_checkpoint(demo)
    assert "\n" not in str(e.value) and "Encoder.from_checkpoint" in str(e.value)
    full = export(model, tmp_path / "f32.pt", half=False)
    assert full["max_abs_code_error"] < 1e-5 and full["dtype"] == "float32"
    assert torch.load(tmp_path / "f32.pt", weights_only=True)["dtype"] == "float32"


def test_export_cli_refuses_an_export_as_source(trained, tmp_path, capsys):
    _, model = trained
    assert export_main([str(model), str(tmp_path / "a.pt"), "--role", "fine"]) == 0
    assert "float16" in capsys.readouterr().out
    assert export_main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]) == 2
    err = capsys.readouterr().err
    assert "holds only the encoders" in err and "full training checkpoint" in err and not (tmp_path / "b.pt").exists()


def test_mean_channel_similarity_matches_eq16_and_rerank_uses_the_fine_score():
    torch.manual_seed(0)
    q, db = torch.randn(3, 4, 5, 5), torch.randn(6, 4, 5, 5)
    loop = torch.tensor([[torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1).mean().item()
                          for b in db] for a in q])
    assert torch.allclose(mean_channel_similarity(q, db), loop, atol=1e-5)
    coarse = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    fine = torch.tensor([[0.1, 0.2, 0.3, 0.99]])  # best fine score is outside the coarse top-3
    assert rerank(coarse, fine, 3).tolist() == [2] and rerank(coarse, fine, 4).tolist() == [3]
    pos = np.array([[0.0, 0, 0], [1, 0, 0], [5, 0, 0]])
    assert correct(torch.tensor([[1], [2]]), pos[:2], pos, 1.0).tolist() == [True, False]


def test_evaluate_cli_prints_r1_tables_for_all_methods(trained, tmp_path, capsys):
    world, model = trained
    export(model, tmp_path / "c.pt")
    out = tmp_path / "r.json"
    assert evaluate.main(["synthetic", "--data", str(world), "--coarse", str(tmp_path / "c.pt"), "--fine",
                          str(tmp_path / "c.pt"), "--reference", "sunny", "--train-fraction", "0.5",
                          "--tolerances", "0.5", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for row in ("raw pixels", "untrained encoder", "coarse only", "fine only", "coarse-to-fine (top-3)"):
        assert f"| {row} |" in text
    result = __import__("json").loads(out.read_text())
    assert result["queries"] == {"night": 6, "snow": 6} and result["database"] == 6
    assert result["table"]["coarse only"]["mean"]["queries"] == 12
    assert result["table"]["raw pixels"]["mean"]["R@1@3"] >= result["table"]["raw pixels"]["mean"]["R@1@0.5"]


def test_nordland_protocol_on_the_real_data(trained, tmp_path, capsys):
    if not NORDLAND.is_dir():
        pytest.skip(f"Nordland data not found at {NORDLAND} (it lives beside the repository, never inside)")
    _, model = trained
    export(model, tmp_path / "c.pt")
    out = tmp_path / "n.json"
    # micro model trained on the toy world: only checks the protocol end to end (split, dark filter, R@k)
    assert evaluate.main(["nordland", "--data", str(NORDLAND), "--coarse", str(tmp_path / "c.pt"),
                          "--reference", "summer", "--max-queries", "150", "--json", str(out)]) == 0
    result = __import__("json").loads(out.read_text())
    raw = result["table"]["raw pixels"]["mean"]
    assert set(raw) == {f"R@{k}@{t}" for k in (1, 5) for t in (0, 1, 2, 5)} | {"queries"}
    assert raw["R@1@5"] >= raw["R@1@0"] and raw["R@5@0"] >= raw["R@1@0"]
    assert raw["R@1@5"] > 0.05  # chance is ~1 % (11 of ~865 places)
    assert 850 < result["database"] < 894  # the held-out half of the non-dark frames (63 summer frames are dark)
