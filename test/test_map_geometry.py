"""Map geometry (map format version 2): SIFT keypoints, descriptors and map-frame 3D points per map image, built
from the reference drive's depth or triangulated between neighbouring images; old maps stay retrieval-only."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from disam_ros.data.folders import read_image
from disam_ros.geometry import quat_to_rot
from disam_ros.maps import LocalizationMap, MapBuildConfig, MapError, build_map_from_folder, merge_shards
from disam_ros.maps import map_info as map_info_cli
from disam_ros.maps.build_map import main as build_map_main
from disam_ros.maps.geometry_build import FEATURES_DIR, GeometryBuilder, GeometryPlan
from disam_ros.maps.geometry_store import NOTE_OLD
from disam_ros.maps.map_format import GEOM_KEYPOINTS, GEOM_POINTS, MANIFEST, write_manifest
from disam_ros.maps.npy_rows import RowFile
from disam_ros.pose.camera import Intrinsics
from disam_ros.verify.verifier import VerifyConfig

FRAMES = 8


@pytest.fixture(scope="module")
def geo_world(tmp_path_factory):
    """A 128-px synthetic drive with exact depth, a micro coarse model, and maps built with depth (auto) and by
    triangulation."""
    from disam_ros.data.synthetic import WorldConfig, make_world
    from disam_ros.model import DisamNet, preset, save_checkpoint

    tmp = tmp_path_factory.mktemp("geo")
    world = make_world(WorldConfig(seed=1, image_size=128, frames=FRAMES, blocks=3, workers=1, conditions=("sunny",)),
                       tmp / "world", progress=False)
    torch.manual_seed(0)
    cfg = preset("micro", ("sunny",))
    ckpt = save_checkpoint(tmp / "coarse.pt", DisamNet(cfg), cfg)
    maps = {}
    for geometry in ("auto", "triangulate"):
        maps[geometry] = build_map_from_folder(MapBuildConfig(out=tmp / geometry, dataset=world, condition="sunny",
                                                              coarse=ckpt, progress=False, geometry=geometry))
    return {"world": world, "ckpt": ckpt, "tmp": tmp, **maps}


def _project(points, position, quat, cam):
    """Our own pinhole projection: stored pose = camera optical frame in the map frame."""
    R = quat_to_rot(np.asarray(quat, np.float64))
    p = (np.asarray(points, np.float64) - position) @ R  # R^T (x - c), row-wise
    return np.stack([cam.fx * p[:, 0] / p[:, 2] + cam.cx, cam.fy * p[:, 1] / p[:, 2] + cam.cy], 1), p[:, 2]


def test_depth_geometry_reprojects_onto_its_keypoints(geo_world):
    m = LocalizationMap.load(geo_world["auto"])
    assert m.has_geometry and m.geometry_note is None
    assert m.manifest["version"] == 2 and m.manifest["geometry"]["method"] == "depth"
    cam = m.map_geometry.intrinsics
    assert (cam.width, cam.height) == read_image(sorted((geo_world["world"] / "sunny" / "images").iterdir())[0]
                                                 ).shape[1::-1]
    for i in (0, 3, FRAMES - 1):
        kp, desc, pts = m.geometry(i)
        assert kp.dtype == np.float32 and desc.dtype == np.uint8 and pts.dtype == np.float32
        assert isinstance(m.map_geometry.keypoints, RowFile)  # read from disk per image, not held in RAM
        assert kp.shape[1] == 2 and desc.shape == (len(kp), 128)
        ok = np.isfinite(pts).all(axis=1)
        assert ok.sum() >= 20 and ok.mean() > 0.3, (i, ok.sum(), len(kp))
        uv, z = _project(pts[ok], m.positions[i], m.quats[i], cam)
        assert (z > 0).all()
        err = np.linalg.norm(uv - kp[ok], axis=1)
        assert err.max() < 1.0, (i, err.max())
    maps = Path("/proc/self/maps").read_text()  # read per image: no geometry file stays mapped (and resident)
    geometry = [f for f in Path(geo_world["auto"]).iterdir() if f.name.startswith("geometry_")]
    assert len(geometry) >= 4 and not [f.name for f in geometry if str(f.resolve()) in maps]


def _agreement(dep, tri, order=None):
    """Triangulated map `tri` against the depth map `dep`: tri's image s is dep's image order[s] (the same image
    file, so the same SIFT keypoints; each map keeps those with a 3D point, so they pair by position). ->
    (relative 3D distances where both have a point, tri's point count, dep's point count)."""
    rel, n_tri, n_dep = [], 0, 0
    for s in range(FRAMES):
        i = s if order is None else int(order[s])
        kd, _, pd = dep.geometry(i)
        kt, _, pt = tri.geometry(s)
        assert np.isfinite(pd).all() and np.isfinite(pt).all()  # only keypoints with a point are stored
        at = {tuple(k): j for j, k in reversed(list(enumerate(kd.tolist())))}
        pairs = [(at[tuple(k)], j) for j, k in enumerate(kt.tolist()) if tuple(k) in at]
        assert len(pairs) >= 0.5 * len(kt)  # the same detector on the same image: most tri keypoints are dep's
        d_i, t_i = (np.array(c, np.int64) for c in zip(*pairs)) if pairs else (np.zeros(0, np.int64),) * 2
        n_tri += len(pt)
        n_dep += len(pd)
        rel.append(np.linalg.norm(pd[d_i] - pt[t_i], axis=1) / np.linalg.norm(pd[d_i] - dep.positions[i], axis=1))
    return np.concatenate(rel), n_tri, n_dep


def _assert_agrees(rel, n_tri, n_dep):
    assert n_tri >= 100 and n_tri >= 0.15 * n_dep, (n_tri, n_dep)
    assert len(rel) >= 80
    assert np.median(rel) < 0.10, np.median(rel)
    assert np.mean(rel < 0.25) > 0.7


def test_triangulated_points_agree_with_depth(geo_world):
    """Same SIFT keypoints (deterministic), 3D points from two methods. Tolerance: the triangulated range error of
    a point at range z seen from a baseline b (3 m spacing) with sigma px matching noise at focal f (91 px
    here) is about z^2 sigma / (f b): 0.5 px at 20 m gives ~0.7 m, 3.5 % of the range; we accept a median of
    10 % of the range (SIFT at 128 px locates blobs to ~0.5-1 px) and measured ~5 %."""
    dep = LocalizationMap.load(geo_world["auto"])
    tri = LocalizationMap.load(geo_world["triangulate"])
    g = tri.manifest["geometry"]
    assert g["method"] == "triangulate" and g["partners"] == 4 and g["partner_rule"] == "pose"
    assert g["partner_max_angle_deg"] == 45.0 and "neighbours" not in g and g["epipolar_px"] == 2.0
    _assert_agrees(*_agreement(dep, tri))


def test_shuffled_photo_names_triangulate_as_well_as_the_drive(geo_world, tmp_path):
    """Real photographs come in any name order: the same images and poses under shuffled names (poses.txt in
    the new name order, no depth) give the points of the ordered build, since partners come from the poses."""
    src = geo_world["world"] / "sunny"
    root = tmp_path / "data" / "sunny"
    (root / "images").mkdir(parents=True)
    shutil.copy(src / "camera.yaml", root / "camera.yaml")
    images = sorted((src / "images").iterdir())
    lines = [ln for ln in (src / "poses.txt").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    order = np.random.default_rng(5).permutation(FRAMES)  # shuffled name s holds frame order[s]
    assert not np.array_equal(order, np.arange(FRAMES))
    for s, i in enumerate(order):
        shutil.copy(images[i], root / "images" / f"photo_{s:03d}{images[i].suffix}")
    # the lines in the new name order, stamped 0 1 2 ... in that order (poses pair with names; stamps must not
    # go back, docs/reliability.md T2)
    (root / "poses.txt").write_text("\n".join(f"{s} " + lines[i].split(maxsplit=1)[1] for s, i in enumerate(order))
                                    + "\n")
    out = build_map_from_folder(MapBuildConfig(out=tmp_path / "map", dataset=tmp_path / "data", condition="sunny",
                                               coarse=geo_world["ckpt"], progress=False, geometry="auto"))
    shuffled = LocalizationMap.load(out)
    assert shuffled.manifest["geometry"]["method"] == "triangulate"  # no depth: auto triangulates
    dep = LocalizationMap.load(geo_world["auto"])
    rel, n_tri, n_dep = _agreement(dep, shuffled, order)
    _assert_agrees(rel, n_tri, n_dep)
    ordered_rel, ordered_n, _ = _agreement(dep, LocalizationMap.load(geo_world["triangulate"]))
    assert abs(n_tri - ordered_n) <= 0.05 * ordered_n, (n_tri, ordered_n)
    assert np.median(rel) <= np.median(ordered_rel) + 0.01, (np.median(rel), np.median(ordered_rel))


def test_no_temporary_features_in_the_map(geo_world):
    """Triangulation spills features to a folder in the staging directory; the committed map has no folder and
    lists no file it does not have."""
    root = geo_world["triangulate"]
    man = json.loads((root / MANIFEST).read_text())
    assert not (root / FEATURES_DIR).exists() and not any(p.is_dir() for p in root.iterdir())
    assert all((root / name).is_file() for name in man["files"])
    assert not any("feature" in name for name in man["files"]), sorted(man["files"])


def test_a_failed_build_leaves_no_temporary_features(geo_world, tmp_path, monkeypatch):
    """A map image of another size stops the build in pass 1, a matcher failure in pass 2: either way the
    temporary features are gone (GeometryBuilder on its own, then a whole build leaving nothing beside --out)."""
    images = sorted((geo_world["world"] / "sunny" / "images").iterdir())
    first = read_image(images[0])
    cam = Intrinsics.load(geo_world["world"] / "sunny" / "camera.yaml")
    pose = (np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))
    for stage in ("stage1", "stage2"):
        (tmp_path / stage).mkdir()
    geo = GeometryBuilder(GeometryPlan("triangulate", cam), tmp_path / "stage1")
    assert (tmp_path / "stage1" / FEATURES_DIR).is_dir()
    geo.add(0, first, *pose, "a.png")
    with pytest.raises(ValueError, match="b.png is 64x64"):
        geo.add(1, first[:64, :64].copy(), *pose, "b.png")
    assert not (tmp_path / "stage1" / FEATURES_DIR).exists()

    def broken(*_args, **_kwargs):
        raise RuntimeError("matcher failed")

    geo = GeometryBuilder(GeometryPlan("triangulate", cam), tmp_path / "stage2")
    for i in range(3):
        geo.add(i, read_image(images[i]), np.array([3.0 * i, 0.0, 0.0]), pose[1], images[i].name)
    monkeypatch.setattr("disam_ros.maps.geometry_build.epipolar_match", broken)
    with pytest.raises(RuntimeError, match="matcher failed"):
        geo.finish()
    assert not (tmp_path / "stage2" / FEATURES_DIR).exists()
    monkeypatch.undo()

    root = _condition_copy(geo_world, tmp_path, ("depth",))
    odd = root / "sunny" / "images" / images[4].name
    cv2.imwrite(str(odd), cv2.resize(cv2.imread(str(odd)), (96, 96)))
    with pytest.raises(ValueError, match=f"{images[4].stem}.* is 96x96"):
        build_map_from_folder(MapBuildConfig(out=tmp_path / "map", dataset=root, condition="sunny",
                                             coarse=geo_world["ckpt"], progress=False, geometry="triangulate"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "stage1", "stage2"]  # no staging dir left


def test_old_format_map_loads_retrieval_only(geo_world, tmp_path, caplog, capsys):
    from disam_ros.model import Encoder
    from disam_ros.retrieval import Localizer, SearchConfig

    out = build_map_from_folder(MapBuildConfig(out=tmp_path / "old", dataset=geo_world["world"], condition="sunny",
                                               coarse=geo_world["ckpt"], progress=False, geometry="none"))
    man = json.loads((out / MANIFEST).read_text())
    assert "geometry" not in man and not any(n.startswith("geometry_") for n in man["files"])
    man["version"] = 1  # exactly what a build before map geometry wrote
    (out / MANIFEST).write_text(json.dumps(man, indent=2))
    with caplog.at_level(logging.INFO, logger="disam_ros.maps"):
        m = LocalizationMap.load(out, verify=True)
    assert not m.has_geometry and m.geometry_note == NOTE_OLD
    notes = [r for r in caplog.records if NOTE_OLD in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO  # a note, not an error
    with pytest.raises(MapError, match="no map geometry"):
        m.geometry(0)
    loc = Localizer(m, Encoder.from_checkpoint(geo_world["ckpt"], device="cpu"), None, SearchConfig(device="cpu"))
    images = sorted((geo_world["world"] / "sunny" / "images").iterdir())
    for i in (0, 5):
        assert loc.localize(read_image(images[i]), "sunny").index == i
    capsys.readouterr()
    assert map_info_cli.main([str(out), "--verify"]) == 0
    assert f"geometry       none: {NOTE_OLD}" in capsys.readouterr().out
    assert map_info_cli.main([str(geo_world["auto"])]) == 0
    out = capsys.readouterr().out
    assert "geometry       depth: " in out
    files = [line for line in out.splitlines() if line.endswith("/image")]  # one per file, sizes in columns
    assert any("geometry_descriptors.npy" in line for line in files) and len({len(line) for line in files}) == 1
    assert len({line.index("B ") for line in files}) == 1  # each total's unit at the same place


def test_tampered_geometry_is_refused(geo_world, tmp_path):
    bad = shutil.copytree(geo_world["auto"], tmp_path / "bad")
    raw = bytearray((bad / GEOM_POINTS).read_bytes())
    raw[-5] ^= 0xFF
    (bad / GEOM_POINTS).write_bytes(bytes(raw))
    with pytest.raises(MapError, match=f"{GEOM_POINTS}: checksum mismatch"):
        LocalizationMap.load(bad)
    # NaN keypoints with matching hashes (a buggy tool rewrote both): refused by the finiteness scan
    nan = shutil.copytree(geo_world["auto"], tmp_path / "nan")
    kp = np.load(nan / GEOM_KEYPOINTS)
    kp[3, 1] = np.nan
    np.save(nan / GEOM_KEYPOINTS, kp)
    man = json.loads((nan / MANIFEST).read_text())
    write_manifest(nan, {k: v for k, v in man.items() if k not in ("files", "integrity")})
    with pytest.raises(MapError, match=f"{GEOM_KEYPOINTS}: row 3 holds NaN/inf"):
        LocalizationMap.load(nan)
    # geometry files a manifest does not describe: refused like any unlisted file
    man["geometry"]["intrinsics"]["fx"] = -1.0
    (nan / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(MapError, match="geometry.intrinsics"):
        LocalizationMap.load(nan, verify=False)


def test_sharded_depth_build_merges_to_the_single_build(geo_world, tmp_path):
    shards = [build_map_from_folder(MapBuildConfig(out=tmp_path / f"s{i}", dataset=geo_world["world"],
                                                   condition="sunny", coarse=geo_world["ckpt"], progress=False,
                                                   shard=(i, 2))) for i in range(2)]
    merged = LocalizationMap.load(merge_shards(shards, tmp_path / "merged", progress=False))
    single = LocalizationMap.load(geo_world["auto"])
    assert merged.has_geometry
    for i in range(FRAMES):
        for a, b in zip(merged.geometry(i), single.geometry(i), strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(merged.map_geometry.image_gradients(i), single.map_geometry.image_gradients(i))


def _condition_copy(geo_world, tmp_path, drop):
    root = tmp_path / "data"
    shutil.copytree(geo_world["world"] / "sunny", root / "sunny")
    for name in drop:
        p = root / "sunny" / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return root


@pytest.mark.parametrize(("drop", "geometry", "needs"), [
    (("camera.yaml",), "triangulate", "camera intrinsics"),
    (("poses.txt",), "triangulate", "metric poses"),
    (("depth",), "depth", "depth images"),
])
def test_cli_geometry_without_inputs_is_a_one_line_error(geo_world, tmp_path, capsys, drop, geometry, needs):
    root = _condition_copy(geo_world, tmp_path, drop)
    rc = build_map_main(["--dataset", str(root), "--condition", "sunny", "--coarse", str(geo_world["ckpt"]),
                         "--out", str(tmp_path / "map"), "--quiet", "--device", "cpu", "--geometry", geometry])
    err = capsys.readouterr().err
    assert rc == 2 and not (tmp_path / "map").exists()
    assert err.count("\n") == 1 and err.startswith("disam-build-map: error:") and needs in err, err


def test_auto_without_intrinsics_builds_retrieval_only(geo_world, tmp_path, caplog):
    root = _condition_copy(geo_world, tmp_path, ("camera.yaml",))
    with caplog.at_level(logging.INFO, logger="disam_ros.maps"):
        out = build_map_from_folder(MapBuildConfig(out=tmp_path / "map", dataset=root, condition="sunny",
                                                   coarse=geo_world["ckpt"], progress=False))
    assert any("retrieval-only" in r.getMessage() and "camera intrinsics" in r.getMessage() for r in caplog.records)
    m = LocalizationMap.load(out)
    assert not m.has_geometry and "--geometry" in m.geometry_note and m.manifest["version"] == 2


def test_the_size_estimate_bounds_the_geometry_files_built(geo_world):
    """The disk check before a build counts map geometry: every geometry file a real build wrote is within its
    estimate (an upper bound: images keep at most nfeatures keypoints)."""
    from disam_ros.maps.descriptors import estimate_map_size, settings_for_mode
    from disam_ros.maps.geometry_build import GeometryPlan, geometry_budget

    assert geometry_budget(None) is None
    for geometry in ("auto", "triangulate"):
        m = LocalizationMap.load(geo_world[geometry])
        plan = GeometryPlan(method=m.manifest["geometry"]["method"], intrinsics=m.map_geometry.intrinsics)
        est = estimate_map_size(FRAMES, (64, 16, 16), None, settings_for_mode("exact"), geometry=geometry_budget(plan))
        names = [n for n in est.files if n.startswith("geometry_")]
        assert len(names) == 5 and (geo_world[geometry] / "geometry_gradients.npy").exists()
        for name in names:
            assert (geo_world[geometry] / name).stat().st_size <= est.files[name], (geometry, name)


def test_sift_max_side_is_recorded_and_a_bad_one_is_a_one_line_error(geo_world, tmp_path, capsys):
    """The cap a map is built with is in its manifest (queries are detected alike); the default is the map
    recipe's 1600 px; a negative cap is refused before any work, exit 2."""
    from disam_ros.maps.build_map import main
    from disam_ros.pose.features import MAP_SIFT, SiftConfig

    assert LocalizationMap.load(geo_world["auto"]).manifest["geometry"]["features"]["max_side"] == MAP_SIFT.max_side
    out = build_map_from_folder(MapBuildConfig(out=tmp_path / "capped", dataset=geo_world["world"], condition="sunny",
                                               coarse=geo_world["ckpt"], progress=False, sift_max_side=64))
    record = LocalizationMap.load(out).manifest["geometry"]["features"]
    assert record["max_side"] == 64 and SiftConfig.from_record(record).max_side == 64
    rc = main(["--dataset", str(geo_world["world"]), "--condition", "sunny", "--coarse", str(geo_world["ckpt"]),
               "--out", str(tmp_path / "bad"), "--sift-max-side", "-1", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["disam-build-map: error: --sift-max-side -1: give a number of pixels >= 0 (0 = no cap)"]
    assert not (tmp_path / "bad").exists()


def test_sparse_images_are_counted(geo_world, tmp_path):
    """Map images too poor in 3D points to verify a frame are counted in the record (a writer fed by hand: 20, 14
    and 0 finite points of 20, 20 and 5 keypoints), and a built map's count matches a recount of its stored
    points."""
    from disam_ros.maps.geometry_store import SPARSE_IMAGE_POINTS, GeometryWriter

    w = GeometryWriter(tmp_path)
    for finite, nan in ((20, 0), (14, 6), (0, 5)):
        pts = np.r_[np.ones((finite, 3)), np.full((nan, 3), np.nan)]
        w.add(np.zeros((len(pts), 2)), np.zeros((len(pts), 128)), pts)
    w.close()
    rec = w.record("depth", Intrinsics(fx=100.0, fy=100.0, cx=63.5, cy=63.5, width=128, height=128))
    assert SPARSE_IMAGE_POINTS == VerifyConfig().min_inliers == 15  # the verifier's default bar, kept in step
    assert (rec["with_point"], rec["sparse_images"]) == (34, 2)
    # only keypoints with a 3D point are stored (in their order), the detected count is kept in the record
    assert (rec["keypoints"], rec["detected"], w.offsets) == (34, 45, [0, 20, 34, 34])
    for geometry in ("auto", "triangulate"):
        m = LocalizationMap.load(geo_world[geometry])
        recount = sum(int(np.isfinite(m.geometry(i)[2]).all(axis=1).sum()) < SPARSE_IMAGE_POINTS
                      for i in range(len(m.positions)))
        assert m.manifest["geometry"]["sparse_images"] == recount, geometry


def test_a_blank_photo_is_reported_as_sparse(geo_world, tmp_path, caplog, capsys):
    """A photograph with nothing to detect (a lens cap, a white wall) gets no 3D points: the build warns in one
    line with the fix, the record counts it, and disam-map-info says so."""
    src = geo_world["world"] / "sunny"
    root = tmp_path / "data" / "sunny"
    shutil.copytree(src / "images", root / "images")
    for name in ("camera.yaml", "poses.txt"):
        shutil.copy(src / name, root / name)
    blank = sorted((root / "images").iterdir())[3]
    cv2.imwrite(str(blank), np.full((128, 128, 3), 127, np.uint8))
    with caplog.at_level(logging.WARNING):
        out = build_map_from_folder(MapBuildConfig(out=tmp_path / "map", dataset=tmp_path / "data", condition="sunny",
                                                   coarse=geo_world["ckpt"], progress=False, geometry="triangulate"))
    m = LocalizationMap.load(out)
    assert len(m.geometry(3)[0]) == 0 and m.manifest["geometry"]["sparse_images"] >= 1
    assert any("fewer than 15 3D points" in r.getMessage() and "overlap" in r.getMessage() for r in caplog.records)
    assert map_info_cli.main([str(out)]) == 0
    printed = capsys.readouterr().out
    assert "with fewer than 15 3D points" in printed
    assert "triangulated with 4 pose partners, matched within 2 px of their epipolar lines" in printed


def test_gradient_descriptors_are_stored_per_keypoint_and_checked(geo_world, tmp_path):
    """Every keypoint's dense-search descriptor is stored beside it (uint8, the same rows), equal to computing it
    again from the map image (both paths: depth, triangulate); a manifest whose `gradients` record is malformed is
    refused in one line; a map without the record loads with none."""
    from disam_ros.data.folders import read_image
    from disam_ros.pose.gradients import keypoint_descriptors

    images = sorted((geo_world["world"] / "sunny" / "images").iterdir())
    for geometry in ("auto", "triangulate"):
        m = LocalizationMap.load(geo_world[geometry])
        g = m.map_geometry
        assert m.manifest["geometry"]["gradients"] == {"cell": 8} and g.gradient_cell == 8
        for i in (0, FRAMES - 1):
            kp = np.asarray(m.geometry(i)[0])
            got = np.asarray(g.image_gradients(i))
            assert got.dtype == np.uint8 and got.shape == (len(kp), 128)
            np.testing.assert_array_equal(got, keypoint_descriptors(read_image(images[i]), kp, 8))
    bad = shutil.copytree(geo_world["auto"], tmp_path / "bad")
    man = json.loads((bad / MANIFEST).read_text())
    man["geometry"]["gradients"] = {"cell": "eight"}
    (bad / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(MapError, match="geometry.gradients"):
        LocalizationMap.load(bad, verify=False)
    old = shutil.copytree(geo_world["auto"], tmp_path / "old")
    man = json.loads((old / MANIFEST).read_text())
    del man["geometry"]["gradients"]
    (old / "geometry_gradients.npy").unlink()
    write_manifest(old, {k: v for k, v in man.items() if k not in ("files", "integrity")})
    m = LocalizationMap.load(old)
    assert m.has_geometry and m.map_geometry.gradients is None and m.map_geometry.image_gradients(0) is None


# ------------------------------------------------------------------ reliability G3, C2, T2 on the CLI
def _rehashed(map_dir) -> None:
    """What a buggy tool does after rewriting a file: make the manifest's hashes agree again."""
    man = json.loads((map_dir / MANIFEST).read_text())
    write_manifest(map_dir, {k: v for k, v in man.items() if k not in ("files", "integrity")})


@pytest.mark.parametrize("damage, expect", [
    ("all_nan", "holds 0 finite 3D points, the manifest's geometry.with_point says {n}"),
    ("half_nan", "holds {half} finite 3D points, the manifest's geometry.with_point says {n}"),
    ("partly", "row 2 is partly NaN (a point has 3 coordinates)"),
    ("inf", "holds inf values"),
])
def test_verify_checks_the_3d_points(geo_world, tmp_path, capsys, damage, expect):
    """G3: a map whose 3D points were all NaN (hashes rewritten) passed `disam-map-info --verify`."""
    bad = shutil.copytree(geo_world["auto"], tmp_path / "bad")
    pts = np.load(bad / GEOM_POINTS)
    n = len(pts)  # this build keeps only keypoints with a point: every row is a point
    assert np.isfinite(pts).all() and json.loads((bad / MANIFEST).read_text())["geometry"]["with_point"] == n
    if damage == "all_nan":
        pts[:] = np.nan
    elif damage == "half_nan":
        pts[::2] = np.nan
    elif damage == "partly":
        pts[2, 1] = np.nan
    else:
        pts[5, 0] = np.inf
    np.save(bad / GEOM_POINTS, pts)
    _rehashed(bad)
    assert map_info_cli.main([str(bad), "--verify"]) == 2
    err = capsys.readouterr().err.strip()
    want = expect.format(n=n, half=n - len(pts[::2]))
    assert err.startswith(f"disam-map-info: error: {bad / GEOM_POINTS}: {want}") and "\n" not in err
    with pytest.raises(MapError, match="points3d.npy"):
        LocalizationMap.load(bad)


def _world_copy(geo_world, tmp_path):
    w = tmp_path / "w"
    shutil.copytree(geo_world["world"], w)
    return w


def _build(geo_world, dataset, out) -> int:
    return build_map_main(["--dataset", str(dataset), "--condition", "sunny", "--coarse", str(geo_world["ckpt"]),
                           "--out", str(out), "--quiet", "--device", "cpu"])


@pytest.mark.parametrize("field, value, expect", [
    ("fx", 1e300, "camera intrinsics fx=1e+300 gives a horizontal field of view"),
    ("cx", -1e9, "camera intrinsics cx=-1000000000.0 puts the principal point outside"),
    ("k1", 1e6, "camera intrinsics k1=1000000.0 is beyond +-100"),
])
def test_build_refuses_a_camera_yaml_no_camera_has(geo_world, tmp_path, capsys, field, value, expect):
    """C2: these built a map with 0 3D points and exit 0 (a warning only)."""
    w = _world_copy(geo_world, tmp_path)
    path = w / "sunny" / "camera.yaml"
    text = path.read_text()
    doc = {**{k: v for k, v in (ln.split(": ") for ln in text.splitlines())}, field: repr(value)}
    path.write_text("".join(f"{k}: {v}\n" for k, v in doc.items()))
    assert _build(geo_world, w, tmp_path / "m") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"disam-build-map: error: {path}: {expect}") and "fix the file" in err and "\n" not in err
    assert not (tmp_path / "m").exists()


def test_build_refuses_poses_in_another_order_than_the_images(geo_world, tmp_path, capsys):
    """T2: a poses.txt in reverse time order gave exit 0 and every image another image's pose."""
    w = _world_copy(geo_world, tmp_path)
    path = w / "sunny" / "poses.txt"
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    path.write_text("\n".join(reversed(lines)) + "\n")
    first, second = (float(ln.split()[0]) for ln in list(reversed(lines))[:2])
    assert second < first  # what the rule must catch, seen here independently
    assert _build(geo_world, w, tmp_path / "m") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"disam-build-map: error: {path}: pose 2 (stamp {second:.9g}) is earlier than pose 1 "
                          f"({first:.9g}) although it goes with image 000001.png, after 000000.png")
    assert "stamps must not decrease" in err and "\n" not in err and not (tmp_path / "m").exists()
    path.write_bytes(bytes(range(256)) * 4)  # and a binary poses file: named, with the fix
    assert _build(geo_world, w, tmp_path / "m") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"disam-build-map: error: {path}: not a text file") and "\n" not in err
