"""The verifier's dense search (verify/gradient_search.py) on the shared rendered town: a frame rendered in snow
at a known pose that SIFT cannot verify is verified by it, within (0.25 m, 2 deg) of the pose it was
rendered at, and hands on map points for tracking; a wrong place is not verified; a map built without gradient
descriptors is verified as before, without the search; the map keeps its gradients through a load."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from disam_ros.geometry import quat_angle_deg, quat_to_rot
from disam_ros.verify.verifier import Verifier, VerifyConfig


@pytest.fixture(scope="module")
def town(geometry_world):
    from disam_ros.data.synthetic import WorldConfig
    from disam_ros.data.synthetic.generate import load_world
    from disam_ros.maps import LocalizationMap

    world, info = load_world(geometry_world["world"])
    camera = WorldConfig(seed=info.seed, image_size=tuple(info.image_size), fov_deg=info.fov_deg).camera()
    return world, camera, LocalizationMap.load(geometry_world["map"])


def _render_beside(town, k: int, condition: str):
    """Map image k's view from 0.8 m to its right and 0.5 m ahead, in `condition`."""
    from disam_ros.data.synthetic.shade import render

    world, camera, m = town
    quat = np.asarray(m.quats[k], np.float64)
    pos = np.asarray(m.positions[k], np.float64) + quat_to_rot(quat) @ np.array([0.8, 0.0, 0.5])
    return render(world, (pos, quat), camera, condition, frame=k), pos, quat


@pytest.mark.parametrize("condition, k", [("snow", 10), ("snow", 11)])
def test_a_frame_sift_cannot_verify_is_verified_metric_by_the_dense_search(town, condition, k):
    _, _, m = town
    rgb, pos, quat = _render_beside(town, k, condition)
    off = Verifier(m, VerifyConfig(gradient_candidates=0)).verify(rgb, [k])
    assert not off.verified and not any(a.dense for a in off.attempts)
    on = Verifier(m, VerifyConfig()).verify(rgb, [k])
    assert on.verified and on.dense and on.index == k and on.diagnostics()["verified_dense"]
    assert float(np.linalg.norm(on.position - pos)) < 0.25 and float(quat_angle_deg(on.quat, quat)) < 2.0
    assert on.inliers >= VerifyConfig().gradient_min_inliers
    assert on.support is not None and len(on.support.points) >= 15  # tracking carries on from it
    assert np.all(np.linalg.eigvalsh(on.covariance[:3, :3]) > 0)
    plain = Verifier(m, VerifyConfig(gradient_covariance_scale=1.0)).verify(rgb, [k])  # the same solve, unscaled
    np.testing.assert_allclose(on.covariance, plain.covariance * VerifyConfig().gradient_covariance_scale, rtol=1e-9)


def test_a_wrong_place_is_not_verified_by_the_dense_search(town):
    _, _, m = town
    rgb, _, _ = _render_beside(town, 2, "rain")
    v = Verifier(m, VerifyConfig()).verify(rgb, [9])  # ~20 m further on
    assert not v.verified and v.attempts[-1].dense


def test_a_map_without_gradient_descriptors_verifies_without_the_search(town, geometry_world):
    from disam_ros.maps import LocalizationMap

    m = LocalizationMap.load(geometry_world["map"])
    assert m.map_geometry.gradient_cell == 8 and m.map_geometry.image_gradients(0).shape[1] == 128
    m.map_geometry.gradients = None  # as a map built before them
    rgb, _, _ = _render_beside(town, 2, "rain")
    v = Verifier(m, VerifyConfig()).verify(rgb, [2])
    assert not v.verified and not any(a.dense for a in v.attempts)


def test_the_tracker_searches_densely_in_sequence_mode_and_in_single_mode_only_when_asked(geometry_world):
    from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
    from disam_ros.retrieval.search import SearchConfig
    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    reloc = Relocalizer.from_map(geometry_world["map"], RelocalizerConfig(search=SearchConfig(device="cpu"),
                                                                          domain="sunny"))
    cand = VerifyConfig().gradient_candidates
    assert cand > 0
    assert not Tracker(reloc, TrackerConfig(mode="sequence")).dense_needs_prior
    assert Tracker(reloc, TrackerConfig(mode="single")).dense_needs_prior
    asked = TrackerConfig(mode="single", verify=VerifyConfig(gradient_single=True))
    assert not Tracker(reloc, asked).dense_needs_prior
    assert Tracker(reloc, asked).verifier.config.gradient_candidates == cand
    # single frames have no belief nor motion check to rule out a block's look-alike: the place-level ratio test
    # is on there unless a band is set explicitly; sequence mode keeps it off
    band = VerifyConfig().gradient_single_rival_m
    assert band[1] > 0 and VerifyConfig().gradient_rival_m == (0.0, 0.0)
    assert Tracker(reloc, TrackerConfig(mode="single")).verifier.config.gradient_rival_m == band
    assert Tracker(reloc, TrackerConfig(mode="sequence")).verifier.config.gradient_rival_m == (0.0, 0.0)
    own = TrackerConfig(mode="single", verify=VerifyConfig(gradient_rival_m=(5.0, 10.0)))
    assert Tracker(reloc, own).verifier.config.gradient_rival_m == (5.0, 10.0)
    off = TrackerConfig(mode="single", verify=VerifyConfig(gradient_single_rival_m=(0.0, 0.0)))
    assert Tracker(reloc, off).verifier.config.gradient_rival_m == (0.0, 0.0)
    # ... and a single frame stands alone: neither optical flow nor map points carried from the frame before (a
    # photo collection's previous photo is another place: tracked from it, one dev photo was verified 4.6 m off)
    single, seq = Tracker(reloc, TrackerConfig(mode="single")), Tracker(reloc, TrackerConfig(mode="sequence"))
    assert (single.verifier.config.flow_frames, single.verifier.config.track_frames) == (0, 0)
    assert (seq.verifier.config.flow_frames, seq.verifier.config.track_frames) == \
        (VerifyConfig().flow_frames, VerifyConfig().track_frames) and VerifyConfig().track_frames > 0
    # ... nor a run of blind looks: every single frame looks (the demo's single mode lost 2.5 points without this)
    assert single.verifier.config.first_probe_every == 1
    assert seq.verifier.config.first_probe_every == VerifyConfig().first_probe_every > 1


@pytest.mark.parametrize("with_prior", [True, False])
def test_single_mode_searches_densely_only_where_a_prior_gated_the_candidates(town, geometry_world, with_prior):
    """A snow frame SIFT cannot verify (the test above): a single-mode tracker with `gradient_with_prior` on
    searches it densely, and verifies it metric, only when a spatial prior (10 m around where it was rendered)
    gated its candidates; without one, or with `gradient_with_prior` off (the default), no dense attempt is made."""
    from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
    from disam_ros.retrieval import SpatialPrior
    from disam_ros.retrieval.search import SearchConfig
    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    reloc = Relocalizer.from_map(geometry_world["map"], RelocalizerConfig(search=SearchConfig(device="cpu"),
                                                                          domain="sunny"))
    rgb, pos, quat = _render_beside(town, 10, "snow")
    prior = SpatialPrior(pos + np.array([1.0, -1.0, 0.0]), radius=10.0) if with_prior else None
    tracker = Tracker(reloc, TrackerConfig(mode="single", verify=VerifyConfig(gradient_with_prior=True)))
    res = tracker.step(rgb, 100.0, prior).result
    v = res.verification
    assert res.used_prior is with_prior
    if with_prior:
        assert v.verified and v.dense, [(a.outcome, a.dense) for a in v.attempts]
        assert float(np.linalg.norm(v.position - pos)) < 0.25 and float(quat_angle_deg(v.quat, quat)) < 2.0
        assert np.allclose(res.position, v.position)  # the published pose is the dense one
    else:
        assert not v.verified and not any(a.dense for a in v.attempts)
    assert not VerifyConfig().gradient_with_prior
    no = Tracker(reloc, TrackerConfig(mode="single"))
    v = no.step(rgb, 100.0, prior).result.verification
    assert not v.verified and not any(a.dense for a in v.attempts)


def test_the_query_is_described_at_the_maps_angular_scale():
    """The cell spans the same angle of view in map and query: 8 px at the map camera's 640 px; a query at half
    the resolution (focal length halved) gets 4 px, one with a 1.5x longer lens at the same size 12 px."""
    from disam_ros.pose.camera import Intrinsics
    from disam_ros.verify.gradient_search import query_grid

    map_cam = Intrinsics(fx=457.0, fy=457.0, cx=319.5, cy=239.5, width=640, height=480)
    cfg = VerifyConfig()
    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    assert query_grid(rgb, 8, map_cam, map_cam, cfg).cell == 8
    assert query_grid(rgb[::2, ::2], 8, map_cam, map_cam.scaled(320, 240), cfg).cell == 4
    assert query_grid(rgb[::2, ::2], 8, map_cam, map_cam.scaled(320, 240), cfg).grid.stride == 2
    tele = Intrinsics(fx=685.5, fy=685.5, cx=319.5, cy=239.5, width=640, height=480)
    assert query_grid(rgb, 8, map_cam, tele, cfg).cell == 12


def test_a_large_query_is_searched_on_a_shrunk_copy_and_stays_metric(town):
    """A 1280x960 frame (a snow frame upscaled 4x; the map's intrinsics scaled to it) is searched on a 1024 px
    working copy, its finds mapped back to the frame's own pixels: the pose is as metric as at 320 px."""
    import cv2

    from disam_ros.pose.gradients import MAX_SIDE, from_working, to_working, working_scale

    assert working_scale(1280, 960) == MAX_SIDE / 1280 and working_scale(640, 480) == 1.0
    xy = np.array([[0.0, 0.0], [639.0, 479.0], [10.25, 3.5]])
    np.testing.assert_allclose(from_working(to_working(xy, 0.8), 0.8), xy, atol=1e-12)
    np.testing.assert_allclose(to_working(np.array([[-0.5, -0.5]]), 0.8), [[-0.5, -0.5]])  # the image corner stays
    _, _, m = town
    rgb, pos, quat = _render_beside(town, 10, "snow")
    big = cv2.resize(rgb, (rgb.shape[1] * 4, rgb.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    on = Verifier(m, VerifyConfig()).verify(big, [10])
    assert on.verified and on.dense and "scaled to 1280x960" in on.camera
    assert float(np.linalg.norm(on.position - pos)) < 0.25 and float(quat_angle_deg(on.quat, quat)) < 2.0


def test_after_frames_only_the_dense_search_verified_it_runs_first_and_sift_is_probed_again(town):
    _, _, m = town
    snow = [_render_beside(town, k, "snow") for k in (10, 11)]
    wrong_place = _render_beside(town, 2, "rain")[0]
    v = Verifier(m, VerifyConfig(gradient_first_after=2, gradient_first_probe_every=2))

    def run(i):
        rgb, pos, quat = snow[i % 2]
        out = v.verify(rgb, [10 + i % 2])
        assert out.verified and out.dense and float(np.linalg.norm(out.position - pos)) < 0.25
        assert float(quat_angle_deg(out.quat, quat)) < 2.0
        return all(a.dense for a in out.attempts), out

    # counted frames that only it verified: 0, 1 -> usual order; 2 -> first; 3 -> probe (usual order)
    orders = [run(i) for i in range(4)]
    assert [first for first, _ in orders] == [False, False, True, False]
    assert [o.diagnostics()["verify_order"] for _, o in orders] == ["usual", "usual", "dense first", "usual"]
    assert orders[2][1].support is None and orders[1][1].support is not None  # no SIFT keypoints to hand on
    assert len(orders[2][1].attempts) == 1  # the first candidate verified: nothing else ran
    # 4: first, but not verified there: the usual steps follow (and verify nothing); the count stays
    miss = v.verify(wrong_place, [9])
    assert not miss.verified and miss.attempts[0].dense and not all(a.dense for a in miss.attempts)
    assert run(4)[0]  # still 4 counted: first again
    v.reset()  # a new drive: the usual order again
    assert not run(0)[0]
    off = Verifier(m, VerifyConfig(gradient_first_after=0))
    assert not any(all(a.dense for a in off.verify(snow[i % 2][0], [10 + i % 2]).attempts) for i in range(4))


def test_after_frames_sift_verified_nothing_its_steps_are_skipped_but_probed(town):
    _, _, m = town
    snow = [_render_beside(town, k, "snow")[0] for k in (10, 11)]
    sunny = _render_beside(town, 10, "sunny")[0]
    v = Verifier(m, VerifyConfig(gradient_first_after=0, gradient_skip_sift_after=2, gradient_first_probe_every=2))

    def sift_ran(rgb, k):
        out = v.verify(rgb, [k])
        assert out.verified
        return not all(a.dense for a in out.attempts), out

    # SIFT failed on 0 frames, 1 -> runs; 2 -> skipped (1st skip); probe on the 2nd skip; skipped; probe ...
    runs = [sift_ran(snow[i % 2], 10 + i % 2) for i in range(5)]
    assert [ran for ran, _ in runs] == [True, True, False, True, False]
    assert [out.order for _, out in runs] == ["usual", "usual", "SIFT skipped", "usual", "SIFT skipped"]
    probe, out = sift_ran(sunny, 10)  # ... which finds daylight: SIFT verifies, the counts start again
    assert probe and not out.dense
    assert sift_ran(snow[0], 10)[0] and sift_ran(snow[1], 11)[0]


def test_a_marginal_dense_pose_out_found_by_another_place_is_ambiguous(town):
    """The place-level ratio test (gradient_search.rivalled): a weak pose at map image 4 is out-found by the map
    images as far from it as the true place (10) is, which the query was rendered beside; a weak pose at the true
    place out-finds the map images that far from it; sure poses and the off switch search no rival at all."""
    from dataclasses import replace

    from disam_ros.verify.gradient_search import query_grid, rivalled
    from disam_ros.verify.result import Verification

    _, _, m = town
    rgb, _, _ = _render_beside(town, 10, "snow")
    d = float(np.linalg.norm(np.asarray(m.positions[4]) - np.asarray(m.positions[10])))
    cfg = VerifyConfig(gradient_rival_m=(d - 0.01, d + 0.01), gradient_sure_inliers=10 ** 9, gradient_sure_ratio=1.0)
    v = Verifier(m, cfg)
    grid = query_grid(rgb, 8, v.map_camera, v.map_camera, cfg)
    weak = Verification("verified", index=4, inliers=1, inlier_ratio=0.1)
    assert rivalled(weak, grid, m, v._map_side, v.map_camera, cfg)
    right = Verification("verified", index=10, inliers=1, inlier_ratio=0.1)
    assert not rivalled(right, grid, m, v._map_side, v.map_camera, cfg)

    def no_search(j):
        raise AssertionError(f"map image {j} searched")

    for quiet in (replace(cfg, gradient_sure_inliers=1), replace(cfg, gradient_sure_ratio=0.1),
                  replace(cfg, gradient_rival_m=(0.0, 0.0))):
        assert not rivalled(weak, grid, m, no_search, v.map_camera, quiet)
    with pytest.raises(ValueError, match="gradient_rival_m"):
        VerifyConfig(gradient_rival_m=(16.0, 8.0))


def test_polish_brings_a_perturbed_dense_pose_back_and_changes_only_the_pose(town):
    """A dense pose solved, then moved 0.3 m sideways and turned 1 deg (as a first search's coarse pose might be):
    searched again from there (gradient_search.polish) it comes back to within 0.1 m / 0.5 deg of the pose the frame
    was rendered at; a start moved beyond the caps is not polished at all; end to end the outcome, inliers and
    covariance are the first search's and the pose moves within the caps."""
    from dataclasses import replace

    from disam_ros.geometry import rot_to_quat
    from disam_ros.pose.frames import cam_from_map
    from disam_ros.verify.gradient_search import polish, query_grid, search_pose
    from disam_ros.verify.result import Verification

    _, _, m = town
    cfg = VerifyConfig()
    k = 10
    rgb, pos, quat = _render_beside(town, k, "snow")
    verifier = Verifier(m, cfg)
    cam = verifier.camera_for(rgb.shape[1], rgb.shape[0])[0]
    grid = query_grid(rgb, int(m.map_geometry.gradient_cell), m.map_geometry.intrinsics, cam, cfg)
    side = verifier._map_side(k)
    first, _ = search_pose(grid, side.gradients, side.points, *cam_from_map(m.positions[k], m.quats[k]), cam, cfg)
    assert first is not None
    turn = np.array([[np.cos(np.radians(1.0)), 0.0, np.sin(np.radians(1.0))], [0.0, 1.0, 0.0],
                     [-np.sin(np.radians(1.0)), 0.0, np.cos(np.radians(1.0))]])
    moved_pos = pos + quat_to_rot(quat) @ np.array([0.3, 0.0, 0.0])
    moved_quat = rot_to_quat(quat_to_rot(quat) @ turn)
    R, t = cam_from_map(moved_pos, moved_quat)
    start = replace(first, position=moved_pos, quat=moved_quat, R=R, t=t)
    v = Verification("verified", index=k, position=moved_pos.copy(), quat=moved_quat.copy())
    wide = replace(cfg, gradient_polish_max_shift_m=1.0)
    out = polish(v, start, grid, side, cam, wide)
    assert out is not start
    assert float(np.linalg.norm(v.position - pos)) < 0.1 and float(quat_angle_deg(v.quat, quat)) < 0.5
    np.testing.assert_allclose(out.position, v.position)
    tight = Verification("verified", index=k, position=moved_pos.copy(), quat=moved_quat.copy())
    assert polish(tight, start, grid, side, cam, replace(cfg, gradient_polish_max_shift_m=0.05)) is start
    np.testing.assert_array_equal(tight.position, moved_pos)  # beyond the cap: the start is kept
    on, off = Verifier(m, cfg).verify(rgb, [k]), Verifier(m, replace(cfg, gradient_polish_points=0)).verify(rgb, [k])
    assert on.verified and off.verified and (on.inliers, on.inlier_ratio) == (off.inliers, off.inlier_ratio)
    np.testing.assert_allclose(on.covariance, off.covariance)
    assert float(np.linalg.norm(on.position - off.position)) <= cfg.gradient_polish_max_shift_m
    assert float(quat_angle_deg(on.quat, off.quat)) <= cfg.gradient_polish_max_turn_deg


def test_tilt_is_pitch_and_roll_apart_whatever_the_turn():
    """tilt_deg by hand: a turn about the camera's vertical (optical y) tilts nothing; a pitch of 5 deg about x
    tilts 5 deg, with or without a 30 deg turn; pitch a and roll b about x and z tilt acos(cos a cos b)."""
    from disam_ros.geometry import rot_to_quat
    from disam_ros.pose.frames import about_y
    from disam_ros.verify.dense_step import tilt_deg

    def about_x(deg):
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])

    def about_z(deg):
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])

    key = np.array([0.0, 0.0, 0.0, 1.0])
    assert tilt_deg(rot_to_quat(about_y(30.0)), key) == pytest.approx(0.0, abs=1e-6)
    assert tilt_deg(rot_to_quat(about_x(5.0)), key) == pytest.approx(5.0, abs=1e-6)
    assert tilt_deg(rot_to_quat(about_y(30.0) @ about_x(5.0)), key) == pytest.approx(5.0, abs=1e-6)
    want = np.degrees(np.arccos(np.cos(np.radians(3.0)) * np.cos(np.radians(4.0))))
    assert tilt_deg(rot_to_quat(about_x(3.0) @ about_z(4.0)), key) == pytest.approx(want, abs=1e-6)
    base = rot_to_quat(about_y(-70.0))  # the same relative tilt seen from a turned keyframe
    assert tilt_deg(rot_to_quat(about_y(-70.0) @ about_x(5.0)), base) == pytest.approx(5.0, abs=1e-6)


def test_a_dense_pose_tilted_from_its_candidate_is_inconsistent(town):
    """The snow frame the dense search verifies (beside map image 10) with the tilt bound set just under its own
    tilt from the candidate: the same search, refused as inconsistent; with the default bound, verified."""
    from dataclasses import replace

    from disam_ros.verify.dense_step import tilt_deg

    _, _, m = town
    rgb, _, _ = _render_beside(town, 10, "snow")
    cfg = replace(VerifyConfig(), gradient_polish_points=0)  # the gate judges the search's own pose
    on = Verifier(m, cfg).verify(rgb, [10])
    assert on.verified and on.dense
    tilt = tilt_deg(on.quat, np.asarray(m.quats[10]))
    assert 0.01 < tilt < cfg.gradient_max_tilt_deg, tilt
    strict = Verifier(m, replace(cfg, gradient_max_tilt_deg=0.9 * tilt)).verify(rgb, [10])
    assert not strict.verified and strict.attempts[-1].outcome == "inconsistent" and strict.attempts[-1].dense


def _kinds(out):
    """Each attempt of a verification: a half-scale look, a dense search, or a full-scale SIFT step."""
    return ["look" if a.scale < 1 else "dense" if a.dense else "sift" for a in out.attempts]


def test_a_blind_keyframe_in_the_dark_runs_the_dense_search_before_the_full_scale_sift_steps(town):
    _, _, m = town
    rgb, pos, quat = _render_beside(town, 10, "snow")
    # the town's 320 px frames: looks at 160 px; every frame counts as dark (mean grey < 255), none as cluttered
    cfg = VerifyConfig(first_min_width_px=160, keyframe_dense_dark=255.0, keyframe_dense_clutter=2.0)
    kf = Verifier(m, cfg).verify(rgb, [10, 11], keyframe=True)
    assert kf.verified and kf.dense and float(np.linalg.norm(kf.position - pos)) < 0.25
    assert float(quat_angle_deg(kf.quat, quat)) < 2.0
    assert _kinds(kf)[0] == "look" and not any(a.verified for a in kf.attempts if a.scale < 1)  # blind looks
    assert set(_kinds(kf)) == {"look", "dense"} and kf.order == "dense next"  # no full-scale SIFT step ran
    off = replace(cfg, keyframe_dense_dark=0.0)
    for out in (Verifier(m, off).verify(rgb, [10, 11], keyframe=True),  # the rule off
                Verifier(m, cfg).verify(rgb, [10, 11]),  # a frame verified inline
                Verifier(m, replace(cfg, keyframe_dense_dark=float(rgb.mean()))).verify(rgb, [10, 11], keyframe=True)):
        k = _kinds(out)  # (the last: exactly as bright as the bound, so not dark)
        assert out.verified and out.dense and "sift" in k and k.index("sift") < k.index("dense")
        np.testing.assert_allclose(out.position, kf.position, atol=1e-9)  # the same dense pose, found later
    sunny = Verifier(m, cfg).verify(_render_beside(town, 10, "sunny")[0], [10, 11], keyframe=True)
    assert sunny.verified and not any(a.dense for a in sunny.attempts)  # a look that sees: no dense search
    far = _render_beside(town, 2, "rain")[0]  # ~20 m further on
    wrong = Verifier(m, cfg).verify(far, [9], keyframe=True)
    assert not wrong.verified and _kinds(wrong) == ["look", "dense"]  # no SIFT step after the failed search
    kept = Verifier(m, replace(cfg, keyframe_dark_sift=True)).verify(far, [9], keyframe=True)
    assert not kept.verified and _kinds(kept)[-1] == "sift" and "dense" in _kinds(kept)  # ... unless asked to


def test_a_blind_keyframe_in_clutter_runs_the_dense_search_alone(town):
    _, _, m = town
    rgb, pos, _ = _render_beside(town, 10, "snow")
    probe = Verifier(m, VerifyConfig(first_min_width_px=160))
    probe.verify(rgb, [10, 11], keyframe=True)
    n = probe._looks.keypoints  # the looks' half-scale keypoints on this frame
    assert n > 20
    cfg = VerifyConfig(first_min_width_px=160, keyframe_dense_dark=0.0, keyframe_dense_clutter=n / 2000)
    kf = Verifier(m, cfg).verify(rgb, [10, 11], keyframe=True)
    assert kf.verified and kf.dense and float(np.linalg.norm(kf.position - pos)) < 0.25
    assert set(_kinds(kf)) == {"look", "dense"}
    fewer = Verifier(m, replace(cfg, keyframe_dense_clutter=(n + 1) / 2000)).verify(rgb, [10, 11], keyframe=True)
    assert "sift" in _kinds(fewer)  # one keypoint short of the share: not clutter, the usual order
    v = Verifier(m, replace(cfg, keyframe_dense_clutter=0.0))
    wrong = v.verify(_render_beside(town, 2, "rain")[0], [9], keyframe=True)  # the dense search fails: nothing after
    assert not wrong.verified and set(_kinds(wrong)) == {"look", "dense"} and _kinds(wrong)[-1] == "dense"
    assert v._order.sift_fails == 1  # counted as a frame SIFT did not verify (verify/order.py)


def test_in_clutter_a_keyframe_whose_dense_search_ran_first_and_failed_runs_no_sift_step(town):
    """After two frames only the dense search verified it runs first; where it then fails on a keyframe whose blind
    looks saw clutter, no full-scale SIFT step follows either (counted as a SIFT failure), as after a dense search
    next; so does a dark keyframe's, unless `keyframe_dark_sift`. Inline frames keep the SIFT steps after it."""
    _, _, m = town
    snow = [_render_beside(town, k, "snow")[0] for k in (10, 11)]
    wrong = _render_beside(town, 2, "rain")[0]  # ~20 m from candidate 9: nothing verifies

    def primed(**rules):
        cfg = VerifyConfig(first_min_width_px=160, gradient_first_after=2, gradient_first_probe_every=50, **rules)
        v = Verifier(m, cfg)
        for i in range(2):  # inline: the keyframe rules stay out; SIFT fails and the dense search verifies
            assert v.verify(snow[i], [10 + i]).dense
        return v

    v = primed(keyframe_dense_dark=0.0, keyframe_dense_clutter=0.0)  # every blind look counts as clutter
    fails = v._order.sift_fails
    kf = v.verify(wrong, [9], keyframe=True)
    assert not kf.verified and kf.order == "dense first" and _kinds(kf)[0] == "dense"
    assert _kinds(kf) == ["dense"]  # no full-scale step (the looks were blind twice: this frame's are skipped)
    assert v._order.sift_fails == fails + 1
    inline = primed(keyframe_dense_dark=0.0, keyframe_dense_clutter=0.0).verify(wrong, [9])
    assert _kinds(inline)[0] == "dense" and "sift" in _kinds(inline)
    dark = primed(keyframe_dense_dark=255.0, keyframe_dense_clutter=2.0).verify(wrong, [9], keyframe=True)
    assert not dark.verified and _kinds(dark) == ["dense"]  # in the dark too, nothing follows the failed search
    kept = primed(keyframe_dense_dark=255.0, keyframe_dense_clutter=2.0, keyframe_dark_sift=True)
    dark = kept.verify(wrong, [9], keyframe=True)
    assert _kinds(dark)[0] == "dense" and "sift" in _kinds(dark)  # ... unless asked to


def test_after_a_keyframe_only_full_scale_sift_verified_the_next_keyframe_runs_the_dense_search_first(town):
    """`keyframe_dense_after_full` 1, on a drive too fast for optical flow (the frame loop's frames 0.1 s apart, the
    keyframes' verified poses one map image, ~2 m, apart in 0.1 s: ~2 m a frame, flow_max_step_m 1): keyframes whose
    half-scale look verified unsure (`first_min_inliers` out of reach) and that full-scale SIFT then polished put
    the dense search first once the speed is known, and it verifies alone, metric; so do keyframes whose looks
    were skipped as blind and that full-scale SIFT verified. The usual order stays when the
    rule is off, when a half-scale look verifies surely, when no look ran (a frame narrower than
    `first_min_width_px` at half scale: full-scale SIFT is then the first step, not a dear second one), or on a
    drive flow can follow (frames 0.01 s apart), where a dense pose would start flow chains without map points. With
    the tracker's top speed given, the second keyframe's candidate place already tells the drive's speed."""
    _, _, m = town
    (a, _, _), (b, pos, quat) = (_render_beside(town, k, "sunny") for k in (10, 11))
    cfg = VerifyConfig(first_min_width_px=160, first_min_inliers=10_000, first_polish_half=False,
                       gradient_first_after=0, keyframe_dense_after_full=1, gradient_first_probe_every=50)

    def drive(config: VerifyConfig, frame_dt: float = 0.1, top_speed: float = 0.0, blind: bool = False) -> list:
        v = Verifier(m, config, max_speed_mps=top_speed)
        v._looks.misses = 2 if blind else 0  # two blind looks before: the looks are skipped (first_probe_every 50)
        cam = v.camera_for(a.shape[1], a.shape[0])[0]
        for t in (0.0, frame_dt):  # the frame loop's frames (nothing to follow)
            v.chain.follow(np.zeros(a.shape[:2], np.uint8), t, cam)
        out = []
        for i, (rgb, k) in enumerate(((a, 10), (b, 11), (b, 11))):
            out.append(v.verify(rgb, [k], keyframe=True, stamp=1.0 + 0.1 * i))
            v.chain.settle(out[-1], None, 1.0 + 0.1 * i, cam)  # as the keyframe thread does: the motion check
        return out

    fast = drive(cfg)
    assert float(np.linalg.norm(fast[1].position - fast[0].position)) > 1.5
    assert [(o.verified, o.dense, o.order) for o in fast] == [(True, False, "usual"), (True, False, "usual"),
                                                             (True, True, "dense first")]
    assert len(fast[2].attempts) == 1
    assert float(np.linalg.norm(fast[2].position - pos)) < 0.25 and float(quat_angle_deg(fast[2].quat, quat)) < 2.0
    # looks skipped as blind (fog at 3 m): full-scale SIFT verifying alone counts, even where a look would be sure
    assert [(o.verified, o.dense, o.order) for o in drive(replace(cfg, first_min_inliers=15, first_probe_every=50),
                                                          blind=True)] == [(o.verified, o.dense, o.order) for o in fast]
    for out in (drive(replace(cfg, keyframe_dense_after_full=0)), drive(replace(cfg, first_min_inliers=15)),
                drive(replace(cfg, first_min_width_px=10_000)), drive(cfg, frame_dt=0.01),
                drive(cfg, frame_dt=0.01, top_speed=15.0)):
        assert [(o.verified, o.dense, o.order) for o in out] == [(True, False, "usual")] * 3
    # with the tracker's top speed known, the second keyframe's candidate place (~2 m from the first pose in 0.1 s:
    # min(20, 15) m/s x 0.1 s = 1.5 m a frame) already says the drive outruns flow (FlowChain.outruns_flow)
    early = drive(cfg, top_speed=15.0)
    want = [(True, False, "usual")] + [(True, True, "dense first")] * 2
    assert [(o.verified, o.dense, o.order) for o in early] == want
    assert float(np.linalg.norm(early[1].position - pos)) < 0.25 and float(quat_angle_deg(early[1].quat, quat)) < 2.0
