"""Standstill detection (tracking/standstill.py) and the filter's hold step, against hand-worked values."""
from __future__ import annotations

import numpy as np
import pytest

from disam_ros.tracking.place_graph import PlaceGraph
from disam_ros.tracking.sequence import ObservationModel, SequenceConfig, SequenceLocalizer
from disam_ros.tracking.standstill import THUMB, StandstillDetector, frame_difference, thumbnail


def grey(value: float, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    return np.full((*shape, 3), value, dtype=np.uint8)


def test_thumbnail_and_difference_of_flat_frames():
    t = thumbnail(grey(10))
    assert t.shape == (THUMB[1], THUMB[0]) and float(t.mean()) == pytest.approx(10.0)
    assert frame_difference(t, thumbnail(grey(13))) == pytest.approx(3.0)
    half = grey(0)
    half[:, 32:] = 200  # half the pixels differ by 200: mean absolute difference 100
    assert frame_difference(thumbnail(grey(0)), thumbnail(half)) == pytest.approx(100.0)


def test_still_only_below_the_ratio_of_the_median_moving_step():
    det = StandstillDetector(ratio=0.1, history=20, min_history=5)
    # steps 4, 6, 5, 4, 6 (moving; median 5 once five are seen), then 0 before that would be "no history"
    values = [100, 104, 110, 115, 111, 117]
    assert [det(grey(v)) for v in values] == [False] * 6
    assert det.typical_step() == pytest.approx(5.0)
    assert det(grey(117)) is True  # 0 < 0.1 * 5
    assert det.typical_step() == pytest.approx(5.0)  # a still frame does not enter the moving history
    assert det(grey(118)) is False  # 1 >= 0.5: moving, and it enters the history: median of 4,6,5,4,6,1 = 4.5
    assert det.typical_step() == pytest.approx(4.5)


def test_no_decision_without_history_and_after_reset():
    det = StandstillDetector(ratio=0.1, min_history=5)
    assert [det(grey(50)) for _ in range(4)] == [False] * 4  # identical frames, but no moving step seen yet
    for v in (60, 70, 80, 90, 100):
        det(grey(v))
    assert det(grey(100)) is True
    det.reset()
    assert det(grey(100)) is False and det.typical_step() is None
    with pytest.raises(ValueError, match="standstill ratio"):
        StandstillDetector(ratio=1.0)
    off = StandstillDetector(ratio=0.0)
    assert not any(off(grey(v)) for v in (1, 2, 3, 4, 5, 6, 6, 6, 6))


def chain(n: int = 5, spacing: float = 10.0) -> PlaceGraph:
    return PlaceGraph.build(np.stack([spacing * np.arange(n), np.zeros(n), np.zeros(n)], 1))


def test_hold_keeps_places_and_mixes_only_the_teleport_share():
    cfg = SequenceConfig(teleport_prob=0.02, speed_change_prob=0.1, speed_bins=3, max_speed_mps=20.0)
    loc = SequenceLocalizer(chain(), cfg, ObservationModel(gain=1.0))
    assert loc.hold(0.0) is None  # nothing to hold before the first frame
    loc.update(np.array([0.0, 0.0, 3.0, 0.0, 0.0]), 0.0)
    before = loc.posterior()
    est = loc.hold(0.5)
    # zero-distance motion: every place keeps its mass, speed bins only exchange among themselves; then the
    # uniform teleport share: p' = (1 - eps) p + eps / N
    np.testing.assert_allclose(loc.posterior(), 0.98 * before + 0.02 / 5, rtol=1e-12)
    assert est.index == 2 and est.stamp == 0.5 and est.reinitialised == ""
    assert loc.hold(100.0) is None  # a stamp gap past max_gap_s is a restart, not a stop
    assert loc.hold(0.2) is None  # nor is a stamp going back


def test_hold_in_window_mode_skips_the_frame():
    cfg = SequenceConfig(mode="window", window_frames=3, window_speeds=3, max_speed_mps=30.0)
    frames = [np.eye(5)[i] * 3.0 for i in (0, 1, 2, 3)]
    a = SequenceLocalizer(chain(), cfg, ObservationModel(gain=1.0))
    b = SequenceLocalizer(chain(), cfg, ObservationModel(gain=1.0))
    a.update(frames[0], 0.0), a.update(frames[1], 0.5)
    held = a.hold(1.0)
    assert held.index == 1  # the answer of the last frame
    last_a = a.update(frames[2], 1.5)
    b.update(frames[0], 0.0), b.update(frames[1], 0.5)
    last_b = b.update(frames[2], 1.5)  # the same stream without the held frame
    assert last_a.index == last_b.index == 2 and last_a.mass == pytest.approx(last_b.mass)
    single = SequenceLocalizer(chain(), SequenceConfig(mode="single"), ObservationModel(gain=1.0))
    single.update(frames[0], 0.0)
    assert single.hold(0.5) is None


def test_hold_over_a_known_distance_moves_the_belief_by_it():
    """A frame placed by other means (optical flow from the last verified pose) holds with the distance it moved:
    on a chain of places 10 m apart, 20 m (odometry band 20 +- 2 x (0.3 + 2.0) m, so only the place two ahead is
    reachable) shifts every place's mass two places on; what drives off the open end is dropped, the rest is
    renormalised and mixed with the teleport share, p' = 0.98 q + 0.02 / 5. The best place is then two ahead and,
    having moved as far as it was told, the answer counts as consistent."""
    cfg = SequenceConfig(teleport_prob=0.02, speed_change_prob=0.1, speed_bins=3, max_speed_mps=20.0)
    loc = SequenceLocalizer(chain(), cfg, ObservationModel(gain=1.0))
    loc.update(np.array([3.0, 0.0, 0.0, 0.0, 0.0]), 0.0)
    p = loc.posterior()
    est = loc.hold(0.5, 20.0)
    q = np.r_[0.0, 0.0, p[:3]] / p[:3].sum()
    np.testing.assert_allclose(loc.posterior(), 0.98 * q + 0.02 / 5, rtol=1e-12)
    assert est.index == 2 and est.consistent_frames == 2
    still = SequenceLocalizer(chain(), cfg, ObservationModel(gain=1.0))
    still.update(np.array([3.0, 0.0, 0.0, 0.0, 0.0]), 0.0)
    assert still.hold(0.5, 0.0).index == 0  # the default distance is a standstill's
