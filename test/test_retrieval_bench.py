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
from disam_ros.retrieval import Localizer, SearchConfig
from disam_ros.retrieval.descriptors import MODES

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
