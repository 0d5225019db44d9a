"""Learned local features stored in a map beside SIFT's (`disam-build-map --verify-features learned|both`):
keypoints, float16 unit descriptors, 3D points and a copy of the network, built from depth or triangulated
between pose partners, hashed and checked like every other map file (maps/feature_kind.py)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from disam_ros.data.folders import read_image
from disam_ros.geometry import quat_to_rot
from disam_ros.maps import LocalizationMap, MapBuildConfig, MapError, build_map_from_folder, merge_shards
from disam_ros.maps import map_info as map_info_cli
from disam_ros.maps.build_map import main as build_map_main
from disam_ros.maps.covisibility import choose_partners
from disam_ros.maps.map_format import GEOM_LEARNED_FILES, GEOM_LEARNED_NET, GEOMETRY_FILES, MANIFEST, sha256_file
from disam_ros.pose.learned import LEARNED_DIM, detect_learned, load_net
from disam_ros.shipped import KEYPOINTS

FRAMES = 6


@pytest.fixture(scope="module")
def learned_world(tmp_path_factory):
    """A 320x240 synthetic drive (6 frames, exact depth), a micro coarse model, and maps of it: depth geometry with
    --verify-features both and with the default (sift), and triangulated (no depth used) with both."""
    from disam_ros.data.synthetic import WorldConfig, make_world
    from disam_ros.model import DisamNet, preset, save_checkpoint

    tmp = tmp_path_factory.mktemp("learned")
    world = make_world(WorldConfig(seed=1, image_size=(320, 240), frames=FRAMES, blocks=3, workers=1,
                                   conditions=("sunny",)), tmp / "world", progress=False)
    torch.manual_seed(0)
    cfg = preset("micro", ("sunny",))
    ckpt = save_checkpoint(tmp / "coarse.pt", DisamNet(cfg), cfg)
    conf = {"dataset": world, "condition": "sunny", "coarse": ckpt, "progress": False}
    maps = {name: build_map_from_folder(MapBuildConfig(out=tmp / name, geometry=geometry, verify_features=choice,
                                                       **conf))
            for name, geometry, choice in (("both", "depth", "both"), ("sift", "depth", "sift"),
                                           ("tri", "triangulate", "both"))}
    return {"world": world, "ckpt": ckpt, "conf": conf, **maps}


def _project(points, position, quat, cam):
    """Our own pinhole projection (the synthetic camera has no distortion): stored pose = camera optical frame
    in the map frame. -> (pixels, depth along the optical axis)."""
    assert not cam.has_distortion
    R = quat_to_rot(np.asarray(quat, np.float64))
    p = (np.asarray(points, np.float64) - position) @ R  # R^T (x - c), row-wise
    return np.stack([cam.fx * p[:, 0] / p[:, 2] + cam.cx, cam.fy * p[:, 1] / p[:, 2] + cam.cy], 1), p[:, 2]


def test_learned_block_is_stored_hashed_and_readable(learned_world):
    root = learned_world["both"]
    man = json.loads((root / MANIFEST).read_text())
    rec = man["geometry"]["learned"]
    assert rec["kind"] == "learned" and rec["verify_features"] == "both"
    assert {"limit", "radius", "threshold", "sha256", "keypoints", "with_point", "detected"} <= set(rec)
    for name in (*GEOM_LEARNED_FILES, GEOM_LEARNED_NET):
        assert (root / name).is_file() and man["files"][name]["sha256"] == sha256_file(root / name), name
    # the network copy is the file the keypoints were made with: the shipped one, byte for byte
    assert sha256_file(root / GEOM_LEARNED_NET) == rec["sha256"] == sha256_file(KEYPOINTS)
    m = LocalizationMap.load(root)
    learned = m.map_geometry.learned
    assert learned is not None and learned.verify_features == "both" and len(learned) == FRAMES
    assert learned.net_path == root / GEOM_LEARNED_NET and learned.config.limit == rec["limit"]
    assert np.load(root / GEOM_LEARNED_FILES[1]).dtype == np.float16
    assert int(learned.counts().sum()) == rec["keypoints"] == rec["with_point"] > 20 * FRAMES
    kp, desc, pts = m.learned_geometry(2)
    assert kp.dtype == desc.dtype == pts.dtype == np.float32
    assert kp.shape == (len(kp), 2) and desc.shape == (len(kp), LEARNED_DIM) and pts.shape == (len(kp), 3)
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=2e-3)  # unit vectors, float16 rounding


def test_depth_learned_points_project_onto_their_keypoints(learned_world):
    m = LocalizationMap.load(learned_world["both"])
    cam = m.map_geometry.intrinsics
    for i in range(FRAMES):
        kp, _, pts = m.learned_geometry(i)
        assert len(kp) >= 50 and np.isfinite(pts).all()
        uv, z = _project(pts, m.positions[i], m.quats[i], cam)
        assert (z > 0).all()
        assert np.abs(uv - kp).max() < 1e-3, (i, np.abs(uv - kp).max())


def test_the_learned_keypoints_are_the_networks_own(learned_world):
    """The stored keypoints and descriptors are what the map's network finds in the map image (those with a
    point): a query detected with `net_path` and `config` is treated exactly alike."""
    m = LocalizationMap.load(learned_world["both"])
    learned = m.map_geometry.learned
    image = read_image(sorted((learned_world["world"] / "sunny" / "images").iterdir())[3])
    f = detect_learned(image, load_net(learned.net_path), learned.config)
    kp, desc, _ = m.learned_geometry(3)
    at = {tuple(k): r for r, k in enumerate(f.keypoints.tolist())}
    rows = np.array([at[tuple(k)] for k in kp.tolist()])
    np.testing.assert_allclose(desc, f.descriptors[rows], atol=1e-3)


def test_default_build_has_no_learned_block_and_the_same_sift_block(learned_world):
    sift, both = learned_world["sift"], learned_world["both"]
    assert not any(p.name.startswith("geometry_learned") for p in sift.iterdir())
    man = json.loads((sift / MANIFEST).read_text())
    assert "learned" not in man["geometry"] and not any("learned" in name for name in man["files"])
    m = LocalizationMap.load(sift)
    assert m.has_geometry and m.map_geometry.learned is None
    with pytest.raises(MapError, match="no learned features.*--verify-features both"):
        m.learned_geometry(0)
    for name in (*GEOMETRY_FILES, "geometry_gradients.npy"):  # learned features leave SIFT's untouched
        assert (sift / name).read_bytes() == (both / name).read_bytes(), name


def test_map_info_verify_passes_and_names_the_learned_block(learned_world, capsys):
    assert map_info_cli.main([str(learned_world["both"]), "--verify"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("learned "))
    rec = json.loads((learned_world["both"] / MANIFEST).read_text())["geometry"]["learned"]
    assert f"{rec['with_point']} with a 3D point" in line and "verify_features both" in line
    assert "verified" in out


def test_a_corrupted_learned_file_is_caught_by_verify(learned_world, tmp_path, capsys):
    bad = shutil.copytree(learned_world["both"], tmp_path / "bad")
    path = bad / GEOM_LEARNED_FILES[1]
    raw = bytearray(path.read_bytes())
    raw[-7] ^= 0x40  # one bit of a float16 descriptor
    path.write_bytes(bytes(raw))
    assert map_info_cli.main([str(bad), "--verify"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"disam-map-info: error: {path}: checksum mismatch") and "\n" not in err
    with pytest.raises(MapError, match="geometry_learned_descriptors.npy: checksum mismatch"):
        LocalizationMap.load(bad)


@pytest.mark.parametrize(("key", "value", "expect"), [
    ("verify_features", "sometimes", "geometry.learned.verify_features"),
    ("sha256", "0" * 64, "differs from the sha256 of geometry_learned_net.pt"),
    ("limit", -3, "geometry.learned"),
])
def test_an_edited_learned_record_is_a_one_line_error(learned_world, tmp_path, capsys, key, value, expect):
    bad = shutil.copytree(learned_world["both"], tmp_path / "bad")
    man = json.loads((bad / MANIFEST).read_text())
    man["geometry"]["learned"][key] = value
    (bad / MANIFEST).write_text(json.dumps(man))
    assert map_info_cli.main([str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("disam-map-info: error:") and expect in err and "\n" not in err
    with pytest.raises(MapError, match=expect.replace(".", r"\.")):
        LocalizationMap.load(bad)


def test_triangulated_learned_points_reproject_into_their_partners(learned_world):
    """No depth: a learned point is kept only when its track's views reproject within the record's
    `reprojection_px`. Checked independently: every stored point projects within that distance of its own
    keypoint, and of a learned keypoint the network finds in at least one of its image's pose partners (the
    four nearest images looking the same way: maps/covisibility.py). Against the depth map's points for the same
    keypoints the range error is loose: this small 320x240 drive triangulates learned keypoints to ~30 % of the
    range at the median (SIFT ~5 %; at 640x480 ~10 %, docs/maps.md)."""
    tri, dep = LocalizationMap.load(learned_world["tri"]), LocalizationMap.load(learned_world["both"])
    g = tri.manifest["geometry"]
    assert g["method"] == "triangulate" and g["learned"]["widened"] == 0
    learned, cam, limit = tri.map_geometry.learned, tri.map_geometry.intrinsics, g["reprojection_px"] + 1e-3
    net = load_net(learned.net_path)
    images = sorted((learned_world["world"] / "sunny" / "images").iterdir())
    found = [detect_learned(read_image(p), net, learned.config).keypoints for p in images]
    axes = np.stack([quat_to_rot(np.asarray(q, np.float64))[:, 2] for q in tri.quats])
    partners = choose_partners(np.asarray(tri.positions), axes, g["partners"], g["partner_max_angle_deg"])
    rel, total = [], 0
    for i in range(FRAMES):
        kp, _, pts = tri.learned_geometry(i)
        total += len(kp)
        uv, z = _project(pts, tri.positions[i], tri.quats[i], cam)
        assert (z > 0).all() and np.linalg.norm(uv - kp, axis=1).max() <= limit
        best = np.full(len(kp), np.inf)
        for j in partners[i]:
            uvj, zj = _project(pts, tri.positions[j], tri.quats[j], cam)
            near = np.linalg.norm(uvj[:, None] - found[j][None], axis=2).min(axis=1)
            best = np.minimum(best, np.where(zj > 0, near, np.inf))
        assert (best <= limit).all(), (i, np.sort(best)[-5:])
        kd, _, pd = dep.learned_geometry(i)
        at = {tuple(k): r for r, k in enumerate(kd.tolist())}
        pairs = np.array([(at[tuple(k)], r) for r, k in enumerate(kp.tolist()) if tuple(k) in at]).reshape(-1, 2)
        rel.append(np.linalg.norm(pd[pairs[:, 0]] - pts[pairs[:, 1]], axis=1)
                   / np.linalg.norm(pd[pairs[:, 0]] - dep.positions[i], axis=1))
    rel = np.concatenate(rel)
    assert total >= 300 and len(rel) >= 0.5 * total
    assert np.median(rel) < 0.5 and np.mean(rel < 0.25) > 0.3, (np.median(rel), np.mean(rel < 0.25))


def test_sharded_build_carries_the_learned_block(learned_world, tmp_path):
    shards = [build_map_from_folder(MapBuildConfig(out=tmp_path / f"s{i}", geometry="depth", verify_features="both",
                                                   shard=(i, 2), **learned_world["conf"])) for i in range(2)]
    merged = LocalizationMap.load(merge_shards(shards, tmp_path / "merged", progress=False))
    single = LocalizationMap.load(learned_world["both"])
    a, b = merged.manifest["geometry"]["learned"], single.manifest["geometry"]["learned"]
    assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert sha256_file(merged.root / GEOM_LEARNED_NET) == a["sha256"]
    for i in range(FRAMES):  # the same keypoints; their order may differ where two detector scores differ only in
        #                      the last bits, which CPU convolutions do not promise to reproduce between runs
        (ka, da, pa), (kb, db, pb) = merged.learned_geometry(i), single.learned_geometry(i)
        oa, ob = np.lexsort(ka.T), np.lexsort(kb.T)
        np.testing.assert_array_equal(ka[oa], kb[ob])
        np.testing.assert_allclose(da[oa], db[ob], atol=2e-3)
        np.testing.assert_allclose(pa[oa], pb[ob], atol=1e-5)


def test_shards_of_different_learned_recipes_do_not_merge(learned_world, tmp_path):
    conf = learned_world["conf"]
    shards = [build_map_from_folder(MapBuildConfig(out=tmp_path / f"s{i}", geometry="depth", verify_features=choice,
                                                   shard=(i, 2), **conf)) for i, choice in enumerate(("both", "sift"))]
    with pytest.raises(MapError, match="learned features unlike"):
        merge_shards(shards, tmp_path / "merged", progress=False)
    assert not (tmp_path / "merged").exists()


def _cli(learned_world, tmp_path, *extra):
    return build_map_main(["--dataset", str(learned_world["world"]), "--condition", "sunny", "--coarse",
                           str(learned_world["ckpt"]), "--out", str(tmp_path / "map"), "--quiet", "--device", "cpu",
                           *extra])


@pytest.mark.parametrize("net", ["garbage", "missing", "directory"])
def test_a_bad_keypoint_net_is_a_one_line_error(learned_world, tmp_path, capsys, net):
    path = tmp_path / "net.pt"
    if net == "garbage":
        path.write_bytes(b"not a network at all")
    elif net == "directory":
        path.mkdir()
    rc = _cli(learned_world, tmp_path, "--verify-features", "learned", "--keypoint-net", str(path))
    err = capsys.readouterr().err
    assert rc == 2 and not (tmp_path / "map").exists()
    assert err.count("\n") == 1 and err.startswith(f"disam-build-map: error: --keypoint-net {path}"), err


@pytest.mark.parametrize(("extra", "expect"), [
    (("--keypoint-net", str(KEYPOINTS)), "--keypoint-net applies to --verify-features learned or both"),
    (("--verify-features", "both", "--geometry", "none"), "--verify-features both needs map geometry"),
])
def test_learned_options_that_cannot_apply_are_refused(learned_world, tmp_path, capsys, extra, expect):
    rc = _cli(learned_world, tmp_path, *extra)
    err = capsys.readouterr().err
    assert rc == 2 and not (tmp_path / "map").exists()
    assert err.count("\n") == 1 and expect in err, err


def test_the_size_estimate_bounds_the_learned_files_built(learned_world):
    """The disk check before a build counts the learned block: every learned file a real build wrote is within its
    estimate (at most `limit` keypoints an image), the network copy exactly; without it, no learned file is
    estimated."""
    from disam_ros.maps.descriptors import estimate_map_size, settings_for_mode
    from disam_ros.maps.feature_kind import LearnedPlan
    from disam_ros.maps.geometry_build import GeometryPlan, geometry_budget

    for name in ("both", "tri"):
        m = LocalizationMap.load(learned_world[name])
        plan = GeometryPlan(method=m.manifest["geometry"]["method"], intrinsics=m.map_geometry.intrinsics)
        budget = geometry_budget(plan, LearnedPlan())
        est = estimate_map_size(FRAMES, (64, 16, 16), None, settings_for_mode("exact"), geometry=budget)
        names = [n for n in est.files if n.startswith("geometry_learned_")]
        assert len(names) == 5 and budget[2] == LearnedPlan().config.limit
        for file in names:
            size = (learned_world[name] / file).stat().st_size
            assert size == est.files[file] if file.endswith(".pt") else size <= est.files[file], (name, file)
        # triangulation's two passes spill keypoints + descriptors (+ SIFT's gradients) to disk meanwhile
        spill = FRAMES * (budget[0] * (8 + 128 + 128) + budget[2] * (8 + 128)) if name == "tri" else 0
        assert est.peak_disk - sum(est.files.values()) == spill
        plain = estimate_map_size(FRAMES, (64, 16, 16), None, settings_for_mode("exact"),
                                  geometry=geometry_budget(plan))
        assert not [n for n in plain.files if n.startswith("geometry_learned_")]
