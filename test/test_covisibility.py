"""Triangulation partners chosen from poses (maps/covisibility.py): near in space, looking the same way, whatever
the order of the map images. Expected partners are worked out by hand from the layouts below."""
from __future__ import annotations

import numpy as np
import pytest

from disam_ros.maps.covisibility import choose_partners
from disam_ros.maps.geometry_build import GeometryPlan
from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.triangulate import View

PLUS_X = (1.0, 0.0, 0.0)


def _drive(n: int, step: float = 3.0, axis=PLUS_X) -> tuple[np.ndarray, np.ndarray]:
    """n cameras on the x axis, `step` metres apart, all looking along `axis`."""
    centres = np.zeros((n, 3))
    centres[:, 0] = step * np.arange(n)
    return centres, np.tile(np.asarray(axis, np.float64), (n, 1))


def _sets(partners: list[np.ndarray]) -> list[set[int]]:
    return [{int(j) for j in p} for p in partners]


def test_straight_drive_keeps_the_index_neighbours():
    """Frame 5 of 0..9 at 3 m spacing: 4 and 6 at 3 m, 3 and 7 at 6 m, then 2 and 8 at 9 m: k = 4 takes the
    first four, nearest first and the lower index first among equals. Frame 0 has only later frames: 1..4."""
    p = choose_partners(*_drive(10), k=4)
    assert p[5].tolist() == [4, 6, 3, 7]
    assert p[0].tolist() == [1, 2, 3, 4]
    assert p[9].tolist() == [8, 7, 6, 5]
    for i in range(2, 8):  # i +- 1, i +- 2: what the sliding window (neighbours=2) used
        assert set(p[i].tolist()) == {i - 2, i - 1, i + 1, i + 2}
    assert all(p.dtype == np.int64 for p in p)


def test_partners_follow_space_not_build_order():
    """A drive of 10 frames (x = 0, 3, ..., 27), then a second pass over the same road 1 m further on
    (x = 1, 4, ..., 28, indices 10..19), then the same 20 frames shuffled: partners are the same places."""
    first, axes = _drive(10)
    second = first + [1.0, 0.0, 0.0]
    centres = np.concatenate([first, second])
    axes = np.concatenate([axes, axes])
    p = choose_partners(centres, axes, k=4)
    # frame 10 (x = 1): frame 0 at 1 m, frame 1 (x = 3) at 2 m, frame 11 (x = 4) at 3 m, frame 2 (x = 6) at 5 m
    assert p[10].tolist() == [0, 1, 11, 2]
    # frame 5 (x = 15): 15 (x = 16) at 1 m, 14 (x = 13) at 2 m, 4 (x = 12) and 6 (x = 18) at 3 m (4 first),
    # then 16 (x = 19) at 4 m
    assert p[5].tolist() == [15, 14, 4, 6]
    # no frame here has a tie between its 4th and 5th nearest, so the sets cannot depend on the order
    perm = np.random.default_rng(3).permutation(len(centres))  # shuffled position s holds original frame perm[s]
    q = choose_partners(centres[perm], axes[perm], k=4)
    for s, orig in enumerate(perm):
        assert {int(perm[j]) for j in q[s]} == set(p[orig].tolist()), orig


def test_random_collection_matches_brute_force_and_any_order():
    """300 cameras scattered over 100 m with axes within ~60 degrees of +x: the rule computed from the full N x N
    distance and angle matrices by sorted(); then the same cameras in a random order give the same sets."""
    rng = np.random.default_rng(7)
    n, k = 300, 5
    centres = rng.uniform(-50, 50, (n, 3))
    axes = np.asarray(PLUS_X) + rng.normal(0.0, 0.6, (n, 3))
    unit = axes / np.linalg.norm(axes, axis=1, keepdims=True)
    dist = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    angle = np.degrees(np.arccos(np.clip(unit @ unit.T, -1.0, 1.0)))
    p = choose_partners(centres, axes, k=k, max_angle_deg=30.0)
    for i in range(n):
        want = sorted((dist[i, j], j) for j in range(n) if j != i and angle[i, j] <= 30.0 and dist[i, j] > 1e-3)
        assert p[i].tolist() == [j for _, j in want[:k]], i
    perm = rng.permutation(n)
    q = choose_partners(centres[perm], axes[perm], k=k, max_angle_deg=30.0)
    assert [{int(perm[j]) for j in q[s]} for s in range(n)] == [set(p[o].tolist()) for o in perm]


def test_opposite_view_and_same_position_are_never_partners():
    """Frame 1 stands where frame 0 stands looking the other way (180 degrees), frame 2 is frame 0 again
    (no baseline), frame 3 looks 46 degrees off at 2 m, frame 4 44 degrees off at 5 m, frame 5 the same way at 9 m."""
    def axis(deg: float) -> list[float]:
        return [np.cos(np.radians(deg)), np.sin(np.radians(deg)), 0.0]

    centres = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [2, 0, 0], [5, 0, 0], [9, 0, 0]], np.float64)
    axes = np.array([axis(0), axis(180), axis(0), axis(46), axis(44), axis(0)])
    p = choose_partners(centres, axes, k=4)
    assert p[0].tolist() == [4, 5]
    assert p[1].tolist() == []  # nobody else looks its way
    assert p[2].tolist() == [4, 5]
    assert p[3].tolist() == [4]  # 44 - 46 = 2 degrees apart; 0, 2 and 5 are 46 away
    assert choose_partners(centres, axes, k=0)[0].tolist() == []
    assert choose_partners(centres, axes, k=4, max_angle_deg=180.0)[0].tolist() == [3, 4, 5]  # still no baseline


def test_optical_axis_and_centre_come_from_the_stored_pose():
    """A camera optical frame with identity rotation looks along +z of the map; rotated 90 degrees about y
    (xyzw = (0, sin 45, 0, cos 45)) it looks along +x. View.R's third row is that axis, View.centre the position."""
    cam = Intrinsics(fx=100.0, fy=100.0, cx=50.0, cy=50.0, width=100, height=100)
    s = np.sqrt(0.5)
    v = View.from_pose(cam, np.array([1.0, 2.0, 3.0]), np.array([0.0, s, 0.0, s]))
    np.testing.assert_allclose(v.R[2], PLUS_X, atol=1e-12)
    np.testing.assert_allclose(v.centre, [1.0, 2.0, 3.0], atol=1e-12)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"centres": np.zeros((3, 2)), "axes": np.zeros((3, 2))}, "centres"),
    ({"centres": np.full((2, 3), np.nan), "axes": np.ones((2, 3))}, "NaN"),
    ({"centres": np.zeros((2, 3)), "axes": np.zeros((2, 3))}, "zero length"),
    ({"centres": np.zeros((2, 3)), "axes": np.ones((2, 3)), "k": -1}, "k="),
    ({"centres": np.zeros((2, 3)), "axes": np.ones((2, 3)), "max_angle_deg": 200.0}, "max_angle_deg"),
])
def test_bad_inputs_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        choose_partners(**kwargs)


def test_plan_refuses_partner_counts_the_track_mask_cannot_hold():
    cam = Intrinsics(fx=100.0, fy=100.0, cx=50.0, cy=50.0, width=100, height=100)
    assert GeometryPlan("triangulate", cam).partners == 4
    with pytest.raises(ValueError, match="partners"):
        GeometryPlan("triangulate", cam, partners=0)
    with pytest.raises(ValueError, match="partner_max_angle_deg"):
        GeometryPlan("triangulate", cam, partner_max_angle_deg=0.0)
