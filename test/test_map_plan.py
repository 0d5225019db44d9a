"""`--mode auto` (maps/map_plan.py): the rule on hand-set map sizes, RAM and disk, and the warnings."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from disam_ros.bench.table_encoder import TableEncoder, token_frames
from disam_ros.maps import LocalizationMap
from disam_ros.maps.build_map import MapBuildConfig, build_map_from_folder
from disam_ros.maps.descriptors import estimate_map_size, settings_for_mode
from disam_ros.maps.map_plan import (
    EXACT_SCAN_BYTES,
    FLAT_MAX_IMAGES,
    HNSW_MAX_IMAGES,
    available_ram,
    check_map_size,
    choose_mode,
    resolve_mode,
)

PAPER, TINY = (256, 64, 64), (64, 16, 16)
PLENTY = 1 << 50  # RAM / disk that constrains nothing


@pytest.mark.parametrize("content, n, want", [
    # exact while a query streams <= 256 MiB of float32: tiny codes are 64 KiB, paper codes 4 MiB per image
    (TINY, EXACT_SCAN_BYTES // (64 * 16 * 16 * 4), "exact"),
    (TINY, EXACT_SCAN_BYTES // (64 * 16 * 16 * 4) + 1, "pca-full"),
    (PAPER, 64, "exact"),
    (PAPER, 65, "pca-full"),
    (PAPER, FLAT_MAX_IMAGES, "pca-full"),
    (PAPER, FLAT_MAX_IMAGES + 1, "hnsw-full"),
    (PAPER, HNSW_MAX_IMAGES, "hnsw-full"),
    (PAPER, HNSW_MAX_IMAGES + 1, "ivfpq"),
    (PAPER, 10_000_000, "ivfpq"),
])
def test_size_alone_picks_the_most_accurate_mode_that_stays_fast(content, n, want):
    plan = choose_mode(n, content, content, ram_bytes=PLENTY, disk_bytes=PLENTY)
    assert plan.mode == want and plan.fits_ram, plan.reason
    assert choose_mode(n, content, content, ram_bytes=None).mode == want  # shards: size alone, same answer


def test_ram_budget_is_half_the_available_ram():
    """100k paper images: hnsw-full needs ~150 MB resident, ivfpq ~30 MB. With RAM set so that half of it lies
    between the two, the rule must step down to ivfpq; with RAM for both, it keeps hnsw-full."""
    n = 100_000
    hnsw = estimate_map_size(n, PAPER, PAPER, settings_for_mode("hnsw-full")).ram
    pq = estimate_map_size(n, PAPER, PAPER, settings_for_mode("ivfpq")).ram
    assert pq < hnsw
    assert choose_mode(n, PAPER, PAPER, ram_bytes=2 * hnsw).mode == "hnsw-full"
    assert choose_mode(n, PAPER, PAPER, ram_bytes=2 * hnsw - 2).mode == "ivfpq"
    tight = choose_mode(n, PAPER, PAPER, ram_bytes=2 * pq - 2)
    assert tight.mode == "ivfpq" and not tight.fits_ram and "do not fit" in tight.reason


def test_full_fine_features_that_do_not_fit_the_disk_fall_back_to_the_pooled_twin():
    """1000 paper images: pca-full stores 2 MiB of fine features per image (~2 GB), pca 32 KiB (~33 MB)."""
    full = estimate_map_size(1000, PAPER, PAPER, settings_for_mode("pca-full")).peak_disk
    pooled = estimate_map_size(1000, PAPER, PAPER, settings_for_mode("pca")).peak_disk
    assert choose_mode(1000, PAPER, PAPER, PLENTY, disk_bytes=full).mode == "pca-full"
    assert choose_mode(1000, PAPER, PAPER, PLENTY, disk_bytes=full - 1).mode == "pca"
    assert choose_mode(1000, PAPER, PAPER, PLENTY, disk_bytes=pooled).mode == "pca"


def test_bad_size_is_refused():
    with pytest.raises(ValueError, match="at least one image"):
        choose_mode(0, PAPER, PAPER, PLENTY)


def test_available_ram_reads_meminfo():
    ram = available_ram()
    with open("/proc/meminfo", encoding="ascii") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    assert ram is not None and abs(ram - kib * 1024) < (256 << 20)  # read a moment apart


def test_map_that_will_not_load_here_is_warned_about(tmp_path, caplog):
    enc = TableEncoder(np.zeros((1, *PAPER), np.float32))
    est = estimate_map_size(3000, PAPER, PAPER, settings_for_mode("pca-full"))
    with caplog.at_level(logging.WARNING, logger="disam_ros.maps.map_plan"):
        check_map_size(tmp_path / "m", 3000, enc, None, settings_for_mode("pca-full"), ram_bytes=est.ram - 1)
    warn = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warn) == 1 and "will not load here" in warn[0] and "--mode ivfpq" in warn[0], warn
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="disam_ros.maps.map_plan"):
        check_map_size(tmp_path / "m", 3000, enc, None, settings_for_mode("pca-full"), ram_bytes=est.ram)
    assert not caplog.records


def test_resolve_mode_passes_explicit_modes_and_logs_the_auto_choice(tmp_path, caplog):
    enc = TableEncoder(np.zeros((1, *TINY), np.float32))
    assert resolve_mode("pooled", 10, enc, enc, tmp_path) == "pooled"
    with caplog.at_level(logging.INFO, logger="disam_ros.maps.map_plan"):
        assert resolve_mode("auto", 100_000, enc, enc, tmp_path, use_ram=False) == "hnsw-full"
    assert any("--mode auto chose hnsw-full" in r.getMessage() for r in caplog.records)


def test_folder_build_defaults_to_auto_and_records_the_chosen_mode(tmp_path):
    """A small map of tiny-model features is exact under auto (a query scans 30 x 64 KiB)."""
    from disam_ros.data.tum import make_trajectory, write_tum
    from disam_ros.model import DisamNet, ModelConfig, save_checkpoint

    cfg = ModelConfig(domains=("sunny", "night"), image_size=16, ngf=4, n_blocks=1, ndf=4, disc_layers=1)
    ckpt = save_checkpoint(tmp_path / "c.pt", DisamNet(cfg), cfg)
    images = tmp_path / "data" / "sunny" / "images"
    images.mkdir(parents=True)
    import cv2

    for i, (img, *_rest) in enumerate(token_frames(30)):
        cv2.imwrite(str(images / f"{i:04d}.png"), np.kron(img, np.ones((8, 8, 1), np.uint8)) + i)
    x = np.arange(30, dtype=np.float64)
    write_tum(tmp_path / "data" / "sunny" / "poses.txt",
              make_trajectory(x, np.stack([x, 0 * x, 0 * x], 1), np.tile([0.0, 0.0, 0.0, 1.0], (30, 1))))
    conf = MapBuildConfig(out=tmp_path / "map", dataset=tmp_path / "data", condition="sunny", coarse=ckpt,
                          progress=False)
    assert conf.mode == "auto"
    m = LocalizationMap.load(build_map_from_folder(conf))
    assert m.settings.mode == "exact" and len(m) == 30


def test_geometry_is_in_the_size_estimate_by_hand():
    # 10 images of at most 2000 keypoints: float32 (x, y), 128 uint8 SIFT, float32 xyz, 128 uint8 gradient
    # descriptors per keypoint, int64 offsets
    plain = estimate_map_size(10, TINY, None, settings_for_mode("exact"))
    depth = estimate_map_size(10, TINY, None, settings_for_mode("exact"), geometry=(2000, False))
    tri = estimate_map_size(10, TINY, None, settings_for_mode("exact"), geometry=(2000, True))
    assert depth.files["geometry_keypoints.npy"] == 128 + 10 * 2000 * 8
    assert depth.files["geometry_descriptors.npy"] == 128 + 10 * 2000 * 128
    assert depth.files["geometry_points3d.npy"] == 128 + 10 * 2000 * 12
    assert depth.files["geometry_gradients.npy"] == 128 + 10 * 2000 * 128
    assert depth.files["geometry_offsets.npy"] == 128 + 8 * 11
    assert depth.disk - plain.disk == 5 * 128 + 10 * 2000 * 276 + 88
    assert tri.disk == depth.disk and tri.peak_disk - depth.peak_disk == 10 * 2000 * (8 + 128 + 128)  # temp features
    assert depth.ram == plain.ram  # geometry is memory-mapped

