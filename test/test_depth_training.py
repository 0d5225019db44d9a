"""Depth branch training (seed 002): a real run of the depth recipe, the fusion-weight choice, the stored branch.

The run trains a real decoder on a rendered 32-px world for a few dozen steps; what it stores is checked against
numbers recomputed here without the training code (abs. rel. error in numpy, encoders compared bit for bit).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from disam_ros.data.depth import depth_path, read_depth
from disam_ros.data.folders import read_image
from disam_ros.data.synthetic import WorldConfig, make_world
from disam_ros.model import CheckpointError, DisamNet, Encoder, preset, save_checkpoint
from disam_ros.model.checkpoint import read_checkpoint
from disam_ros.model.depth import DepthDecoder
from disam_ros.model.depth_branch import EXTRA_KEY, DepthBranch, DepthBranchError
from disam_ros.model.preprocess import to_model_input
from disam_ros.training import cli
from disam_ros.training.config import load_recipe
from disam_ros.training.datasets import build_data
from disam_ros.training.depth_scores import EncodedCondition, choose_weight, condition_recalls
from disam_ros.training.depth_trainer import DepthTrainer

DOMAINS = ("sunny", "night")
OVERRIDES = ["model.preset=micro", "data.domains=[sunny,night]", "data.gap=1", "schedule.steps=40",
             "train.val_every=20", "train.batch_size=4", "train.val_queries=0", "depth.width=16", "depth.grid=4",
             "depth.fusion_weights=[0.8,0.5]"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    cfg = WorldConfig(seed=5, image_size=32, frames=30, blocks=3, conditions=DOMAINS, workers=1, sheet_places=2)
    return make_world(cfg, tmp_path_factory.mktemp("depth_train") / "world", progress=False)


@pytest.fixture(scope="module")
def run(world, tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("depth_run")
    torch.manual_seed(7)
    cfg = preset("micro", DOMAINS)
    init = save_checkpoint(tmp / "init.pt", DisamNet(cfg), cfg)
    out = tmp / "run"
    rc = cli.main(["--recipe", "depth_demo", "--data", str(world), "--out", str(out), "--init", str(init), "-q",
                   *OVERRIDES])
    assert rc == 0
    return {"init": init, "out": out, "summary": json.loads((out / "summary.json").read_text())}


def _abs_rel_numpy(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean over images of mean |p - t| / t over the pixels with t > 0 (images without any are skipped)."""
    per = []
    for p, t in zip(pred, gt):
        ok = t > 0
        if ok.any():
            per.append(float(np.mean(np.abs(p[ok] - t[ok]) / t[ok])))
    return float(np.mean(per))


def test_depth_run_keeps_the_encoders_and_stores_the_best_decoder(run, world):
    state0, _, _ = read_checkpoint(run["init"])
    state1, _, meta = read_checkpoint(run["out"] / "model.pt")
    enc_keys = [k for k in state0 if k.startswith("encoders.")]
    assert enc_keys and all(torch.equal(state0[k], state1[k]) for k in enc_keys)  # frozen: bit for bit
    s = run["summary"]
    assert [h["step"] for h in json.loads((run["out"] / "val.json").read_text())] == [0, 20, 40]
    assert s["val_best"]["abs_rel"] < s["val_start"]["abs_rel"]  # the decoder learned something
    assert meta["extra"]["step"] == s["val_best"]["step"]

    # recompute the validation abs. rel. of the stored decoder, per condition, in numpy
    enc = Encoder.from_checkpoint(run["out"] / "model.pt", device="cpu")
    branch = enc.depth_branch
    assert isinstance(branch, DepthBranch) and branch.grid == 4 and branch.decoder.width == 16
    recipe = load_recipe("depth_demo", OVERRIDES)
    data = build_data(recipe, world)
    for dom in data.val:
        x = to_model_input([read_image(p) for p in dom.paths], 32)
        pred = branch.depth(enc.encode(x, dom.name))[:, 0].numpy()
        gt = np.stack([read_depth(depth_path(p)) for p in dom.paths])
        assert _abs_rel_numpy(pred, gt) == pytest.approx(s["val_best"][dom.name], rel=1e-4)


def test_depth_run_chooses_the_fusion_weight_among_its_candidates(run):
    s = run["summary"]
    rows = s["fusion"]["rows"]
    assert set(rows) == {"night"} and s["fusion_weight"] in (0.8, 0.5, 1.0)
    means = {w: rows["night"][f"fused@{w:g}"] for w in (1.0, 0.8, 0.5)}
    best = max(means.values())
    assert s["fusion_weight"] == max(w for w, v in means.items() if v == best)  # ties: the larger weight
    assert rows["night"]["fused@1"] == rows["night"]["appearance"]
    assert Encoder.from_checkpoint(run["out"] / "model.pt", device="cpu").depth_branch.fusion_weight == \
        s["fusion_weight"]


def test_per_domain_run_chooses_query_weights_against_the_validation_and_training_database(world, run, tmp_path):
    """depth.per_domain + depth.val_distractors: the same decoder (same seed), a database of the reference's val
    + train parts, each query condition's weight by its own row, stored in the branch (version 2 when any)."""
    out = tmp_path / "per"
    rc = cli.main(["--recipe", "depth_demo", "--data", str(world), "--out", str(out), "--init", str(run["init"]),
                   "-q", *OVERRIDES, "depth.per_domain=true", "depth.val_distractors=true"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    data = build_data(load_recipe("depth_demo", OVERRIDES), world)
    ref = {d.name: len(d) for d in data.val}["sunny"] + {d.name: len(d) for d in data.train}["sunny"]
    assert s["fusion"]["database"] == ref and s["val_best"] == run["summary"]["val_best"]
    row = s["fusion"]["rows"]["night"]
    best = max(row[f"fused@{w:g}"] for w in (1.0, 0.8, 0.5))
    want = max(w for w in (1.0, 0.8, 0.5) if row[f"fused@{w:g}"] == best)
    assert s["fusion_weight"] == want  # one query condition: its own weight is the map's
    assert s["fusion"]["domain_weights"] == ({"night": want} if want < 1.0 else {})
    branch = Encoder.from_checkpoint(out / "model.pt", device="cpu").depth_branch
    assert branch.domain_weights == s["fusion"]["domain_weights"]

    # depth_eval scores each query condition with its own weight (row fused) and the map's (row fused_map)
    from disam_ros.training import depth_eval

    rc = depth_eval.main(["--data", str(world), "--model", str(out / "model.pt"), "--reference", "sunny",
                          "--tolerances", "5", "--json", str(tmp_path / "eval.json")])
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert rc == 0 and ev["domain_weights"] == branch.domain_weights
    r = ev["r1"]["5"]["night"]
    if branch.domain_weights.get("night", branch.fusion_weight) == branch.fusion_weight:
        assert r["fused"] == r["fused_map"]
    assert depth_eval.format_tables(ev).count("| fused") == (2 if branch.domain_weights else 1)


def test_choose_weight_by_hand_prefers_appearance_on_ties():
    rows = {"night": {"queries": 4, "fused@1": 0.5, "fused@0.8": 0.75, "fused@0.5": 0.75},
            "fog": {"queries": 4, "fused@1": 0.5, "fused@0.8": 0.25, "fused@0.5": 0.25},
            "empty": {"queries": 0}}
    assert choose_weight(rows, [0.5, 0.8]) == (1.0, 0.5)  # 0.8 and 0.5 tie with 1.0 at 0.5: appearance wins
    rows["fog"]["fused@0.5"] = 0.5
    assert choose_weight(rows, [0.5, 0.8]) == (0.5, 0.625)


def test_condition_recalls_by_hand():
    # database: two places 10 m apart; queries at both places. Appearance confuses query 0, depth does not.
    def cond(name, pos, a, d):
        a, d = torch.tensor(a), torch.tensor(d)
        return EncodedCondition(name, np.asarray(pos, float), a, d, d, torch.zeros(len(a)))

    db = cond("ref", [[0, 0, 0], [10, 0, 0]], [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]])
    q = cond("night", [[0, 0, 0], [10, 0, 0]], [[0.6, 0.8], [0.0, 1.0]], [[1.0, 0.0], [0.6, 0.8]])
    r = condition_recalls(q, db, [0.5, 0.9], tol=5.0)
    # query 0: appearance 0.6 vs 0.8 (wrong); depth 1 vs 0 (right); w=0.5: 0.8 vs 0.4 (right); w=0.9: 0.64 vs 0.72
    # query 1: appearance right (1 vs 0); depth 0.8 vs 0.6 (right)
    assert r == {"queries": 2, "appearance": 0.5, "depth": 1.0, "true_depth": 1.0, "fused@0.5": 1.0,
                 "fused@0.9": 0.5, "fused@1": 0.5}
    far = cond("far", [[100, 0, 0]], [[1.0, 0.0]], [[1.0, 0.0]])
    assert condition_recalls(far, db, [0.5], tol=5.0) == {"queries": 0}


def test_branch_record_round_trip_and_damage(tmp_path):
    torch.manual_seed(0)
    cfg = preset("micro", DOMAINS)
    branch = DepthBranch(DepthDecoder.for_model(cfg, width=8), grid=4, fusion_weight=0.25)
    z = torch.randn(2, *cfg.content_shape)
    back = DepthBranch.from_extra({EXTRA_KEY: branch.to_extra()})
    assert torch.equal(back.depth(z), branch.depth(z)) and back.record() == branch.record()
    assert back.record() == {"fusion_weight": 0.25, "grid": 4, "dim": 16, "max_depth_m": 80.0}
    assert DepthBranch.from_extra({}) is None
    bad = branch.to_extra()
    del bad["state_dict"]["body.0.weight"]
    with pytest.raises(DepthBranchError, match="damaged"):
        DepthBranch.from_extra({EXTRA_KEY: bad})
    with pytest.raises(DepthBranchError, match="version"):
        DepthBranch.from_extra({EXTRA_KEY: {**branch.to_extra(), "version": 9}})
    path = save_checkpoint(tmp_path / "bad.pt", DisamNet(cfg), cfg, {EXTRA_KEY: bad}, parts=("encoders",))
    with pytest.raises(CheckpointError, match="bad.pt.*damaged"):
        Encoder.from_checkpoint(path, device="cpu")
    with pytest.raises(DepthBranchError, match="fusion weight"):
        DepthBranch(branch.decoder, 4, 1.5)


def test_fused_inner_product_is_the_weighted_sum_with_eq16_kept_as_is():
    torch.manual_seed(1)
    cfg = preset("micro", DOMAINS)
    branch = DepthBranch(DepthDecoder.for_model(cfg, width=8), grid=4, fusion_weight=0.3)
    z = torch.randn(2, *cfg.content_shape)
    z[0, 3] = 0.0  # a dead channel: eq. 16 vector of norm < 1, which fusion must not re-normalise
    c = z.shape[1]
    maps = z.flatten(2)
    unit = maps / maps.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    eq16 = float((unit[0] * unit[1]).sum() / c)  # mean over channels of the spatial-map cosine (0 for the dead one)
    a = (unit / math.sqrt(c)).flatten(1)
    d = branch.describe(z)
    cos_d = float(d[0] @ d[1] / (d[0].norm() * d[1].norm()))
    f = branch.fuse(a, z)
    assert f.shape == (2, a.shape[1] + 16)
    assert float(f[0] @ f[1]) == pytest.approx(0.3 * eq16 + 0.7 * cos_d, abs=1e-5)


def test_bad_depth_recipe_values_and_resume_are_one_line_errors(world, tmp_path, capsys):
    for override, needle in (("depth.loss=l2", "depth.loss"), ("depth.fusion_weights=[0.5,1.5]", "fusion_weight"),
                             ("depth.grid=0", "depth.grid"), ("depth.max_depth_m=0", "max_depth_m"),
                             ("depth.select=loss", "depth.select"), ("depth.place_weight=-1", "place_weight"),
                             ("depth.place_tau=0", "place_tau")):
        rc = cli.main(["--recipe", "depth_demo", "--data", str(world), "--out", str(tmp_path / "r"), override])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and needle in err and len(err.splitlines()) == 1
    with pytest.raises(ValueError, match="--resume is not offered for depth recipes"):
        DepthTrainer(load_recipe("depth_demo", OVERRIDES), world, tmp_path / "r", resume=True)


def test_export_carries_the_branch_with_float16_encoders(run, tmp_path):
    from disam_ros.training.export import export

    src = run["out"] / "model.pt"
    assert read_checkpoint(src)[2]["parts"] == ["encoders", "decoders", "discriminators"]  # the init's parts
    export(src, tmp_path / "ship.pt", half=True, role="coarse")
    shipped = Encoder.from_checkpoint(tmp_path / "ship.pt", device="cpu")
    orig = Encoder.from_checkpoint(src, device="cpu")
    z = torch.randn(1, *shipped.content_shape)
    assert shipped.depth_branch.record() == orig.depth_branch.record()
    assert torch.equal(shipped.depth_branch.depth(z), orig.depth_branch.depth(z))  # decoder kept in float32
    assert read_checkpoint(tmp_path / "ship.pt")[2]["dtype"] == "float16"


def test_place_contrastive_by_hand():
    from disam_ros.model.depth import place_contrastive

    eye = torch.eye(2)
    # logits = I / tau (tau 1): each row's softmax gives its own column e / (e + 1): loss log(1 + 1/e), both ways
    assert float(place_contrastive(eye, eye, tau=1.0)) == pytest.approx(math.log(1.0 + math.exp(-1.0)))
    # tau 0.5 doubles the logits: log(1 + e^-2)
    assert float(place_contrastive(eye, eye, tau=0.5)) == pytest.approx(math.log(1.0 + math.exp(-2.0)))
    # the other row shows the same place: left out of the softmax, nothing to push away
    assert float(place_contrastive(eye, eye, torch.ones(2, 2, dtype=torch.bool), tau=1.0)) == pytest.approx(0.0)
    # a swapped partner batch: the right column has logit 0 against 1, loss log(1 + e)
    swapped = eye.flip(0)
    assert float(place_contrastive(eye, swapped, tau=1.0)) == pytest.approx(math.log(1.0 + math.e))


def test_positive_table_pairs_the_nearest_view_of_each_other_condition_with_the_same_mirroring():
    from disam_ros.training.depth_trainer import DepthViews, positive_table

    # views 0, 1: condition 0 at x = 0 and 10; views 2, 3: condition 1 at x = 0.5 and 20; view 4: condition 1
    # at x = 0.2 but mirrored (pairs only with mirrored views); view 5: condition 0, mirrored, x = 0
    pos = torch.tensor([[0.0, 0, 0], [10, 0, 0], [0.5, 0, 0], [20, 0, 0], [0.2, 0, 0], [0.0, 0, 0]])
    views = DepthViews(torch.zeros(6, 1, 1, 1), torch.zeros(6, 1, 1, 1), torch.tensor([0, 0, 1, 1, 1, 0]), pos,
                       torch.tensor([False, False, False, False, True, True]))
    table = positive_table(views, 3.0)
    assert table.tolist() == [[-1, 2], [-1, -1], [0, -1], [-1, -1], [5, -1], [-1, 4]]


def test_place_loss_run_keeps_the_best_depth_only_r1(world, run, tmp_path):
    """depth.place_weight with depth.select r1: a real run whose validation history carries the depth-only R@1 and
    whose stored decoder is the point with the best one (the earliest on ties), encoders untouched."""
    out = tmp_path / "place"
    rc = cli.main(["--recipe", "depth_demo", "--data", str(world), "--out", str(out), "--init", str(run["init"]),
                   "-q", *OVERRIDES, "depth.place_weight=1.0", "depth.select=r1", "depth.place_radius_m=5.0",
                   "depth.val_distractors=true"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    hist = json.loads((out / "val.json").read_text())
    r1 = [h["depth_r1"] for h in hist]
    assert all(0.0 <= v <= 1.0 for v in r1) and s["val_best"]["step"] == hist[r1.index(max(r1))]["step"]
    state0, _, _ = read_checkpoint(run["init"])
    state1, _, meta = read_checkpoint(out / "model.pt")
    assert all(torch.equal(state0[k], state1[k]) for k in state0 if k.startswith("encoders."))
    assert meta["extra"]["step"] == s["val_best"]["step"]
