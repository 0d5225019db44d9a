"""SeqSLAM-style window matcher: path sums worked by hand, speed choice, drive boundaries, reset."""
from __future__ import annotations

import numpy as np
import pytest

from disam_ros.tracking.place_graph import PlaceGraph
from disam_ros.tracking.window import ShiftedNearest, WindowMatcher, nearest_slots, path_sums


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


def test_path_sums_match_brute_force_on_uneven_drives():
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
    assert path_sums(g, frames, stamps, speeds) == pytest.approx(want, abs=1e-12)


def test_shifted_nearest_is_the_search_exactly_even_at_ties_and_repeated_places():
    rng = np.random.default_rng(5)
    for _ in range(100):
        steps = rng.choice([0.0, 0.01, 0.3, 1.0, 2.5], size=int(rng.integers(2, 200)), p=[0.15, 0.05, 0.2, 0.5, 0.1])
        u = np.cumsum(steps) + rng.uniform(-5, 5)
        table = ShiftedNearest(u, float(rng.choice([0.125, 0.5, 1.0])))
        # random shifts, and shifts that put keys exactly on places and on midpoints between them
        for c in rng.uniform(0, 12, 4).tolist() + [0.0, 0.15, 0.5, 1.0, 1.25, 2.5]:
            assert table(c).tolist() == nearest_slots(u, u - c).tolist()
