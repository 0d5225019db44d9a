"""Maps of fused appearance + depth vectors (seed 002): what they store, how they are searched, and the refusal of
a model whose depth branch does not match the map.

Expected vectors and scores are recomputed here by hand (per-channel normalisation for eq. 16, the branch's depth
descriptor, the square-root weights), not with the map code.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from disam_ros.data.folders import iter_frames, load_condition
from disam_ros.data.synthetic import WorldConfig, make_world
from disam_ros.model import DisamNet, Encoder, preset, save_checkpoint
from disam_ros.model.depth import DepthDecoder
from disam_ros.model.depth_branch import EXTRA_KEY, DepthBranch
from disam_ros.retrieval import LocalizationMap, build_map
from disam_ros.retrieval.descriptors import settings_for_mode
from disam_ros.retrieval.map_format import MapError
from disam_ros.retrieval.map_info import render, summary
from disam_ros.retrieval.search import Localizer

DOMAINS = ("sunny", "night")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("depth_map")
    world = make_world(WorldConfig(seed=4, image_size=32, frames=16, blocks=3, conditions=DOMAINS, workers=1,
                                   sheet_places=2), tmp / "world", progress=False)
    torch.manual_seed(0)
    cfg = preset("micro", DOMAINS)
    net = DisamNet(cfg)
    dec = DepthDecoder.for_model(cfg, width=8)
    ckpts = {"plain": save_checkpoint(tmp / "plain.pt", net, cfg, parts=("encoders",))}
    for name, w in (("fused", 0.5), ("fused7", 0.7)):
        extra = {EXTRA_KEY: DepthBranch(dec, grid=4, fusion_weight=w).to_extra()}
        ckpts[name] = save_checkpoint(tmp / f"{name}.pt", net, cfg, extra, parts=("encoders",))
    maps = {}
    for name, model, mode in (("fused", "fused", "exact"), ("plain", "plain", "exact"), ("pca", "fused", "pca")):
        enc = Encoder.from_checkpoint(ckpts[model], device="cpu")
        maps[name] = build_map(iter_frames(load_condition(world, "sunny", require_poses=True)), enc, None,
                               tmp / f"map_{name}", "sunny", settings_for_mode(mode), progress=False,
                               checkpoint_paths=(ckpts[model], None))
    return {"world": world, "ckpts": ckpts, "maps": maps, "cfg": cfg}


def _eq16_vectors(z: torch.Tensor) -> torch.Tensor:
    maps = z.flatten(2)
    return (maps / maps.norm(dim=-1, keepdim=True).clamp(min=1e-12)).flatten(1) / math.sqrt(z.shape[1])


def _images(world: Path, cond: str) -> list[np.ndarray]:
    return [f.image for f in iter_frames(load_condition(world, cond, require_poses=True))]


def test_fused_map_records_the_branch_and_stores_the_weighted_concatenation(setup):
    man = json.loads((setup["maps"]["fused"] / "manifest.json").read_text())
    c, h, w = setup["cfg"].content_shape
    assert man["models"]["coarse"]["depth_branch"] == {"fusion_weight": 0.5, "grid": 4, "dim": 16,
                                                        "max_depth_m": 80.0}
    assert man["descriptors"]["coarse_dim"] == c * h * w + 16
    plain = json.loads((setup["maps"]["plain"] / "manifest.json").read_text())
    assert "depth_branch" not in plain["models"]["coarse"] and plain["descriptors"]["coarse_dim"] == c * h * w

    enc = Encoder.from_checkpoint(setup["ckpts"]["fused"], device="cpu")
    z = enc.encode(_images(setup["world"], "sunny"), "sunny")
    want = torch.cat([math.sqrt(0.5) * _eq16_vectors(z), math.sqrt(0.5) * enc.depth_branch.describe(z)], 1)
    m = LocalizationMap.load(setup["maps"]["fused"])
    assert np.allclose(np.asarray(m.coarse_matrix()), want.numpy(), atol=1e-6)


def test_fused_search_scores_are_the_weighted_sum_of_appearance_and_depth(setup):
    loc = Localizer.from_map_dir(setup["maps"]["fused"], config=None)
    enc = loc.coarse
    db_z = enc.encode(_images(setup["world"], "sunny"), "sunny")
    for i, img in enumerate(_images(setup["world"], "sunny")[:4]):
        res = loc.localize(img, "sunny")
        assert res.ok and res.index == i and res.topk[0][1] == pytest.approx(1.0, abs=1e-5)  # w*1 + (1-w)*1
    img = _images(setup["world"], "night")[5]
    qz = enc.encode(img, "night")
    res = loc.localize(img, "night")
    a = (_eq16_vectors(qz) @ _eq16_vectors(db_z).T)[0]
    d = (enc.depth_branch.describe(qz) @ enc.depth_branch.describe(db_z).T)[0]
    fused = 0.5 * a + 0.5 * d
    assert res.index == int(fused.argmax())
    for idx, score in res.topk:
        assert score == pytest.approx(float(fused[idx]), abs=1e-5)


def test_pca_fused_map_loads_and_finds_its_own_images(setup):
    loc = Localizer.from_map_dir(setup["maps"]["pca"])
    for i, img in enumerate(_images(setup["world"], "sunny")[:3]):
        assert loc.localize(img, "sunny").index == i


def test_a_model_whose_branch_does_not_match_the_map_is_refused(setup):
    ck, maps = setup["ckpts"], setup["maps"]
    with pytest.raises(MapError, match="fused appearance\\+depth vectors .* has no depth branch") as e:
        Localizer.from_map_dir(maps["fused"], coarse_ckpt=ck["plain"])
    assert len(str(e.value).splitlines()) == 1 and "manifest.json" in str(e.value)
    with pytest.raises(MapError, match="appearance-only coarse vectors but the coarse model .* carries a depth"):
        Localizer.from_map_dir(maps["plain"], coarse_ckpt=ck["fused"])
    with pytest.raises(MapError, match="fusion_weight.*0.5.*0.7"):
        Localizer.from_map_dir(maps["fused"], coarse_ckpt=ck["fused7"])
    loc = Localizer(LocalizationMap.load(maps["fused"]), None)  # features-only search cannot describe depth
    z = Encoder.from_checkpoint(ck["fused"], device="cpu").encode(_images(setup["world"], "sunny")[0], "sunny")
    with pytest.raises(ValueError, match="fused appearance\\+depth"):
        loc.localize_features(z)


def test_map_info_says_which_maps_are_fused(setup):
    for name, note in (("fused", "(appearance 0.5 + hallucinated-depth 16 dims; seed 002)"), ("plain", None)):
        root = setup["maps"][name]
        text = render(summary(json.loads((root / "manifest.json").read_text())), root)
        line = next(x for x in text.splitlines() if x.startswith("coarse "))
        assert line.endswith(note) if note else "depth" not in line


def test_the_node_path_relocalizer_fuses_and_refuses_like_the_search(setup):
    from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
    from disam_ros.retrieval.frame_gate import GateConfig

    cfg = RelocalizerConfig(domain="sunny", gate=GateConfig(enabled=False))
    reloc = Relocalizer.from_map(setup["maps"]["fused"], cfg)
    for i, img in enumerate(_images(setup["world"], "sunny")[:3]):
        _, res, scores = reloc.localize_scored(img, 1.0)
        assert res.ok and res.index == i and int(np.argmax(scores)) == i
        assert float(scores[i]) == pytest.approx(1.0, abs=1e-5)  # 0.5 * eq. 16 self-score + 0.5 * depth self-cosine
    plain = RelocalizerConfig(domain="sunny", coarse_checkpoint=str(setup["ckpts"]["plain"]))
    with pytest.raises(MapError, match="has no depth branch"):
        Relocalizer.from_map(setup["maps"]["fused"], plain)
