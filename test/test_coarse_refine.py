"""pca-full (and a compact map built with --coarse-refine) re-scores its shortlist on full-grid vectors kept on disk,
so it ranks as an exact map does."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from disam_ros.bench.table_encoder import TableEncoder, token_frames
from disam_ros.maps import LocalizationMap, MapError, build_map, merge_shards, settings_for_mode
from disam_ros.maps.descriptors import MODES
from disam_ros.maps.map_info import render, summary
from disam_ros.maps.npy_rows import RowFile
from disam_ros.retrieval import Localizer, SearchConfig
from disam_ros.retrieval.refine import exact_scores, refined_ranking

pytestmark = pytest.mark.usefixtures("one_thread")


def eq16(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over channels of the cosine between spatial maps, as the paper writes it."""
    return float(np.mean([np.sum(x * y) / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b)]))


def fine_grained_world(rng, places=60, c=4, side=8):
    """Places told apart by pixel-scale texture (which 2x2 pooling averages away exactly) over a smooth layout, and
    a query per place: the same texture, another place's layout, some noise."""
    layout = torch.nn.functional.interpolate(torch.from_numpy(rng.standard_normal((places, c, 2, 2)).astype(
        np.float32)), size=(side, side), mode="bilinear").numpy()
    checker = np.where(np.add.outer(np.arange(side), np.arange(side)) % 2 == 0, 1.0, -1.0).astype(np.float32)
    amplitude = rng.standard_normal((places, c, side // 2, side // 2)).astype(np.float32)
    texture = amplitude.repeat(2, axis=2).repeat(2, axis=3) * checker  # every 2x2 block sums to zero
    maps = layout + texture
    queries = layout[rng.permutation(places)] + texture + 0.3 * rng.standard_normal(maps.shape).astype(np.float32)
    return np.concatenate([maps, queries])


def test_refined_ranking_hand_worked():
    rows = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6], [1, 1]], np.float16)
    q = np.array([0.0, 1.0], np.float32)  # exact scores: 0, 1, 0.8, 0.6, 1
    np.testing.assert_allclose(exact_scores(rows, np.array([4, 0, 2]), q), [1.0, 0.0, 0.8], atol=1e-3)
    ids = np.array([0, 3, 2, 1, -1])  # a compact ranking, faiss-padded
    scores = np.array([0.9, 0.7, 0.5, 0.1, -1.0], np.float32)
    got_ids, got = refined_ranking(ids, scores, rows, q, count=3, k=4)
    # the compact best three (0, 3, 2) re-scored 0, 0.6, 0.8 -> 2, 3, 0; then the rest (1) with its own score
    assert got_ids.tolist() == [2, 3, 0, 1]
    np.testing.assert_allclose(got, [0.8, 0.6, 0.0, 0.1], atol=1e-3)
    tie_ids, tie = refined_ranking(np.array([4, 1]), np.array([0.2, 0.3], np.float32), rows, q, count=2, k=2)
    assert tie_ids.tolist() == [1, 4] and tie.tolist() == pytest.approx([1.0, 1.0], abs=1e-3)  # tie: smaller index


@pytest.mark.parametrize("mode", ["pca-full", "hnsw-full", "ivf-full"])
def test_a_refined_compact_map_ranks_as_exact_where_the_pooled_pca_does_not(tmp_path, mode):
    """pca-full by default; the faiss modes with `disam-build-map --coarse-refine N` (their shortlist re-scored)."""
    rng, places = np.random.default_rng(7), 60
    feats = fine_grained_world(rng, places)
    enc = TableEncoder(feats)

    def top1(name: str, refine: int | None) -> tuple[np.ndarray, np.ndarray]:
        s = replace(settings_for_mode(mode, coarse_grid=4, pca_dim=32), coarse_refine=refine)
        build_map(token_frames(places), enc, None, tmp_path / name, "ref", s, progress=False)
        loc = Localizer(LocalizationMap.load(tmp_path / name), enc, None, SearchConfig(device="cpu"))
        res = [loc.localize(enc.image_for(places + i), "query") for i in range(places)]
        return np.array([r.index for r in res]), np.array([r.topk[0][1] for r in res])

    by_eq16 = np.array([[eq16(feats[places + i], feats[j]) for j in range(places)] for i in range(places)])
    want = by_eq16.argmax(1)
    assert np.mean(want == np.arange(places)) > 0.9  # the texture tells the places apart on the full grid
    compact, _ = top1("compact", None)
    assert np.mean(compact == want) < 0.5  # ... and pooling to 4x4 loses it: the test can fail
    refined, best = top1("refined", MODES["pca-full"].coarse_refine)
    np.testing.assert_array_equal(refined, want)
    np.testing.assert_allclose(best, by_eq16.max(1), atol=2e-3)  # float16 rows
    assert MODES["pca-full"].coarse_refine >= SearchConfig().confidence_pool  # the confidence sees exact scores


def test_shards_keep_the_full_grid_rows(tmp_path):
    rng, n = np.random.default_rng(8), 24
    feats8 = rng.standard_normal((n, 4, 8, 8)).astype(np.float32)
    enc = TableEncoder(feats8)
    s = settings_for_mode("pca-full", coarse_grid=4, pca_dim=8)
    single = LocalizationMap.load(build_map(token_frames(n), enc, None, tmp_path / "single", "ref", s,
                                            progress=False))
    shards = [build_map(token_frames(12, offset=12 * i), enc, None, tmp_path / f"s{i}", "ref", s,
                        progress=False, shard=(i, 2)) for i in range(2)]
    merged = LocalizationMap.load(merge_shards(shards, tmp_path / "merged", progress=False))
    assert merged.coarse_full.shape == single.coarse_full.shape == (n, 4 * 8 * 8)
    assert "; best 64 re-scored on full-grid rows" in render(summary(merged.manifest), merged.root)  # map-info says so
    np.testing.assert_array_equal(merged.coarse_full[np.arange(n)], single.coarse_full[np.arange(n)])
    full = single.coarse_full[np.arange(n)].astype(np.float32)
    assert np.allclose(full @ full[3], [eq16(feats8[i], feats8[3]) for i in range(n)], atol=2e-3)


def test_a_pca_full_map_without_its_full_grid_rows_is_refused_in_one_line(tmp_path):
    rng, n = np.random.default_rng(9), 12
    enc = TableEncoder(rng.standard_normal((n, 4, 8, 8)).astype(np.float32))
    out = build_map(token_frames(n), enc, None, tmp_path / "m", "ref",
                    settings_for_mode("pca-full", coarse_grid=4, pca_dim=8), progress=False)
    (out / "coarse_full.npy").unlink()
    with pytest.raises(MapError, match="coarse_full.npy") as err:
        LocalizationMap.load(out)
    assert "\n" not in str(err.value)


def test_row_file_reads_the_rows_asked_for(tmp_path):
    table = np.arange(5 * 7, dtype=np.float16).reshape(5, 7)
    np.save(tmp_path / "rows.npy", table)
    rows = RowFile(tmp_path / "rows.npy", (5, 7), "float16")
    np.testing.assert_array_equal(rows[np.array([4, 0, 4, 2])], table[[4, 0, 4, 2]])
    assert rows[np.zeros(0, np.int64)].shape == (0, 7) and len(rows) == 5
    with pytest.raises(IndexError, match="rows 3..5"):
        rows[np.array([3, 5])]
    with pytest.raises(MapError, match="shape"):
        RowFile(tmp_path / "rows.npy", (6, 7), "float16")
    rows.close()


def test_build_option_coarse_refine(caplog):
    from disam_ros.maps.build_map import MapBuildConfig, _parser, config_from_args

    def conf(mode: str, refine: int | None) -> MapBuildConfig:
        return MapBuildConfig(out=None, mode=mode, coarse_refine=refine)

    assert conf("pca-full", None).settings().coarse_refine == MODES["pca-full"].coarse_refine == 64
    assert conf("pca-full", 0).settings().coarse_refine is None  # 0: a pca-full map without the rows
    assert conf("hnsw-full", None).settings().coarse_refine is None
    assert conf("hnsw-full", 16).settings().coarse_refine == 16
    assert conf("ivfpq", 32).settings().coarse_refine == 32 and conf("exact", 0).settings().coarse_refine is None
    with pytest.raises(ValueError, match="--mode exact ranks on full-grid vectors already: drop --coarse-refine"):
        conf("exact", 8).settings()
    with pytest.raises(ValueError, match=r"--coarse-refine -1: give a number of map images >= 0"):
        conf("pca-full", -1).settings()
    with caplog.at_level("INFO", logger="disam_ros.maps.build_map"):
        assert conf("auto", 8).settings("exact").coarse_refine is None  # auto chose exact: nothing to re-score
    assert "--coarse-refine unused" in caplog.text
    args = _parser().parse_args(["--out", "m", "--mode", "hnsw-full", "--coarse-refine", "24"])
    assert config_from_args(args).settings().coarse_refine == 24
