"""Map building, the map directory format, integrity errors, sharding and the two map CLIs."""
from __future__ import annotations

import json
import logging
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from disam_ros.bench.table_encoder import TableEncoder, token_frames
from disam_ros.data.folders import iter_frames, load_condition
from disam_ros.data.tum import make_trajectory, write_tum
from disam_ros.maps import LocalizationMap, MapError, build_map, settings_for_mode
from disam_ros.maps import build_map as build_map_fn
from disam_ros.maps import map_info as map_info_cli
from disam_ros.maps.build_map import main as build_map_main
from disam_ros.maps.descriptors import coarse_vectors, estimate_map_size, fine_vectors
from disam_ros.maps.map_plan import check_map_size
from disam_ros.model import DisamNet, Encoder, preset, save_checkpoint
from disam_ros.retrieval import Localizer, SearchConfig

DOMAINS = ["sunny", "night"]
N_IMAGES = 12


def _checkpoint(path, seed, name="micro"):
    torch.manual_seed(seed)
    cfg = preset(name, DOMAINS)
    save_checkpoint(path, DisamNet(cfg), cfg)
    return path


def _images(n, rng):
    """Smooth random scenes (so small models see structure, not just noise)."""
    low = rng.integers(0, 255, size=(n, 4, 6, 3)).astype(np.uint8)
    return [cv2.resize(im, (48, 32), interpolation=cv2.INTER_CUBIC) for im in low]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieval_map")
    rng = np.random.default_rng(0)
    images_dir = root / "data" / "sunny" / "images"
    images_dir.mkdir(parents=True)
    for i, im in enumerate(_images(N_IMAGES, rng)):
        cv2.imwrite(str(images_dir / f"frame_{i:04d}.png"), im[:, :, ::-1])
    angles = np.linspace(0, 1, N_IMAGES)
    quats = np.stack([np.zeros(N_IMAGES), np.zeros(N_IMAGES), np.sin(angles / 2), np.cos(angles / 2)], 1)
    traj = make_trajectory(np.arange(N_IMAGES) * 0.5 + 100.0, np.stack([np.arange(N_IMAGES) * 2.0,
                                                                      np.ones(N_IMAGES), np.zeros(N_IMAGES)], 1), quats)
    write_tum(root / "data" / "sunny" / "poses.txt", traj)
    ckpt = {k: _checkpoint(root / f"{k}.pt", seed) for k, seed in (("coarse", 0), ("fine", 1), ("other", 2))}
    coarse = Encoder.from_checkpoint(ckpt["coarse"], device="cpu")
    fine = Encoder.from_checkpoint(ckpt["fine"], device="cpu")
    rc = build_map_main(["--dataset", str(root / "data"), "--condition", "sunny", "--coarse", str(ckpt["coarse"]),
                         "--fine", str(ckpt["fine"]), "--out", str(root / "map"), "--quiet", "--batch-size", "5"])
    assert rc == 0
    return {"root": root, "ckpt": ckpt, "coarse": coarse, "fine": fine, "map": root / "map", "traj": traj}


def _copy(env, tmp_path):
    dst = tmp_path / "map"
    shutil.copytree(env["map"], dst)
    return dst


def test_round_trip(env):
    m = LocalizationMap.load(env["map"])
    folder = load_condition(env["root"] / "data", "sunny")
    frames = list(iter_frames(folder))
    assert len(m) == N_IMAGES and m.names == [f.path.name for f in frames]
    assert m.frame_id == "map" and m.domain == "sunny" and m.has_fine
    np.testing.assert_allclose(m.positions, env["traj"].positions, atol=1e-6)
    np.testing.assert_allclose(m.quats, env["traj"].quats, atol=1e-8)
    np.testing.assert_allclose(m.stamps, env["traj"].stamps, atol=1e-9)
    images = [f.image for f in frames]
    expect_c = coarse_vectors(env["coarse"].encode(images, "sunny")).numpy()
    expect_f = fine_vectors(env["fine"].encode(images, "sunny")).numpy()
    np.testing.assert_allclose(np.asarray(m.coarse), expect_c, atol=1e-5)
    np.testing.assert_allclose(m.fine_rows(np.arange(N_IMAGES)), expect_f, atol=2e-3)  # float16 storage
    assert m.fine_feature(3).shape == env["fine"].content_shape and m.fine_feature(3).dtype == np.float32
    assert m.manifest["models"]["coarse"]["sha256"] == env["coarse"].checkpoint_sha256
    assert m.spacing_m == pytest.approx(2.0)

    loc = Localizer(m, env["coarse"], env["fine"], SearchConfig(device="cpu"))
    for i, im in enumerate(images):
        res = loc.localize(im, "sunny")
        assert res.ok and res.index == i and res.name == m.names[i]
        np.testing.assert_allclose(res.position, m.positions[i])
        assert res.covariance.shape == (6, 6) and 0.0 <= res.confidence <= 1.0


def test_from_map_dir_uses_recorded_checkpoints(env):
    loc = Localizer.from_map_dir(env["map"], config=SearchConfig(device="cpu"))
    img = next(iter(iter_frames(load_condition(env["root"] / "data", "sunny")))).image
    assert loc.localize(img, "sunny").index == 0
    with pytest.raises(ValueError, match="unknown domain"):
        loc.localize(img, "foggy")


def _one_line_naming(exc_info, name):
    msg = str(exc_info.value)
    assert "\n" not in msg and name in msg, msg
    return msg


def test_truncated_file(env, tmp_path):
    dst = _copy(env, tmp_path)
    data = (dst / "fine.npy").read_bytes()
    (dst / "fine.npy").write_bytes(data[:-100])
    with pytest.raises(MapError) as e:
        LocalizationMap.load(dst)
    assert "truncated" in _one_line_naming(e, "fine.npy")


def test_corrupt_header_same_size(env, tmp_path):
    dst = _copy(env, tmp_path)
    data = bytearray((dst / "coarse.npy").read_bytes())
    data[:6] = b"garbag"
    (dst / "coarse.npy").write_bytes(bytes(data))
    with pytest.raises(MapError) as e:
        LocalizationMap.load(dst, verify=False)  # skip hashing: the parser must still refuse it
    _one_line_naming(e, "coarse.npy")


def test_checksum_mismatch(env, tmp_path):
    dst = _copy(env, tmp_path)
    data = bytearray((dst / "fine.npy").read_bytes())
    data[-1] ^= 0xFF
    (dst / "fine.npy").write_bytes(bytes(data))
    with pytest.raises(MapError) as e:
        LocalizationMap.load(dst, verify=True)
    assert "checksum" in _one_line_naming(e, "fine.npy")
    assert map_info_cli.main([str(dst), "--verify"]) == 2


def test_missing_file_and_not_a_map(env, tmp_path):
    dst = _copy(env, tmp_path)
    (dst / "names.txt").unlink()
    with pytest.raises(MapError) as e:
        LocalizationMap.load(dst)
    assert "missing" in _one_line_naming(e, "names.txt")
    with pytest.raises(MapError) as e:
        LocalizationMap.load(tmp_path)
    _one_line_naming(e, "manifest.json")


def test_model_map_mismatch(env):
    with pytest.raises(MapError) as e:
        Localizer.from_map_dir(env["map"], coarse_ckpt=env["ckpt"]["other"], config=SearchConfig(device="cpu"))
    msg = _one_line_naming(e, "manifest.json")
    assert "other.pt" in msg and "sha256" in msg
    m = LocalizationMap.load(env["map"])
    unhashed = Encoder(DisamNet(preset("micro", DOMAINS)), preset("micro", DOMAINS), device="cpu")
    with pytest.raises(MapError, match="no checkpoint hash"):
        Localizer(m, unhashed, None)


def test_shape_and_domain_mismatch(tmp_path):
    enc = TableEncoder(np.random.default_rng(0).standard_normal((10, 4, 3, 3)).astype(np.float32))
    build_map(token_frames(10), enc, None, tmp_path / "m", "ref", progress=False)
    m = LocalizationMap.load(tmp_path / "m")
    wrong_shape = TableEncoder(np.zeros((10, 4, 2, 2), np.float32))
    with pytest.raises(MapError) as e:
        Localizer(m, wrong_shape, None)
    assert "(4, 2, 2)" in _one_line_naming(e, "manifest.json")
    wrong_domain = TableEncoder(np.zeros((10, 4, 3, 3), np.float32), domains=("a", "b"))
    with pytest.raises(MapError) as e:
        Localizer(m, wrong_domain, None)
    assert "'ref'" in _one_line_naming(e, "manifest.json")
    with pytest.raises(MapError, match="without a fine model"):
        Localizer(m, enc, enc)


def test_failed_build_leaves_nothing(tmp_path):
    enc = TableEncoder(np.random.default_rng(0).standard_normal((30, 4, 3, 3)).astype(np.float32))

    def frames():
        for i, f in enumerate(token_frames(30)):
            if i == 17:
                raise RuntimeError("camera unplugged")
            yield f

    for mode in ("exact", "pca"):
        with pytest.raises(RuntimeError, match="camera unplugged"):
            build_map(frames(), enc, enc, tmp_path / "m", "ref", settings_for_mode(mode), batch_size=4, progress=False)
        assert list(tmp_path.iterdir()) == []
    # an existing map survives a failed rebuild untouched
    build_map(token_frames(30), enc, None, tmp_path / "m", "ref", progress=False)
    before = (tmp_path / "m" / "manifest.json").read_text()
    with pytest.raises(RuntimeError):
        build_map(frames(), enc, None, tmp_path / "m", "ref", progress=False, overwrite=True)
    assert (tmp_path / "m" / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    with pytest.raises(MapError, match="already exists"):
        build_map(token_frames(30), enc, None, tmp_path / "m", "ref", progress=False)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("keep me")
    with pytest.raises(MapError, match="not made by disam_ros"):
        build_map(token_frames(30), enc, None, tmp_path / "docs", "ref", progress=False, overwrite=True)
    assert (tmp_path / "docs" / "notes.txt").read_text() == "keep me"
    (tmp_path / "docs" / "notes.txt").unlink()
    (tmp_path / "docs").rmdir()
    with pytest.raises(ValueError, match="no pose"):
        build_map([(enc.image_for(0), 0.0, None, None, "x")], enc, None, tmp_path / "n", "ref", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_next_build_removes_the_staging_folder_of_a_killed_one_but_not_a_live_one(tmp_path):
    import os
    import subprocess
    import sys

    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)  # a process that has ended: its PID is free
    stale, live = tmp_path / f".m.tmp-disam-{gone}-00ff", tmp_path / f".m.tmp-disam-{os.getpid()}-00ff"
    for d in (stale, live):  # what a kill -9 mid-build leaves, and a build still running in this process
        d.mkdir()
        (d / "fine.npy").write_bytes(b"\0" * 128)
    enc = TableEncoder(np.random.default_rng(0).standard_normal((30, 4, 3, 3)).astype(np.float32))
    build_map(token_frames(30), enc, None, tmp_path / "m", "ref", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "m"]


def test_shards_merge_to_single_build(env, tmp_path):
    base = ["--dataset", str(env["root"] / "data"), "--condition", "sunny", "--coarse", str(env["ckpt"]["coarse"]),
            "--fine", str(env["ckpt"]["fine"]), "--mode", "pca", "--pca-dim", "8", "--quiet", "--batch-size", "4"]
    assert build_map_main([*base, "--out", str(tmp_path / "single")]) == 0
    for i in (1, 0):
        assert build_map_main([*base, "--shard", f"{i}/2", "--out", str(tmp_path / f"s{i}")]) == 0
    with pytest.raises(MapError, match="merge the shards"):
        LocalizationMap.load(tmp_path / "s0")
    assert build_map_main(["--merge", str(tmp_path / "s0"), "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    assert build_map_main(["--merge", str(tmp_path / "s1"), str(tmp_path / "s0"), "--out", str(tmp_path / "merged"),
                           "--quiet"]) == 0
    a, b = LocalizationMap.load(tmp_path / "single"), LocalizationMap.load(tmp_path / "merged")
    assert a.names == b.names and len(a) == N_IMAGES
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.stamps, b.stamps)
    np.testing.assert_allclose(np.asarray(a.coarse, np.float32), np.asarray(b.coarse, np.float32), atol=2e-3)
    np.testing.assert_allclose(a.pca.components, b.pca.components, atol=1e-4)
    np.testing.assert_allclose(a.fine_rows(np.arange(N_IMAGES)), b.fine_rows(np.arange(N_IMAGES)), atol=2e-3)
    ma, mb = a.manifest, b.manifest
    for key in ("count", "reference_domain", "frame_id", "models", "descriptors", "stats"):
        assert ma[key] == mb[key], key
    la = Localizer(a, env["coarse"], env["fine"], SearchConfig(device="cpu"))
    lb = Localizer(b, env["coarse"], env["fine"], SearchConfig(device="cpu"))
    images = [f.image for f in iter_frames(load_condition(env["root"] / "data", "sunny"))]
    cf, ff = env["coarse"].encode(images, "sunny"), env["fine"].encode(images, "sunny")
    for i in range(N_IMAGES):
        assert la.localize_features(cf[i], ff[i]).topk[0][0] == lb.localize_features(cf[i], ff[i]).topk[0][0] == i


def test_map_info_cli(env, capsys):
    assert map_info_cli.main([str(env["map"]), "--verify"]) == 0
    out = capsys.readouterr().out
    for needle in ("images         12", "frame_id       map", "per image", "fine.npy", "coarse model", "extent",
                   "verified", "RAM (search)"):
        assert needle in out
    version = ET.parse(Path(__file__).resolve().parents[1] / "package.xml").getroot().findtext("version")
    assert re.search(rf"^created +\S+ by disam_ros {re.escape(version)}$", out, re.M), out  # the builder's version
    assert map_info_cli.main([str(env["map"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == N_IMAGES and info["bytes_per_image"] > 0
    d = int(np.prod(env["coarse"].content_shape))  # exact map (auto at this size): float32 coarse resident
    assert info["ram_estimate_bytes"] == N_IMAGES * (4 * d + 200)  # + names and poses as Python objects


def test_build_cli_errors_are_one_line(env, tmp_path, capsys):
    rc = build_map_main(["--dataset", str(tmp_path / "nope"), "--condition", "sunny", "--coarse",
                         str(env["ckpt"]["coarse"]), "--out", str(tmp_path / "m"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "nope" in err
    rc = build_map_main(["--dataset", str(env["root"] / "data"), "--condition", "sunny", "--domain", "foggy",
                         "--coarse", str(env["ckpt"]["coarse"]), "--out", str(tmp_path / "m"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "foggy" in err and "--domain" in err and not (tmp_path / "m").exists()


def test_package_attribute_is_the_function():
    assert callable(build_map_fn) and build_map_fn.__name__ == "build_map"


@pytest.mark.parametrize("mode", ["exact", "exact16", "pooled", "pca", "pca-full", "hnsw", "ivfpq"])
def test_size_estimate_matches_the_written_map(tmp_path, mode):
    """Disk per file and in total within a few % of what is written; RAM = the coarse search's resident copy."""
    n, rng = 300, np.random.default_rng(0)
    coarse = TableEncoder(rng.standard_normal((n, 8, 12, 12)).astype(np.float32))
    fine = TableEncoder(rng.standard_normal((n, 8, 12, 12)).astype(np.float32))
    s = settings_for_mode(mode, coarse_grid=4 if mode == "pooled" else None, pca_dim=48 if mode in ("pca", "pca-full",
                          "hnsw", "ivfpq") else None, fine_grid=None if mode == "exact" else 4)
    est = estimate_map_size(n, coarse.content_shape, fine.content_shape, s, name_bytes=8)  # names img00000
    out = build_map(token_frames(n), coarse, fine, tmp_path / "m", "ref", s, progress=False, total=n)
    written = {p.name: p.stat().st_size for p in out.iterdir() if p.name != ".disam-made"}  # the tool's marker
    assert set(written) == set(est.files)
    assert est.disk == pytest.approx(sum(written.values()), rel=0.04)
    for name in ("coarse.npy", "coarse_full.npy", "fine.npy", "pca.npz"):
        if name in written:
            assert est.files[name] == pytest.approx(written[name], rel=0.005), name
    if s.index == "flat":
        loc = Localizer(LocalizationMap.load(out), coarse, fine, SearchConfig(device="cpu", backend="numpy"))
        assert est.ram - 200 * n == loc.index.resident_bytes()


def _paper_like(shape):
    return TableEncoder(np.zeros((1, *shape), np.float32))


def test_large_map_is_announced_with_the_compact_fix(tmp_path, caplog):
    """The issue's case: an exact map at the small preset silently became 895 MB. Now it is estimated and,
    above 1 GiB, a warning names --mode pca with what it would cost."""
    enc = _paper_like(preset("small", DOMAINS).content_shape)  # (128, 32, 32): 768 KiB per image exact
    with caplog.at_level(logging.INFO, logger="disam_ros.maps.map_plan"):
        check_map_size(tmp_path / "m", 2000, enc, enc, settings_for_mode("exact"), ram_bytes=None)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    warn = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    said = [float(re.search(r"about ([\d.]+) GiB on disk", m).group(1)) for m in info if "2000 images" in m]
    assert said and said[0] == pytest.approx(2000 * 128 * 32 * 32 * (4 + 2) / 2**30, abs=0.01), info  # f32 + f16
    assert len(warn) == 1 and "--mode pca" in warn[0] and "MiB on disk" in warn[0], warn
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="disam_ros.maps.map_plan"):
        check_map_size(tmp_path / "m", 2000, enc, enc, settings_for_mode("pca"), ram_bytes=None)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_map_that_cannot_fit_on_disk_is_refused_before_writing(tmp_path):
    enc = TableEncoder(np.random.default_rng(0).standard_normal((3, 4, 3, 3)).astype(np.float32))
    free = shutil.disk_usage(tmp_path).free
    n = free // (4 * 36) + 1  # exact float32 coarse alone: 144 bytes per image
    with pytest.raises(MapError) as e:
        build_map(token_frames(3), enc, None, tmp_path / "out" / "m", "ref", progress=False, total=n)
    msg = _one_line_naming(e, "free")
    assert str(tmp_path / "out" / "m") in msg and "--mode pca" in msg
    assert list(tmp_path.iterdir()) == []
