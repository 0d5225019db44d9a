"""A keyframe verified around its own flow pose (verify/prior_step.py) on the shared rendered town: the answer is
solved against the map's points (metric against where the frame was rendered, not a copy of the guide), it needs
no retrieval candidate, a guide far from the camera is never taken, and a keyframe posed by flow in the tracker is
answered this way. Expected values are the render poses and what the verifier gives without a prior.

Dark keyframes (`prior_dense_dark`): a frame rendered in snow at a known pose, which SIFT cannot verify, is
answered by one dense search of the map image nearest its guide, metric and without any SIFT detection; the
answer is held to the guide (`polish_max_shift_m`); a bright frame pools half-scale SIFT features first and is then
searched densely before any full-scale detection (`prior_dense_before_full`); with both rules off the SIFT pools
run at both scales; a guide at a far place finds nothing (and, once the dense search around it failed, costs no
full-scale detection), and the query's grid is computed once a frame."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from disam_ros.geometry import quat_angle_deg, quat_to_rot, rot_to_quat
from disam_ros.pose.frames import about_y
from disam_ros.verify.config import VerifyConfig

CFG = VerifyConfig(first_min_width_px=160, first_probe_every=1)  # the 320 px town: half scale is 160 px wide


@pytest.fixture(scope="module")
def town(geometry_world):
    from disam_ros.data.folders import load_condition, read_image
    from disam_ros.maps import LocalizationMap

    m = LocalizationMap.load(geometry_world["map"])
    qf = load_condition(geometry_world["world"], "sunny_repeat", require_poses=True)
    frames = [(read_image(qf.image_paths[i]), qf.trajectory.positions[i], qf.trajectory.quats[i])
              for i in range(0, len(qf), 2)]
    return m, frames


def _guide(pos: np.ndarray, quat: np.ndarray, side_m: float, turn_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """A flow pose's kind of error: `side_m` along the camera's x axis and `turn_deg` about its vertical."""
    R = quat_to_rot(np.asarray(quat, np.float64))
    return np.asarray(pos, np.float64) + R[:, 0] * side_m, rot_to_quat(R @ about_y(turn_deg))


def _far_place(m, pos) -> int:
    return int(np.argmax(np.linalg.norm(np.asarray(m.positions) - pos, axis=1)))


def test_a_frame_is_solved_around_its_flow_pose_without_a_right_candidate(town):
    """Only a wrong place (the farthest map image) is offered; guided 0.3 m and 1 deg off (outside 0.25 m itself),
    frames are still verified from the map images around the guide in one attempt, within (0.25 m, 2 deg) of where
    they were rendered and closer than the guide: solved against the map, not confirmed around the guide."""
    from disam_ros.verify.verifier import Verifier

    m, frames = town
    verifier, solved = Verifier(m, CFG), 0
    for rgb, pos, quat in frames:
        guide = _guide(pos, quat, 0.3, 1.0)
        v = verifier.verify(rgb, [_far_place(m, pos)], keyframe=True, prior=guide)
        if not v.verified:
            assert not verifier.verify(rgb, [_far_place(m, pos)], keyframe=True).verified
            continue
        solved += 1
        assert v.order == "around the flow pose" and v.tried == 1 and v.inliers >= CFG.prior_min_inliers
        err = float(np.linalg.norm(v.position - pos))
        assert err < 0.25 and err < float(np.linalg.norm(guide[0] - pos)) and float(quat_angle_deg(v.quat, quat)) < 2
        if v.dense:  # its half-scale pool held too few: the dense search around the guide answered, no keypoints
            assert v.support is None
        else:
            assert v.support is not None and len(v.support.points) >= CFG.min_inliers  # map points for the next frame
    assert solved >= 5, solved  # of 7 frames of a same-condition repeat drive


def test_only_half_scale_features_are_computed_when_they_pool_enough(town, monkeypatch):
    """Where the half-scale pool holds, the frame costs one detection at half scale; otherwise full scale is
    detected once and shared by the usual steps (never twice)."""
    from disam_ros.verify import verifier as vmod

    m, frames = town
    scales: list[float] = []
    detect = vmod.detect_sift
    monkeypatch.setattr(vmod, "detect_sift", lambda rgb, cfg, *a: scales.append(cfg.scale) or detect(rgb, cfg, *a))
    verifier, half_only = vmod.Verifier(m, CFG), 0
    for rgb, pos, quat in frames:
        scales.clear()
        v = verifier.verify(rgb, [_far_place(m, pos)], keyframe=True, prior=_guide(pos, quat, 0.05, 0.2))
        assert len(scales) == len(set(scales)) <= 2, scales
        if v.verified and v.scale == 0.5:
            assert v.order == "around the flow pose" and scales == [m.map_geometry.sift.scale * 0.5]
            half_only += 1
    assert half_only >= 1


@pytest.mark.parametrize("how", ["far guide", "off"])
def test_a_guide_far_from_the_camera_or_the_step_off_changes_nothing(town, how):
    """A guide at the farthest map image's pose pools too few matches, and `prior_min_inliers` 0 turns the step
    off: either way the answer is exactly the verifier's without a prior."""
    from disam_ros.verify.verifier import Verifier

    m, frames = town
    cfg = CFG if how == "far guide" else replace(CFG, prior_min_inliers=0)
    for rgb, pos, quat in frames[:4]:
        k, far = int(np.argmin(np.linalg.norm(np.asarray(m.positions) - pos, axis=1))), _far_place(m, pos)
        guide = (np.asarray(m.positions[far]), np.asarray(m.quats[far])) if how == "far guide" else \
            _guide(pos, quat, 0.05, 0.2)
        got = Verifier(m, cfg).verify(rgb, [k, k + 1], keyframe=True, prior=guide)
        want = Verifier(m, cfg).verify(rgb, [k, k + 1], keyframe=True)
        assert got.order != "around the flow pose"
        assert (got.outcome, got.index, got.inliers, got.tried) == (want.outcome, want.index, want.inliers, want.tried)
        np.testing.assert_array_equal(got.position, want.position)


def test_a_renewal_keyframe_is_answered_around_its_flow_pose(flow_drive):
    """Keyframes beside the frame loop, the chain renewed after every 2 flow hops: frames 0-1 seed the chain (their
    keyframes have no pose by flow), later keyframes are renewals of frames flow had posed and are answered
    around that pose, each within (0.25 m, 2 deg) of where the frame was rendered."""
    from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
    from disam_ros.retrieval import SearchConfig
    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    m, _, frames = flow_drive
    reloc = Relocalizer.from_map(m.root, RelocalizerConfig(search=SearchConfig(device="cpu"), weather="sunny"))
    cfg = TrackerConfig(mode="sequence", keyframes=True, keyframe_wait_ms=0.0, verify=replace(CFG, flow_frames=2))
    tracker = Tracker(reloc, cfg)
    answers = []
    verify = tracker._keyframes._verify
    tracker._keyframes._verify = lambda job: answers.append((job, verify(job))) or answers[-1][1]
    kf = tracker._keyframes
    try:
        for i, (rgb, _, _) in enumerate(frames):
            tracker.step(rgb, 1000.0 + 0.1 * i)
            with kf._cv:
                assert kf._cv.wait_for(lambda: kf._job is None, timeout=60.0)
    finally:
        tracker.close()
        reloc.map.close()
    stamps = [1000.0 + 0.1 * i for i in range(len(frames))]
    renewals = [(job, v) for job, v in answers if job.prior is not None]
    assert [job.prior for job, _ in answers[:2]] == [None, None] and renewals, [job.stamp for job, _ in answers]
    for job, v in renewals:
        _, pos, quat = frames[stamps.index(job.stamp)]
        assert v.verified and v.order == "around the flow pose"
        assert float(np.linalg.norm(v.position - pos)) < 0.25 and float(quat_angle_deg(v.quat, quat)) < 2.0


def test_inline_the_frame_after_the_chains_hops_is_verified_around_its_flow_guess(flow_drive):
    """Inline, flow_frames 2: frames 0-1 are verified in full (the second gives the chain its speed), 2-3 by flow,
    and frame 4, whose chain has no hops left, is verified around the pose flow guesses for it, within (0.25 m,
    2 deg) of where it was rendered (here closer than the flow poses before it, which inherit frame 1's error);
    with the step off it takes the retrieval's candidates as before."""
    from disam_ros.verify.verifier import Verifier

    m, k, frames = flow_drive
    for cfg, want in ((replace(CFG, flow_frames=2), "around the flow pose"),
                      (replace(CFG, flow_frames=2, prior_min_inliers=0), "usual")):
        verifier = Verifier(m, cfg, max_speed_mps=15.0)
        answers = [verifier.verify(rgb, [k, k + 1], stamp=1000.0 + 0.1 * i) for i, (rgb, _, _) in enumerate(frames)]
        assert [v.order for v in answers] == ["usual", "usual", "optical flow", "optical flow", want]
        assert all(v.verified for v in answers)
        v, (_, pos, quat) = answers[-1], frames[-1]
        assert float(np.linalg.norm(v.position - pos)) < 0.25 and float(quat_angle_deg(v.quat, quat)) < 2.0


def test_after_two_misses_in_a_row_the_step_is_tried_every_fourth_frame_until_it_answers(town, monkeypatch):
    """A guide at the farthest map image never holds: it is tried on frames 1-2, then only on every fourth chance
    (frames 5 and 9 of 10, as blind first looks); then a guide where the camera is, tried at its turn (frame 13),
    answers and resets the count."""
    from disam_ros.verify import prior_step
    from disam_ros.verify.verifier import Verifier

    m, frames = town
    calls: list[int] = []
    attempt = prior_step.prior_attempt
    monkeypatch.setattr(prior_step, "prior_attempt", lambda *a, **k: calls.append(n) or attempt(*a, **k))
    verifier = Verifier(m, replace(CFG, first_probe_every=4))
    rgb, pos, quat = frames[0]
    far = _far_place(m, pos)
    guide = (np.asarray(m.positions[far]), np.asarray(m.quats[far]))
    for n in range(1, 11):  # noqa: B007  (read by the patched prior_attempt)
        assert verifier.verify(rgb, [far], keyframe=True, prior=guide).order != "around the flow pose"
    assert sorted(set(calls)) == [1, 2, 5, 9], calls
    near, orders = _guide(pos, quat, 0.05, 0.2), []
    for n in (11, 12, 13):  # noqa: B007
        orders.append(verifier.verify(rgb, [far], keyframe=True, prior=near).order)
    assert orders[-1] == "around the flow pose" and "around the flow pose" not in orders[:2] and calls[-1] == 13
    assert verifier._prior.misses == 0


def test_the_node_parameter_is_checked():
    from disam_ros.ros.node_params import check_value

    assert check_value("verify_prior_min_inliers", 0) == 0 and check_value("verify_prior_min_inliers", 40) == 40
    with pytest.raises(ValueError, match="verify_prior_min_inliers"):
        check_value("verify_prior_min_inliers", -1)
    with pytest.raises(ValueError, match="prior_min_inliers"):
        VerifyConfig(prior_min_inliers=-1)


# the town's 320 px frames: looks at 160 px; every frame counts as dark (mean grey < 255)
DARK = VerifyConfig(first_min_width_px=160, first_probe_every=1, keyframe_dense_dark=255.0)


@pytest.fixture(scope="module")
def rendered(geometry_world):
    from disam_ros.data.synthetic import WorldConfig
    from disam_ros.data.synthetic.generate import load_world
    from disam_ros.maps import LocalizationMap

    world, info = load_world(geometry_world["world"])
    camera = WorldConfig(seed=info.seed, image_size=tuple(info.image_size), fov_deg=info.fov_deg).camera()
    m = LocalizationMap.load(geometry_world["map"])
    yield world, camera, m
    m.close()


def _beside(rendered, k: int, condition: str):
    """Map image k's view from 0.8 m to its right and 0.5 m ahead, in `condition`: image, position, quaternion."""
    from disam_ros.data.synthetic.shade import render

    world, camera, m = rendered
    quat = np.asarray(m.quats[k], np.float64)
    pos = np.asarray(m.positions[k], np.float64) + quat_to_rot(quat) @ np.array([0.8, 0.0, 0.5])
    return render(world, (pos, quat), camera, condition, frame=k), pos, quat


def _counting(monkeypatch):
    """Every SIFT detection's scale, as the verifier asks for them."""
    from disam_ros.verify import verifier as vmod

    scales: list[float] = []
    detect = vmod.detect_sift
    monkeypatch.setattr(vmod, "detect_sift", lambda rgb, cfg, *a: scales.append(cfg.scale) or detect(rgb, cfg, *a))
    return scales


@pytest.mark.parametrize("k", [10, 11])
def test_a_dark_keyframe_is_solved_densely_around_its_flow_pose_without_sift(rendered, k, monkeypatch):
    """Offered only the farthest map image and guided 0.15 m and 0.5 deg off, a snow frame is answered by one dense
    search: within (0.25 m, 2 deg) of where it was rendered, closer than its guide, held by the dense gate's
    inliers, its covariance scaled as the dense search's, and no SIFT feature was detected."""
    from disam_ros.verify.verifier import Verifier

    _, _, m = rendered
    rgb, pos, quat = _beside(rendered, k, "snow")
    guide = _guide(pos, quat, 0.15, 0.5)
    scales = _counting(monkeypatch)
    v = Verifier(m, DARK).verify(rgb, [_far_place(m, pos)], keyframe=True, prior=guide)
    assert v.verified and v.dense and v.order == "around the flow pose" and v.tried == 1 and scales == []
    err = float(np.linalg.norm(v.position - pos))
    assert err < 0.25 and err < float(np.linalg.norm(guide[0] - pos)) and float(quat_angle_deg(v.quat, quat)) < 2.0
    assert v.inliers >= DARK.gradient_min_inliers and v.inlier_ratio >= DARK.gradient_min_inlier_ratio
    plain = Verifier(m, replace(DARK, gradient_covariance_scale=1.0)).verify(rgb, [_far_place(m, pos)],
                                                                             keyframe=True, prior=guide)
    np.testing.assert_allclose(v.covariance, plain.covariance * DARK.gradient_covariance_scale, rtol=1e-9)


def test_a_bright_keyframe_pools_half_scale_features_then_searches_densely_before_full_scale(rendered, monkeypatch):
    """The same snow frame and guide, as bright as the bound (not dark): half-scale features are detected and pooled
    first and hold too few there; the dense search around the guide then answers before any full-scale detection
    (`prior_dense_before_full`), within (0.25 m, 2 deg) of where the frame was rendered. In the dark with
    `prior_dense_dark` off it comes at the same place."""
    from disam_ros.verify.verifier import Verifier

    _, _, m = rendered
    rgb, pos, quat = _beside(rendered, 10, "snow")
    guide = _guide(pos, quat, 0.15, 0.5)
    for cfg in (replace(DARK, keyframe_dense_dark=float(rgb.mean())), replace(DARK, prior_dense_dark=False)):
        scales = _counting(monkeypatch)
        v = Verifier(m, cfg).verify(rgb, [_far_place(m, pos)], keyframe=True, prior=guide)
        assert scales == [cfg.first_scale] and v.verified and v.dense and v.order == "around the flow pose"
        assert float(np.linalg.norm(v.position - pos)) < 0.25 and float(quat_angle_deg(v.quat, quat)) < 2.0


def test_with_both_rules_off_the_sift_pools_run_at_both_scales(rendered, monkeypatch):
    """Bright, or dark with `prior_dense_dark` off, and `prior_dense_before_full` off: the half-scale pool, then
    full-scale features for the pooled solve, and no dense answer from around the guide."""
    from disam_ros.verify.verifier import Verifier

    _, _, m = rendered
    rgb, pos, quat = _beside(rendered, 10, "snow")
    guide = _guide(pos, quat, 0.15, 0.5)
    off = replace(DARK, prior_dense_before_full=False)
    for cfg in (replace(off, keyframe_dense_dark=float(rgb.mean())), replace(off, prior_dense_dark=False)):
        scales = _counting(monkeypatch)
        v = Verifier(m, cfg).verify(rgb, [_far_place(m, pos)], keyframe=True, prior=guide)
        assert scales[:2] == [cfg.first_scale, 1.0] and not (v.order == "around the flow pose" and v.dense), \
            (scales, v.order, v.dense)


def test_the_answer_is_held_to_its_guide_and_a_far_guide_finds_nothing(rendered):
    """`dense_prior_attempt` directly: a guide 0.15 m off gives a pose 0.1-0.25 m from it, refused once
    `polish_max_shift_m` is below that shift; a guide at the farthest map image's pose is not verified."""
    from disam_ros.verify.prior_step import dense_prior_attempt
    from disam_ros.verify.verifier import Verifier

    _, _, m = rendered
    rgb, pos, quat = _beside(rendered, 11, "snow")
    verifier = Verifier(m, DARK)
    cam, _ = verifier.camera_for(rgb.shape[1], rgb.shape[0])

    def attempt(guide, cfg=DARK):
        return dense_prior_attempt(lambda: verifier._grid(rgb, cam), guide, cam, m, verifier._forwards(),
                                   verifier._map_side, cfg)

    guide = _guide(pos, quat, 0.15, 0.5)
    v = attempt(guide)
    shift = float(np.linalg.norm(v.position - guide[0]))
    assert v is not None and 0.05 < shift < 0.3, shift
    assert attempt(guide, replace(DARK, polish_max_shift_m=shift - 1e-6)) is None
    assert attempt(guide, replace(DARK, polish_max_shift_m=shift + 1e-6)) is not None
    far = _far_place(m, pos)
    assert attempt((np.asarray(m.positions[far]), np.asarray(m.quats[far]))) is None



def test_a_failed_search_around_the_guide_shares_its_grid_with_the_dense_search_after(rendered, monkeypatch):
    """Guided from the farthest map image, the search around the guide finds nothing; the keyframe then runs its
    usual steps and is verified by the dense search of its right candidates, the query's grid computed once."""
    from disam_ros.verify import verifier as vmod

    _, _, m = rendered
    rgb, pos, quat = _beside(rendered, 10, "snow")
    grids: list[int] = []
    build = vmod.query_grid
    monkeypatch.setattr(vmod, "query_grid", lambda *a: grids.append(1) or build(*a))
    far = _far_place(m, pos)
    v = vmod.Verifier(m, DARK).verify(rgb, [10, 11], keyframe=True, prior=(np.asarray(m.positions[far]),
                                                                            np.asarray(m.quats[far])))
    assert v.verified and v.dense and v.order != "around the flow pose" and grids == [1]
    assert float(np.linalg.norm(v.position - pos)) < 0.25 and float(quat_angle_deg(v.quat, quat)) < 2.0


def test_where_the_search_around_the_guide_fails_no_full_scale_sift_is_pooled_around_it(rendered, monkeypatch):
    """Guided from the farthest map image, bright or dark: the dense search around the guide finds nothing, and the
    step gives up after the half-scale pool, without a full-scale detection (a guide the dense search cannot
    confirm is off; full-scale SIFT around it pooled nothing on any traced drive). Without a dense search around
    the guide (`prior_dense_before_full` off, bright) the full-scale pool still runs."""
    from disam_ros.verify.prior_step import PriorStep
    from disam_ros.verify.verifier import Verifier

    _, _, m = rendered
    rgb, pos, _ = _beside(rendered, 10, "snow")
    far = _far_place(m, pos)
    guide = (np.asarray(m.positions[far], np.float64), np.asarray(m.quats[far], np.float64))
    bright = replace(DARK, keyframe_dense_dark=float(rgb.mean()))
    for cfg, want in ((bright, [0.5]), (DARK, [0.5]), (replace(bright, prior_dense_before_full=False), [0.5, 1.0])):
        verifier = Verifier(m, cfg)
        cam, _ = verifier.camera_for(rgb.shape[1], rgb.shape[0])
        scales = _counting(monkeypatch)
        assert PriorStep(cfg).answer(verifier, rgb, guide, cam) is None
        assert [s / m.map_geometry.sift.scale for s in scales] == want, (cfg.keyframe_dense_dark, scales)
