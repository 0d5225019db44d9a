"""The motion check on verified poses (verify/motion.py): the bound by hand, when it is in force, and on a
rendered drive a right pose that follows the last one passes while the same frame stamped as if the camera had
covered its distance in a tenth of the time is refused as "jumped" (and hands nothing on to tracking)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from disam_ros.verify.motion import MotionGate, allowed_jump_m


def test_the_bound_by_hand():
    gate = MotionGate(max_speed_mps=10.0, slack_m=2.0, window_s=1.0)
    assert allowed_jump_m(0.5, 10.0, 2.0) == pytest.approx(7.0)
    assert gate.jump([100.0, 0.0, 0.0], 1.0) is None  # nothing to compare with yet
    gate.accept(np.zeros(3), 10.0)
    assert gate.jump([6.9, 0.0, 0.0], 10.5) is None  # 6.9 m in 0.5 s: within 10 m/s x 0.5 s + 2 m
    assert gate.jump([3.0, 4.0, 6.0], 10.5) == pytest.approx(math.sqrt(61.0))  # 7.81 m > 7 m
    assert gate.jump([50.0, 0.0, 0.0], 11.5) is None  # 1.5 s later: the reference has lapsed
    assert gate.jump([50.0, 0.0, 0.0], 10.0) is None  # no time passed (or a replay jumped back): no bound
    assert gate.jump([50.0, 0.0, 0.0], math.nan) is None  # unknown stamp
    gate.reset()
    assert gate.jump([50.0, 0.0, 0.0], 10.5) is None  # a new drive
    gate.accept(np.zeros(3), math.nan)  # a pose without a stamp bounds nothing
    assert gate.jump([50.0, 0.0, 0.0], 10.5) is None


def test_a_drive_starts_with_its_first_stamped_verified_pose():
    gate = MotionGate(max_speed_mps=10.0, slack_m=2.0, window_s=1.0)
    assert not gate.started
    gate.accept(np.zeros(3), math.nan)
    assert not gate.started
    gate.accept(np.zeros(3), 10.0)
    gate.accept(np.zeros(3), math.nan)  # clears the reference, not the drive's start
    assert gate.started
    gate.reset()
    assert not gate.started


def test_the_speed_between_the_last_two_references_and_whether_flow_can_follow_it():
    """MotionGate.speed_mps by hand (3-4-5 m in 2 s: 2.5 m/s; farther apart than SPEED_GAP_S: kept as it was), and
    FlowChain.outruns_flow: that speed times the frame loop's frame interval against flow_max_step_m (1 m)."""
    from disam_ros.verify.config import VerifyConfig
    from disam_ros.verify.flow_chain import FlowChain
    from disam_ros.verify.motion import SPEED_GAP_S

    gate = MotionGate(max_speed_mps=10.0, slack_m=2.0, window_s=1.0)
    gate.accept(np.zeros(3), 0.0)
    assert math.isnan(gate.speed_mps)
    gate.accept(np.array([3.0, 4.0, 0.0]), 2.0)  # 2 s: beyond the jump window, within SPEED_GAP_S
    assert gate.speed_mps == pytest.approx(2.5)
    gate.accept(np.array([3.0, 4.0, 100.0]), 2.0 + SPEED_GAP_S + 0.1)  # too long a gap: no new estimate
    assert gate.speed_mps == pytest.approx(2.5)
    gate.reset()
    assert math.isnan(gate.speed_mps)

    chain = FlowChain(VerifyConfig(flow_max_step_m=1.0), 30.0, lambda k: np.zeros((0, 3)))
    grey = np.zeros((4, 4), np.uint8)
    assert not chain.outruns_flow()  # nothing known: counted as followable
    for t in (5.0, 5.1):  # the frame loop: a frame every 0.1 s (no seed: nothing followed)
        assert chain.follow(grey, t, None) is None
    assert chain.frame_dt == pytest.approx(0.1)
    assert chain.follow(grey, 5.15, None, catch_up=True) is None and chain.frame_dt == pytest.approx(0.1)  # not a frame
    assert not chain.outruns_flow()  # speed unknown
    chain.motion.accept(np.zeros(3), 6.0)
    chain.motion.accept(np.array([9.0, 0.0, 0.0]), 7.0)  # 9 m/s x 0.1 s = 0.9 m a frame: flow follows
    assert not chain.outruns_flow()
    chain.motion.accept(np.array([20.0, 0.0, 0.0]), 8.0)  # 11 m/s: 1.1 m a frame, more than flow_max_step_m
    assert chain.outruns_flow()
    chain.reset()
    assert not chain.outruns_flow() and math.isnan(chain.frame_dt)


def test_before_the_second_verified_pose_the_nearest_candidate_place_bounds_the_speed():
    """MotionGate.speed_to by hand (the nearest of the places: 3-4-5 m in 0.5 s = 10 m/s), and FlowChain.outruns_flow
    with a keyframe's candidate places while the speed between verified poses is unknown: that lower bound, capped
    at the tracker's top speed (12 m/s here), times the frame interval. A 3 m drive (frames 0.3 s apart) outruns
    flow from its second keyframe on; a camera-rate one (0.05 s: at most 12 x 0.05 = 0.6 m a frame) never does,
    however far retrieval put the candidates."""
    from disam_ros.verify.config import VerifyConfig
    from disam_ros.verify.flow_chain import FlowChain
    from disam_ros.verify.motion import SPEED_GAP_S

    gate = MotionGate(max_speed_mps=10.0, slack_m=2.0, window_s=1.0)
    far_near = np.array([[30.0, 40.0, 0.0], [3.0, 4.0, 0.0]])
    assert math.isnan(gate.speed_to(far_near, 1.0))  # no reference
    gate.accept(np.zeros(3), 1.0)
    assert gate.speed_to(far_near, 1.5) == pytest.approx(10.0)  # the nearer: 5 m in 0.5 s
    assert math.isnan(gate.speed_to(far_near, 1.0)) and math.isnan(gate.speed_to(far_near, 1.0 + SPEED_GAP_S + 0.1))
    assert math.isnan(gate.speed_to(np.zeros((0, 3)), 1.5)) and math.isnan(gate.speed_to(far_near, math.nan))

    def chain_at(frame_dt: float) -> FlowChain:
        chain = FlowChain(VerifyConfig(flow_max_step_m=1.0), 12.0, lambda k: np.zeros((0, 3)))
        for t in (0.0, frame_dt):
            chain.follow(np.zeros((4, 4), np.uint8), t, None)
        chain.motion.accept(np.zeros(3), 1.0)  # the first verified keyframe
        return chain

    fast, slow = chain_at(0.3), chain_at(0.05)
    assert fast.outruns_flow(far_near, 1.5)  # min(10, 12) m/s x 0.3 s = 3 m a frame
    assert not fast.outruns_flow(np.array([[1.0, 0.0, 0.0]]), 1.5)  # 2 m/s x 0.3 s = 0.6 m
    assert not fast.outruns_flow() and not fast.outruns_flow(far_near)  # no places, or no stamp: unknown
    assert not slow.outruns_flow(far_near, 1.5)  # 10 m/s x 0.05 s = 0.5 m
    assert not slow.outruns_flow(far_near * 100.0, 1.5)  # 1 km off: capped at 12 m/s x 0.05 s = 0.6 m
    fast.motion.accept(np.array([0.5, 0.0, 0.0]), 2.0)  # a second verified pose: 0.5 m/s, the places no longer read
    assert not fast.outruns_flow(far_near, 2.5)


def test_off_at_zero_speed_and_bad_values_refused():
    gate = MotionGate(0.0, 2.0, 1.0)
    gate.accept(np.zeros(3), 0.0)
    assert gate.jump([1e6, 0.0, 0.0], 0.1) is None
    with pytest.raises(ValueError, match="motion gate"):
        MotionGate(-1.0, 2.0, 1.0)
    with pytest.raises(ValueError, match="motion gate"):
        MotionGate(10.0, 2.0, 0.0)
    from disam_ros.verify.config import VerifyConfig

    with pytest.raises(ValueError, match="motion_slack_m"):
        VerifyConfig(motion_slack_m=-1.0)


def test_a_rendered_frame_stamped_too_soon_after_a_far_one_is_refused(geometry_world):
    from disam_ros.data.folders import load_condition, read_image
    from disam_ros.maps import LocalizationMap
    from disam_ros.verify.verifier import Verifier, VerifyConfig

    m = LocalizationMap.load(geometry_world["map"])
    qf = load_condition(geometry_world["world"], "sunny_repeat", require_poses=True)
    positions, stamps = np.asarray(qf.trajectory.positions), np.asarray(qf.trajectory.stamps, np.float64)
    verifier = Verifier(m, VerifyConfig(), max_speed_mps=10.0)  # x motion_speed_factor 1.5 = 15 m/s

    def run(i: int, stamp: float):
        k = int(np.argmin(np.linalg.norm(np.asarray(m.positions) - positions[i], axis=1)))
        return verifier.verify(read_image(qf.image_paths[i]), [k, k + 1, k - 1], stamp=stamp)

    first = next((i, v) for i in range(len(qf)) if (v := run(i, stamps[i])).verified)
    i, v0 = first
    later = [j for j in range(i + 1, len(qf)) if np.linalg.norm(positions[j] - v0.position) > 6.0]
    assert later, "the drive should go on more than 6 m past its first verified frame"
    j = later[0]
    d = float(np.linalg.norm(positions[j] - v0.position))
    # stamped as if it came 0.1 s after frame i: allowed 15 m/s x 0.1 s + 2 m = 3.5 m < d (> 6 m)
    soon = run(j, stamps[i] + 0.1)
    assert soon.outcome == "jumped" and soon.support is None, (soon.outcome, d)
    assert np.linalg.norm(soon.position - positions[j]) < 0.5  # the pose was right: only the stamps are wrong
    # with its true stamp the bound (15 m/s over the real time + 2 m) holds it
    real = run(j, stamps[j])
    assert real.verified, (real.outcome, d, stamps[j] - stamps[i])
    # single mode (no speed): never refused
    free = Verifier(m, VerifyConfig())
    free.verify(read_image(qf.image_paths[i]), [v0.index], stamp=stamps[i])
    k = int(np.argmin(np.linalg.norm(np.asarray(m.positions) - positions[j], axis=1)))
    assert free.verify(read_image(qf.image_paths[j]), [k, k + 1, k - 1], stamp=stamps[i] + 0.1).verified


def test_agreement_verifies_a_drive_only_once_it_has_a_motion_reference(geometry_world):
    """A gate only two agreeing candidates can pass (min_inlier_ratio 0.95; no first look, turn search, dense search,
    tracking or flow): single mode verifies the frame by agreement; a drive's first frame, with nothing to check it
    against, does not; the same frame once the drive has a verified pose does (even 5 s old: a lapsed reference),
    and so does the drive with agree_needs_reference off."""
    from dataclasses import replace

    from disam_ros.data.folders import load_condition, read_image
    from disam_ros.maps import LocalizationMap
    from disam_ros.verify.verifier import Verifier, VerifyConfig

    m = LocalizationMap.load(geometry_world["map"])
    qf = load_condition(geometry_world["world"], "sunny_repeat", require_poses=True)
    positions, stamps = np.asarray(qf.trajectory.positions), np.asarray(qf.trajectory.stamps, np.float64)
    cfg = VerifyConfig(min_inlier_ratio=0.95, first_scale=1.0, gradient_candidates=0, turn_search_deg=0,
                       track_frames=0, flow_frames=0, candidate_polish_inliers=0, regate_far_poses=False)
    i = 9
    k = int(np.argmin(np.linalg.norm(np.asarray(m.positions) - positions[i], axis=1)))
    rgb = read_image(qf.image_paths[i])

    def run(verifier):
        return verifier.verify(rgb, [k, k + 1, k - 1], stamp=stamps[i])

    single = run(Verifier(m, cfg))
    assert single.verified and single.agreed, single.outcome
    assert np.linalg.norm(single.position - positions[i]) < 0.25
    drive = Verifier(m, cfg, max_speed_mps=10.0)
    first = run(drive)
    assert not first.verified and first.outcome == "too_few_inliers"
    assert all(not a.verified for a in first.attempts)
    drive.chain.motion.accept(positions[i] + [0.5, 0.0, 0.0], stamps[i] - 5.0)
    referenced = run(drive)
    assert referenced.verified and referenced.agreed
    np.testing.assert_allclose(referenced.position, single.position, atol=1e-6)
    assert run(Verifier(m, replace(cfg, agree_needs_reference=False), max_speed_mps=10.0)).verified
