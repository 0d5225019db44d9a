"""The fast sequence filter against a textbook dense reference: explicit matrices, brute-force summaries.

The reference below builds the motion of each speed bin as an (N, N) matrix from the graph's band plans
(which targets a place moves to is `test_place_graph`'s business), the transfer as an (N, N) matrix edge by
edge, and multiplies everything out. The localizer's dense path (prefix sums, run-grouped transfers, a
radius index, moment sums) must match it to round-off; the sparse path of large maps must match it to
round-off wherever its approximations do not apply (no floor; or a flat floor on a ring), and stay close
on a drive where they do.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import disam_ros.tracking.belief as belief
import disam_ros.tracking.summary as summary
from disam_ros.tracking.belief import SparseBelief
from disam_ros.tracking.place_graph import PlaceGraph
from disam_ros.tracking.sequence import MIN_POS_SIGMA_M, ObservationModel, SequenceConfig, SequenceLocalizer
from disam_ros.tracking.summary import NearIndex, PlaceGeometry


# ------------------------------------------------------------------------------------------ the reference
def motion_matrix(graph: PlaceGraph, lo: float, hi: float) -> np.ndarray:
    """M[t, i] = share of place i's mass that lands on t for a displacement band, quantised as the filter:
    each part of the plan (the even spread, and the second half of a linear split) gives every target of
    source i that source's weight over its number of targets (`inv_count`). Columns may sum below 1
    (mass past an open road end is dropped); the filter then renormalises, as the reference does below."""
    q = graph.spacing_m / 8.0
    plan = graph.band_ranges(round(lo / q) * q, round(hi / q) * q)
    n = len(graph)
    m = np.zeros((n, n))
    for part in (plan, plan.second):
        if part is None:
            continue
        for i in range(n):
            for t in list(range(part.a[i], part.b[i])) + list(range(part.a2[i], part.b2[i])):
                m[t, i] += part.inv_count[i]
    assert (m.sum(axis=0) <= 1.0 + 1e-12).all()  # motion never creates mass
    return m


def transfer_matrix(graph: PlaceGraph, prob: float) -> np.ndarray:
    n = len(graph)
    t = np.eye(n)
    for i, j in zip(graph.xfer_src, graph.xfer_dst):
        t[i, i] -= prob / graph.xfer_deg[i]
        t[j, i] += prob / graph.xfer_deg[i]
    return t


def reference_summary(p: np.ndarray, graph: PlaceGraph, radius: float) -> tuple:
    best = int(np.argmax(p))
    d = graph.positions - graph.positions[best]
    near = np.linalg.norm(d, axis=1) <= radius
    inside, outside = p[near].sum(), p[~near].sum()
    cov = sum(pj * np.outer(dj, dj) for pj, dj in zip(p, d))
    cov = cov + np.eye(3) * max(graph.spacing_m / 2.0, MIN_POS_SIGMA_M) ** 2
    ent = -sum(pj * math.log(pj) for pj in p if pj > 0)
    return best, inside, math.log(inside) - math.log(outside), p[best], cov, ent


def reference_run(graph: PlaceGraph, cfg: SequenceConfig, obs: ObservationModel, frames: list,
                  prior: np.ndarray | None = None) -> list[tuple]:
    """frames: (scores or (ids, scores), stamp, odom); prior: place masses (chain order) to start from."""
    n, v = len(graph), cfg.speed_bins
    b = np.full((v, n), 1.0 / (v * n)) if prior is None else np.tile(prior / v, (v, 1))
    mix = np.eye(v) * (1.0 - 2.0 * cfg.speed_change_prob)
    for k in range(v):
        mix[max(k - 1, 0), k] += cfg.speed_change_prob
        mix[min(k + 1, v - 1), k] += cfg.speed_change_prob
    xfer = transfer_matrix(graph, cfg.transfer_prob)
    out, last = [], None
    for scores, stamp, odom in frames:
        if last is not None:
            dt = stamp - last
            if odom is not None:
                sig = cfg.odom_noise_m + cfg.odom_noise_frac * abs(odom)
                bands = [(odom - 2 * sig, odom + 2 * sig)] * v
            else:
                e = np.linspace(cfg.min_speed_mps, cfg.max_speed_mps, v + 1) * dt
                bands = list(zip(e[:-1], e[1:]))
            b = np.stack([xfer @ motion_matrix(graph, lo, hi) @ row for row, (lo, hi) in zip(b, bands)])
            b = mix @ b
            b = (1 - cfg.teleport_prob) * b / b.sum() + cfg.teleport_prob / b.size
        z = np.zeros(n)
        if isinstance(scores, tuple):
            ids, s = scores
            z[ids] = (s - s.min()) / obs.wrong_scale
        else:
            z = np.maximum(scores - scores.mean(), 0.0) / scores.std()
        z = z[graph.order]
        b = b * np.exp(obs.gain * (z - z.max()))
        b /= b.sum()
        p = b.sum(axis=0)
        best, inside, odds, own, cov, ent = reference_summary(p, graph, cfg.mass_radius_m)
        out.append((p[graph.slot], (int(graph.order[best]), inside, odds, own, cov, ent)))
        last = stamp
    return out


# ------------------------------------------------------------------------------------------ inputs
def random_roads(rng: np.random.Generator, n_drives: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Passes of one road (1 m apart across it), each a random stretch with uneven steps of 0.6-1.4 m."""
    pos, drv = [], []
    for d in range(n_drives):
        x = rng.uniform(0, 8) + np.cumsum(rng.uniform(0.6, 1.4, int(rng.integers(15, 40))))
        pos.append(np.stack([x, np.full_like(x, float(d)), np.zeros_like(x)], axis=1))
        drv.append(np.full(len(x), d))
    return np.concatenate(pos), np.concatenate(drv)


def random_frames(rng: np.random.Generator, n: int, count: int, shortlist: bool) -> list:
    frames, t = [], 0.0
    for k in range(count):
        s = rng.normal(0, 1, n)
        if shortlist:
            ids = rng.choice(n, size=8, replace=False)
            s = (ids, s[ids])
        frames.append((s, t, float(rng.uniform(0.3, 2.0)) if k % 3 == 2 else None))
        t += float(rng.uniform(0.4, 1.3))
    return frames


def run_localizer(loc: SequenceLocalizer, frames: list) -> list:
    return [(loc.update(s, t, odom), loc.posterior()) for s, t, odom in frames]


def assert_same(got: list, want: list, tol: float) -> None:
    for (est, post), (p_ref, (best, inside, odds, own, cov, ent)) in zip(got, want):
        assert post == pytest.approx(p_ref, abs=tol, rel=0)
        assert est.index == best or p_ref[est.index] == pytest.approx(p_ref[best], abs=tol)
        assert est.mass == pytest.approx(inside, abs=tol) and est.place_mass == pytest.approx(own, abs=tol)
        assert est.log_odds == pytest.approx(odds, abs=1e3 * tol)
        assert est.covariance == pytest.approx(cov, abs=1e3 * tol)
        assert est.entropy == pytest.approx(ent, abs=1e3 * tol)


CFG = dict(max_speed_mps=2.0, speed_bins=4, speed_change_prob=0.1, transfer_prob=0.2, mass_radius_m=1.5,
           odom_noise_m=0.2)


# ------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("seed,shortlist", [(0, False), (1, True), (2, False), (3, True)])
def test_dense_path_equals_the_reference(seed, shortlist):
    rng = np.random.default_rng(seed)
    pos, drives = random_roads(rng)
    graph = PlaceGraph.build(pos, drives)
    assert len(graph.xfer_src) and (graph.cont >= 0).any()  # transfers and continuations are exercised
    cfg = SequenceConfig(teleport_prob=0.03, **CFG)
    obs = ObservationModel(gain=0.7, wrong_scale=0.5)
    frames = random_frames(rng, len(graph), 10, shortlist)
    loc = SequenceLocalizer(graph, cfg, obs)
    assert loc._sparse is None
    assert_same(run_localizer(loc, frames), reference_run(graph, cfg, obs, frames), 1e-12)


@pytest.mark.parametrize("seed,shortlist", [(4, False), (5, True)])
def test_sparse_path_without_floor_equals_the_reference(seed, shortlist, monkeypatch):
    """No teleport and a prior without floor: the floor is 0, so nothing is approximated."""
    monkeypatch.setattr(SequenceLocalizer, "exact_cells", 0)
    rng = np.random.default_rng(seed)
    pos, drives = random_roads(rng)
    graph = PlaceGraph.build(pos, drives)
    cfg = SequenceConfig(teleport_prob=0.0, prior_floor=0.0, **CFG)
    obs = ObservationModel(gain=0.7, wrong_scale=0.5)
    frames = random_frames(rng, len(graph), 10, shortlist)
    loc = SequenceLocalizer(graph, cfg, obs)
    assert loc._sparse is not None
    start = int(rng.integers(len(graph)))
    loc.set_prior(graph.positions[start], sigma_m=0.5)
    assert 0 < len(loc._sparse.support) < len(graph)  # the prior is held sparse
    prior = np.exp(-0.5 * np.sum((graph.positions - graph.positions[start]) ** 2, axis=1) / 0.25)
    want = reference_run(graph, cfg, obs, frames, prior / prior.sum())
    assert_same(run_localizer(loc, frames), want, 1e-12)


def square_loop() -> np.ndarray:
    """20 places 1 m apart around a 5 m square, driven once (integer arc lengths, so band edges are exact):
    every place has a place behind it and a place ahead, so no mass piles up or thins out anywhere."""
    pts = [(x, 0) for x in range(5)] + [(5, y) for y in range(5)] + [(5 - x, 5) for x in range(5)] + \
          [(0, 5 - y) for y in range(5)]
    return np.array([(x, y, 0.0) for x, y in pts], dtype=np.float64)


@pytest.mark.parametrize("shortlist", [True, False])
def test_sparse_flat_floor_is_exact_where_the_floor_stays_flat(shortlist, monkeypatch):
    """On a loop without transfers the dense floor stays flat under motion; with nothing demoted and every
    place promoted (or a shortlist, flat off its list) the sparse form is the dense filter exactly."""
    monkeypatch.setattr(SequenceLocalizer, "exact_cells", 0)
    monkeypatch.setattr(belief, "DEMOTE", 0.0)
    monkeypatch.setattr(belief, "PROMOTE", -1.0)
    rng = np.random.default_rng(6)
    graph = PlaceGraph.build(square_loop(), radius_m=1.5)
    assert graph.cont[0] == 0  # the loop closes
    monkeypatch.setattr(belief, "PROMOTE_TOP", len(graph))
    cfg = SequenceConfig(teleport_prob=0.05, **{**CFG, "transfer_prob": 0.0})
    obs = ObservationModel(gain=0.9, wrong_scale=0.5)
    frames = random_frames(rng, len(graph), 12, shortlist)
    assert_same(run_localizer(SequenceLocalizer(graph, cfg, obs), frames), reference_run(graph, cfg, obs, frames),
                1e-12)


def drive_frames(rng: np.random.Generator, pos: np.ndarray, per: int, count: int, dprime: float) -> list:
    """A vehicle along the road at 1 m/s: every pass scores the place it is at d' above correlated noise."""
    x0, noise, frames = rng.uniform(20, per - count - 20), rng.normal(0, 1, len(pos)), []
    for k in range(count):
        noise = 0.5 * noise + math.sqrt(0.75) * rng.normal(0, 1, len(pos))
        frames.append((noise + dprime * np.exp(-0.5 * (pos[:, 0] - x0 - k) ** 2), float(k), None, x0 + k))
    return frames


def test_sparse_floor_approximation_stays_close_on_a_drive(monkeypatch):
    """With the approximations in play (teleport floor, road ends, transfers, promotion, demotion, a support
    cap below the map), the sparse answer tracks the dense one: the documented tolerance of `belief.py`."""
    rng = np.random.default_rng(7)
    per = 400
    i = np.arange(3 * per)
    pos = np.stack([(i % per).astype(float), 2.0 * (i // per), np.zeros(len(i))], axis=1)
    graph = PlaceGraph.build(pos, i // per)
    cfg = SequenceConfig(max_speed_mps=3.0, teleport_prob=0.01)
    obs = ObservationModel(gain=1 / 2.8)
    frames = drive_frames(rng, pos, per, 60, 2.8)
    dense = SequenceLocalizer(graph, cfg, obs)
    monkeypatch.setattr(SequenceLocalizer, "exact_cells", 0)
    monkeypatch.setattr(belief, "MAX_SUPPORT", 256)
    sparse = SequenceLocalizer(graph, cfg, obs)
    agree, right_d, right_s, tv = 0, 0, 0, []
    for s, t, _, x in frames:
        a, b = dense.update(s, t), sparse.update(s, t)
        agree += a.index == b.index
        right_d += abs(a.position[0] - x) <= 2.0
        right_s += abs(b.position[0] - x) <= 2.0
        tv.append(0.5 * np.abs(dense.posterior() - sparse.posterior()).sum())
    assert len(sparse._sparse.support) <= 256
    assert agree >= 0.9 * len(frames) and abs(right_d - right_s) <= 0.05 * len(frames)
    assert np.median(tv) < 0.05


@pytest.mark.parametrize("grid", [False, True])
def test_sparse_summary_equals_the_dense_summary_of_the_same_belief(grid, monkeypatch):
    """Both summaries (and the dense one by distances or by grid and moments) against brute force."""
    monkeypatch.setattr(summary, "SMALL_MAP", 10 if grid else 10 ** 6)
    rng = np.random.default_rng(8)
    pos, drives = random_roads(rng)
    graph = PlaceGraph.build(pos, drives)
    geo = PlaceGeometry(graph.positions, 1.5)
    assert geo.near.small != grid
    sb = SparseBelief(graph, 3)
    for trial in range(20):
        sup = np.sort(rng.choice(len(graph), size=int(rng.integers(1, 12)), replace=False))
        floor = float(rng.uniform(0, 0.01)) if trial % 4 else 0.0
        sb.floor, sb.support = floor, sup
        sb.excess = rng.uniform(-floor, 0.1, (3, len(sup)))
        total = floor * sb.cells + sb.excess.sum()
        sb.floor, sb.excess = floor / total, sb.excess / total
        p = sb.dense().sum(axis=0)
        best, inside, odds, own, cov, ent = reference_summary(p, graph, 1.5)
        got = sb.summary(geo)
        assert got[0] == best and got[1] == pytest.approx(inside, abs=1e-12) and got[3] == pytest.approx(own)
        assert got[2] == pytest.approx(odds, abs=1e-9) and got[5] == pytest.approx(ent, abs=1e-9)
        floor_cov = np.eye(3) * max(graph.spacing_m / 2.0, MIN_POS_SIGMA_M) ** 2
        assert got[4] + floor_cov == pytest.approx(cov, abs=1e-9)
        assert geo.summary(p)[4] + floor_cov == pytest.approx(cov, abs=1e-9)


def test_sparse_best_place_ties_go_to_the_lowest_slot_like_argmax():
    graph = PlaceGraph.build(np.array([[float(i), 0.0, 0.0] for i in range(6)]))
    sb = SparseBelief(graph, 1)
    assert sb.best() == 0  # uniform
    sb.support, sb.excess, sb.floor = np.array([0, 1, 4]), np.array([[0.0, -0.01, 0.0]]), 1 / 6
    assert sb.best() == 0  # slots 0 and 2, 3, 5 tie at the floor: argmax picks 0
    sb.excess = np.array([[-0.01, -0.01, 0.0]])
    assert sb.best() == 2  # 0, 1 are below the floor: the first floor place is 2 (4 ties, but later)
    sb.excess = np.array([[-0.01, -0.01, 0.02]])
    assert sb.best() == 4


def test_near_index_matches_brute_force(monkeypatch):
    rng = np.random.default_rng(9)
    pts = rng.uniform(0, 30, (500, 3)) * [1, 1, 0.2]
    monkeypatch.setattr(summary, "SMALL_MAP", 100)  # the grid, not the small-map scan
    idx = NearIndex(pts, 2.5)
    for k in rng.choice(500, 40):
        want = np.flatnonzero(np.linalg.norm(pts - pts[k], axis=1) <= 2.5)
        assert idx.query(pts[k]).tolist() == want.tolist()


@pytest.mark.parametrize("sparse", [False, True])
def test_top_places_is_the_posterior_sorted_with_ties_to_the_lower_index(sparse, monkeypatch):
    monkeypatch.setattr(SequenceLocalizer, "exact_cells", 0 if sparse else 1 << 16)
    rng = np.random.default_rng(10)
    pos, drives = random_roads(rng)
    loc = SequenceLocalizer(PlaceGraph.build(pos, drives), SequenceConfig(teleport_prob=0.02, **CFG))
    assert loc.top_places(3) == [(0, pytest.approx(1 / len(pos)))] + [(i, pytest.approx(1 / len(pos))) for i in (1, 2)]
    for s, t, odom in random_frames(rng, len(pos), 6, shortlist=True):
        loc.update(s, t, odom)
        p = loc.posterior()
        want = sorted(range(len(p)), key=lambda i: (-p[i], i))[:12]
        got = loc.top_places(12)
        assert [i for i, _ in got] == want and [m for _, m in got] == pytest.approx(p[want], abs=1e-15)


def test_bench_times_the_sparse_belief_on_large_maps_and_the_dense_filter_on_request(monkeypatch):
    from disam_ros.bench.sequence import time_updates

    monkeypatch.setattr(SequenceLocalizer, "exact_cells", 1000)  # 400 places x 6 bins is "large" here
    rows = [time_updates(400, "sequence", 3, scores=s, dense=d) for s in ("random", "drive") for d in (False, True)]
    assert [r["belief"] for r in rows] == ["sparse", "dense"] * 2
    assert all(r["median_ms"] > 0 and r["places"] == 400 for r in rows)
    assert rows[0]["support"] is not None and rows[1]["support"] is None
