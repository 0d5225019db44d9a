"""Per-query-condition fusion weights: a query scales its own two parts so that, against a map of
weight w, it scores w_q <a, a'> + (1 - w_q) cos(d, d'); the branch record (version 2) carries the weights and
version-1 records still read; and the decoder conditioned on the condition (FiLM of its first layer, zero at the
start). Expected values are worked out by hand in the comments.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from disam_ros.model import preset
from disam_ros.model.depth import DepthDecoder, fuse_descriptors, fuse_query, query_scales
from disam_ros.model.depth_branch import EXTRA_KEY, DepthBranch, DepthBranchError
from disam_ros.training.depth_scores import EncodedCondition, domain_weights, merge_conditions

DOMAINS = ("sunny", "night")


def test_query_scales_by_hand():
    # w = 0.5, w_q = 0.8: alpha = 0.8 / sqrt(0.5) = 1.13137, beta = 0.2 / sqrt(0.5) = 0.28284
    alpha, beta = query_scales(0.5, 0.8)
    assert alpha == pytest.approx(1.1313708, abs=1e-6) and beta == pytest.approx(0.2828427, abs=1e-6)
    assert query_scales(0.4, 0.4) == pytest.approx((math.sqrt(0.4), math.sqrt(0.6)))  # w_q = w: fuse as is
    assert query_scales(0.4, 1.0)[1] == 0.0  # w_q = 1: the depth part drops out
    for w in (0.0, 1.0):
        with pytest.raises(ValueError, match="in \\(0, 1\\)"):
            query_scales(w, 0.5)
    with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
        query_scales(0.5, 1.2)


def test_query_vector_against_a_map_vector_scores_the_query_weight_by_hand():
    # query: a = (0.3, 0.4) (an eq. 16 vector with a dead half: |a| = 0.5), d = (3, 4) -> unit (0.6, 0.8)
    # map:   a' = (1, 0), d' = (0, 1), stored with w = 0.5
    # <a, a'> = 0.3, cos(d, d') = 0.8; w_q = 0.8: 0.8 * 0.3 + 0.2 * 0.8 = 0.24 + 0.16 = 0.40
    a, d = torch.tensor([[0.3, 0.4]]), torch.tensor([[3.0, 4.0]])
    m = fuse_descriptors(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 0.5, unit_appearance=False)
    q = fuse_query(a, d, 0.5, 0.8)
    assert float(q @ m.T) == pytest.approx(0.40, abs=1e-6)
    assert float(fuse_query(a, d, 0.5, 1.0) @ m.T) == pytest.approx(0.30, abs=1e-6)  # appearance alone
    assert float(fuse_query(a, d, 0.5, 0.0) @ m.T) == pytest.approx(0.80, abs=1e-6)  # depth alone
    # w_q = w reproduces the map's own fusion: 0.5 * 0.3 + 0.5 * 0.8 = 0.55
    same = fuse_query(a, d, 0.5, 0.5)
    assert torch.allclose(same, fuse_descriptors(a, d, 0.5, unit_appearance=False))
    assert float(same @ m.T) == pytest.approx(0.55, abs=1e-6)


def _branch(weights: dict[str, float] | None = None, w: float = 0.5) -> DepthBranch:
    torch.manual_seed(0)
    return DepthBranch(DepthDecoder.for_model(preset("micro", DOMAINS), width=8), 4, w, "silog", weights or {})


def test_branch_query_weight_and_fuse_query_per_domain():
    branch = _branch({"night": 0.8})
    assert branch.query_weight("night") == 0.8 and branch.query_weight("sunny") == 0.5
    assert branch.query_weight(None) == 0.5 and branch.query_weight("fog") == 0.5
    z = torch.randn(3, *preset("micro", DOMAINS).content_shape)
    a = torch.rand(3, 10)
    db = branch.fuse(a, z)  # map vectors, w = 0.5
    d = branch.describe(z)
    want = 0.8 * (a @ a.T) + 0.2 * (d @ d.T)
    assert torch.allclose(branch.fuse_query(a, z, "night") @ db.T, want, atol=1e-6)
    assert torch.equal(branch.fuse_query(a, z, "sunny"), db)  # unlisted: exactly the map's fusion
    assert torch.equal(branch.fuse_query(a, z, None), db)


def test_branch_domain_weights_are_checked():
    with pytest.raises(DepthBranchError, match="in \\(0, 1\\)"):
        _branch({"night": 0.8}, w=1.0)
    with pytest.raises(DepthBranchError, match="domain weight 'night'"):
        _branch({"night": 1.5})
    with pytest.raises(DepthBranchError, match="domain weight"):
        _branch({"night": True})


def test_record_versions_and_map_fields():
    plain, per = _branch(), _branch({"night": 0.8, "fog": 0.3})
    assert plain.to_extra()["version"] == 1 and "domain_weights" not in plain.to_extra()  # old readers read it
    rec = per.to_extra()
    assert rec["version"] == 2 and rec["domain_weights"] == {"night": 0.8, "fog": 0.3}
    back = DepthBranch.from_extra({EXTRA_KEY: rec})
    assert back.domain_weights == {"night": 0.8, "fog": 0.3}
    assert back.record() == plain.record() == {"fusion_weight": 0.5, "grid": 4, "dim": 16, "max_depth_m": 80.0}
    assert DepthBranch.from_extra({EXTRA_KEY: plain.to_extra()}).domain_weights == {}
    with pytest.raises(DepthBranchError, match="damaged.*domain_weights"):
        DepthBranch.from_extra({EXTRA_KEY: {**plain.to_extra(), "version": 2}})
    with pytest.raises(DepthBranchError, match="damaged"):
        DepthBranch.from_extra({EXTRA_KEY: {**rec, "domain_weights": {"night": 2.0}}})
    with pytest.raises(DepthBranchError, match="version 3"):
        DepthBranch.from_extra({EXTRA_KEY: {**rec, "version": 3}})


def test_domain_weights_by_hand_each_condition_its_own_best_ties_to_appearance():
    rows = {"night": {"queries": 4, "fused@1": 0.50, "fused@0.8": 0.50, "fused@0.5": 0.25},  # tie -> 1
            "fog": {"queries": 4, "fused@1": 0.25, "fused@0.8": 0.50, "fused@0.5": 0.75},  # best 0.5
            "snow": {"queries": 4, "fused@1": 0.25, "fused@0.8": 0.75, "fused@0.5": 0.75},  # tie -> 0.8
            "rain": {"queries": 0}}  # nothing scored: no entry
    assert domain_weights(rows, [0.8, 0.5]) == {"night": 1.0, "fog": 0.5, "snow": 0.8}


def test_merge_conditions_stacks_a_database():
    def cond(pos: list[float], v: float) -> EncodedCondition:
        n = len(pos)
        return EncodedCondition("x", np.array([[p, 0.0] for p in pos]), torch.full((n, 2), v), torch.full((n, 3), v),
                                torch.full((n, 3), v), torch.full((n,), v))
    m = merge_conditions("sunny", [cond([0.0, 1.0], 1.0), cond([5.0], 2.0)])
    assert m.name == "sunny" and m.positions[:, 0].tolist() == [0.0, 1.0, 5.0]
    assert m.appearance[:, 0].tolist() == [1.0, 1.0, 2.0] and m.abs_rel.tolist() == [1.0, 1.0, 2.0]


def test_conditioned_decoder_starts_shared_and_applies_film_by_hand():
    torch.manual_seed(3)
    cfg = preset("micro", DOMAINS)
    shared = DepthDecoder.for_model(cfg, width=8)
    cond = DepthDecoder.for_model(cfg, width=8, conditioned=True)
    assert cond.domains == DOMAINS and cond.film.weight.shape == (2, 16)
    missing, unexpected = cond.load_state_dict(shared.state_dict(), strict=False)  # body.* keys are shared
    assert missing == ["film.weight"] and unexpected == []
    z = torch.randn(2, *cfg.content_shape)
    night = cond.domain_index("night", 2, z.device)
    assert night.tolist() == [1, 1]
    assert torch.equal(cond(z, night), shared(z))  # zero FiLM = the shared decoder
    with torch.no_grad():  # night: gamma = 1 (features x 2), beta = 0.5
        cond.film.weight[1, :8], cond.film.weight[1, 8:] = 1.0, 0.5
    h = shared.body[0](z) * 2.0 + 0.5
    for layer in shared.body[1:]:
        h = layer(h)
    assert torch.allclose(cond(z, night), shared.max_depth_m * torch.sigmoid(h), atol=1e-6)
    assert torch.equal(cond(z, cond.domain_index("sunny", 2, z.device)), shared(z))  # sunny row still 0
    with pytest.raises(ValueError, match="conditioned on the condition"):
        cond.domain_index(None, 2, z.device)
    with pytest.raises(ValueError, match="conditioned on the condition"):
        cond.domain_index("fog", 2, z.device)
    with pytest.raises(ValueError, match="needs condition indices"):
        cond(z)
    with pytest.raises(ValueError, match="needs condition indices"):
        shared(z, night)
    assert shared.domain_index("night", 2, z.device) is None


def test_conditioned_branch_record_round_trip():
    torch.manual_seed(4)
    cfg = preset("micro", DOMAINS)
    dec = DepthDecoder.for_model(cfg, width=8, conditioned=True)
    with torch.no_grad():
        dec.film.weight.normal_()
    branch = DepthBranch(dec, 4, 0.5)
    rec = branch.to_extra()
    assert rec["version"] == 2 and rec["domains"] == ["sunny", "night"] and "domain_weights" not in rec
    back = DepthBranch.from_extra({EXTRA_KEY: rec})
    z = torch.randn(2, *cfg.content_shape)
    assert torch.equal(back.depth(z, "night"), branch.depth(z, "night"))
    assert not torch.equal(back.depth(z, "night"), back.depth(z, "sunny"))
    with pytest.raises(ValueError, match="conditioned"):
        back.describe(z)
    with pytest.raises(DepthBranchError, match="damaged"):  # a conditioned state dict without its domains
        DepthBranch.from_extra({EXTRA_KEY: {k: v for k, v in rec.items() if k != "domains"} | {"version": 1}})
