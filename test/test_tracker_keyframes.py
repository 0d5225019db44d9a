"""Verification beside the frame loop (tracking/keyframes.py, verify/flow_chain.py) and the time box
(VerifyConfig.budget_ms), on a rendered camera-rate drive (frames 0.3 m and 0.1 s apart, conftest.flow_drive).
Expected values are where the frames were rendered, and which steps a frame can have run by construction."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from disam_ros.geometry import quat_angle_deg


def _relocalizer(m):
    from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
    from disam_ros.retrieval import SearchConfig

    return Relocalizer.from_map(m.root, RelocalizerConfig(search=SearchConfig(device="cpu"), weather="sunny"))


def _near(res, pos, quat) -> bool:
    return float(np.linalg.norm(res.position - pos)) < 0.25 and float(quat_angle_deg(res.quat, quat)) < 2.0


def _drive(m, frames, **config) -> list:
    """The frames through a fresh sequence-mode Tracker with keyframes (0.1 s apart from 1000.0), each keyframe
    waited for after its frame; the TrackSteps."""
    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    reloc = _relocalizer(m)
    tracker = Tracker(reloc, TrackerConfig(mode="sequence", keyframes=True, **config))
    try:
        steps = []
        for i, (rgb, _, _) in enumerate(frames):
            steps.append(tracker.step(rgb, 1000.0 + 0.1 * i))
            _drain(tracker)
        return steps
    finally:
        tracker.close()
        reloc.map.close()


def _drain(tracker) -> None:
    """Wait (on the thread's condition, no sleep) until the keyframe in flight is answered."""
    kf = tracker._keyframes
    with kf._cv:
        assert kf._cv.wait_for(lambda: kf._job is None, timeout=60.0)


def test_frames_never_wait_for_keyframes_and_flow_follows_them(flow_drive):
    """wait 0: frames 0 and 1 are answered at once, unverified ("pending"); their keyframes, answered after them,
    seed the chain (the second gives its speed), so frames 2-4 are followed by flow from them, each within
    (0.25 m, 2 deg) of where it was rendered, and only those two keyframes were ever solved."""
    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    m, _, frames = flow_drive
    reloc = _relocalizer(m)
    tracker = Tracker(reloc, TrackerConfig(mode="sequence", keyframes=True, keyframe_wait_ms=0.0))
    try:
        results = []
        for i, (rgb, _, _) in enumerate(frames):
            results.append(tracker.step(rgb, 1000.0 + 0.1 * i).result)
            _drain(tracker)
        outcomes = [r.verification.outcome for r in results]
        assert outcomes[:2] == ["pending", "pending"], outcomes
        for r, (_, pos, quat) in zip(results[2:], frames[2:]):
            assert r.verification.verified and r.verification.flow, outcomes
            assert r.verification.order == "optical flow" and _near(r, pos, quat)
        assert tracker._keyframes.solved == 2
        diag = tracker.diagnostics()
        assert diag["keyframes_solved"] == diag["keyframes_verified"] == 2  # both seeded the chain
        assert 0 < diag["keyframe_ms_median"] <= diag["keyframe_ms_p95"]
        tracker.reset("a new drive")
        assert "keyframe_ms_median" not in tracker.diagnostics()  # the times are per drive
    finally:
        tracker.close()
        reloc.map.close()
    assert not tracker._keyframes.thread.is_alive()


def test_keyframes_verified_after_their_frames_come_back_as_late_answers(flow_drive):
    """wait 0, as above: frames 0 and 1 go out pending; their keyframes, solved after, come back with the next
    steps as late answers at their own frames' stamps (1000.0 with step 1, 1000.1 with step 2), each verified
    against the map (not by flow) within (0.25 m, 2 deg) of where its frame was rendered, while the answers
    already given stay pending. Frames flow verified give none (their frames went out verified)."""
    m, _, frames = flow_drive
    steps = _drive(m, frames, keyframe_wait_ms=0.0)
    assert [[a.stamp for a in s.late] for s in steps] == [[], [1000.0], [1000.1], [], []]
    for s, (_, pos, quat) in zip(steps[1:3], frames[:2]):
        r = s.late[0].result
        assert r.verification.verified and not r.verification.flow and _near(r, pos, quat)
        assert s.late[0].loop_closure is False  # the first frames of a drive: the gate is not open yet
    assert [s.result.verification.outcome for s in steps[:2]] == ["pending", "pending"]
    assert all(np.isfinite(s.late[0].result.covariance).all() for s in steps[1:3])


def test_a_step_that_raises_loses_no_late_answer(flow_drive, monkeypatch):
    """Frame 0 goes out pending and its keyframe is solved; the next step raises (the relocalizer's verdict on a bad
    image) after the late answer was collected; the step after it still returns frame 0's late answer, once."""
    from disam_ros.relocalizer import Relocalizer
    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    m, _, frames = flow_drive
    reloc = _relocalizer(m)
    tracker = Tracker(reloc, TrackerConfig(mode="sequence", keyframes=True, keyframe_wait_ms=0.0))
    real = Relocalizer.localize_scored
    try:
        assert tracker.step(frames[0][0], 1000.0).late == ()
        _drain(tracker)
        monkeypatch.setattr(Relocalizer, "localize_scored", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad")))
        with pytest.raises(ValueError):
            tracker.step(frames[1][0], 1000.1)
        monkeypatch.setattr(Relocalizer, "localize_scored", real)
        steps = [tracker.step(frames[2][0], 1000.2)]
        _drain(tracker)
        steps.append(tracker.step(frames[3][0], 1000.3))
    finally:
        tracker.close()
        reloc.map.close()
    assert [a.stamp for a in steps[0].late] == [1000.0] and all(a.stamp != 1000.0 for a in steps[1].late)
    assert _near(steps[0].late[0].result, *frames[0][1:])


def test_a_chain_renewal_that_raises_does_not_end_the_keyframe_thread(flow_drive, monkeypatch):
    """Renewing the flow chain raises for every keyframe (patched): each keyframe is still solved and answered,
    the thread lives on and is free for the next one, so frames keep getting keyframes (not "pending" forever),
    and no chain starts (nothing is followed by flow)."""
    from disam_ros.verify.flow_chain import FlowChain

    m, _, frames = flow_drive

    def broken(*args, **kwargs):
        raise RuntimeError("renewal broke")

    monkeypatch.setattr(FlowChain, "settle", broken)
    steps = _drive(m, frames, keyframe_wait_ms=60_000.0)  # each frame waits for its own keyframe's answer
    assert all(s.result.verification.verified and not s.result.verification.flow for s in steps)
    assert all(_near(s.result, pos, quat) for s, (_, pos, quat) in zip(steps, frames))


def test_a_late_answer_is_taken_between_frames_when_the_thread_calls(flow_drive):
    """Frame 0 goes out pending; its keyframe, solved after, calls `on_late` once on the keyframe thread, and
    `take_late` then returns it with no further frame (what the node publishes while no frame comes), within
    (0.25 m, 2 deg) of where frame 0 was rendered; it is not returned again, by `take_late` or by the next step."""
    import threading

    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    m, _, frames = flow_drive
    reloc = _relocalizer(m)
    tracker = Tracker(reloc, TrackerConfig(mode="sequence", keyframes=True, keyframe_wait_ms=0.0))
    called, threads = threading.Event(), []
    tracker.on_late(lambda: (threads.append(threading.current_thread().name), called.set()))
    try:
        assert tracker.step(frames[0][0], 1000.0).result.verification.outcome == "pending"
        assert called.wait(60.0), "the keyframe thread never called on_late"
        late = tracker.take_late()
        assert [a.stamp for a in late] == [1000.0] and late[0].result.verification.verified
        assert _near(late[0].result, *frames[0][1:])
        assert tracker.take_late() == ()
        assert all(a.stamp != 1000.0 for a in tracker.step(frames[1][0], 1000.1).late)
        _drain(tracker)
    finally:
        tracker.close()
        reloc.map.close()
    assert threads[0] == "disam_keyframe_verify"


def test_take_late_without_keyframes_is_empty(flow_drive):
    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    m, _, frames = flow_drive
    reloc = _relocalizer(m)
    tracker = Tracker(reloc, TrackerConfig(mode="sequence"))
    try:
        tracker.on_late(lambda: None)  # nothing to call it: no keyframe thread
        tracker.step(frames[0][0], 1000.0)
        assert tracker.take_late() == ()
    finally:
        tracker.close()
        reloc.map.close()


def test_frames_flow_verifies_after_a_verified_one_need_no_retrieval(flow_drive, monkeypatch):
    """Sequence mode, the same drive twice: frames 0-1 are pending and frame 2 follows by flow after an unverified
    frame, so those three are retrieved; frames 3-4 follow a verified frame and flow verifies them, so with
    `flow_skips_retrieval` they are not retrieved (3 retrievals against 5). Flow does not read the retrieval, so
    every published pose is the same both ways and within (0.25 m, 2 deg) of where it was rendered; the belief,
    moved by the flow poses' distance and narrowed by them, answers the map place nearest the camera."""
    from disam_ros.relocalizer import Relocalizer

    m, _, frames = flow_drive
    calls = []
    real = Relocalizer.localize_scored

    def counted(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(Relocalizer, "localize_scored", counted)
    runs = {}
    for skip in (True, False):
        calls[:] = []
        steps = _drive(m, frames, keyframe_wait_ms=0.0, flow_skips_retrieval=skip)
        runs[skip] = (len(calls), steps)
    assert runs[True][0] == 3 and runs[False][0] == 5
    for a, b, (_, pos, quat) in zip(runs[True][1][2:], runs[False][1][2:], frames[2:]):
        assert a.result.verification.flow and _near(a.result, pos, quat)
        np.testing.assert_array_equal(a.result.position, b.result.position)
        np.testing.assert_array_equal(a.result.quat, b.result.quat)
    for step, (_, pos, _) in zip(runs[True][1][3:], frames[3:]):
        assert step.estimate is not None
        assert step.result.index == int(np.argmin(np.linalg.norm(m.positions - pos, axis=1)))


def test_a_chain_no_keyframe_renews_ends_after_keyframe_flow_frames(flow_drive, monkeypatch):
    """Renewals that verify nothing (patched to fail) leave the chain to run on, and optical flow drifts a little
    every frame, so the chain ends after `keyframe_flow_frames` followed frames. Renewals asked for after every
    followed frame (`flow_frames` 1); frames 0-1 are keyframes (pending: no seed, then no speed), frames 2 and 3
    follow by flow (1 and 2 frames from the last solved pose); frame 4 is followed with a cap of 3 and goes to a
    full keyframe (no flow pose) with a cap of 2."""
    from disam_ros.verify.config import VerifyConfig
    from disam_ros.verify.result import Verification
    from disam_ros.verify.verifier import Verifier

    m, _, frames = flow_drive
    solve, renewals = Verifier.verify, []

    def renewal_fails(self, *args, **kwargs):
        if kwargs.get("prior") is not None:
            renewals.append(kwargs["stamp"] if "stamp" in kwargs else args[3])
            return Verification("too_few_inliers")
        return solve(self, *args, **kwargs)

    monkeypatch.setattr(Verifier, "verify", renewal_fails)
    for cap, followed in ((3, [2, 3, 4]), (2, [2, 3])):
        renewals[:] = []
        steps = _drive(m, frames, keyframe_wait_ms=0.0, keyframe_flow_frames=cap, verify=VerifyConfig(flow_frames=1))
        flow = [i for i, s in enumerate(steps) if s.result.verification.flow]
        assert flow == followed, (cap, [s.result.verification.outcome for s in steps])
        for i in flow:
            _, pos, quat = frames[i]
            assert steps[i].result.verification.hops == i - 1 and _near(steps[i].result, pos, quat)
        assert renewals == [1000.0 + 0.1 * i for i in followed]  # each followed frame asked for one
        if cap == 2:
            assert steps[4].result.verification.outcome == "pending"  # a full keyframe, not answered at once


def test_a_junk_frame_between_followed_frames_sends_the_next_one_to_retrieval(flow_drive, monkeypatch):
    """Frames 0-3 as above (3 retrieved, frame 3 followed without), then a black frame: the gate refuses it (it is
    retrieved, and answered without a pose), so frame 4 follows an unverified frame and is retrieved too: 5
    retrievals for 6 frames, and frame 4 is still verified by flow from frame 3."""
    from disam_ros.relocalizer import Relocalizer
    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    m, _, frames = flow_drive
    calls = []
    real = Relocalizer.localize_scored
    monkeypatch.setattr(Relocalizer, "localize_scored", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    images = [f[0] for f in frames[:4]] + [np.zeros_like(frames[0][0]), frames[4][0]]
    stamps = [1000.0 + 0.1 * i for i in range(4)] + [1000.35, 1000.4]
    reloc = _relocalizer(m)
    tracker = Tracker(reloc, TrackerConfig(mode="sequence", keyframes=True, keyframe_wait_ms=0.0))
    try:
        results = []
        for rgb, t in zip(images, stamps):
            results.append(tracker.step(rgb, t).result)
            _drain(tracker)
    finally:
        tracker.close()
        reloc.map.close()
    assert len(calls) == 5
    assert not results[4].ok and results[5].verification.flow and _near(results[5], *frames[4][1:])


def test_a_frame_waits_for_its_keyframe_within_the_wait(flow_drive):
    """A wait longer than any verification: every frame the thread takes is answered by its own keyframe, so the
    first frame is verified (not flow) within (0.25 m, 2 deg), as inline verification would."""
    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    m, _, frames = flow_drive
    reloc = _relocalizer(m)
    tracker = Tracker(reloc, TrackerConfig(mode="sequence", keyframes=True, keyframe_wait_ms=60_000.0))
    try:
        rgb, pos, quat = frames[0]
        r = tracker.step(rgb, 1000.0).result
        assert r.verification.verified and not r.verification.flow and _near(r, pos, quat)
        assert tracker._keyframes.finished() == []  # taken by its frame: not applied again
    finally:
        tracker.close()
        reloc.map.close()


def test_a_reset_drops_the_keyframe_in_flight(flow_drive, monkeypatch):
    """A keyframe still being solved when the drive is reset (held at its start until the reset drops it): the
    reset returns once it has ended, it tries no candidate after the first (the answer says it timed out),
    and neither its seed, its time nor its answer is used; the new drive's first keyframe then runs whole and seeds
    the chain. Before, the dropped keyframe ran to its end beside the reset and seeded the new drive's chain with
    the old drive's pose."""
    import threading

    from disam_ros.tracking import keyframes
    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    monkeypatch.setattr(keyframes, "RESET_WAIT_S", 60.0)  # what it still runs may take seconds on a busy machine
    m, _, frames = flow_drive
    reloc = _relocalizer(m)
    tracker = Tracker(reloc, TrackerConfig(mode="sequence", keyframes=True, keyframe_wait_ms=0.0))
    verifier, kf, started, answers = tracker.verifier, tracker._keyframes, threading.Event(), []
    solve = verifier.verify

    def held(*args, **kwargs):
        if not started.is_set():  # the first keyframe, until the reset drops it
            started.set()
            with kf._cv:
                assert kf._cv.wait_for(kwargs["stop"], timeout=60.0)
        answers.append(solve(*args, **kwargs))
        return answers[-1]

    verifier.verify = held
    try:
        assert tracker.step(frames[0][0], 1000.0).result.verification.outcome == "pending"
        assert started.wait(60.0)
        tracker.reset("a new drive")
        assert kf.idle and len(answers) == 1
        dropped = answers[0]
        assert dropped.timed_out and len({a.index for a in dropped.attempts}) <= 1, dropped.attempts
        assert verifier.chain.seed is None and tracker._keyframes.finished() == []
        assert "keyframe_ms_median" not in tracker.diagnostics()
        tracker.step(frames[1][0], 2000.0)
        _drain(tracker)
        fresh = answers[1]
        assert fresh.verified and not fresh.timed_out
        assert verifier.chain.seed is not None and verifier.chain.seed.stamp == 2000.0
        diag = tracker.diagnostics()
        assert (diag["keyframes_solved"], diag["keyframes_verified"]) == (2, 1)  # the dropped one is no answer
    finally:
        tracker.close()
        reloc.map.close()


@pytest.mark.parametrize("far", [False, True])
def test_a_late_keyframe_catches_up_through_the_frames_seen_since(flow_drive, far):
    """A keyframe solved at frame 0 and settled after frames 1-4 were seen (0.3 m and 0.1 s apart): its seed follows
    them to frame 4, and the chain's pose there is frame 4's within (0.25 m, 2 deg); the same settle with no frames
    since leaves the seed at frame 0. One by one (`flow_catch_up_far` off) that is 4 hops; far, frame 1 first (the
    first seed's speed is unknown), then at 3 m/s frame 4 in one hop (0.9 m, within flow_max_step_m's 1 m): 2 hops.
    Frames 3-4 arriving only while it follows the first ones are followed too (a catch-up over the frames seen when
    it began would end at frame 2)."""
    from disam_ros.pose.features import to_grey
    from disam_ros.verify.config import VerifyConfig
    from disam_ros.verify.verifier import Verifier

    m, k, frames = flow_drive
    greys = [to_grey(rgb) for rgb, _, _ in frames]
    stamps = [1000.0 + 0.1 * i for i in range(len(frames))]
    seen = list(zip(stamps, greys))
    asked: list[float] = []

    def arriving(after: float) -> list:  # frames 1-2 seen when the catch-up starts, 3-4 on its next question
        asked.append(after)
        return [(t, g) for t, g in seen[1: 3 if len(asked) == 1 else 5] if t > after]

    hops = 2 if far else 4
    for since, last, n in ((lambda after: [], 0, 0), (lambda after: [f for f in seen[1:] if f[0] > after], 4, hops),
                           (arriving, 4, hops)):
        verifier = Verifier(m, VerifyConfig(flow_frames=30, flow_catch_up_far=far), max_speed_mps=15.0)
        cam, _ = verifier.camera_for(frames[0][0].shape[1], frames[0][0].shape[0])
        v = verifier.verify(frames[0][0], [k], stamp=stamps[0], keyframe=True)
        assert v.verified and verifier.chain.seed is None  # a keyframe leaves the chain to its caller
        verifier.chain.settle(v, greys[0], stamps[0], cam, since)
        seed = verifier.chain.seed
        assert seed.stamp == stamps[last] and seed.hops == n
        _, pos, quat = frames[last]
        assert float(np.linalg.norm(seed.position - pos)) < 0.25 and float(quat_angle_deg(seed.quat, quat)) < 2.0
    # asked again after each step (far) or pass (one by one), until nothing newer came
    assert asked == ([stamps[0], stamps[1], stamps[4]] if far else [stamps[0], stamps[2], stamps[4]])


def test_a_far_catch_up_step_that_does_not_verify_falls_back_to_the_next_frame(flow_drive):
    """Frame 4 replaced by a blank image (flow finds nothing there): the catch-up tries it from frames 1, 2 and 3
    and each time follows the next frame instead, so its seed ends at frame 3 after 3 hops, frame 3's pose."""
    from disam_ros.pose.features import to_grey
    from disam_ros.verify.config import VerifyConfig
    from disam_ros.verify.verifier import Verifier

    m, k, frames = flow_drive
    greys = [to_grey(rgb) for rgb, _, _ in frames]
    greys[4] = np.zeros_like(greys[4])
    seen = [(1000.0 + 0.1 * i, g) for i, g in enumerate(greys)]
    verifier = Verifier(m, VerifyConfig(flow_frames=30), max_speed_mps=15.0)
    cam, _ = verifier.camera_for(frames[0][0].shape[1], frames[0][0].shape[0])
    v = verifier.verify(frames[0][0], [k], stamp=seen[0][0], keyframe=True)
    verifier.chain.settle(v, greys[0], seen[0][0], cam, lambda after: [f for f in seen[1:] if f[0] > after])
    seed = verifier.chain.seed
    assert seed.stamp == seen[3][0] and seed.hops == 3
    _, pos, quat = frames[3]
    assert float(np.linalg.norm(seed.position - pos)) < 0.25 and float(quat_angle_deg(seed.quat, quat)) < 2.0


def test_keyframes_count_those_that_verified(flow_drive):
    """Three keyframes through the thread: frame 0 against the map image it was rendered beside (verifies), frame 1
    against the two map images farthest from it only (cannot), frame 2 against the right one again: 3 solved, 2
    verified, in the diagnostics and in `times`; a reset keeps both counts (they are totals, the times are per
    drive)."""
    from disam_ros.tracking.keyframes import Keyframe, KeyframeThread
    from disam_ros.verify.config import VerifyConfig
    from disam_ros.verify.verifier import Verifier

    m, k, frames = flow_drive
    far = [int(j) for j in np.argsort(-np.linalg.norm(m.positions - m.positions[k], axis=1))[:2]]
    kf = KeyframeThread(Verifier(m, VerifyConfig(flow_frames=0)))
    try:
        answers = []
        for i, ks in enumerate(([k], far, [k])):
            job = Keyframe(frames[i][0], None, ks, None, 1000.0 + 0.1 * i, dense=False)
            assert kf.submit(job)
            answers.append(kf.wait(job, 120.0))
        assert [a.verified for a in answers] == [True, False, True], [a.outcome for a in answers]
        diag = kf.diagnostics()
        assert (diag["keyframes_solved"], diag["keyframes_verified"]) == (3, 2)
        assert kf.times()[:2] == (3, 2)
        assert kf.reset() and kf.times() == (3, 2, [])
    finally:
        kf.close()


@pytest.mark.parametrize("budget", [0.0, 1e-6])
def test_the_time_box_stops_after_the_first_candidate(flow_drive, budget):
    """Candidates far from the camera come first and the right one last: without a time box the right one
    verifies the frame; with a spent one only the first candidate's first look runs (no full-scale SIFT, no later
    step), and the answer says it timed out."""
    from disam_ros.verify.config import VerifyConfig
    from disam_ros.verify.verifier import Verifier

    m, k, frames = flow_drive
    far = [j for j in np.argsort(-np.linalg.norm(m.positions - m.positions[k], axis=1))[:2]]
    width = frames[0][0].shape[1]  # the look runs at half scale on these frames
    verifier = Verifier(m, VerifyConfig(budget_ms=budget, flow_frames=0, min_width_px=width // 2,
                                        first_min_width_px=width // 2))
    v = verifier.verify(frames[0][0], [*far, k])
    if budget == 0.0:
        assert v.verified and v.index == k and not v.timed_out
    else:
        assert not v.verified and v.timed_out
        tried = [(a.index, a.scale) for a in v.attempts]
        assert tried == [(int(far[0]), 0.5)], tried  # the first candidate's look only: no full-scale SIFT after it


def test_keyframe_parameters_are_checked():
    from disam_ros.ros.node_params import check_value
    from disam_ros.tracking.tracker_config import TrackerConfig

    for name in ("verify_wait_ms", "verify_budget_ms"):
        assert check_value(name, 25.0) == 25.0
        with pytest.raises(ValueError, match=f"{name} must be >= 0"):
            check_value(name, -1.0)
    with pytest.raises(ValueError, match="keyframe_wait_ms"):
        TrackerConfig(keyframe_wait_ms=-1.0)


def test_the_keyframe_thread_s_chains_follow_with_their_own_lucas_kanade_patch(flow_drive, monkeypatch):
    """Beside the frame loop flow follows with `keyframe_flow_window_px` (11 by default, 15 set), inline with the
    verifier's `flow_window_px` (21): the patch every Lucas-Kanade call was given, recorded; and frames 2-4 are
    followed by flow within (0.25 m, 2 deg) of where they were rendered either way."""
    from disam_ros.tracking.tracker import Tracker, TrackerConfig
    from disam_ros.verify import flow

    m, _, frames = flow_drive
    lk, windows = flow.cv2.calcOpticalFlowPyrLK, []

    def recorded(*args, **kwargs):
        windows.append(kwargs["winSize"])
        return lk(*args, **kwargs)

    monkeypatch.setattr(flow.cv2, "calcOpticalFlowPyrLK", recorded)
    for config, window in (({}, 11), ({"keyframe_flow_window_px": 15}, 15)):
        windows[:] = []
        steps = _drive(m, frames, keyframe_wait_ms=0.0, **config)
        assert windows and set(windows) == {(window, window)}
        for i in (2, 3, 4):
            assert steps[i].result.verification.flow and _near(steps[i].result, *frames[i][1:])
    windows[:] = []
    reloc = _relocalizer(m)
    tracker = Tracker(reloc, TrackerConfig(mode="sequence"))
    try:
        steps = [tracker.step(rgb, 1000.0 + 0.1 * i) for i, (rgb, _, _) in enumerate(frames)]
    finally:
        tracker.close()
        reloc.map.close()
    assert windows and set(windows) == {(21, 21)} and steps[2].result.verification.flow
    with pytest.raises(ValueError, match="keyframe_flow_window_px=10"):
        TrackerConfig(keyframe_flow_window_px=10)


def test_a_keyframe_far_from_the_pose_the_chain_published_for_its_frame_ends_the_chain(flow_drive):
    """flow_keyframe_check_m 0.3: frame 0 solved inline seeds the chain, which follows frames 1-2 by real flow
    (each within 0.25 m of where it was rendered). A keyframe answered late for frame 2 within 0.1 m of the chain's
    pose there leaves the chain on (nothing newer to follow: the seed stays frame 2's); the same keyframe moved
    0.5 m ends it, unseeded (the next keyframe decides); with the check off (0) that one leaves the chain on too."""
    from dataclasses import replace

    from disam_ros.pose.features import to_grey
    from disam_ros.verify.config import VerifyConfig
    from disam_ros.verify.verifier import Verifier

    m, k, frames = flow_drive
    greys = [to_grey(rgb) for rgb, _, _ in frames]
    stamps = [1000.0 + 0.1 * i for i in range(len(frames))]

    def chain_at_frame_2(check_m: float):
        verifier = Verifier(m, VerifyConfig(flow_frames=30, flow_keyframe_check_m=check_m), max_speed_mps=15.0)
        cam, _ = verifier.camera_for(frames[0][0].shape[1], frames[0][0].shape[0])
        assert verifier.verify(frames[0][0], [k], stamp=stamps[0]).verified  # inline: seeds the chain
        flows = [verifier.chain.follow(greys[i], stamps[i], cam, catch_up=True) for i in (1, 2)]  # speed unknown
        for v, (_, pos, quat) in zip(flows, frames[1:3]):
            assert v is not None and v.verified and _near(v, pos, quat)
        return verifier.chain, cam, flows[-1]

    for check_m, shift_m, ends in ((0.3, 0.1, False), (0.3, 0.5, True), (0.0, 0.5, False)):
        chain, cam, published = chain_at_frame_2(check_m)
        keyframe = replace(published, flow=False, position=published.position + [shift_m, 0.0, 0.0])
        chain.settle(keyframe, greys[2], stamps[2], cam, lambda after: [], drive=chain.drive)
        assert (chain.seed is None) == ends, (check_m, shift_m)
        if not ends:
            assert chain.seed.stamp == stamps[2]


def test_a_keyframe_measures_the_chain_s_drift_which_widens_the_flow_poses_covariance(flow_drive, monkeypatch):
    """Keyframes measuring from 2 frames on (DRIFT_MIN_HOPS patched; the drive has 5 frames): the chain follows
    frames 1-2 from frame 0; a keyframe for frame 2 lands 0.3 m from the chain's pose there (below the 0.5 m check),
    so the drive drifts 0.3 / 2 = 0.15 m a frame. Its seed (frame 2) follows frames 3 and 4, and their position
    variance holds (0.15 x frames followed)^2 of drift: the same flow step with no drift differs by exactly that.
    From 3 frames on, the 2-frame keyframe measures nothing: the drift stays flow_drift_m."""
    from dataclasses import replace

    from disam_ros.pose.features import to_grey
    from disam_ros.verify import flow_chain
    from disam_ros.verify.config import VerifyConfig
    from disam_ros.verify.flow import flow_attempt
    from disam_ros.verify.verifier import Verifier

    m, k, frames = flow_drive
    greys = [to_grey(rgb) for rgb, _, _ in frames]
    stamps = [1000.0 + 0.1 * i for i in range(len(frames))]
    cfg = VerifyConfig(flow_frames=30)
    for min_hops, drift in ((2, 0.15), (3, cfg.flow_drift_m)):
        monkeypatch.setattr(flow_chain, "DRIFT_MIN_HOPS", min_hops)
        verifier = Verifier(m, cfg, max_speed_mps=15.0)
        chain = verifier.chain
        cam, _ = verifier.camera_for(frames[0][0].shape[1], frames[0][0].shape[0])
        assert verifier.verify(frames[0][0], [k], stamp=stamps[0]).verified
        published = [chain.follow(greys[i], stamps[i], cam, catch_up=True) for i in (1, 2)][-1]
        assert published is not None and published.hops == 2
        keyframe = replace(published, flow=False, position=published.position + [0.3, 0.0, 0.0])
        chain.settle(keyframe, greys[2], stamps[2], cam, lambda after: [], drive=chain.drive)
        assert chain.seed is not None and chain.seed.stamp == stamps[2] and chain.seed.hops == 0
        assert chain.drift_m == pytest.approx(drift, rel=1e-6)
        for i, hops in ((3, 1), (4, 2)):
            undrifted = flow_attempt(chain.seed, greys[i], cam, cfg, drift_m=0.0)  # the same flow step, no drift
            v = chain.follow(greys[i], stamps[i], cam, catch_up=True)
            assert v is not None and v.verified and v.hops == hops
            added = v.covariance[:3, :3] - undrifted.covariance[:3, :3]
            np.testing.assert_allclose(added, np.eye(3) * (drift * hops) ** 2, atol=1e-12)
        chain.reset()
        assert chain.drift_m == cfg.flow_drift_m  # a new drive starts from the floor


@pytest.mark.parametrize("max_age_s", [2.0, 0.05])
def test_a_keyframe_verified_after_a_later_frame_moved_the_belief_narrows_it_more_loosely(flow_drive, monkeypatch,
                                                                                        max_age_s):
    """Frame 0's keyframe is held back (its solve waits on an event) until frame 1 has moved the belief, so it comes
    back 0.1 s behind the belief's present. The camera can have moved 15 m/s x 0.1 s = 1.5 m since, so the verified
    position (frame 0's, within 0.25 m) narrows the belief with sigma hypot(2.0, 1.5) = 2.5 m; with
    `late_keyframe_max_age_s` 0.05 a keyframe that old says nothing (the rule before it, for a keyframe no frame
    passed)."""
    import threading

    from disam_ros.tracking.keyframes import KeyframeThread
    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    m, _, frames = flow_drive
    release, solve = threading.Event(), KeyframeThread._solve

    def held(self, job):
        assert release.wait(60.0)
        return solve(self, job)

    monkeypatch.setattr(KeyframeThread, "_solve", held)
    reloc = _relocalizer(m)
    tracker = Tracker(reloc, TrackerConfig(mode="sequence", keyframes=True, keyframe_wait_ms=0.0,
                                           late_keyframe_max_age_s=max_age_s))
    seen: list[tuple[np.ndarray, float]] = []
    observe = tracker._seq.observe_position
    monkeypatch.setattr(tracker._seq, "observe_position",
                        lambda pos, sigma, *a, **k: (seen.append((np.array(pos), sigma)), observe(pos, sigma, *a, **k)))
    try:
        tracker.step(frames[0][0], 1000.0)
        tracker.step(frames[1][0], 1000.1)  # the thread is busy: frame 1 goes out on retrieval and moves the belief
        assert seen == []
        release.set()
        _drain(tracker)
        late = tracker.step(frames[2][0], 1000.2).late
    finally:
        release.set()
        tracker.close()
        reloc.map.close()
    assert [a.stamp for a in late] == [1000.0] and _near(late[0].result, *frames[0][1:])
    late_seen = [(p, s) for p, s in seen if s != tracker.config.verify.belief_sigma_m]
    if max_age_s == 2.0:
        assert len(late_seen) == 1 and late_seen[0][1] == pytest.approx(2.5, abs=1e-9)
        assert float(np.linalg.norm(late_seen[0][0] - frames[0][1])) < 0.25
    else:
        assert late_seen == []


def test_late_keyframe_max_age_is_checked():
    from disam_ros.tracking.tracker_config import TrackerConfig

    with pytest.raises(ValueError, match="late_keyframe_max_age_s"):
        TrackerConfig(late_keyframe_max_age_s=-0.1)


def test_run_share_is_the_time_run_over_the_time_runnable():
    from disam_ros.tracking.keyframes import run_share

    assert run_share((100, 50), (400, 150)) == pytest.approx(0.75)  # ran 300 ns, waited 100 ns for the CPU
    assert run_share((100, 50), (100, 50)) == 1.0  # never runnable (it slept): not starved
    assert run_share(None, (1, 1)) is None and run_share((1, 1), None) is None  # not Linux: unknown


def test_a_keyframe_thread_beside_busy_processes_on_its_core_says_it_is_starved(flow_drive, monkeypatch, caplog):
    """Each solve burns 10 ms of its own CPU on one core that three busy processes also run on, while the thread
    sits 10 nice levels below them: CFS gives it ~3.5 % of the core (110 / (3 x 1024 + 110)), so it runs for well
    under STARVED_SHARE of the time it is runnable. After STARVED_KEYFRAMES such keyframes the thread warns once,
    naming the fix, and diagnostics give the share and the time on a CPU; a reset forgets both. (At the busy
    processes' own nice level it would get a quarter: the test skips where it cannot sit below them.)"""
    import logging
    import subprocess
    import sys

    from disam_ros.tracking import keyframes as kf_mod
    from disam_ros.tracking.keyframes import Keyframe, KeyframeThread, sched_times
    from disam_ros.verify.config import VerifyConfig
    from disam_ros.verify.verifier import Verification, Verifier

    if sched_times() is None:
        pytest.skip("no /proc/thread-self/schedstat (not Linux): the share is not measured")
    if kf_mod.NICE - os.getpriority(os.PRIO_PROCESS, 0) < 3:  # 3 levels below three busy processes: < 15 %
        pytest.skip(f"the tests run at nice > {kf_mod.NICE - 3}: the keyframe thread cannot sit well below the busy "
                    "processes")
    cpu = min(os.sched_getaffinity(0))

    def burn(s: float) -> None:
        os.sched_setaffinity(0, {cpu})  # this thread only
        end = time.thread_time() + s
        while time.thread_time() < end:
            pass

    def verify(self, job):
        burn(0.01)
        return Verification("too_few_inliers", ms=10.0)

    m, _, frames = flow_drive
    monkeypatch.setattr(KeyframeThread, "_verify", verify)
    monkeypatch.setattr(KeyframeThread, "_renew_chain", lambda self, job, answer: burn(0.005))  # the catch-up
    hogs = [subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
            for _ in range(3)]
    thread = KeyframeThread(Verifier(m, VerifyConfig(flow_frames=30), max_speed_mps=15.0))
    try:
        time.sleep(0.2)  # the busy processes are running
        with caplog.at_level(logging.WARNING, logger=kf_mod.__name__):
            for i in range(kf_mod.STARVED_KEYFRAMES + 1):
                job = Keyframe(frames[0][0], None, [0], None, 1000.0 + i, False)
                assert thread.submit(job) and thread.wait(job, 30.0) is not None
        diag = thread.diagnostics()
        assert 0.0 <= diag["keyframe_cpu_share"] < kf_mod.STARVED_SHARE
        assert 14.5 <= diag["keyframe_run_ms_median"] < 30.0  # 10 + 5 ms burnt on the CPU, however long it waited
        assert 9.5 <= diag["keyframe_verify_run_ms_median"] < 15.0  # of them the verification's 10
        each = [float(x) for x in diag["keyframe_verify_run_ms_recent"].split()]  # each keyframe's, listed
        assert len(each) == kf_mod.STARVED_KEYFRAMES + 1 and all(9.5 <= x < 15.0 for x in each)
        starved = [r.getMessage() for r in caplog.records if "starved" in r.getMessage()]
        assert len(starved) == 1 and "core of its own" in starved[0]  # once: warnings are spaced
        gone = {"keyframe_cpu_share", "keyframe_run_ms_median", "keyframe_verify_run_ms_median",
                "keyframe_verify_run_ms_recent"}
        assert thread.reset() and not gone & set(thread.diagnostics())
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        thread.close()
