"""Place graph: neighbour search against brute force, chains, loop continuation, transfers, odometry shift."""
from __future__ import annotations

import numpy as np
import pytest

import disam_ros.tracking.place_graph as place_graph
from disam_ros.tracking.place_graph import PlaceGraph, headings_from_quats, radius_pairs


def square_loop() -> np.ndarray:
    """20 places 1 m apart around the perimeter of a 5 m square, driven once: place 19 is 1 m from place 0."""
    pts = [(x, 0) for x in range(5)] + [(5, y) for y in range(5)] + [(5 - x, 5) for x in range(5)] + \
          [(0, 5 - y) for y in range(5)]
    return np.array([(x, y, 0.0) for x, y in pts], dtype=np.float64)


def test_radius_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 10, (300, 3))
    i, j, d = radius_pairs(pts, 1.3)
    full = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    want = {(a, b) for a, b in zip(*np.nonzero(full <= 1.3)) if a != b}
    assert set(zip(i.tolist(), j.tolist())) == want
    assert np.allclose(d, full[i, j])


def test_chain_order_and_arc_length_follow_drive_and_stamp():
    # two drives given out of order: drive 7 = places 2, 0 (stamps 1, 5); drive 3 = place 1
    pos = np.array([[3.0, 4.0, 0.0], [100.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    g = PlaceGraph.build(pos, drives=np.array([7, 3, 7]), stamps=np.array([5.0, 0.0, 1.0]))
    assert g.order.tolist() == [1, 2, 0]  # drive 3 first, then drive 7 by stamp
    assert g.slot[g.order].tolist() == [0, 1, 2]
    assert g.arc.tolist() == [0.0, 0.0, 5.0]  # |(3,4) - (0,0)| = 5
    assert g.start.tolist() == [0, 1, 1] and g.end.tolist() == [1, 3, 3]
    assert np.all(np.diff(g.u) > 0)


def test_loop_closure_is_a_continuation_and_a_transfer():
    g = PlaceGraph.build(square_loop(), radius_m=1.5)
    assert g.spacing_m == pytest.approx(1.0)
    # the drive ends at place 19 (0, 1); the nearest place of another pass within 1.5 m is place 0 at 1 m
    assert g.cont[0] == 0 and g.cont_gap[0] == pytest.approx(1.0)
    # within 1.5 m and far along the drive (> 2 * 1.5 + 1 m of arc): only 19-0 (1 m) and 19-1 (sqrt 2 m)
    assert set(zip(g.xfer_src.tolist(), g.xfer_dst.tolist())) == {(19, 0), (0, 19), (19, 1), (1, 19)}


def point_mass(n: int, k: int) -> np.ndarray:
    b = np.zeros(n)
    b[k] = 1.0
    return b


@pytest.mark.parametrize("start,odom,want", [
    (5, 3.0, 8),  # along the chain
    (19, 1.0, 0),  # 19 -> 0 over the 1 m loop closure gap
    (18, 3.0, 1),  # 18 -> 19 (1 m) -> 0 (1 m gap) -> 1 (1 m)
    (17, 4.0, 1),
])
def test_odometry_shift_goes_round_the_loop(start, odom, want):
    g = PlaceGraph.build(square_loop(), radius_m=1.5)
    # odometry band [odom - 0.2, odom + 0.2] (sigma 0.1 m): exactly one place lies inside it
    moved = g.shift(point_mass(20, start), g.band_ranges(odom - 0.2, odom + 0.2))
    assert moved.sum() == pytest.approx(1.0)
    assert moved[want] == pytest.approx(1.0)


def test_band_splits_evenly_and_drops_what_runs_off_an_open_road():
    g = PlaceGraph.build(np.array([[float(i), 0.0, 0.0] for i in range(4)]))
    assert (g.cont == -1).all()  # a straight road: no continuation
    b = np.array([0.4, 0.0, 0.0, 0.6])
    # band [0, 2] m: place 0 spreads to 0, 1, 2 (0.4 / 3 each). Place 3's band [3, 5] m holds no place on
    # the road but itself: its centre 4 m is one spacing past the last place (at 3 m), on the virtual
    # place beyond the end, so all of its 0.6 is dropped (the filter renormalises), none piles on place 3
    out = g.shift(b, g.band_ranges(0.0, 2.0))
    assert out == pytest.approx([0.4 / 3, 0.4 / 3, 0.4 / 3, 0.0])
    # band [0, 1] m from place 3: centre 3.5 m, half a spacing past the end: half stays on 3, half is dropped
    assert g.shift(point_mass(4, 3), g.band_ranges(0.0, 1.0)) == pytest.approx([0, 0, 0, 0.5])
    # a wide band [1, 3] m from place 2 (3 m to 5 m) holds only place 3: narrow rule, centre 4 m -> dropped
    assert g.shift(point_mass(4, 2), g.band_ranges(1.0, 3.0)) == pytest.approx([0, 0, 0, 0])
    # a wide band [0, 2] m from place 2 holds places 2 and 3 (2 m to 4 m); what lies beyond half a spacing
    # past the end (3.5 m to 4 m) is a quarter of the band: 0.75 split evenly, 0.375 each
    assert g.shift(point_mass(4, 2), g.band_ranges(0.0, 2.0)) == pytest.approx([0, 0, 0.375, 0.375])


@pytest.mark.parametrize("lo,hi,want", [
    (0.5, 0.8, [0, 0.35, 0.65, 0, 0]),  # centre 1.65 m: 0.35 m from place 2, 0.65 m from place 1
    (1.9, 2.3, [0, 0, 0, 0.9, 0.1]),  # 2.1 places a frame (the 2x drive): 0.9 on place 3, 0.1 on place 4
    (1.8, 2.2, [0, 0, 0, 1, 0]),  # exactly on a place: all of it there
])
def test_a_band_narrower_than_the_spacing_splits_linearly_about_its_centre(lo, hi, want):
    g = PlaceGraph.build(np.array([[float(i), 0.0, 0.0] for i in range(5)]))
    out = g.shift(point_mass(5, 1), g.band_ranges(lo, hi))
    assert out == pytest.approx(want)
    # the mean displacement is the band's centre, not the place nearest to it
    assert out @ np.arange(5) - 1 == pytest.approx(0.5 * (lo + hi))


def test_linear_split_crosses_the_gap_to_a_continuation():
    # square loop, 1 m spacing, the drive ends at place 19 (0, 1); its continuation is place 0, 1 m away
    g = PlaceGraph.build(square_loop(), radius_m=1.5)
    # from 19 by 0.3 m (band 0.2..0.4): 0.3 of the 1 m gap -> 0.7 stays on 19, 0.3 on place 0
    out = g.shift(point_mass(20, 19), g.band_ranges(0.2, 0.4))
    assert out[19] == pytest.approx(0.7) and out[0] == pytest.approx(0.3) and out.sum() == pytest.approx(1.0)
    # from 18 by 2.6 m: 1 m to 19, 1 m gap to 0, then 0.6 m towards 1 -> 0.4 on 0, 0.6 on 1
    out = g.shift(point_mass(20, 18), g.band_ranges(2.5, 2.7))
    assert out[0] == pytest.approx(0.4) and out[1] == pytest.approx(0.6) and out.sum() == pytest.approx(1.0)


def test_transfer_moves_the_given_share_to_other_passes():
    # two parallel drives 1 m apart: every place has exactly one transfer neighbour, the other pass
    pos = np.array([[float(i), y, 0.0] for y in (0.0, 1.0) for i in range(10)]) * [5.0, 1.0, 1.0]
    g = PlaceGraph.build(pos, drives=np.repeat([0, 1], 10), radius_m=1.5)
    assert (g.xfer_deg == 1).all()
    out = g.transfer(point_mass(20, 3), 0.25)
    assert out[3] == pytest.approx(0.75) and out[13] == pytest.approx(0.25) and out.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("runs", [1, 4])
def test_transfer_by_runs_of_sources_matches_edge_by_edge(runs, monkeypatch):
    """Inflow as prefix-sum differences over runs of consecutive sources (the first `runs` per place, the
    rest edge by edge) equals moving prob / degree along every edge one at a time."""
    monkeypatch.setattr(place_graph, "TRANSFER_RUNS", runs)
    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 12, (200, 3)) * [1, 1, 0.1]
    g = PlaceGraph.build(pts, drives=rng.integers(0, 5, 200), radius_m=3.0)
    b = rng.random(200)
    want = b.copy()
    for i, j in zip(g.xfer_src, g.xfer_dst):
        want[i] -= 0.3 * b[i] / g.xfer_deg[i]
        want[j] += 0.3 * b[i] / g.xfer_deg[i]
    plan = g.transfer_plan
    assert len(plan.lo) == runs and len(plan.extra_src) > 0  # runs by prefix sums and spilled edges both used
    assert g.transfer(b, 0.3) == pytest.approx(want, abs=1e-12)


def test_heading_gate_drops_links_between_opposite_views():
    pos = np.array([[float(i), 0.0, 0.0] for i in range(10)] + [[float(9 - i), 0.5, 0.0] for i in range(10)])
    yaw = np.r_[np.zeros(10), np.full(10, np.pi)]  # the second drive looks the other way
    g = PlaceGraph.build(pos, drives=np.repeat([0, 1], 10), radius_m=1.0, headings=yaw)
    assert len(g.xfer_src) == 0 and (g.cont == -1).all()


def test_headings_from_quats_optical_axis():
    # a camera looking along map +x, and the same camera turned left by 90 degrees (looking along +y)
    s = np.sqrt(0.5)
    q_x_fwd = np.array([0.5, -0.5, 0.5, -0.5])  # z_cam -> +x, x_cam -> -y, y_cam -> -z
    rot_z90 = np.array([0.0, 0.0, s, s])
    qx, qy, qz, qw = q_x_fwd
    rx, ry, rz, rw = rot_z90  # rot_z90 * q_x_fwd: the same camera turned left by 90 degrees
    q_y_fwd = np.array([rw * qx + rx * qw + ry * qz - rz * qy, rw * qy - rx * qz + ry * qw + rz * qx,
                        rw * qz + rx * qy - ry * qx + rz * qw, rw * qw - rx * qx - ry * qy - rz * qz])
    assert headings_from_quats(np.stack([q_x_fwd, q_y_fwd])) == pytest.approx([0.0, np.pi / 2])


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match="finite positions"):
        PlaceGraph.build(np.array([[0.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match="one of each per map image"):
        PlaceGraph.build(np.zeros((3, 3)), drives=np.zeros(2))
