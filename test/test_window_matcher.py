"""SeqSLAM-style window matcher: path sums worked by hand, speed choice, drive boundaries, reset, the speed grid."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from disam_ros.maps.observation import ObservationModel
from disam_ros.tracking.place_graph import PlaceGraph
from disam_ros.tracking.sequence import SequenceConfig, SequenceLocalizer
from disam_ros.tracking.window import (
    MAX_GRID_SPEEDS,
    ShiftedNearest,
    WindowMatcher,
    nearest_slots,
    path_sums,
    speed_grid,
)


def chain(n: int, spacing: float = 1.0) -> PlaceGraph:
    return PlaceGraph.build(np.array([[i * spacing, 0.0, 0.0] for i in range(n)]))


# three frames over five places, oldest first; entry [k, j] = 10 * k + j so every sum is readable
FRAMES = np.array([[10.0 * k + j for j in range(5)] for k in range(3)])
STAMPS = np.array([0.0, 1.0, 2.0])


def test_path_sums_at_one_place_per_frame_by_hand():
    # speed 1 m/s, 1 m spacing: the path ending at j passed j-1 one frame ago and j-2 two frames ago,
    # clamped at the start of the drive: sum = (20 + j) + (10 + j-1) + (0 + j-2)
    got = path_sums(chain(5), FRAMES, STAMPS, np.array([1.0]))
    want = [20 + 10 + 0, 21 + 10 + 0, 22 + 11 + 0, 23 + 12 + 1, 24 + 13 + 2]
    assert got.tolist() == want


def test_path_sums_take_the_best_speed():
    # speed 0 stays at j: 20 + j + 10 + j + j = 30 + 3j; speed 1 (above) gives 27 + 3j for j >= 2 and
    # 30, 31 at j = 0, 1: never more, so the max is speed 0's sum everywhere
    got = path_sums(chain(5), FRAMES, STAMPS, np.array([0.0, 1.0]))
    assert got.tolist() == [30 + 3 * j for j in range(5)]


def test_speed_is_metres_per_second_not_places_per_frame():
    # 2 m spacing, speed 2 m/s, frames 0.5 s apart: one metre per frame = half a spacing -> nearest place;
    # ties (exactly between two places) go to the earlier place: 1 m back from place j lies between j-1, j
    g = chain(5, spacing=2.0)
    got = path_sums(g, FRAMES, np.array([0.0, 0.5, 1.0]), np.array([2.0]))
    # at 1 s back: 2 m -> place j-1 exactly; at 0.5 s back: 1 m -> tie -> place j-1
    want = [20 + 10 + 0, 21 + 10 + 0, 22 + 11 + 1, 23 + 12 + 2, 24 + 13 + 3]
    assert got.tolist() == want


def test_paths_do_not_leave_their_drive():
    # two drives of three places each; a path on drive 1 clamps at its own first place, never drive 0
    pos = np.array([[float(i), 0.0, 0.0] for i in range(3)] + [[float(i), 50.0, 0.0] for i in range(3)])
    g = PlaceGraph.build(pos, drives=np.repeat([0, 1], 3))
    frames = np.array([[0, 0, 0, 100, 0, 0], [0, 0, 0, 0, 0, 0.0]])
    got = path_sums(g, frames, np.array([0.0, 5.0]), np.array([1.0]))  # 5 m back: clamped at each start
    assert got.tolist() == [0, 0, 0, 100, 100, 100]


def test_matcher_keeps_the_last_frames_and_resets():
    m = WindowMatcher(chain(5), frames=2, speeds=np.array([1.0]))
    for k in range(3):
        out = m.push(FRAMES[k], STAMPS[k])
    assert len(m) == 2
    # only frames 1 and 2 remain: (20 + j) + (10 + j - 1), clamped at the start
    assert out.tolist() == [30, 31, 33, 35, 37]
    m.reset()
    assert len(m) == 0 and m.push(FRAMES[0], 0.0).tolist() == FRAMES[0].tolist()
    with pytest.raises(ValueError, match="window length"):
        WindowMatcher(chain(3), frames=0, speeds=np.array([1.0]))


def brute_nearest(u: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Index of the nearest u for each q by comparing against every u (the first of equals)."""
    return np.argmin(np.abs(u[None, :] - q[:, None]), axis=1)


@pytest.mark.parametrize("block", [1, 400, 1 << 20])  # blocks of one shift, of three (a speed across two), of all
def test_path_sums_match_brute_force_on_uneven_drives(block, monkeypatch):
    import disam_ros.tracking.window as window

    monkeypatch.setattr(window, "PATH_BLOCK", block)
    rng = np.random.default_rng(4)
    pos, drv = [], []
    for d in range(3):  # three drives of uneven steps (0.3-2 m), partly side by side
        x = rng.uniform(0, 5) + np.cumsum(rng.uniform(0.3, 2.0, int(rng.integers(20, 50))))
        pos.append(np.stack([x, np.full_like(x, 3.0 * d), np.zeros_like(x)], axis=1))
        drv.append(np.full(len(x), d))
    g = PlaceGraph.build(np.concatenate(pos), np.concatenate(drv))
    n, frames = len(g), rng.normal(0, 1, (7, len(g)))
    stamps = np.cumsum(rng.uniform(0.2, 1.5, 7))
    speeds = np.array([0.0, 0.7, 1.3, 2.9])
    want = np.full(n, -np.inf)
    for v in speeds:
        total = frames[-1].copy()
        for k in range(6):
            slot = brute_nearest(g.u, g.u - v * (stamps[-1] - stamps[k]))
            total += frames[k][np.clip(slot, g.start, g.end - 1)]
        want = np.maximum(want, total)
    np.testing.assert_array_equal(path_sums(g, frames, stamps, speeds), want)  # the same sums in the same order
    z = frames.astype(np.float32)  # the matcher's frames: float32 scores, summed in float64 in frame order
    want32 = np.full(n, -np.inf)
    for v in speeds:
        total = z[-1].astype(np.float64)
        for k in range(6):
            total += z[k][np.clip(brute_nearest(g.u, g.u - v * (stamps[-1] - stamps[k])), g.start, g.end - 1)]
        want32 = np.maximum(want32, total)
    np.testing.assert_array_equal(path_sums(g, z, stamps, speeds), want32)
    assert path_sums(g, frames[-1:], stamps[-1:], speeds).tolist() == frames[-1].tolist()  # one frame: its scores


def test_shifted_nearest_is_the_search_exactly_even_at_ties_and_repeated_places():
    rng = np.random.default_rng(5)
    for _ in range(100):
        steps = rng.choice([0.0, 0.01, 0.3, 1.0, 2.5], size=int(rng.integers(2, 200)), p=[0.15, 0.05, 0.2, 0.5, 0.1])
        u = np.cumsum(steps) + rng.uniform(-5, 5)
        table = ShiftedNearest(u, float(rng.choice([0.125, 0.5, 1.0])))
        # random shifts, and shifts that put keys exactly on places and on midpoints between them
        for c in rng.uniform(0, 12, 4).tolist() + [0.0, 0.15, 0.5, 1.0, 1.25, 2.5]:
            assert table.many([c])[0].tolist() == nearest_slots(u, u - c).tolist()
        shifts = rng.uniform(0, 12, 5)
        assert table.many(shifts).tolist() == [nearest_slots(u, u - c).tolist() for c in shifts]


def test_speed_grid_spaces_paths_one_map_spacing_apart_at_the_oldest_frame():
    # 1-37.5 m/s over a 20-frame window of 0.2 s frames (3.8 s) on 2.5 m places: 36.5 * 3.8 / 2.5 = 55.48 -> 56
    # steps, 57 speeds 36.5 / 56 = 0.652 m/s apart, whose paths part by 0.652 * 3.8 = 2.48 m <= 2.5 m at 3.8 s
    grid = speed_grid(1.0, 37.5, 3.8, 2.5)
    assert len(grid) == 57 and grid[0] == 1.0 and grid[-1] == 37.5
    assert np.diff(grid) * 3.8 == pytest.approx(np.full(56, 36.5 / 56 * 3.8)) and 36.5 / 56 * 3.8 <= 2.5
    # exactly one spacing per step needs no extra speed: 1-3 m/s over 19 s on 1 m places -> 38 steps, 39 speeds
    assert len(speed_grid(1.0, 3.0, 19.0, 1.0)) == 39
    # one frame (no time span) or a single speed: the band's lowest speed alone
    assert speed_grid(1.0, 37.5, 0.0, 2.5).tolist() == [1.0] and speed_grid(2.0, 2.0, 3.8, 2.5).tolist() == [2.0]
    assert len(speed_grid(0.0, 1000.0, 100.0, 0.1)) == MAX_GRID_SPEEDS


def test_window_follows_a_train_between_the_old_default_speeds():
    # 2.5 m places, 0.2 s frames, the train at 12.5 m/s (one place a frame) and a clean view of its place every
    # frame. The old default, nine speeds over 1-37.5 m/s, had 10.1 and 14.7 m/s nearest: over 20 frames their
    # paths drift 4.5 m off the train's, and the best path ended a place ahead while the window filled and two
    # places (5 m, the tolerance's edge) behind once it was full; the grid derived from the spacing has 12.4 m/s,
    # whose path stays on the train's place every frame.
    cfg = SequenceConfig(mode="window", max_speed_mps=37.5, window_frames=20)
    loc = SequenceLocalizer(chain(60, spacing=2.5), cfg, ObservationModel(gain=1.0))
    answers = [loc.update(np.eye(60)[k] * 3.0, 0.2 * k).index for k in range(40)]
    assert answers == list(range(40))
    assert len(loc.window.speeds) == 57
    # a count the user sets is kept as it is: the old default's nine speeds
    fixed = SequenceLocalizer(chain(60, spacing=2.5), replace(cfg, window_speeds=9), ObservationModel(gain=1.0))
    assert fixed.window.speeds.tolist() == np.linspace(1.0, 37.5, 9).tolist()
    off = [fixed.update(np.eye(60)[k] * 3.0, 0.2 * k).index - k for k in range(40)]
    assert off[19] == 1 and off[20:] == [-2] * 20


def test_a_capped_grid_says_its_paths_part_by_more_than_the_spacing(caplog):
    m = WindowMatcher(chain(5, spacing=0.1), frames=2, band=(0.0, 1000.0))
    m.push(np.zeros(5), 0.0)
    with caplog.at_level("WARNING", logger="disam_ros.tracking.window"):
        m.push(np.zeros(5), 100.0), m.push(np.zeros(5), 200.0)
    assert len(m.speeds) == MAX_GRID_SPEEDS
    assert [r.getMessage() for r in caplog.records] == [
        f"window speeds: 256 over 0-1e+03 m/s and 100 s leave paths {1000 / 255 * 100:.3g} m apart, more than the "
        "map spacing 0.1 m: lower max_speed_mps or window_frames, or set window_speeds"]
    with pytest.raises(ValueError, match="exactly one"):
        WindowMatcher(chain(3), frames=2)
