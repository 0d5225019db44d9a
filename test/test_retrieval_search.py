"""Coarse-to-fine search against independently computed values (paper eq. 16 and plain cosine)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from disam_ros.bench.table_encoder import TableEncoder, token_frames
from disam_ros.maps import LocalizationMap, build_map, settings_for_mode
from disam_ros.maps.descriptors import coarse_vectors, fine_vectors, fit_pca
from disam_ros.retrieval import Localizer, SearchConfig
from disam_ros.retrieval.result import distinctiveness, pose_covariance

pytestmark = pytest.mark.usefixtures("one_thread")  # hundreds of tiny queries: no thread hand-offs


def eq16(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over channels of the cosine between spatial maps, written out as in the paper."""
    total = 0.0
    for k in range(a.shape[0]):
        num = float(np.sum(a[k] * b[k]))
        den = np.sqrt(np.sum(a[k] ** 2)) * np.sqrt(np.sum(b[k] ** 2))
        total += num / den
    return total / a.shape[0]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def make_map(tmp_path, coarse_feats, fine_feats=None, mode="exact", n=None, positions=None, name="map", **kw):
    """Map rows 0..n-1 of the tables; the remaining rows are available as queries."""
    n = len(coarse_feats) if n is None else n
    coarse = TableEncoder(coarse_feats)
    fine = None if fine_feats is None else TableEncoder(fine_feats, checkpoint_sha256="f" * 64)
    build_map(token_frames(n, positions), coarse, fine, tmp_path / name, "ref", settings_for_mode(mode, **kw),
              batch_size=7, progress=False)
    return LocalizationMap.load(tmp_path / name), coarse, fine


def test_coarse_vector_dot_is_eq16():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 6, 5, 3)).astype(np.float32)
    v = coarse_vectors(np.stack([a, b])).numpy()
    assert v[0] @ v[1] == pytest.approx(eq16(a, b), abs=1e-6)
    pooled = coarse_vectors(np.stack([a[:, :4, :2], b[:, :4, :2]]), grid=1).numpy()
    pa, pb = a[:, :4, :2].mean(axis=(1, 2)), b[:, :4, :2].mean(axis=(1, 2))
    expected = np.mean(np.sign(pa) * np.sign(pb))  # 1x1 maps: each channel's cosine is the sign agreement
    assert pooled[0] @ pooled[1] == pytest.approx(expected, abs=1e-6)
    f = fine_vectors(np.stack([a, b])).numpy()
    assert f[0] @ f[1] == pytest.approx(cosine(a, b), abs=1e-6)


def test_dead_channel_contributes_zero():
    a = np.ones((2, 3, 3), np.float32)
    b = a.copy()
    b[1] = 0.0
    v = coarse_vectors(np.stack([a, b])).numpy()
    assert np.isfinite(v).all()
    assert v[0] @ v[1] == pytest.approx(0.5)


def test_coarse_topn_matches_bruteforce_eq16(tmp_path):
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((61, 8, 4, 4)).astype(np.float32)
    m, coarse, _ = make_map(tmp_path, feats, n=60)
    loc = Localizer(m, coarse, None, SearchConfig(top_n=3, top_k=10, device="cpu"))
    for q in range(60, 61):
        res = loc.localize(TableEncoder.image_for(q), "query")
        expected = np.array([eq16(feats[q], feats[i]) for i in range(60)])
        order = np.argsort(-expected)
        assert [i for i, _ in res.coarse_topn] == order[:3].tolist()
        assert [i for i, _ in res.topk] == order[:10].tolist()  # coarse-only: the final ranking is eq. 16
        np.testing.assert_allclose([s for _, s in res.topk], expected[order[:10]], atol=1e-5)
        assert res.ok and res.index == order[0] and res.query_fine is None


def test_fine_rerank_picks_fine_best_among_coarse_topn(tmp_path):
    """Coarse ranks A > B > C (> the rest); the fine features prefer C, then A, then B."""
    rng = np.random.default_rng(2)
    n, q = 30, 30
    coarse = rng.standard_normal((n + 1, 8, 4, 4)).astype(np.float32)
    fine = rng.standard_normal((n + 1, 4, 4, 4)).astype(np.float32)
    A, B, C, D = 5, 11, 17, 23
    for i, noise in ((A, 0.2), (B, 0.4), (C, 0.6)):
        coarse[i] = coarse[q] + noise * rng.standard_normal(coarse[q].shape)
    for i, noise in ((C, 0.1), (A, 0.5), (B, 1.0), (D, 0.0)):  # D is the fine-best overall but not coarse top-3
        fine[i] = fine[q] + noise * rng.standard_normal(fine[q].shape)
    c_scores = {i: eq16(coarse[q], coarse[i]) for i in range(n)}
    f_scores = {i: cosine(fine[q], fine[i]) for i in (A, B, C)}
    assert sorted(c_scores, key=c_scores.get, reverse=True)[:3] == [A, B, C]
    assert sorted(f_scores, key=f_scores.get, reverse=True) == [C, A, B]

    m, ce, fe = make_map(tmp_path, coarse, fine, n=n)
    res = Localizer(m, ce, fe, SearchConfig(device="cpu")).localize(TableEncoder.image_for(q), "query")
    assert [i for i, _ in res.coarse_topn] == [A, B, C]
    assert [i for i, _ in res.topk[:3]] == [C, A, B]
    assert res.index == C and res.index != D
    assert res.topk[0][1] == pytest.approx(f_scores[C], abs=1e-3)  # map fine features are float16
    assert res.query_fine.shape == m.fine_feature(C).shape == (4, 4, 4)
    np.testing.assert_allclose(m.positions[C], res.position)
    assert res.name == m.names[C] and res.stamp == m.stamps[C]


def test_localize_features_equals_localize(tmp_path):
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((21, 8, 4, 4)).astype(np.float32)
    fine = rng.standard_normal((21, 4, 4, 4)).astype(np.float32)
    m, ce, fe = make_map(tmp_path, feats, fine, n=20)
    loc = Localizer(m, ce, fe, SearchConfig(device="cpu"))
    a = loc.localize(TableEncoder.image_for(20), "query")
    b = loc.localize_features(torch.from_numpy(feats[20]), fine[20:21])
    assert a.topk == b.topk and a.coarse_topn == b.coarse_topn and a.confidence == b.confidence
    assert set(a.timings_ms) == {"encode_coarse", "coarse_search", "encode_fine", "fine_rerank", "total"}
    with pytest.raises(ValueError, match="do not match"):
        loc.localize_features(feats[20][:, :2], fine[20])


def structured_world(rng, places=200, c=16, side=16, cond_noise=0.6):
    """Places along a route: smooth random feature maps that drift along the route, and a query per place
    seen under another 'condition' (per-channel gain/offset plus noise)."""
    low = rng.standard_normal((places, c, 4, 4)).astype(np.float32)
    low = np.cumsum(low, axis=0) * 0.3 + rng.standard_normal((places, c, 4, 4)).astype(np.float32)
    maps = torch.nn.functional.interpolate(torch.from_numpy(low), size=(side, side), mode="bilinear").numpy()
    maps += 0.3 * rng.standard_normal(maps.shape).astype(np.float32)
    gain = 1 + 0.3 * rng.standard_normal((1, c, 1, 1)).astype(np.float32)
    queries = gain * maps + 0.2 + cond_noise * rng.standard_normal(maps.shape).astype(np.float32)
    return np.concatenate([maps, queries])


def test_compact_modes_agree_with_exact_top1(tmp_path):
    rng = np.random.default_rng(4)
    places = 200
    feats = structured_world(rng, places)
    exact_map, enc, _ = make_map(tmp_path, feats, n=places, name="exact")
    exact = Localizer(exact_map, enc, None, SearchConfig(device="cpu"))
    top_exact = np.array([exact.localize(enc.image_for(places + i), "query").index for i in range(places)])
    assert np.mean(top_exact == np.arange(places)) > 0.6  # the world is hard enough to be informative
    rates = {}
    for mode in ("pooled", "pca", "ivf", "hnsw"):
        m, _, _ = make_map(tmp_path, feats, n=places, mode=mode, name=mode, pca_dim=64)
        loc = Localizer(m, enc, None, SearchConfig(device="cpu", nprobe=4))
        top = np.array([loc.localize(enc.image_for(places + i), "query").index for i in range(places)])
        rates[mode] = float(np.mean(top == top_exact))
    assert min(rates.values()) >= 0.8, rates


@pytest.mark.parametrize("mode", ["exact", "exact16", "pooled", "pca", "ivf", "hnsw"])
def test_torch_backend_matches_faiss_backend(tmp_path, mode):
    rng = np.random.default_rng(5)
    feats = structured_world(rng, places=300, c=8, side=8)
    m, enc, _ = make_map(tmp_path, feats, n=300, mode=mode, pca_dim=32)
    cfg = dict(top_k=10, top_n=3, device="cpu", nprobe=1000, ef_search=400)  # approximate indexes made exhaustive
    backends = {b: Localizer(m, enc, None, SearchConfig(backend=b, **cfg)) for b in ("faiss", "torch", "numpy")}
    for q in range(300, 600, 10):
        got = {b: loc.localize(enc.image_for(q), "query") for b, loc in backends.items()}
        ids = {b: [i for i, _ in r.topk] for b, r in got.items()}
        assert ids["torch"] == ids["faiss"] == ids["numpy"], (q, ids)
        np.testing.assert_allclose([s for _, s in got["torch"].topk], [s for _, s in got["faiss"].topk], atol=1e-4)


def test_pca_preserves_inner_products_of_map_vectors():
    rng = np.random.default_rng(6)
    basis = rng.standard_normal((10, 64))
    x = (rng.standard_normal((500, 10)) @ basis).astype(np.float32)  # rank 10 data
    pca = fit_pca(x, 10)
    q = torch.from_numpy(x[:5] + 0.0)
    pq, off = pca.project_query(q)
    approx = pq.numpy() @ pca.project_map(x).T + off.numpy()[:, None]
    np.testing.assert_allclose(approx, x[:5] @ x.T, rtol=1e-3, atol=1e-2)
    again = fit_pca(x, 10)
    np.testing.assert_array_equal(again.components, pca.components)


def test_confidence_and_covariance():
    positions = np.stack([np.arange(10.0), np.zeros(10), np.zeros(10)], 1)
    ids = np.array([4, 5, 3, 9, 0])
    # the best place's neighbours follow, another place (9) well below: confident
    high = distinctiveness(4, ids, np.array([0.9, 0.88, 0.87, 0.5, 0.4]), positions, radius=1.5)
    # another place scores almost as well: ambiguous
    low = distinctiveness(4, ids, np.array([0.9, 0.88, 0.87, 0.89, 0.4]), positions, radius=1.5)
    assert high == pytest.approx((0.9 - 0.5) / (0.9 - 0.4))
    assert low == pytest.approx((0.9 - 0.89) / (0.9 - 0.4))
    assert distinctiveness(9, ids, np.array([0.9, 0.88, 0.87, 0.5, 0.4]), positions, 1.5) == 0.0
    assert distinctiveness(4, ids[:1], np.array([0.9]), positions, 1.5) == 0.0
    c_hi, c_lo = pose_covariance(high, 2.0, 0.0), pose_covariance(low, 2.0, 0.0)
    assert c_hi.shape == (6, 6) and np.all(np.diag(c_lo) > np.diag(c_hi))
    assert c_hi[0, 0] >= 1.0**2  # never tighter than half the map spacing
    assert np.allclose(c_hi, np.diag(np.diag(c_hi)))


def test_min_confidence_gives_no_pose(tmp_path):
    rng = np.random.default_rng(7)
    feats = rng.standard_normal((41, 8, 4, 4)).astype(np.float32)  # pure noise: nothing is distinctive
    m, enc, _ = make_map(tmp_path, feats, n=40)
    res = Localizer(m, enc, None, SearchConfig(device="cpu", min_confidence=0.99)).localize(enc.image_for(40), "query")
    assert not res.ok and "min_confidence" in res.reason
    assert res.index == -1 and np.isnan(res.position).all() and np.isnan(res.covariance).all()
    assert len(res.topk) == 5 and 0.0 <= res.confidence < 0.99
    nan_feat = feats[40].copy()
    nan_feat[0, 0, 0] = np.nan
    bad = Localizer(m, enc, None, SearchConfig(device="cpu")).localize_features(nan_feat)
    assert not bad.ok and "not finite" in bad.reason and bad.topk == []
