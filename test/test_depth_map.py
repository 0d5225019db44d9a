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
from disam_ros.maps import LocalizationMap, build_map
from disam_ros.maps.descriptors import settings_for_mode
from disam_ros.maps.map_format import MapError
from disam_ros.maps.map_info import render, summary
from disam_ros.model import DisamNet, Encoder, preset, save_checkpoint
from disam_ros.model.depth import DepthDecoder
from disam_ros.model.depth_branch import EXTRA_KEY, DepthBranch
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
    for name, w, per in (("fused", 0.5, {}), ("fused7", 0.7, {}), ("fusedq", 0.5, {"night": 0.8})):
        extra = {EXTRA_KEY: DepthBranch(dec, grid=4, fusion_weight=w, domain_weights=per).to_extra()}
        ckpts[name] = save_checkpoint(tmp / f"{name}.pt", net, cfg, extra, parts=("encoders",))
    cond = DepthDecoder.for_model(cfg, width=8, conditioned=True)
    cond.load_state_dict(dec.state_dict(), strict=False)
    with torch.no_grad():
        cond.film.weight.normal_()  # night and sunny read codes differently
    extra = {EXTRA_KEY: DepthBranch(cond, grid=4, fusion_weight=0.5).to_extra()}
    ckpts["cond"] = save_checkpoint(tmp / "cond.pt", net, cfg, extra, parts=("encoders",))
    maps = {}
    for name, model, mode in (("fused", "fused", "exact"), ("plain", "plain", "exact"), ("pca", "fused", "pca"),
                              ("fusedq", "fusedq", "exact"), ("pcaq", "fusedq", "pca"), ("cond", "cond", "exact")):
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


def test_per_condition_query_weights_change_the_query_not_the_map(setup):
    """Branch version 2 (night 0.8 over a map of w = 0.5): the map, its record and sunny queries are those of the
    version-1 branch; a night query scores 0.8 eq. 16 + 0.2 depth cosine, through localize and the tracker path."""
    maps = setup["maps"]
    man = {k: json.loads((maps[k] / "manifest.json").read_text()) for k in ("fused", "fusedq")}
    assert man["fusedq"]["models"]["coarse"]["depth_branch"] == man["fused"]["models"]["coarse"]["depth_branch"]
    assert np.array_equal(np.asarray(LocalizationMap.load(maps["fusedq"]).coarse_matrix()),
                          np.asarray(LocalizationMap.load(maps["fused"]).coarse_matrix()))
    loc = Localizer.from_map_dir(maps["fusedq"], config=None)
    enc = loc.coarse
    db_z = enc.encode(_images(setup["world"], "sunny"), "sunny")
    assert loc.localize(_images(setup["world"], "sunny")[2], "sunny").topk[0][1] == pytest.approx(1.0, abs=1e-5)
    img = _images(setup["world"], "night")[5]
    qz = enc.encode(img, "night")
    a = (_eq16_vectors(qz) @ _eq16_vectors(db_z).T)[0]
    d = (enc.depth_branch.describe(qz) @ enc.depth_branch.describe(db_z).T)[0]
    want = 0.8 * a + 0.2 * d
    res = loc.localize(img, "night")
    assert res.index == int(want.argmax())
    for idx, score in res.topk:
        assert score == pytest.approx(float(want[idx]), abs=1e-5)
    res2, scores = loc.localize_and_score(qz, None, None, domain="night")
    assert res2.index == res.index and np.allclose(scores, want.numpy(), atol=1e-5)
    old = 0.5 * a + 0.5 * d  # without the domain the query takes the map's weight, as version 1 does
    assert np.allclose(loc.place_scores_features(qz), old.numpy(), atol=1e-5)
    pca = Localizer.from_map_dir(maps["pcaq"], config=None)
    assert pca.localize(img, "night").index == pca.localize_features(qz, domain="night").index


def test_a_conditioned_decoder_describes_map_and_query_under_their_own_conditions(setup):
    """The map's depth descriptors are decoded as the reference (sunny), a night query's as night."""
    loc = Localizer.from_map_dir(setup["maps"]["cond"], config=None)
    enc, br = loc.coarse, loc.coarse.depth_branch
    db_z = enc.encode(_images(setup["world"], "sunny"), "sunny")
    want_db = torch.cat([math.sqrt(0.5) * _eq16_vectors(db_z), math.sqrt(0.5) * br.describe(db_z, "sunny")], 1)
    assert np.allclose(np.asarray(LocalizationMap.load(setup["maps"]["cond"]).coarse_matrix()), want_db.numpy(),
                       atol=1e-6)
    img = _images(setup["world"], "night")[5]
    qz = enc.encode(img, "night")
    a = (_eq16_vectors(qz) @ _eq16_vectors(db_z).T)[0]
    d = (br.describe(qz, "night") @ br.describe(db_z, "sunny").T)[0]
    assert not torch.allclose(br.describe(qz, "night"), br.describe(qz, "sunny"))
    res = loc.localize(img, "night")
    for idx, score in res.topk:
        assert score == pytest.approx(float(0.5 * a[idx] + 0.5 * d[idx]), abs=1e-5)
    with pytest.raises(ValueError, match="conditioned on the condition"):
        loc.localize_features(qz)  # without the condition the depth cannot be decoded
