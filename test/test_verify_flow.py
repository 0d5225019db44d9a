"""Optical-flow tracking between verifications (verify/flow.py) on frames rendered 0.3 m apart in the shared town:
after two verified frames the third is tracked by flow alone (its only candidate a place it cannot verify), within
(0.25 m, 2 deg) of the pose it was rendered at; flow stops after `flow_frames`, is not tried when the camera's
predicted step is too long, and the rules that decide when it is tried, by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from disam_ros.geometry import quat_angle_deg, quat_to_rot
from disam_ros.verify.verifier import Verifier, VerifyConfig


@pytest.mark.parametrize("window", [21, 11])  # inline's Lucas-Kanade patch, and the keyframe thread's
def test_the_third_frame_is_tracked_by_flow_alone_and_stays_metric(flow_drive, window):
    m, k, frames = flow_drive
    wrong = [(k + len(m.positions) // 2) % len(m.positions)]
    cfg = VerifyConfig(flow_frames=2, prior_min_inliers=0,  # a spent chain's frame is not verified around its flow
                       flow_window_px=window)
    verifier = Verifier(m, cfg)  # guess (that step: test_verify_prior)
    first = verifier.verify(frames[0][0], [k], stamp=0.0)
    second = verifier.verify(frames[1][0], [k], stamp=0.1)  # 0.3 m in 0.1 s: 3 m/s, a 0.3 m step predicted next
    assert first.verified and second.verified and not first.flow and not second.flow
    for i in (2, 3):
        v = verifier.verify(frames[i][0], wrong, stamp=0.1 * i)
        _, pos, quat = frames[i]
        assert v.verified and v.flow and v.hops == i - 1 and v.order == "optical flow", (i, v.outcome)
        assert v.diagnostics()["tracked_by_flow"] and v.index == k  # the points are still keyframe k's
        assert float(np.linalg.norm(v.position - pos)) < 0.25 and float(quat_angle_deg(v.quat, quat)) < 2.0
        assert v.inliers >= cfg.flow_min_inliers and np.all(np.linalg.eigvalsh(v.covariance) > 0)
        # The followed points carry the chain's first pose's error: its covariance is added to the flow solve's.
        assert np.all(np.linalg.eigvalsh(v.covariance - second.covariance) > -1e-12)
    spent = verifier.verify(frames[4][0], wrong, stamp=0.4)  # flow_frames=2 used up: only the wrong place is tried
    assert not spent.verified and not spent.flow
    off = Verifier(m, VerifyConfig(flow_frames=0))
    for i in range(2):
        off.verify(frames[i][0], [k], stamp=0.1 * i)
    assert not off.verify(frames[2][0], wrong, stamp=0.2).verified  # without flow nothing verifies it


def test_a_flow_pose_covariance_grows_with_the_frames_followed(flow_drive):
    """The same two verified frames and the same flow frames with `flow_drift_m` 0 and 0.01: every pose is the
    same, and the covariances differ by (0.01 x hops)^2 on each position axis and nothing else (hops 1 and 2:
    1e-4 and 4e-4 m^2), the drift the chain has had no solve to correct."""
    m, k, frames = flow_drive
    wrong = [(k + len(m.positions) // 2) % len(m.positions)]
    runs = []
    for drift in (0.0, 0.01):
        verifier = Verifier(m, VerifyConfig(flow_frames=2, prior_min_inliers=0, flow_drift_m=drift))
        for i in range(2):
            assert verifier.verify(frames[i][0], [k], stamp=0.1 * i).verified
        runs.append([verifier.verify(frames[i][0], wrong, stamp=0.1 * i) for i in (2, 3)])
    for hops, (a, b) in enumerate(zip(*runs), start=1):
        assert a.flow and b.flow and a.hops == b.hops == hops
        np.testing.assert_array_equal(a.position, b.position)
        np.testing.assert_array_equal(a.quat, b.quat)
        expected = np.zeros((6, 6))
        expected[:3, :3] = np.eye(3) * (0.01 * hops) ** 2
        np.testing.assert_allclose(b.covariance - a.covariance, expected, atol=1e-15)


def test_flow_is_not_tried_when_the_predicted_step_is_too_long(flow_drive):
    m, k, frames = flow_drive
    wrong = [(k + len(m.positions) // 2) % len(m.positions)]
    verifier = Verifier(m, VerifyConfig(flow_frames=10, flow_max_step_m=0.2))  # 3 m/s x 0.1 s = 0.3 m > 0.2 m
    verifier.verify(frames[0][0], [k], stamp=0.0)
    verifier.verify(frames[1][0], [k], stamp=0.1)
    v = verifier.verify(frames[2][0], wrong, stamp=0.2)
    assert not v.verified and not v.flow


def test_when_flow_is_tried_by_hand():
    from types import SimpleNamespace

    from disam_ros.verify.flow import next_seed, trackable
    from disam_ros.verify.result import Verification

    cfg = VerifyConfig(flow_frames=3, flow_max_step_m=1.0, flow_min_inliers=30, track_max_gap_s=1.0)
    grey = np.zeros((48, 64), np.uint8)
    pix, pts = np.zeros((40, 2)), np.zeros((40, 3))
    a = Verification("verified", index=2, position=np.zeros(3), quat=np.array([0, 0, 0, 1.0]), inlier_pixels=pix,
                     inlier_points=pts)
    s0 = next_seed(None, a, grey, 10.0, cfg)
    assert s0 is not None and math.isnan(s0.speed_mps) and s0.hops == 0 and s0.keyframe == 2
    assert not trackable(s0, grey, 10.1, cfg)  # speed unknown after one verified frame
    b = Verification("verified", index=2, position=np.array([0.5, 0.0, 0.0]), quat=np.array([0, 0, 0, 1.0]),
                     inlier_pixels=pix, inlier_points=pts)
    s1 = next_seed(s0, b, grey, 10.25, cfg)  # 0.5 m in 0.25 s: 2 m/s
    assert s1.speed_mps == pytest.approx(2.0)
    assert trackable(s1, grey, 10.75, cfg)  # 2 m/s x 0.5 s = 1.0 m: at the limit
    assert not trackable(s1, grey, 10.8, cfg)  # 1.1 m
    assert not trackable(s1, grey, 10.25, cfg)  # no time has passed
    assert not trackable(s1, np.zeros((50, 64), np.uint8), 10.5, cfg)  # another image size
    assert not trackable(SimpleNamespace(**{**s1.__dict__, "hops": 3}), grey, 10.5, cfg)  # flow_frames used up
    few = Verification("verified", index=2, position=np.zeros(3), quat=np.array([0, 0, 0, 1.0]),
                       inlier_pixels=pix[:29], inlier_points=pts[:29])
    assert next_seed(s1, few, grey, 10.5, cfg) is None  # too few inliers to follow
    assert next_seed(s1, Verification("too_few_inliers"), grey, 10.5, cfg) is None
    assert not trackable(s1, grey, 10.5, VerifyConfig(flow_frames=0))


def test_spread_takes_the_strongest_point_of_each_cell_first():
    from disam_ros.pose.camera import Intrinsics
    from disam_ros.verify.flow import spread

    cam = Intrinsics(50.0, 50.0, 31.5, 23.5, 64, 48)  # n=3: cells of sqrt(64*48/3) = 32 px
    uv = np.array([[1.0, 1.0], [2.0, 2.0], [40.0, 1.0], [41.0, 2.0], [1.0, 40.0]])  # cells A A B B C
    idx = np.arange(5)  # strongest first
    np.testing.assert_array_equal(spread(uv, idx, 3, cam), [0, 2, 4])  # the first of A, B, C
    np.testing.assert_array_equal(np.sort(spread(uv, idx, 4, cam)), [0, 1, 2, 4])  # then the next of A
    np.testing.assert_array_equal(spread(uv, idx[2:], 2, cam), [2, 4])


def test_position_sigma_is_the_worst_axis():
    from disam_ros.verify.gate import position_sigma

    R = quat_to_rot(np.array([0.2, -0.3, 0.1, 0.927]) / np.linalg.norm([0.2, -0.3, 0.1, 0.927]))
    cov = np.zeros((6, 6))
    cov[:3, :3] = R @ np.diag([0.1**2, 0.3**2, 0.2**2]) @ R.T  # axes turned: the largest std is still 0.3
    cov[3:, 3:] = np.eye(3) * 10.0  # rotation does not count
    assert position_sigma(cov) == pytest.approx(0.3, rel=1e-9)
    assert position_sigma(np.full((6, 6), np.nan)) == math.inf


def test_map_points_are_projected_only_from_a_well_determined_pose():
    """A pose with a worst-axis sigma above flow_seed_max_sigma_m hands on its own inliers only: map points put on
    the image by a pose 0.3-0.4 m off would carry that error into every flow frame (dev fog drive)."""
    from disam_ros.pose.camera import Intrinsics
    from disam_ros.verify.flow import next_seed
    from disam_ros.verify.result import Verification

    cam = Intrinsics(100.0, 100.0, 63.5, 47.5, 128, 96)
    rng = np.random.default_rng(0)
    ahead = np.column_stack([rng.uniform(-3, 3, 200), rng.uniform(-2, 2, 200), rng.uniform(5, 20, 200)])
    cfg = VerifyConfig(flow_frames=5, flow_min_inliers=30, flow_max_points=120, flow_seed_max_sigma_m=0.25)
    grey = np.zeros((96, 128), np.uint8)
    pix, pts = np.full((40, 2), 60.0), np.zeros((40, 3))

    def seed(sigma: float):
        cov = np.diag([sigma**2] * 3 + [1e-4] * 3)
        v = Verification("verified", index=1, position=np.zeros(3), quat=np.array([0, 0, 0, 1.0]), covariance=cov,
                         inlier_pixels=pix, inlier_points=pts)
        return next_seed(None, v, grey, 1.0, cfg, ahead, cam)

    sure, unsure = seed(0.2), seed(0.3)
    assert len(sure.pixels) == 120 and sure.precise  # 40 inliers + 80 projected map points
    assert len(unsure.pixels) == 40 and not unsure.precise
    np.testing.assert_allclose(sure.covariance, np.diag([0.04] * 3 + [1e-4] * 3))
