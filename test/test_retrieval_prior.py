"""Spatial prior gating: candidates only from inside the gate; global fallback when the gate is empty."""
from __future__ import annotations

import numpy as np
import pytest

from disam_ros.bench.table_encoder import TableEncoder, token_frames
from disam_ros.maps import LocalizationMap, build_map, settings_for_mode
from disam_ros.retrieval import Localizer, SearchConfig, SpatialPrior

N = 400


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rng = np.random.default_rng(11)
    feats = rng.standard_normal((N + 50, 8, 4, 4)).astype(np.float32)
    positions = rng.uniform([-100, -100, -2], [100, 100, 2], size=(N, 3))
    enc = TableEncoder(feats)
    maps = {}
    for mode in ("exact", "ivf", "hnsw"):
        out = tmp_path_factory.mktemp("prior") / mode
        build_map(token_frames(N, positions), enc, None, out, "ref", settings_for_mode(mode, pca_dim=32),
                  progress=False)
        maps[mode] = LocalizationMap.load(out)
    return enc, positions, maps


def _ids(res):
    return {i for i, _ in res.topk} | {i for i, _ in res.coarse_topn} | {res.index}


@pytest.mark.parametrize("mode", ["exact", "ivf", "hnsw"])
@pytest.mark.parametrize("backend", ["numpy", "faiss", "torch"])
def test_radius_gate_never_leaks(world, mode, backend):
    enc, positions, maps = world
    loc = Localizer(maps[mode], enc, None, SearchConfig(device="cpu", backend=backend, top_k=10))
    rng = np.random.default_rng(12)
    gated = 0
    for q in range(N, N + 20):
        centre = np.array([*rng.uniform(-80, 80, 2), 0.0])
        radius = float(rng.uniform(20, 60))
        inside = set(np.flatnonzero(np.linalg.norm(positions - centre, axis=1) <= radius))
        res = loc.localize(enc.image_for(q), "query", SpatialPrior(centre, radius=radius))
        if inside:
            gated += 1
            assert res.used_prior
            assert _ids(res) <= inside
            assert len(res.topk) == min(10, len(inside))
            # the best inside the gate is the global exact ranking restricted to the gate
            full = Localizer(maps["exact"], enc, None, SearchConfig(device="cpu", top_k=N, top_n=1))
            ranking = [i for i, _ in full.localize(enc.image_for(q), "query").topk if i in inside]
            assert res.coarse_topn[0][0] == ranking[0]
    assert gated >= 15


def test_covariance_gate_is_mahalanobis(world):
    enc, positions, maps = world
    loc = Localizer(maps["exact"], enc, None, SearchConfig(device="cpu", top_k=20))
    rng = np.random.default_rng(13)
    gated = 0
    for q in range(N, N + 20):
        centre = np.array([*rng.uniform(-80, 80, 2), 0.0])
        a = rng.standard_normal((3, 3))
        cov = a @ a.T * 100 + np.diag([50.0, 50.0, 1.0])
        prior = SpatialPrior(centre, covariance=cov, n_sigma=2.0)
        d = positions - centre
        m2 = np.einsum("ij,jk,ik->i", d, np.linalg.inv(cov), d)
        inside = set(np.flatnonzero(m2 <= 4.0))
        res = loc.localize(enc.image_for(q), "query", prior)
        assert res.used_prior == bool(inside)
        if inside:
            gated += 1
            assert _ids(res) <= inside
    assert gated >= 10


def test_both_radius_and_covariance_must_hold(world):
    _, positions, _ = world
    prior = SpatialPrior([0, 0, 0], radius=40.0, covariance=np.diag([100.0**2, 10.0**2, 10.0**2]))
    mask = prior.gate(positions)
    d = positions
    mahalanobis2 = (d[:, 0] / 100) ** 2 + (d[:, 1] / 10) ** 2 + (d[:, 2] / 10) ** 2
    expected = (np.linalg.norm(d, axis=1) <= 40) & (mahalanobis2 <= 9)
    np.testing.assert_array_equal(mask, expected)


def test_empty_gate_falls_back_to_global(world):
    enc, _, maps = world
    loc = Localizer(maps["exact"], enc, None, SearchConfig(device="cpu"))
    glob = loc.localize(enc.image_for(N + 1), "query")
    far = loc.localize(enc.image_for(N + 1), "query", SpatialPrior([1e4, 1e4, 0], radius=5.0))
    assert not glob.used_prior and not far.used_prior
    assert far.topk == glob.topk and far.index == glob.index


def test_prior_validation():
    with pytest.raises(ValueError, match="radius or a 3x3 covariance"):
        SpatialPrior([0, 0, 0])
    with pytest.raises(ValueError, match="positive definite"):
        SpatialPrior([0, 0, 0], covariance=np.diag([1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="3 finite numbers"):
        SpatialPrior([0, np.nan, 0], radius=1.0)
    with pytest.raises(ValueError, match="radius"):
        SpatialPrior([0, 0, 0], radius=-1.0)
