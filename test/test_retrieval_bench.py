"""The retrieval benchmark's building blocks on toy sizes (the benchmark itself is not a timed test)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from disam_ros.bench.retrieval import (
    Row,
    check_goals,
    coarse_resident_bytes,
    random_map,
    reference_loop_ms_per_image,
    render_table,
    time_queries,
)
from disam_ros.bench.retrieval_accuracy import PixelEncoder
from disam_ros.maps.descriptors import MODES
from disam_ros.retrieval import Localizer, SearchConfig

CONTENT = (8, 8, 8)


@pytest.mark.parametrize("mode", list(MODES))
def test_random_map_is_searchable(tmp_path, mode):
    m = random_map(mode, 300, CONTENT, tmp_path)
    assert len(m) == 300 and m.fine_shape == CONTENT  # 8x8 maps: no pooling at grid 8
    loc = Localizer(m, None, None, SearchConfig(device="cpu"))
    t = time_queries(loc, CONTENT, queries=2)
    assert set(t) == {"coarse_search", "fine_rerank", "total"} and all(v > 0 for v in t.values())
    feats = torch.randn(CONTENT)
    res = loc.localize_features(feats, feats)
    assert res.ok and len(res.topk) == 5


def test_resident_bytes_and_goals():
    assert coarse_resident_bytes(MODES["exact"], 10, (256, 64, 64), "cpu") == 10 * 256 * 64 * 64 * 4
    assert coarse_resident_bytes(MODES["pca"], 10, (256, 64, 64), "cpu") == 10 * 512 * 4  # small fp16 -> upcast
    assert coarse_resident_bytes(MODES["ivfpq"], 10, (256, 64, 64), "cpu") == 10 * (128 + 8)  # codes + ids
    rows = [Row("exact", 1000, "cpu", coarse_ms=3.0, bound_ms=2.0, total_ms=4.0, speedup_vs_loop=50.0),
            Row("pca", 10_000, "cpu", total_ms=1.0, speedup_vs_loop=500.0, disk_kib_per_image=33.0)]
    goals = check_goals(rows, {1000: 200.0, 10_000: 500.0})
    assert goals["exact_cpu_within_2x"] and goals["speedup_10k_ok"] and goals["compact_within_64kib"]
    assert "EXTRAPOLATED" in render_table(rows, {1000: 200.0})


def test_reference_loop_runs():
    assert reference_loop_ms_per_image(CONTENT, subset=4, queries=1) > 0


def test_pixel_baseline_is_mean_free():
    img = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    z = PixelEncoder(8).encode([img, img], "ref")
    assert z.shape == (2, 3, 8, 8)
    assert torch.allclose(z.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-4)


def test_exact_topk_is_brute_force_with_ties_by_index():
    from disam_ros.bench.retrieval_scale import exact_topk

    rng = np.random.default_rng(0)
    x = rng.integers(-2, 3, (70_000, 4)).astype(np.float16)  # many exact ties, more rows than one chunk
    q = rng.integers(-2, 3, (3, 4)).astype(np.float32)
    got = exact_topk(x, q, 7, len(x))
    s = q @ x.astype(np.float32).T
    for i in range(3):
        want = np.lexsort((np.arange(len(x)), -s[i]))[:7]
        assert got[i].tolist() == want.tolist()
    assert exact_topk(x, q, 7, 100).max() < 100  # only the first `rows` rows


def test_synthesised_rows_are_noisy_copies_with_a_quarter_of_the_variance():
    from disam_ros.bench.retrieval_scale import NOISE_SHARE, synthesise

    rng = np.random.default_rng(1)
    base_c = rng.standard_normal((5, 8)).astype(np.float32) * np.arange(1, 9, dtype=np.float32)
    base_f = rng.standard_normal((5, 6)).astype(np.float32)
    c, f = synthesise(base_c, base_f, 50_000, seed=0)
    noise = c - base_c[np.arange(50_000) % 5]
    np.testing.assert_allclose(noise.var(axis=0), NOISE_SHARE * base_c.var(axis=0), rtol=0.05)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)  # fine rows stay unit vectors


def test_tiled_encoder_rows_and_poses(tmp_path):
    """Map image k = frame k mod B + its own seeded noise (the same on every call), at frame k mod B's pose
    shifted 100 m left per copy; a map built from it by the real builder holds exactly those rows."""
    from disam_ros.bench.table_encoder import TableEncoder
    from disam_ros.bench.tiled import NOISE_SHARE, TILE_OFFSET_M, TiledEncoder, tiled_frames
    from disam_ros.maps import LocalizationMap, build_map
    from disam_ros.maps.descriptors import fine_vectors

    rng = np.random.default_rng(2)
    base = torch.from_numpy(rng.standard_normal((4, 3, 2, 2)).astype(np.float32))
    real = TableEncoder(base.numpy())
    enc = TiledEncoder(real, base, seed=3)
    k = 9
    g = torch.Generator().manual_seed(3 * 1_000_003 + k)
    want = base[k % 4] + torch.sqrt(NOISE_SHARE * base.var(dim=0)) * torch.randn((3, 2, 2), generator=g)
    got = enc.encode([TableEncoder.image_for(k), TableEncoder.image_for(1)], "ref")
    torch.testing.assert_close(got[0], want)
    torch.testing.assert_close(enc.encode(TableEncoder.image_for(k), "ref")[0], want)
    assert enc.checkpoint_sha256 == real.checkpoint_sha256 and enc.content_shape == (3, 2, 2)
    pos = rng.standard_normal((4, 3))
    quats = np.tile([0.0, 0.0, 0.0, 1.0], (4, 1))
    out = build_map(tiled_frames(11, pos, quats), enc, enc, tmp_path / "m", "ref", progress=False)
    m = LocalizationMap.load(out)
    assert len(m) == 11
    np.testing.assert_allclose(m.positions[k], pos[k % 4] + [0.0, TILE_OFFSET_M * (k // 4), 0.0], atol=1e-6)  # TUM %.6f
    np.testing.assert_allclose(m.fine_rows(np.array([k]))[0], fine_vectors(want)[0].numpy(), atol=2e-3)
