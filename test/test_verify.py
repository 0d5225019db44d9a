"""Verification: relative pose and covariance against hand-worked values, the query camera's intrinsics rules,
and on a rendered drive a verified pose that is metric (near the ground truth, never farther than the
retrieved map image's pose) while a wrong candidate place is not verified."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from disam_ros.geometry import quat_angle_deg, rot_to_quat
from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.features import MAP_SIFT, SiftConfig
from disam_ros.pose.relative import relative_covariance, relative_pose
from disam_ros.verify.verifier import Verification, VerifyConfig


def rz(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def test_relative_pose_by_hand():
    # keyframe at (1, 2, 0) turned 90 deg about z; query at (1, 5, 0) turned 120 deg: in the keyframe's frame the
    # query is 3 m along its x axis (map +y is keyframe +x after the 90 deg turn) and turned 30 deg
    p, q = relative_pose(np.array([1.0, 2.0, 0.0]), rot_to_quat(rz(90)), np.array([1.0, 5.0, 0.0]),
                         rot_to_quat(rz(120)))
    np.testing.assert_allclose(p, [3.0, 0.0, 0.0], atol=1e-12)
    assert float(quat_angle_deg(q, rot_to_quat(rz(30)))) < 1e-6


def test_relative_covariance_rotates_both_blocks():
    # a position variance of 4 m^2 along map y only and 0.01 rad^2 about map x only; the keyframe turned 90 deg
    # about z makes map y its x axis and map x its -y axis: variances move to (x) and (ry), signs vanish
    cov = np.diag([0.0, 4.0, 0.0, 0.01, 0.0, 0.0])
    out = relative_covariance(cov, rot_to_quat(rz(90)))
    np.testing.assert_allclose(out, np.diag([4.0, 0.0, 0.0, 0.0, 0.01, 0.0]), atol=1e-12)


def test_sift_recipe_round_trip_and_legacy_record():
    assert SiftConfig.from_record(MAP_SIFT.to_record()) == MAP_SIFT
    assert SiftConfig.from_record("sift") == SiftConfig()  # maps written before recipes were recorded
    with pytest.raises(ValueError, match="not a SIFT recipe"):
        SiftConfig.from_record({"kind": "orb"})
    with pytest.raises(ValueError, match="contrast_threshold"):
        SiftConfig(contrast_threshold=0.0)


def test_verify_config_names_what_is_out_of_range():
    with pytest.raises(ValueError, match=r"ratio=1\.5.*min_inliers=3"):
        VerifyConfig(ratio=1.5, min_inliers=3)
    with pytest.raises(ValueError, match=r"flow_drift_m=-0\.01"):
        VerifyConfig(flow_drift_m=-0.01)
    for window in (3, 12):  # too small for a patch, and not centred on the point
        with pytest.raises(ValueError, match=rf"flow_window_px={window}"):
            VerifyConfig(flow_window_px=window)


def test_verification_defaults_say_nothing_was_solved():
    v = Verification("too_few_inliers")
    assert not v.verified and np.isnan(v.position).all() and v.diagnostics()["verification"] == "too_few_inliers"


# ------------------------------------------------------------------------------------------ on a rendered drive
@pytest.fixture(scope="module")
def verify_world(geometry_world):
    """The shared 320x240 town (conftest): reference drive with depth, a repeat drive as queries, its map."""
    from disam_ros.maps import LocalizationMap

    return geometry_world["world"], LocalizationMap.load(geometry_world["map"])


def _queries(world):
    from disam_ros.data.folders import load_condition, read_image

    qf = load_condition(world, "sunny_repeat", require_poses=True)
    for i in range(0, len(qf), 2):
        yield read_image(qf.image_paths[i]), qf.trajectory.positions[i], qf.trajectory.quats[i]


def _nearest(m, pos):
    return int(np.argmin(np.linalg.norm(np.asarray(m.positions) - pos, axis=1)))


def test_verified_pose_is_metric_and_never_worse_than_the_map_image(verify_world):
    from disam_ros.verify.verifier import Verifier

    world, m = verify_world
    verifier = Verifier(m)
    assert verifier.sift == MAP_SIFT  # the map recorded its recipe and the query is treated alike
    verified = 0
    for rgb, pos, quat in _queries(world):
        k = _nearest(m, pos)
        v = verifier.verify(rgb, [k, k + 1, k - 1])
        assert v.camera == "map camera (assumed)" and 1 <= v.tried <= 3
        if not v.verified:
            continue
        verified += 1
        err = float(np.linalg.norm(v.position - pos))
        retrieval_err = float(np.linalg.norm(np.asarray(m.positions[v.index]) - pos))
        assert err <= retrieval_err + 1e-6, (err, retrieval_err)
        assert err < 0.25 and float(quat_angle_deg(v.quat, quat)) < 2.0, (err, v.inliers)
        assert np.all(np.linalg.eigvalsh(v.covariance) > 0) and v.inliers >= VerifyConfig().min_inliers
    assert verified >= 5, verified  # 7 queries of a same-condition repeat drive


def test_a_wrong_place_is_not_verified(verify_world):
    from disam_ros.verify.verifier import Verifier

    world, m = verify_world
    verifier = Verifier(m)
    far = 0
    for rgb, pos, _ in _queries(world):
        k = _nearest(m, pos)
        wrong = (k + len(m.positions) // 2) % len(m.positions)  # half the drive away
        if np.linalg.norm(np.asarray(m.positions[wrong]) - pos) < 20.0:
            continue
        far += 1
        assert not verifier.verify(rgb, [wrong]).verified
    assert far >= 3


def test_intrinsics_come_from_the_query_camera_then_the_map(verify_world):
    from disam_ros.verify.verifier import Verifier

    _, m = verify_world
    verifier = Verifier(m)
    mc = m.map_geometry.intrinsics
    cam, source = verifier.camera_for(mc.width * 2, mc.height * 2)
    assert source.startswith("map camera (assumed), scaled") and cam.fx == pytest.approx(2 * mc.fx)
    assert verifier.camera_for(mc.width, mc.width)[0] is None  # another aspect ratio: another camera
    own = Intrinsics(400.0, 400.0, 160.0, 120.0, 320, 240)
    verifier.set_camera(own, "CameraInfo")
    assert verifier.camera_for(320, 240) == (own, "CameraInfo")
    cam, why = verifier.camera_for(320, 320)
    assert cam is None and "CameraInfo is 320x240" in why
    rgb = np.zeros((320, 320, 3), np.uint8)
    assert verifier.verify(rgb, [0]).outcome == "no_intrinsics"


def test_a_map_without_geometry_is_refused_in_one_line(tmp_path, verify_world):
    from disam_ros.verify.verifier import Verifier

    class Old:  # what LocalizationMap offers for a version-1 map
        map_geometry = None
        geometry_note = "built before map geometry: rebuild with disam-build-map to get metric poses"
        root = tmp_path

    with pytest.raises(ValueError, match="has no map geometry.*rebuild"):
        Verifier(Old())


def _attempt(k: int, inliers: int, position, yaw_deg: float = 0.0, outcome: str = "too_few_inliers") -> Verification:
    return Verification(outcome, index=k, position=np.asarray(position, float), quat=rot_to_quat(rz(yaw_deg)),
                        covariance=np.eye(6) * 1e-4, inliers=inliers)


def test_two_candidates_whose_poses_agree_verify_each_other():
    from disam_ros.verify.gate import agreeing as _agreeing

    cfg = VerifyConfig()  # agree within 0.5 m and 2 deg, each with >= 10 inliers
    a, b = _attempt(4, 12, [0.0, 0.0, 0.0]), _attempt(5, 11, [0.3, 0.2, 0.0], yaw_deg=1.5)
    got = _agreeing([a, b], cfg)
    assert got is a and got.verified and got.agreed  # the one with more inliers
    assert _agreeing([_attempt(4, 12, [0, 0, 0]), _attempt(5, 11, [0.4, 0.4, 0])], cfg) is None  # 0.57 m apart
    assert _agreeing([_attempt(4, 12, [0, 0, 0]), _attempt(5, 11, [0, 0, 0], yaw_deg=2.5)], cfg) is None
    assert _agreeing([_attempt(4, 12, [0, 0, 0]), _attempt(5, 9, [0, 0, 0])], cfg) is None  # 9 < 10 inliers
    assert _agreeing([_attempt(4, 12, [0, 0, 0]), _attempt(4, 11, [0, 0, 0])], cfg) is None  # same keyframe
    inconsistent = _attempt(5, 30, [0, 0, 0], outcome="inconsistent")  # far from its own guide: no witness
    assert _agreeing([_attempt(4, 12, [0, 0, 0]), inconsistent], cfg) is None
    # the dense search asks each for more (gradient_agree_inliers): 31 and 30 agree, 31 and 29 do not
    assert _agreeing([_attempt(4, 31, [0, 0, 0]), _attempt(5, 30, [0.1, 0, 0])], cfg, 30) is not None
    assert _agreeing([_attempt(4, 31, [0, 0, 0]), _attempt(5, 29, [0.1, 0, 0])], cfg, 30) is None


def test_agreement_waits_for_the_drive_s_first_verified_pose_in_sequence_modes():
    """may_agree by hand: single mode (no motion check) always; sequence modes once the drive has accepted a
    verified pose with a stamp, however long ago (the reference may have lapsed); again not after a reset (a new
    drive); the config's switch restores agreement at a drive's start."""
    from disam_ros.verify.gate import may_agree
    from disam_ros.verify.motion import MotionGate

    cfg = VerifyConfig()
    single, drive = MotionGate(0.0, 2.0, 1.0), MotionGate(15.0, 2.0, 1.0)
    assert may_agree(cfg, single)
    assert not may_agree(cfg, drive)  # a drive's first frame: nothing checks what it verifies
    assert may_agree(replace(cfg, agree_needs_reference=False), drive)
    drive.accept(np.zeros(3), math.nan)  # a pose without a stamp starts nothing
    assert not may_agree(cfg, drive)
    drive.accept(np.zeros(3), 5.0)
    assert may_agree(cfg, drive)
    assert drive.jump([50.0, 0.0, 0.0], 9.0) is None and may_agree(cfg, drive)  # lapsed reference: still started
    drive.reset()
    assert not may_agree(cfg, drive)


def test_small_images_are_not_verified(verify_world):
    from disam_ros.verify.verifier import Verifier

    _, m = verify_world
    mc = m.map_geometry.intrinsics
    w, h = mc.width // 4, mc.height // 4  # same aspect ratio, so intrinsics exist; 80 px wide is too small
    v = Verifier(m).verify(np.zeros((h, w, 3), np.uint8), [0])
    assert v.outcome == "image_too_small" and not v.verified


def test_candidates_outside_the_map_or_repeated_are_skipped(verify_world):
    from disam_ros.verify.verifier import Verifier, _unique

    assert _unique([3, -1, 3, 99, 2, 3], 10) == [3, 2]
    world, m = verify_world
    rgb, pos, _ = next(_queries(world))
    v = Verifier(m).verify(rgb, [len(m.positions) + 5, -2, _nearest(m, pos)])
    assert v.tried == 1 and v.index == _nearest(m, pos)


# ------------------------------------------------------------------------------------------ map-point tracking
def _scene_track(cam: Intrinsics, shift: np.ndarray, seed: int = 0):
    """Map points 8-20 m in front of a camera at the origin looking along +z (optical frame = map frame), the
    previous frame's PointTrack there, and a query 'seen' from `shift` with the same descriptors."""
    from disam_ros.pose.features import Features
    from disam_ros.pose.frames import cam_from_map
    from disam_ros.pose.guided import predicted_pixels
    from disam_ros.verify.verifier import PointTrack

    rng = np.random.default_rng(seed)
    pts = np.c_[rng.uniform(-6, 6, 200), rng.uniform(-4, 4, 200), rng.uniform(8, 20, 200)]
    desc = rng.normal(size=(200, 128)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    ident = np.array([0.0, 0.0, 0.0, 1.0])
    prev_uv = predicted_pixels(pts, *cam_from_map(np.zeros(3), ident), cam)
    now_uv = predicted_pixels(pts, *cam_from_map(shift, ident), cam)
    keep = np.isfinite(prev_uv).all(1) & np.isfinite(now_uv).all(1)
    keep &= (now_uv[:, 0] >= 0) & (now_uv[:, 0] < cam.width) & (now_uv[:, 1] >= 0) & (now_uv[:, 1] < cam.height)
    prev = PointTrack(prev_uv[keep], desc[keep], pts[keep], np.zeros(3), ident, 10.0, keyframe=4, hops=0)
    n = int(keep.sum())
    query = Features(now_uv[keep].astype(np.float32), desc[keep], np.ones(n, np.float32), np.ones(n, np.float32))
    return prev, query


def test_tracking_solves_the_next_frame_from_the_previous_frames_map_points(verify_world):
    from disam_ros.verify.verifier import Verifier

    _, m = verify_world
    cam = Intrinsics(300.0, 300.0, 160.0, 120.0, 320, 240)
    shift = np.array([0.3, 0.0, 1.2])  # 1.2 m forward, 0.3 m aside: one frame of driving
    prev, query = _scene_track(cam, shift)
    v = Verifier(m, VerifyConfig(track_frames=3)).track(query, prev, cam)
    assert v.verified and v.hops == 1 and v.index == 4  # the points are still keyframe 4's
    np.testing.assert_allclose(v.position, shift, atol=1e-3)  # exact correspondences: mm
    assert float(quat_angle_deg(v.quat, prev.quat)) < 0.01
    assert v.support is not None and v.support.hops == 1 and len(v.support.points) == v.inliers
    # the support's points are map points of the previous frame, its keypoints where this frame sees them
    known = {tuple(p) for p in prev.points}
    assert all(tuple(p) in known for p in v.support.points)
    from disam_ros.pose.frames import cam_from_map
    from disam_ros.pose.guided import predicted_pixels

    seen = predicted_pixels(v.support.points, *cam_from_map(shift, prev.quat), cam)
    np.testing.assert_allclose(v.support.keypoints, seen, atol=1e-3)


def test_tracking_is_used_only_when_on_fresh_and_within_its_frames(verify_world):
    from dataclasses import replace

    from disam_ros.verify.verifier import Verifier

    _, m = verify_world
    off, on = Verifier(m, VerifyConfig(track_frames=0)), Verifier(m, VerifyConfig(track_frames=2, track_max_gap_s=1.0))
    prev, _ = _scene_track(Intrinsics(300.0, 300.0, 160.0, 120.0, 320, 240), np.zeros(3))
    assert not off._trackable(prev, 10.5)  # 0 turns it off
    assert on._trackable(prev, 10.5) and on._trackable(prev, 11.0)
    assert not on._trackable(prev, 11.01) and not on._trackable(prev, 9.9)  # too old; a stamp going back
    assert not on._trackable(prev, float("nan")) and not on._trackable(None, 10.5)
    assert not on._trackable(replace(prev, hops=2), 10.5)  # its frames are used up


def test_a_rendered_frame_tracked_from_its_own_verification_stays_metric_and_stops_after_its_frames(verify_world):
    """Real detection, matching and PnP on a rendered frame: the first pass verifies against the true place; then
    the same image comes again with only a place half the drive away as candidate (never verifiable), so a pose
    can only come from the carried map points. It must land on the ground truth, count its hops, and stop once
    track_frames are used up (the frames run out even where the points would still match)."""
    from disam_ros.verify.verifier import Verifier

    world, m = verify_world
    verifier = Verifier(m, VerifyConfig(track_frames=2, track_max_gap_s=5.0, flow_frames=0))  # map points, not flow
    rgb, pos, quat = next(_queries(world))
    k = _nearest(m, pos)
    first = verifier.verify(rgb, [k], None, stamp=0.0)
    assert first.verified and first.hops == 0 and first.support is not None
    wrong = [(k + len(m.positions) // 2) % len(m.positions)]
    prev = first.support
    for hop in (1, 2):
        v = verifier.verify(rgb, wrong, prev, stamp=float(hop))
        assert v.verified and v.hops == hop and v.index == k  # the points are still keyframe k's
        assert float(np.linalg.norm(v.position - pos)) < 0.25 and float(quat_angle_deg(v.quat, quat)) < 2.0
        prev = v.support
    assert not verifier.verify(rgb, wrong, prev, stamp=3.0).verified  # track_frames=2 used up


def _turned_frame(verify_world, deg: float = 25.0):
    """The map, its middle image k, and a frame rendered at k's position turned `deg` about the vertical:
    (map, k, rgb, position, xyzw)."""
    from disam_ros.data.synthetic import WorldConfig
    from disam_ros.data.synthetic.generate import load_world
    from disam_ros.data.synthetic.shade import render
    from disam_ros.geometry import quat_to_rot

    world_dir, m = verify_world
    town, info = load_world(world_dir)
    camera = WorldConfig(seed=info.seed, image_size=tuple(info.image_size), fov_deg=info.fov_deg).camera()
    k = len(m.positions) // 2
    pos = np.asarray(m.positions[k], np.float64)
    quat = rot_to_quat(rz(deg) @ quat_to_rot(np.asarray(m.quats[k], np.float64)))
    return m, k, render(town, (pos, quat), camera, "sunny"), pos, quat


def test_a_camera_turned_away_from_the_map_image_verifies_by_a_turned_guide_or_unguided(verify_world):
    """A frame rendered at map image k's own position but turned 25 deg about the vertical (a photograph taken
    from the map's viewpoint, looking elsewhere): image k's pose, the guide, predicts the map points ~100 px from
    where they are, beyond the guided search radius (64 px at 320x240), so guided matching alone fails. Either
    fallback finds the true pose: the guide turned 25 deg about the camera's vertical, or unguided matching."""
    from disam_ros.verify.verifier import Verifier

    m, k, rgb, pos, quat = _turned_frame(verify_world)
    assert not Verifier(m, VerifyConfig(turn_search_deg=0.0, unguided_candidates=0)).verify(rgb, [k]).verified
    turned = Verifier(m, VerifyConfig(turn_search_deg=25.0, unguided_candidates=0)).verify(rgb, [k])
    free = Verifier(m, VerifyConfig(turn_search_deg=0.0, unguided_candidates=1)).verify(rgb, [k])
    assert turned.tried == 3 and not turned.unguided  # the guided attempt, then the guide turned either way
    assert free.tried == 2 and free.unguided and free.diagnostics()["verified_unguided"]
    assert not free.attempts[0].unguided
    for v in (turned, free):
        assert v.verified and v.index == k
        assert float(np.linalg.norm(v.position - pos)) < 0.25 and float(quat_angle_deg(v.quat, quat)) < 2.0


@pytest.mark.parametrize("inliers, factor", [(15, 16.0), (30, 4.0), (59, (60 / 59) ** 2), (60, 1.0), (400, 1.0)])
def test_a_pose_from_few_inliers_gets_a_wider_covariance(inliers, factor):
    """x covariance_scale always, and x (60 / inliers)^2 below covariance_ref_inliers (hand-computed factors)."""
    from types import SimpleNamespace

    from disam_ros.verify.gate import judged as _judged

    base = np.diag([0.01, 0.02, 0.03, 1e-4, 2e-4, 3e-4])
    sol = SimpleNamespace(position=np.zeros(3), quat=np.array([0.0, 0.0, 0.0, 1.0]), inlier_ratio=0.5,
                          num_inliers=inliers, position_std=np.full(3, 0.1), covariance=base, mean_error_px=1.0,
                          inlier_points2d=None, inlier_points3d=None)
    cfg = VerifyConfig()
    v = _judged(sol, 0, 2 * inliers, np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]), cfg)
    np.testing.assert_allclose(v.covariance, base * cfg.covariance_scale * factor, rtol=1e-12)
    off = _judged(sol, 0, 2 * inliers, np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]),
                  VerifyConfig(covariance_ref_inliers=0))
    np.testing.assert_allclose(off.covariance, base * cfg.covariance_scale, rtol=1e-12)


def test_a_first_look_at_half_scale_verifies_clear_frames_and_otherwise_changes_nothing(verify_world):
    """`first_scale`: the best candidate tried with half-scale SIFT first. On the repeat drive (same condition) it
    verifies from that look alone (one attempt, scale 0.5) and the pose is still metric against the drive's own
    ground truth. When the first candidate is a wrong place and only it is looked at, the look fails and the
    answer is exactly what the verifier without it gives, its failed look kept first among the attempts; with
    three looked at, the look goes on to the right place next. A 320 px wide image is too small
    for the look at the default `first_min_width_px` (160 px at half scale), so it is skipped; a look with fewer
    inliers than `first_min_inliers` is not the answer either."""
    from disam_ros.verify.verifier import Verifier

    world, m = verify_world
    one = VerifyConfig(first_scale=0.5, first_min_width_px=160, first_candidates=1, first_probe_every=1)
    look, three = Verifier(m, one), Verifier(m, replace(one, first_candidates=3))
    full = Verifier(m, VerifyConfig(first_scale=1.0))
    n, first = len(m.positions), 0
    for rgb, pos, quat in _queries(world):
        k = _nearest(m, pos)
        v = look.verify(rgb, [k, k + 1, k - 1])
        if v.verified and v.scale == 0.5:
            first += 1
            assert v.tried == 1 and v.attempts == [v] and v.diagnostics()["features_scale"] == 0.5
            sure = v.inliers >= 15 and np.sqrt(np.linalg.eigvalsh(v.covariance[:3, :3]).max()) <= 0.15
            assert sure or v.polished >= one.first_polish_half_inliers  # a sure look, or one its polish held
            assert float(np.linalg.norm(v.position - pos)) < 0.25 and float(quat_angle_deg(v.quat, quat)) < 2.0
        wrong = (k + n // 2) % n
        got, want = look.verify(rgb, [wrong, k, k + 1]), full.verify(rgb, [wrong, k, k + 1])
        assert got.attempts[0].scale == 0.5 and not got.attempts[0].verified and got.tried == want.tried + 1
        assert (got.outcome, got.index, got.inliers, got.scale) == (want.outcome, want.index, want.inliers, 1.0)
        np.testing.assert_array_equal(got.position, want.position)
        got = three.verify(rgb, [wrong, k, k + 1])  # the look moves on to the next candidates
        assert [a.index for a in got.attempts[:2]] == [wrong, k] and got.attempts[0].scale == 0.5
        if got.scale == 0.5:
            assert got.verified and got.index in (k, k + 1) and any(a is got for a in got.attempts)
            assert float(np.linalg.norm(got.position - pos)) < 0.25
        for strict in (replace(one, first_min_inliers=10_000), replace(one, first_max_std_m=1e-6)):
            unpolished = replace(strict, first_polish_inliers=0)  # an unsure look is then as if never taken
            got, want = Verifier(m, unpolished).verify(rgb, [k, k + 1, k - 1]), full.verify(rgb, [k, k + 1, k - 1])
            assert (got.outcome, got.index, got.inliers, got.scale) == (want.outcome, want.index, want.inliers, 1.0)
            got = Verifier(m, strict).verify(rgb, [k, k + 1, k - 1])  # ... or the answer, once its polish holds
            if got.scale == 0.5:
                assert got.verified and got.polished >= strict.first_polish_half_inliers and got.tried <= 1
                assert float(np.linalg.norm(got.position - pos)) < 0.25 and float(quat_angle_deg(got.quat, quat)) < 2
        skipped = Verifier(m).verify(rgb, [k, k + 1, k - 1])
        assert all(a.scale == 1.0 for a in skipped.attempts)
    assert first >= 3, first  # of 7 same-condition frames


def test_an_unsure_look_is_polished_with_its_own_features_before_full_scale_sift(verify_world, monkeypatch):
    """`first_polish_half`: a look that verified without being sure is polished with its own half-scale features
    first; where that pool holds `first_polish_half_inliers`, it is the answer and full-scale SIFT is never computed
    (one detection, at half scale). Where it does not, the frame goes on exactly as with the option off."""
    from disam_ros.verify import verifier as vmod

    world, m = verify_world
    scales: list[float] = []
    detect = vmod.detect_sift
    monkeypatch.setattr(vmod, "detect_sift", lambda rgb, cfg, *a: scales.append(cfg.scale) or detect(rgb, cfg, *a))
    strict = VerifyConfig(first_scale=0.5, first_min_width_px=160, first_probe_every=1, first_max_std_m=1e-6)
    half_only = 0
    for rgb, pos, quat in _queries(world):
        k = _nearest(m, pos)
        scales.clear()
        want = vmod.Verifier(m, replace(strict, first_polish_half=False)).verify(rgb, [k, k + 1, k - 1])
        off_scales = list(scales)
        scales.clear()
        got = vmod.Verifier(m, strict).verify(rgb, [k, k + 1, k - 1])
        if len(scales) == 1:
            half_only += 1
            assert scales[0] < off_scales[-1] and got.verified and got.scale == 0.5
            assert got.polished >= strict.first_polish_half_inliers  # the half-scale pool's own threshold
            assert float(np.linalg.norm(got.position - pos)) < 0.25 and float(quat_angle_deg(got.quat, quat)) < 2.0
        else:
            assert scales == off_scales
            assert (got.outcome, got.index, got.inliers, got.scale) == (want.outcome, want.index, want.inliers,
                                                                         want.scale)
            np.testing.assert_array_equal(got.position, want.position)
    assert half_only >= 1


@pytest.mark.parametrize("outcome, inliers, variances, sure", [
    ("verified", 40, (0.01, 0.0224, 0.0001), True),  # worst axis 0.1497 m: just inside 0.15
    ("verified", 40, (0.01, 0.04, 0.0001), False),  # worst axis 0.2 m
    ("verified", 14, (1e-4, 1e-4, 1e-4), False),  # too few inliers however certain
    ("too_few_inliers", 400, (1e-4, 1e-4, 1e-4), False),
])
def test_a_first_look_ends_the_search_only_when_verified_and_sure(outcome, inliers, variances, sure):
    """The look's answer is taken on a verified pose with >= 15 inliers whose published position covariance has a
    1-sigma of at most 0.15 m along its worst axis; a rotated covariance has the same worst axis (by hand: the
    eigenvalues of R diag R^T are the diagonal's)."""
    from disam_ros.verify.gate import sure as _sure

    cov = np.eye(6) * 1e-6
    R = rz(30.0)
    cov[:3, :3] = R @ np.diag(variances) @ R.T
    assert _sure(Verification(outcome, inliers=inliers, covariance=cov), VerifyConfig()) is sure


def test_after_two_blind_looks_the_look_runs_every_fourth_frame_until_one_verifies(verify_world):
    """`first_probe_every` = 4, by hand: with a wrong first place the look verifies nothing; frames 1 and 2 look,
    then only every fourth frame counted from the first miss (5, 9, 13); a verified look (the right place) resets
    it, so the frame after looks again; so does `reset()` (a new drive). A look that verifies without being sure
    is not blind: with such looks every frame looks. A frame whose look was skipped as blind counts as tried (the
    keyframe rule counts its full-scale SIFT as dear); one too narrow for any look does not."""
    from disam_ros.verify.verifier import Verifier

    world, m = verify_world
    n = len(m.positions)
    frames = list(_queries(world))
    cfg = VerifyConfig(first_scale=0.5, first_min_width_px=160, first_candidates=1, first_probe_every=4,
                       gradient_skip_sift_after=0)  # the look's own cadence (SIFT skipped: test_verify_dense)
    probe = Verifier(m, cfg)
    sure = next((rgb, _nearest(m, pos)) for rgb, pos, _ in frames
                if probe.verify(rgb, [_nearest(m, pos)]).scale == 0.5)  # a frame its look answers
    rgb, k = sure
    wrong = [(k + n // 2) % n]

    def looked(candidates) -> bool:
        return any(a.scale == 0.5 for a in probe.verify(rgb, candidates).attempts)

    probe.reset()
    assert [(looked(wrong), probe._looks.tried) for _ in range(13)] == [(i in (1, 2, 5, 9, 13), True)
                                                                          for i in range(1, 14)]  # skipped as blind
    assert not looked(wrong) and not looked(wrong) and not looked(wrong)  # 14-16 skipped; 17 is a probe:
    assert probe.verify(rgb, [k]).scale == 0.5  # ... and sure
    assert looked(wrong) and looked(wrong) and not looked(wrong)  # two misses again, then skipping
    probe.reset()
    assert looked(wrong)
    wide = Verifier(m, replace(cfg, first_min_width_px=10_000))  # narrower than that at half scale: no look applies
    assert not any(a.scale == 0.5 for a in wide.verify(rgb, wrong).attempts) and not wide._looks.tried  # not blind
    always = Verifier(m, replace(cfg, first_probe_every=1))
    assert all(any(a.scale == 0.5 for a in always.verify(rgb, wrong).attempts) for _ in range(5))
    unsure = Verifier(m, replace(cfg, first_max_std_m=1e-6, first_polish_inliers=0))  # verified, never sure
    looks = [unsure.verify(rgb, [k]).attempts[0] for _ in range(5)]
    assert all(a.scale == 0.5 and a.verified for a in looks)  # not blind: every frame looks (dusk's polish)



def test_an_unguided_solve_guides_a_second_match_and_gates_it(verify_world):
    """A frame at map image k's position turned 25 deg (the turned-guide test's frame), the turned guides off:
    only unguided matching can find it. Its solve guides a tight second match whose pose lands within 0.25 m
    and 2 deg of where the frame was rendered; and the first solve is a gate: asked for more inliers than map
    image k has points, nothing verifies."""
    from disam_ros.verify.verifier import Verifier

    m, k, rgb, pos, quat = _turned_frame(verify_world)
    cfg = VerifyConfig(turn_search_deg=0.0, unguided_candidates=1, gradient_candidates=0)
    on = Verifier(m, cfg).verify(rgb, [k])
    gated = Verifier(m, replace(cfg, unguided_min_inliers=len(m.geometry(k)[0]) + 1)).verify(rgb, [k])
    assert on.verified and on.unguided and on.index == k
    assert float(np.linalg.norm(on.position - pos)) < 0.25 and float(quat_angle_deg(on.quat, quat)) < 2.0
    assert on.inliers >= cfg.min_inliers and on.inlier_ratio >= cfg.min_inlier_ratio  # the usual gate judged it
    assert not gated.verified and gated.tried == 2 and gated.attempts[-1].unguided
