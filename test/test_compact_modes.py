"""Compact-in-RAM maps with a full-resolution fine re-rank (the `*-full` modes).

The coarse stage is PCA'd (and faiss-indexed for ivf/hnsw); the fine features are full resolution float16 on
disk and memory-mapped. These tests check the re-rank on the memory-mapped rows against the same map held in
RAM and against the cosine written out on the encoder's raw features.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from disam_ros.bench.table_encoder import TableEncoder, token_frames
from disam_ros.maps import LocalizationMap, build_map, merge_shards, settings_for_mode
from disam_ros.maps.descriptors import MODES, coarse_vectors, estimate_map_size
from disam_ros.maps.ivfpq import build_faiss, shortlist_recall
from disam_ros.maps.model_check import verify_map
from disam_ros.maps.npy_rows import RowFile
from disam_ros.model import DisamNet, Encoder, ModelConfig, save_checkpoint
from disam_ros.retrieval import Localizer, SearchConfig
from disam_ros.retrieval.index import RefinedFaissIndex

pytestmark = pytest.mark.usefixtures("one_thread")

PLACES = 60


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _world(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Coarse maps that drift along a route (so neighbours are confusable), and fine maps whose identity lives in
    a zero-mean checkerboard-scale pattern: 2x2 average pooling (16x16 -> 8x8) removes it entirely."""
    rng = np.random.default_rng(seed)
    low = np.cumsum(rng.standard_normal((PLACES, 8, 4, 4)), axis=0).astype(np.float32) * 0.3
    coarse = torch.nn.functional.interpolate(torch.from_numpy(low), size=(8, 8), mode="bilinear").numpy()
    coarse = np.concatenate([coarse, coarse + 0.4 * rng.standard_normal(coarse.shape).astype(np.float32)])
    base = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)  # shared by all places: no identity in it
    signs = rng.choice([-1.0, 1.0], size=(PLACES, 4, 8, 8)).astype(np.float32)
    checker = np.kron(signs, np.array([[1, -1], [-1, 1]], np.float32))  # zero mean in every 2x2 block
    fine = np.repeat(np.repeat(base, 2, axis=2), 2, axis=3) + 0.5 * checker
    fine_q = fine + 0.1 * rng.standard_normal(fine.shape).astype(np.float32)
    return coarse, np.concatenate([fine, fine_q]).astype(np.float32)


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    root = tmp_path_factory.mktemp("compact")
    coarse_f, fine_f = _world()
    enc_c, enc_f = TableEncoder(coarse_f), TableEncoder(fine_f, checkpoint_sha256="f" * 64)
    for mode in ("pca", "pca-full", "ivf-full", "hnsw-full", "ivfpq"):
        s = settings_for_mode(mode, pca_dim=16, pq_m=8, fine_grid=8 if mode == "pca" else None)
        build_map(token_frames(PLACES), enc_c, enc_f, root / mode, "ref", s, batch_size=7, progress=False)
    return {"root": root, "coarse": enc_c, "fine": enc_f, "fine_feats": fine_f}


def test_full_modes_keep_compact_coarse_and_full_fine():
    for name in ("pca", "ivf", "hnsw"):
        full = MODES[f"{name}-full"]
        assert full.fine_grid is None and full.fine_dtype == "float16"
        assert (full.coarse_grid, full.pca_dim, full.coarse_dtype, full.index) == (
            MODES[name].coarse_grid, MODES[name].pca_dim, MODES[name].coarse_dtype, MODES[name].index)
    # paper-size content codes: the same ~1 KiB of coarse RAM per image, the fine features 2 MiB on disk
    paper = (256, 64, 64)
    est_pca = estimate_map_size(10_000, paper, paper, MODES["pca"])
    est_full = estimate_map_size(10_000, paper, paper, MODES["pca-full"])
    assert est_full.ram == est_pca.ram
    assert est_full.files["fine.npy"] - 128 == 10_000 * 256 * 64 * 64 * 2


def test_mmap_fine_rows_equal_in_ram_and_raw_features(maps):
    m_map = LocalizationMap.load(maps["root"] / "pca-full", mmap=True)
    m_ram = LocalizationMap.load(maps["root"] / "pca-full", mmap=False)
    assert isinstance(m_map._c.fine, RowFile) and isinstance(m_ram._c.fine, np.ndarray)
    assert m_map.fine_shape == (4, 16, 16)
    ids = np.array([41, 3, 17, 3])  # unsorted, repeated: what a shortlist may be
    a, b = m_map.fine_rows(ids), m_ram.fine_rows(ids)
    np.testing.assert_array_equal(a, b)
    raw = maps["fine_feats"][ids].reshape(len(ids), -1).astype(np.float64)
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(a, raw, atol=2e-3)  # float16 storage of unit vectors


def test_rerank_on_mmap_equals_in_ram_and_written_out_cosine(maps):
    enc_c, enc_f = maps["coarse"], maps["fine"]
    cfg = SearchConfig(device="cpu", top_n=5, top_k=5)
    loc_map = Localizer(LocalizationMap.load(maps["root"] / "pca-full", mmap=True), enc_c, enc_f, cfg)
    loc_ram = Localizer(LocalizationMap.load(maps["root"] / "pca-full", mmap=False), enc_c, enc_f, cfg)
    for q in range(PLACES, 2 * PLACES, 3):
        r1, r2 = loc_map.localize(enc_c.image_for(q), "query"), loc_ram.localize(enc_c.image_for(q), "query")
        assert r1.topk == r2.topk and r1.coarse_topn == r2.coarse_topn
        head = [i for i, _ in r1.coarse_topn]
        want = [cosine(maps["fine_feats"][q], maps["fine_feats"][i]) for i in head]
        got = dict(r1.topk[:len(head)])
        np.testing.assert_allclose([got[i] for i in head], want, atol=2e-3)
        assert r1.index == head[int(np.argmax(want))]


def test_full_fine_recovers_what_pooling_loses(maps):
    """The world's place identity is invisible at 8x8: `pca` re-ranks by noise, `pca-full` by the pattern."""
    enc_c, enc_f = maps["coarse"], maps["fine"]
    cfg = SearchConfig(device="cpu", top_n=5)
    rates = {}
    for mode in ("pca", "pca-full", "ivf-full", "hnsw-full", "ivfpq"):
        loc = Localizer(LocalizationMap.load(maps["root"] / mode), enc_c, enc_f, cfg)
        res = [loc.localize(enc_c.image_for(PLACES + i), "query") for i in range(PLACES)]
        in_head = np.array([i in [j for j, _ in r.coarse_topn] for i, r in enumerate(res)])
        right = np.array([r.index == i for i, r in enumerate(res)])
        assert in_head.mean() > 0.5  # the coarse stage shortlists the right place often enough to matter
        rates[mode] = float(right[in_head].mean())
    assert rates["pca-full"] == rates["ivf-full"] == rates["hnsw-full"] == rates["ivfpq"] == 1.0, rates
    assert rates["pca"] < 0.8, rates


def _pq_index(m):
    import faiss

    return faiss.downcast_index(faiss.extract_index_ivf(m.coarse_faiss))


def _projected_query(m, enc, q):
    qv = coarse_vectors(enc.features[q], m.settings.coarse_grid)[0]
    proj, off = m.pca.project_query(qv)
    return proj.numpy(), float(off)


def test_ivfpq_map_round_trip(maps):
    """The stored index is an IVF-PQ of pq_m-byte codes beside the float16 PCA vectors it refines on; with the
    refine shortlist covering the map, the coarse ranking is the exact inner product with those stored vectors
    (written out here), plus the PCA offset."""
    import faiss

    m = LocalizationMap.load(maps["root"] / "ivfpq")
    assert m.settings.refine == MODES["ivfpq"].refine == 256 and m.coarse is None
    assert {"coarse.faiss", "coarse.npy", "pca.npz", "fine.npy"} <= set(m.disk_bytes())
    ivf = _pq_index(m)
    assert isinstance(ivf, faiss.IndexIVFPQ) and ivf.ntotal == PLACES and ivf.pq.M == 8 and ivf.pq.nbits == 5
    assert ivf.code_size == 5  # 8 codes x 5 bits
    loc = Localizer(m, maps["coarse"], maps["fine"], SearchConfig(device="cpu", top_n=5, top_k=5))
    assert isinstance(loc.index, RefinedFaissIndex) and isinstance(loc.index.vectors, RowFile)
    stored = np.load(maps["root"] / "ivfpq" / "coarse.npy").astype(np.float64)  # (N, 16) float16 on disk
    exact_rows = m.coarse_matrix()  # what the tracker reads at start: the exact rows, not the codes, not in RAM
    assert isinstance(exact_rows, np.memmap) and np.array_equal(exact_rows.astype(np.float64), stored)
    for q in range(PLACES, 2 * PLACES, 7):
        r = loc.localize(maps["coarse"].image_for(q), "query")
        proj, off = _projected_query(m, maps["coarse"], q)
        want = stored @ proj.astype(np.float64) + off
        order = np.lexsort((np.arange(PLACES), -want))[:5]
        assert [i for i, _ in r.coarse_topn] == order.tolist()
        np.testing.assert_allclose([s for _, s in r.coarse_topn], want[order], atol=1e-4)


def test_ivfpq_without_refine_ranks_by_the_codes(maps, tmp_path):
    """refine=None (the PQ codes alone, as maps before refine): searched exhaustively (nprobe = nlist), the
    shortlist scores are the inner products with the codes' reconstructions, and no coarse.npy is kept."""
    s = replace(settings_for_mode("ivfpq", pca_dim=16, pq_m=8), refine=None)
    out = build_map(token_frames(PLACES), maps["coarse"], maps["fine"], tmp_path / "pq", "ref", s, progress=False)
    assert not (out / "coarse.npy").exists()
    m = LocalizationMap.load(out, verify=True)  # the manifest lists exactly the files written
    loc = Localizer(m, maps["coarse"], maps["fine"], SearchConfig(device="cpu", top_n=5, top_k=5,
                                                                  nprobe=_pq_index(m).nlist, confidence_pool=PLACES))
    assert not isinstance(loc.index, RefinedFaissIndex)
    recon = m.coarse_matrix()  # decoded codes, (N, 16)
    for q in range(PLACES, 2 * PLACES, 7):
        r = loc.localize(maps["coarse"].image_for(q), "query")
        proj, off = _projected_query(m, maps["coarse"], q)
        want = recon @ proj + off
        order = np.lexsort((np.arange(PLACES), -want))[:5]
        assert [i for i, _ in r.coarse_topn] == order.tolist()
        np.testing.assert_allclose([s for _, s in r.coarse_topn], want[order], atol=1e-4)


def test_refined_index_rescores_the_pq_shortlist_exactly():
    """On 3000 random vectors: the answer is the exact top-k (brute force) among the codes' best `refine`, the
    scores are the stored float16 vectors' inner products, and a gated search is exact on the gate."""
    import faiss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 32)).astype(np.float16)
    s = settings_for_mode("ivfpq", pq_m=4, ivf_nlist=16)
    pq = build_faiss(x, s)
    idx = RefinedFaissIndex(pq, x, refine=50, nprobe=16)
    pq_only = faiss.clone_index(pq)
    x64 = x.astype(np.float64)
    for _ in range(5):
        q = rng.standard_normal(32).astype(np.float32)
        _, short = pq_only.search(q[None], 50, params=faiss.SearchParametersIVF(nprobe=16))  # refine >= 2k + 32
        exact = x64[short[0]] @ q
        want = short[0][np.lexsort((short[0], -exact))][:5]
        ids, scores = idx.search(torch.from_numpy(q), 5)
        assert ids.tolist() == want.tolist()
        np.testing.assert_allclose(scores, x64[ids] @ q, rtol=1e-5, atol=1e-5)
        gate = rng.choice(3000, 40, replace=False)
        gids, gscores = idx.search(torch.from_numpy(q), 3, subset=gate)
        g_exact = x64[gate] @ q
        assert gids.tolist() == gate[np.lexsort((gate, -g_exact))][:3].tolist()


def test_refine_recovers_the_exact_shortlist_that_codes_lose():
    """Recall@10 against brute force over 5000 vectors: 4 one-byte codes for 32 dims lose neighbours that a
    200-row refine finds again (the reason ivfpq keeps its vectors on disk)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5000, 32)).astype(np.float16)
    s = settings_for_mode("ivfpq", pq_m=4, ivf_nlist=8)
    pq = build_faiss(x, s)
    queries = rng.standard_normal((20, 32)).astype(np.float32)
    exact = np.argsort(-(x.astype(np.float32) @ queries.T), axis=0)[:10].T
    _, coded = pq.search(queries, 10, params=__import__("faiss").SearchParametersIVF(nprobe=8))
    refined = RefinedFaissIndex(pq, x, refine=200, nprobe=8)
    got = np.stack([refined.search(torch.from_numpy(q), 10)[0] for q in queries])
    r_pq, r_refined = shortlist_recall(coded, exact), shortlist_recall(got, exact)
    assert r_refined > r_pq + 0.4 and r_refined >= 0.85, (r_pq, r_refined)  # seeded: 0.355 -> 0.905


def test_shortlist_recall_hand_worked():
    ann = np.array([[1, 2, 3], [7, -1, 9]])
    exact = np.array([[3, 2, 5], [9, 8, 7]])
    assert shortlist_recall(ann, exact) == pytest.approx((2 / 3 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="shape"):
        shortlist_recall(ann[:, :2], exact)


def test_ivfpq_shards_merge_to_the_single_build(maps, tmp_path):
    """--shard i/n + --merge is the multi-machine build: the merged ivfpq map holds the same PCA, refine
    vectors, PQ codes and answers as one build of all images (quantisers trained on the same sample)."""
    s = settings_for_mode("ivfpq", pca_dim=16, pq_m=8)
    enc_c, enc_f = maps["coarse"], maps["fine"]
    single = build_map(token_frames(PLACES), enc_c, enc_f, tmp_path / "single", "ref", s, progress=False)
    frames = token_frames(PLACES)
    cuts = [0, 17, 41, PLACES]
    shards = [build_map(frames[lo:hi], enc_c, enc_f, tmp_path / f"s{i}", "ref", s, progress=False, shard=(i, 3))
              for i, (lo, hi) in enumerate(zip(cuts, cuts[1:]))]
    merged = merge_shards(shards[::-1], tmp_path / "merged", progress=False)
    for name in ("coarse.npy", "fine.npy", "pca.npz", "coarse.faiss", "poses.txt", "names.txt"):
        assert (single / name).read_bytes() == (merged / name).read_bytes(), name
    a, b = LocalizationMap.load(single), LocalizationMap.load(merged)
    la, lb = (Localizer(m, enc_c, enc_f, SearchConfig(device="cpu")) for m in (a, b))
    for q in range(PLACES, 2 * PLACES, 5):
        ra, rb = la.localize(enc_c.image_for(q), "query"), lb.localize(enc_c.image_for(q), "query")
        assert ra.topk == rb.topk and ra.coarse_topn == rb.coarse_topn


def test_ivfpq_stays_under_256_bytes_per_image_at_a_million():
    paper = (256, 64, 64)
    est = estimate_map_size(1_000_000, paper, paper, MODES["ivfpq"])
    coarse_ram = est.ram - 200 * 1_000_000  # the estimate adds names and poses as Python objects
    assert 64 < coarse_ram / 1e6 <= 256, coarse_ram / 1e6
    assert est.files["fine.npy"] > 1_000_000 * 2 * 256 * 64 * 64  # full fine features stay on disk


@pytest.mark.parametrize("mode", ["pca-full", "ivf-full", "ivfpq"])
def test_full_mode_maps_pass_verify_and_corruption_is_found(tmp_path, mode):
    """What `disam-map-info --verify` runs, on a map from real (tiny, random) checkpoints: a new mode is only
    usable if the node's start-up checks accept it and a flipped byte in its full fine features is caught."""
    ckpts = []
    for role, seed in (("coarse", 0), ("fine", 1)):
        torch.manual_seed(seed)
        cfg = ModelConfig(domains=("sunny", "night"), image_size=16, ngf=4, n_blocks=1, ndf=4, disc_layers=1)
        ckpts.append(save_checkpoint(tmp_path / f"{role}.pt", DisamNet(cfg), cfg))
    coarse, fine = (Encoder.from_checkpoint(p, device="cpu") for p in ckpts)
    rng = np.random.default_rng(0)
    frames = [(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), float(i), np.array([2.0 * i, 0.0, 0.0]),
               np.array([0.0, 0.0, 0.0, 1.0]), f"{i:06d}.png") for i in range(40)]
    out = build_map(frames, coarse, fine, tmp_path / "map", "sunny", settings_for_mode(mode, pca_dim=8),
                    progress=False, checkpoint_paths=tuple(ckpts))
    assert verify_map(out) == []
    m = LocalizationMap.load(out)
    assert m.fine_shape == tuple(fine.content_shape)  # not pooled
    m.close()
    raw = bytearray((out / "fine.npy").read_bytes())
    raw[-3] ^= 0x40
    (out / "fine.npy").write_bytes(bytes(raw))
    problems = verify_map(out)
    assert len(problems) == 1 and "fine.npy" in problems[0] and "checksum" in problems[0], problems
