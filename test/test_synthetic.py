"""The synthetic multi-condition world: determinism, geometry, condition appearance, retrieval sanity, CLI.

Expected values are computed here independently of the renderer: poses are read back from poses.txt,
intrinsics from camera.yaml, landmarks from world.yaml, local times with zoneinfo, and projections
with plain pinhole algebra.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest
import yaml

from disam_ros.data.folders import CameraIntrinsics, list_conditions, load_condition, read_image
from disam_ros.data.synthetic import WorldConfig, load_world, main, make_world
from disam_ros.data.synthetic.shade import render
from disam_ros.data.tum import read_tum
from disam_ros.geometry import quat_to_rot

CONDS = ("sunny", "sunny_repeat", "night", "snow", "fog", "summer", "dusk")
SMALL = dict(seed=3, image_size=64, frames=40, conditions=CONDS, workers=1, sheet_places=4)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    return make_world(WorldConfig(**SMALL), tmp_path_factory.mktemp("synth") / "world", progress=False)


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def grey_small(path: Path, size: int = 16) -> np.ndarray:
    g = cv2.cvtColor(read_image(path), cv2.COLOR_RGB2GRAY)
    return cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()


def images(root: Path, cond: str) -> np.ndarray:
    return np.stack([read_image(p) for p in load_condition(root, cond).image_paths])


# ---------------------------------------------------------------- layout, determinism


def test_layout_matches_dataset_convention(world_dir):
    assert list_conditions(world_dir) == sorted(CONDS)
    for cond in CONDS:
        folder = load_condition(world_dir, cond, require_poses=True)
        assert len(folder) == SMALL["frames"] and folder.image_paths[0].name == "000000.png"
        assert folder.camera == CameraIntrinsics.load(world_dir / cond / "camera.yaml")
        assert read_image(folder.image_paths[0]).shape == (64, 64, 3)
    desc = yaml.safe_load((world_dir / "world.yaml").read_text())
    assert desc["seed"] == 3 and desc["reference"] == "sunny" and set(desc["conditions"]) == set(CONDS)
    for c in desc["conditions"].values():
        assert c["weather"] in ("sunny", "overcast", "cloudy", "rain", "snow", "fog")
        assert c["daylight"] in ("day", "low_sun", "twilight", "night") and c["foliage"] in ("none", "mixed", "full")
    sheet = read_image(world_dir / "contact_sheet.png")
    assert sheet.shape[0] >= 64 * len(CONDS) and sheet.shape[1] >= 64 * SMALL["sheet_places"]
    assert not any(p.name.startswith(".") for p in world_dir.parent.iterdir())  # no temp folder left behind


def test_same_seed_same_bytes_different_seed_different_world(world_dir, tmp_path):
    small = dict(seed=3, image_size=64, frames=4, conditions=("sunny", "night"))  # 8 frames: a pool's worth
    once = make_world(WorldConfig(**small, workers=1), tmp_path / "once", progress=False)
    again = make_world(WorldConfig(**small, workers=2), tmp_path / "again", progress=False)  # in a pool
    assert digest(again) == digest(once)
    other = make_world(WorldConfig(**{**SMALL, "seed": 4, "frames": 4, "conditions": ("sunny",)}),
                       tmp_path / "other", progress=False)
    a, b = images(world_dir, "sunny")[:4], images(other, "sunny")
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 10
    pa, pb = read_tum(world_dir / "sunny" / "poses.txt"), read_tum(other / "sunny" / "poses.txt")
    assert not np.allclose(pa.positions[1:4], pb.positions[1:4], atol=0.5)


# ---------------------------------------------------------------- geometry


def test_poses_are_unit_spaced_and_face_the_direction_of_travel(world_dir):
    for cond in CONDS:
        traj = read_tum(world_dir / cond / "poses.txt")
        np.testing.assert_allclose(np.linalg.norm(traj.quats, axis=1), 1.0, atol=1e-8)
        step = np.diff(traj.positions, axis=0)
        dist = np.linalg.norm(step, axis=1)
        assert dist.min() > 2.0 and dist.max() < 4.0, cond
        assert np.all(np.diff(traj.stamps) > 0.2) and np.ptp(np.diff(traj.stamps)) < 1e-6
        R = quat_to_rot(traj.quats)
        travel = step / dist[:, None]
        cos_z = np.einsum("ij,ij->i", R[:-1, :, 2], travel)  # optical z along the travel direction
        assert np.median(cos_z) > 0.99 and cos_z.min() > 0.6, cond
        assert np.all(R[:, 2, 1] < -0.98), cond  # optical y (down) has map z component -1
        assert np.all(np.abs(traj.positions[:, 2] - 1.5) < 0.2)


def test_query_drives_differ_from_the_reference_drive(world_dir):
    ref = read_tum(world_dir / "sunny" / "poses.txt")
    q = read_tum(world_dir / "sunny_repeat" / "poses.txt")
    d = np.linalg.norm(q.positions[:, None, :2] - ref.positions[None, :, :2], axis=2).min(1)
    assert 0.2 < np.median(d) < 1.6  # a lateral offset, not the same line and not another street


def project(points: np.ndarray, pos: np.ndarray, quat: np.ndarray, cam: CameraIntrinsics) -> np.ndarray:
    pc = (points - pos) @ quat_to_rot(quat)
    return np.stack([cam.fx * pc[:, 0] / pc[:, 2] + cam.cx, cam.fy * pc[:, 1] / pc[:, 2] + cam.cy, pc[:, 2]], 1)


def landmark_views(world_dir: Path, cond: str = "sunny"):
    """(frame, landmark, projected box corners, ...) for landmarks whose box is in front of the camera."""
    desc = yaml.safe_load((world_dir / "world.yaml").read_text())
    cam = CameraIntrinsics.load(world_dir / cond / "camera.yaml")
    traj = read_tum(world_dir / cond / "poses.txt")
    for k in range(len(traj)):
        for mark in desc["landmarks"]:
            lo, hi = np.array(mark["lo"]), np.array(mark["hi"])
            corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
            uvz = project(corners, traj.positions[k], traj.quats[k], cam)
            if np.all(uvz[:, 2] > 1.0) and np.ptp(uvz[:, 0]) > 3 and (uvz[:, 0] > 0).any() and (
                    uvz[:, 0] < cam.width - 1).any():
                yield k, mark, uvz, traj, cam


def on_surface(part: dict, pts: np.ndarray, tol: float = 0.03) -> np.ndarray:
    """Whether points lie on the surface of a primitive described in world.yaml."""
    if part["shape"] == "box":
        lo, hi = np.array(part["lo"]), np.array(part["hi"])
        inside = np.all((pts >= lo - tol) & (pts <= hi + tol), axis=1)
        return inside & (np.minimum(np.abs(pts - lo), np.abs(pts - hi)).min(1) < tol)
    if part["shape"] == "cylinder":
        rad = np.hypot(pts[:, 0] - part["x"], pts[:, 1] - part["y"])
        side = (np.abs(rad - part["r"]) < tol) & (pts[:, 2] > part["z0"] - tol) & (pts[:, 2] < part["z1"] + tol)
        return side | ((np.abs(pts[:, 2] - part["z1"]) < tol) & (rad < part["r"] + tol))
    q = (pts - [part["x"], part["y"], part["z"]]) / [part["r"], part["r"], part["rz"]]
    return np.abs(np.linalg.norm(q, axis=1) - 1.0) < tol / min(part["r"], part["rz"])


def box_corners(lo, hi) -> np.ndarray:
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def test_landmark_projects_where_the_renderer_drew_it(world_dir):
    world, _ = load_world(world_dir)
    checked = corners_checked = 0
    for k, mark, uvz, traj, cam in landmark_views(world_dir):
        pos, quat = traj.positions[k], traj.quats[k]
        _, ids, depth = render(world, (pos, quat), cam, "sunny", buffers=True)
        mask = np.isin(ids, mark["ids"])
        if mask.sum() < 12:
            continue  # hidden behind buildings or trees from here
        v, u = np.nonzero(mask)
        # every landmark pixel back-projects (pose + intrinsics + depth) onto the surface of its part
        rays = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u, float)], 1)
        pts = pos + (rays * depth[v, u, None]) @ quat_to_rot(quat).T
        for part in mark["parts"]:
            sel = ids[v, u] == part["id"]
            assert np.all(on_surface(part, pts[sel])), (k, mark["name"], part["shape"])
        # the silhouette lies inside the projection of the landmark's bounding box (±1.5 px) ...
        assert u.min() >= uvz[:, 0].min() - 1.5 and u.max() <= uvz[:, 0].max() + 1.5
        assert v.min() >= uvz[:, 1].min() - 1.5 and v.max() <= uvz[:, 1].max() + 1.5
        # ... and each unoccluded box corner in the image projects within 2 px of a pixel drawn as the landmark
        dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
        for part in (p for p in mark["parts"] if p["shape"] == "box"):
            for cu, cv, cz in project(box_corners(part["lo"], part["hi"]), pos, quat, cam):
                iu, iv = int(round(cu)), int(round(cv))
                if cz > 1.0 and 0 <= iv < cam.height and 0 <= iu < cam.width:
                    win = (slice(max(iv - 3, 0), iv + 4), slice(max(iu - 3, 0), iu + 4))
                    if not ((depth[win] < cz - 0.5) & ~np.isin(ids[win], mark["ids"])).any():  # not occluded
                        assert dist[iv, iu] <= 2.0, (k, mark["name"], cu, cv)
                        corners_checked += 1
        checked += 1
        if checked >= 6 and corners_checked >= 4:
            break
    assert checked >= 1 and corners_checked >= 1, "no landmark seen by the reference drive; did the layout change?"


def test_stamps_match_the_condition_calendar(world_dir):
    desc = yaml.safe_load((world_dir / "world.yaml").read_text())
    tz = ZoneInfo(desc["site"]["timezone"])
    local = {c: dt.datetime.fromtimestamp(read_tum(world_dir / c / "poses.txt").stamps[0], tz) for c in CONDS}
    assert local["night"].hour == 23 and local["snow"].month == 1 and local["summer"].month == 7
    assert 10 <= local["sunny"].hour <= 14 and 17 <= local["dusk"].hour <= 20
    assert -1.0 < desc["conditions"]["dusk"]["sun_elevation_deg"] < 10.0
    assert desc["conditions"]["night"]["sun_elevation_deg"] < -18.0
    assert desc["conditions"]["summer"]["sun_elevation_deg"] > 60.0  # Pittsburgh, July, 13:15


# ---------------------------------------------------------------- appearance per condition


def test_conditions_change_appearance_in_the_expected_direction(world_dir):
    sunny, night, fog, snow = (images(world_dir, c).astype(np.float32) for c in ("sunny", "night", "fog", "snow"))
    assert night.mean() < 0.5 * sunny.mean()
    def contrast(ims, rows=slice(None)):
        return np.mean([im[rows].std() for im in ims])

    assert contrast(fog) < 0.8 * contrast(sunny)  # the near road stays dark, ...
    assert contrast(fog, slice(0, 32)) < 0.4 * contrast(sunny, slice(0, 32))  # ... everything beyond fades
    ground = slice(52, 64)  # bottom rows always see the ground from a level camera 1.5 m up

    def value_saturation(ims):
        hsv = np.stack([cv2.cvtColor(im.astype(np.uint8), cv2.COLOR_RGB2HSV) for im in ims])[:, ground]
        return hsv[..., 2].mean(), hsv[..., 1].mean()

    (v_sun, s_sun), (v_snow, s_snow) = value_saturation(sunny), value_saturation(snow)
    assert v_snow > v_sun + 40 and s_snow < s_sun


def test_night_keeps_place_information(world_dir):
    night = images(world_dir, "night").astype(np.float32)
    bright = (night.max(-1) > 180).mean(axis=(1, 2))
    assert np.median(bright) > 0.003  # lit windows and lamps in most frames
    std = night.reshape(len(night), -1).std(1)
    assert np.median(std) > 15 and std.min() > 5  # never a blank frame


# ---------------------------------------------------------------- raw-pixel retrieval sanity


def nn_errors(world_dir: Path, query: str) -> np.ndarray:
    """Frame error of a grey 16x16 L2 nearest neighbour vs the reference frame closest to the query pose."""
    ref_folder, q_folder = load_condition(world_dir, "sunny"), load_condition(world_dir, query)
    ref = np.stack([grey_small(p) for p in ref_folder.image_paths])
    qs = np.stack([grey_small(p) for p in q_folder.image_paths])
    rp, qp = ref_folder.trajectory.positions, q_folder.trajectory.positions
    truth = np.linalg.norm(qp[:, None] - rp[None], axis=2).argmin(1)
    covered = np.linalg.norm(qp - rp[truth], axis=1) < 3.0  # queries past the end of the map have no answer
    found = ((qs[:, None] - ref[None]) ** 2).sum(-1).argmin(1)
    return np.abs(found - truth)[covered]


def test_raw_pixels_localise_within_a_condition_and_fail_across_hard_ones(world_dir):
    same = nn_errors(world_dir, "sunny_repeat")
    assert len(same) > 25 and np.mean(same <= 2) >= 0.85
    for hard in ("night", "snow"):
        err = nn_errors(world_dir, hard)
        assert np.mean(err > 2) >= 0.3, hard


def test_far_apart_places_do_not_look_identical(world_dir):
    folder = load_condition(world_dir, "sunny")
    ims = np.stack([grey_small(p, 32) for p in folder.image_paths])
    pos = folder.trajectory.positions
    far = np.linalg.norm(pos[:, None] - pos[None], axis=2) > 30.0
    diff = np.abs(ims[:, None] - ims[None]).mean(-1)
    assert diff[far].min() > 4.0


# ---------------------------------------------------------------- CLI


def test_cli_writes_refuses_to_overwrite_and_rejects_bad_arguments(tmp_path, capsys):
    out = tmp_path / "w"
    args = ["--out", str(out), "--size", "32", "--frames", "3", "--conditions", "sunny,night", "--quiet"]
    assert main(args) == 0
    assert "2 conditions x 3 frames" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [".disam-made", "contact_sheet.png", "night", "sunny", "world.yaml"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--force" in err and "\n" not in err
    assert main(args + ["--force"]) == 0
    capsys.readouterr()
    assert main(["--out", str(tmp_path / "x"), "--conditions", "sunny,moon"]) == 2
    err = capsys.readouterr().err.strip()
    assert "moon" in err and "valid:" in err and "night" in err and "\n" not in err
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "y"), "--size", "big"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--size" in err and "\n" not in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_force_replaces_only_a_folder_disam_synth_made(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "precious.txt").write_text("years of work")
    args = ["--size", "16", "--frames", "2", "--conditions", "sunny", "--workers", "1", "--quiet", "--force"]
    assert main(["--out", str(mine), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{mine} exists and was not made by disam_ros" in err and "--out" in err and "\n" not in err
    assert [p.name for p in mine.iterdir()] == ["precious.txt"]
    assert (mine / "precious.txt").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # nothing staged either

    (tmp_path / "empty").mkdir()
    for _ in range(2):  # an empty folder, then the world it made itself (marked), are replaced
        assert main(["--out", str(tmp_path / "empty"), *args]) == 0
        assert (tmp_path / "empty" / ".disam-made").read_text() == "disam-synth\n"
    (tmp_path / "file").write_text("not a folder")
    assert main(["--out", str(tmp_path / "file"), *args]) == 2
    assert (tmp_path / "file").read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "mine"]


def test_the_default_renders_in_process_on_one_core_and_in_a_pool_of_two_beyond(tmp_path, monkeypatch):
    """workers 0 (the default): a pool only where there is a second core to run it on."""
    from disam_ros import threads
    from disam_ros.data.synthetic import generate

    pools = []
    real_context = generate.mp.get_context
    monkeypatch.setattr(generate.mp, "get_context", lambda m: pools.append(m) or real_context(m))
    cfg = WorldConfig(seed=1, image_size=16, frames=4, conditions=("sunny", "night"))  # 8 frames: a pool's worth
    assert cfg.workers == 0
    for cores, want in ((1, []), (4, ["forkserver"])):
        monkeypatch.setattr(threads, "available_cpus", lambda c=cores: c)
        make_world(cfg, tmp_path / f"w{cores}", progress=False)
        assert pools == want, cores
    assert digest(tmp_path / "w1") == digest(tmp_path / "w4")
