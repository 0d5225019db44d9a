"""verify/order.StepOrder, frame by frame by hand: which steps a frame runs after the frames before it, and that a
keyframe answered only by map-point tracking (`tracked`) leaves both counts where they were (at night, tracking
answers every other keyframe from the dense search's points; counted as SIFT verifying, it kept the dense search
last)."""
from __future__ import annotations

import pytest

from disam_ros.verify.config import VerifyConfig
from disam_ros.verify.order import StepOrder


def _frame(order: StepOrder, sift_verified: bool, dense_verified: bool, tracked: bool = False) -> tuple[bool, bool]:
    """One frame through the order's questions as Verifier._steps asks them; returns (dense first, SIFT ran)."""
    order.begin()
    first = order.dense_first()
    if first and dense_verified:
        order.dense_verified()
        return True, False
    ran = order.sift()
    if ran:
        order.sift_ran(sift_verified or tracked, tracked=tracked and not sift_verified)
    if not (ran and (sift_verified or tracked)) and dense_verified:
        order.dense_verified()
    return first, ran


def test_dense_only_frames_put_the_dense_search_first_and_tracked_frames_do_not_interrupt_the_run():
    order = StepOrder(VerifyConfig(gradient_first_after=2, gradient_first_probe_every=4, gradient_skip_sift_after=0))
    assert _frame(order, False, True) == (False, True)  # 1 frame only the dense search verified
    assert _frame(order, False, False, tracked=True) == (False, True)  # tracking only: still 1
    assert order.dense_only == 1 and order.last == "usual"
    assert _frame(order, False, True) == (False, True)  # 2
    # n counted so far: first unless (n - 2 + 1) % 4 == 0, i.e. n = 2, 3, 4 first, n = 5 the probe
    assert _frame(order, False, True) == (True, False) and order.last == "dense first"
    assert [_frame(order, False, True) for _ in range(3)] == [(True, False), (True, False), (False, True)]
    assert order.last == "usual" and order.dense_only == 6  # the probe's SIFT failed, the dense search verified
    # a frame SIFT verified against the map ends the run
    _frame(order, True, False)
    assert order.dense_only == 0 and _frame(order, False, True) == (False, True)


def test_keyframes_that_needed_full_scale_sift_put_the_dense_search_first_for_keyframes_only():
    """The keyframe rule (`keyframe_dense_after_full` 1, probe every 3rd): a keyframe verified only with the full-scale
    features counts, as does one only the dense search verified; a half-scale look that verified ends the run, and
    so does a keyframe optical flow posed."""
    order = StepOrder(VerifyConfig(gradient_first_after=0, keyframe_dense_after_full=1, gradient_first_probe_every=3,
                                   gradient_skip_sift_after=0))

    def keyframe(full: bool = False, look: bool = False, dense: bool = False, inline: bool = False) -> bool:
        order.begin()
        first = order.dense_first(keyframe=not inline)
        if first and dense:
            order.dense_verified()
            return True
        order.sift_ran(full or look, full=full)
        return first

    assert keyframe(full=True) is False and order.dear == 1  # 1 counted: the rule is due from here ...
    assert keyframe(full=True, inline=True) is False  # ... for keyframes only
    assert order.dear == 2
    # n = 2, 3 first; (n - 1 + 1) % 3 == 0 at n = 3: the probe keeps the usual order
    assert keyframe(dense=True) is True and order.last == "dense first" and order.dear == 3
    assert keyframe(full=True) is False and order.last == "usual" and order.dear == 4  # the probe, full scale again
    assert keyframe(dense=True) is True and keyframe(dense=True) is True and order.dear == 6
    order.begin()
    assert order.dense_first(keyframe=True) is False  # n = 6: a probe ...
    order.sift_ran(True, full=False)  # ... that the half-scale look verified: the run ends
    assert order.dear == 0 and keyframe(full=True) is False
    order.sift_ran(False, full=True)  # full-scale features that verified nothing leave the count
    assert order.dear == 1 and order.dense_first(keyframe=True) is True
    order.flow_follows()  # a keyframe flow posed: the drive is followed, SIFT's poses start the chains
    assert order.dear == 0 and order.dense_first(keyframe=True) is False
    off = StepOrder(VerifyConfig(gradient_first_after=0, keyframe_dense_after_full=0))
    off.sift_ran(True, full=True)
    assert off.dense_first(keyframe=True) is False


def test_tracked_frames_neither_count_as_sift_failures_nor_end_a_run_of_them():
    order = StepOrder(VerifyConfig(gradient_first_after=0, gradient_skip_sift_after=2, gradient_first_probe_every=2))
    assert _frame(order, False, False) == (False, True)  # SIFT failed: 1
    assert _frame(order, False, False, tracked=True) == (False, True)  # tracked: still 1
    assert order.sift_fails == 1
    assert _frame(order, False, False) == (False, True)  # 2
    assert _frame(order, False, True) == (False, False) and order.last == "SIFT skipped"  # 1st skip
    assert _frame(order, False, True) == (False, True)  # 2nd skip is a probe


def test_a_blind_look_is_hopeless_in_the_dark_or_in_clutter_and_not_otherwise():
    import numpy as np

    from disam_ros.pose.features import SiftConfig
    from disam_ros.verify.first_look import FirstLook

    cfg, sift = VerifyConfig(keyframe_dense_dark=64.0, keyframe_dense_clutter=0.5), SiftConfig(nfeatures=2000)
    dark, bright = np.full((4, 4, 3), 63, np.uint8), np.full((4, 4, 3), 64, np.uint8)  # mean grey 63 / 64
    look = FirstLook(cfg)
    look.keypoints = 5000
    assert look.hopeless(dark, sift) == ""  # the looks saw something (no misses): never hopeless
    look.misses, look.keypoints = 1, 999
    assert look.hopeless(dark, sift) == "dark" and look.hopeless(bright, sift) == ""
    look.keypoints = 1000  # 0.5 x 2000
    assert look.hopeless(bright, sift) == "cluttered" and look.hopeless(dark, sift) == "cluttered"
    unlimited = SiftConfig(nfeatures=0)  # read against the default recipe's 2,000, not as 0 (everything clutter)
    look.keypoints = 999
    assert look.hopeless(bright, unlimited) == ""
    look.keypoints = 1000
    assert look.hopeless(bright, unlimited) == "cluttered"
    off = FirstLook(VerifyConfig(keyframe_dense_dark=0.0, keyframe_dense_clutter=2.0))
    off.misses, off.keypoints = 1, 1000
    assert off.hopeless(dark, sift) == ""
    look.reset()
    assert (look.misses, look.keypoints) == (0, 0)


def test_the_half_scale_features_keep_the_strongest_first_max_keypoints_and_clutter_still_reads_at_the_cap():
    """Blotchy noise (snow-like clutter) has far more SIFT keypoints at half scale than the cap: detection keeps the
    1,000 strongest (those a full count holds, by response), and at the cap the clutter sign (0.5 x 2,000) reads."""
    import cv2
    import numpy as np

    from disam_ros.pose.features import SiftConfig, detect_sift
    from disam_ros.verify.first_look import FirstLook, half_sift

    rgb = cv2.resize(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8), (640, 480))
    sift = SiftConfig(nfeatures=2000)
    capped, uncapped = half_sift(sift, VerifyConfig(), rgb), half_sift(sift, VerifyConfig(first_max_keypoints=0), rgb)
    assert (capped.nfeatures, uncapped.nfeatures, capped.scale) == (1000, 2000, uncapped.scale)
    assert half_sift(SiftConfig(nfeatures=0), VerifyConfig(), rgb).nfeatures == 1000  # an unlimited recipe too
    assert half_sift(SiftConfig(nfeatures=500), VerifyConfig(), rgb).nfeatures == 500  # a smaller recipe rules
    few, full = detect_sift(rgb, capped), detect_sift(rgb, uncapped)
    assert len(few) == 1000 and len(full) >= 1900
    strongest = np.sort(full.responses)[::-1][:1000]
    assert float(np.min(few.responses)) >= float(strongest[-1]) - 1e-6  # the weakest kept is among the 1,000 best
    look = FirstLook(VerifyConfig())
    look.misses, look.keypoints = 1, len(few)
    assert look.hopeless(rgb, sift) == "cluttered"
    with pytest.raises(ValueError, match="first_max_keypoints"):
        VerifyConfig(first_max_keypoints=5)  # fewer than min_inliers: no look could verify
