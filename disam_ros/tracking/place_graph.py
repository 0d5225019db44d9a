"""The place graph a sequence localizer moves its belief on, built from the map itself.

Why a graph and not the map's index order: maps are merged from several drives, drives loop and revisit
roads, and a query vehicle may drive at another speed than the map vehicle. So the graph has

* chains: the places of each recorded drive in stamp order, with the arc length travelled along the drive
  (motion moves belief along a chain by a distance, not by a number of images);
* continuations: where a drive ends (or a loop closes), the nearest place of another pass within
  `radius_m`, so belief that runs off the end of a chain carries on along the road;
* transfers: spatial neighbours within `radius_m` that lie on another drive, or on the same drive far
  away in arc length (a revisit), so belief can switch between passes of the same road.

Everything is held as flat numpy arrays in *chain order* (places sorted by drive, then stamp): a
contiguous index range is a stretch of road, which lets one motion step be a difference-array scatter
(O(map), no Python loop over places). `order[k]` is the map index of chain slot k, `slot[i]` the inverse.
scipy is not a dependency: spatial neighbours come from a numpy grid hash.
"""
from __future__ import annotations

import functools
import itertools
import logging
from dataclasses import dataclass

import numpy as np

from disam_ros.tracking.motion_plan import MotionPlan

log = logging.getLogger(__name__)

MIN_SPACING_M = 0.05  # a map of coincident images still gets a non-zero motion quantum


def radius_pairs(points: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs (i, j), i != j, with |p_i - p_j| <= radius, and their distances.

    Grid hash with cells of size `radius`: a neighbour lies in one of the 27 surrounding cells, so each
    offset is one vectorised searchsorted over the sorted cell keys (the loop is over the 27 offsets only).
    """
    p = np.asarray(points, dtype=np.float64)
    n = len(p)
    if n == 0 or radius <= 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    cell = np.floor(p / radius).astype(np.int64)
    cell -= cell.min(axis=0) - 1  # >= 1, so the -1 offsets stay non-negative
    dims = cell.max(axis=0) + 2

    def key(c: np.ndarray) -> np.ndarray:
        return (c[:, 0] * dims[1] + c[:, 1]) * dims[2] + c[:, 2]

    by_key = np.argsort(key(cell), kind="stable")
    sorted_keys = key(cell)[by_key]
    out_i, out_j = [], []
    for off in itertools.product((-1, 0, 1), repeat=3):
        k = key(cell + np.asarray(off))
        lo = np.searchsorted(sorted_keys, k, "left")
        cnt = np.searchsorted(sorted_keys, k, "right") - lo
        total = int(cnt.sum())
        if total == 0:
            continue
        src = np.repeat(np.arange(n), cnt)
        within = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)  # 0..cnt-1 inside each run
        out_i.append(src)
        out_j.append(by_key[np.repeat(lo, cnt) + within])
    i, j = np.concatenate(out_i), np.concatenate(out_j)
    d = np.linalg.norm(p[i] - p[j], axis=1)
    keep = (i != j) & (d <= radius)
    return i[keep], j[keep], d[keep]


def headings_from_quats(quats: np.ndarray) -> np.ndarray:
    """Yaw (rad) of the camera's optical axis (z forward, REP-103 optical frame) in the map's x-y plane."""
    x, y, z, w = np.asarray(quats, dtype=np.float64).T
    fx = 2.0 * (x * z + w * y)  # third column of the rotation matrix: where the optical z axis points
    fy = 2.0 * (y * z - w * x)
    return np.arctan2(fy, fx)


def heading_difference(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """Absolute difference of yaw angles (rad), wrapped to [0, pi]."""
    return np.abs(np.angle(np.exp(1j * (np.asarray(a, np.float64) - np.asarray(b, np.float64)))))


@dataclass(frozen=True, eq=False)
class PlaceGraph:
    """Chains, continuations and transfers over N places, all in chain order (see the module docstring)."""

    order: np.ndarray  # (N,) map index of chain slot k
    slot: np.ndarray  # (N,) chain slot of map index i
    positions: np.ndarray  # (N, 3) in chain order
    arc: np.ndarray  # (N,) arc length along the slot's own drive (m)
    u: np.ndarray  # (N,) strictly increasing coordinate: arc plus a per-drive offset (searchsorted on it)
    start: np.ndarray  # (N,) first slot of the slot's drive
    end: np.ndarray  # (N,) one past the last slot of the slot's drive
    cont: np.ndarray  # (N,) continuation slot of the slot's drive (-1: the road ends there)
    cont_gap: np.ndarray  # (N,) distance from the drive's last place to its continuation (m)
    xfer_src: np.ndarray  # (E,) transfer edges (slots), grouped by source
    xfer_dst: np.ndarray  # (E,)
    xfer_deg: np.ndarray  # (N,) transfer edges leaving each slot
    spacing_m: float  # median step between consecutive places of a drive
    radius_m: float
    headings: np.ndarray | None = None  # (N,) yaw (rad) of each slot's camera, None: not known

    def __len__(self) -> int:
        return len(self.order)

    @classmethod
    def build(cls, positions: np.ndarray, drives: np.ndarray | None = None, stamps: np.ndarray | None = None,
              radius_m: float | None = None, headings: np.ndarray | None = None,
              max_heading_diff_deg: float = 90.0) -> PlaceGraph:
        """Graph of a map: positions (N,3); drives (N,) ids of the recorded drive of each image (None: one
        drive); stamps (N,) order within a drive (None: map order); radius_m for continuations and
        transfers (None: 2.5x the median spacing); headings (N,) yaw in rad to refuse links between places
        seen in opposite directions (None: no such check)."""
        pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        n = len(pos)
        if n == 0 or not np.isfinite(pos).all():
            raise ValueError(f"place graph needs finite positions, got {n} places with non-finite values: "
                             "fix the map's poses")
        drives = np.zeros(n, np.int64) if drives is None else np.asarray(drives).reshape(-1)
        stamps = np.arange(n, dtype=np.float64) if stamps is None else np.asarray(stamps, np.float64).reshape(-1)
        if len(drives) != n or len(stamps) != n:
            raise ValueError(f"place graph got {n} positions, {len(drives)} drive ids and {len(stamps)} stamps: "
                             "pass one of each per map image")
        order = np.lexsort((np.arange(n), stamps, drives))
        slot = np.empty(n, np.int64)
        slot[order] = np.arange(n)
        p, d = pos[order], drives[order]
        first = np.r_[True, d[1:] != d[:-1]]
        step = np.r_[0.0, np.linalg.norm(np.diff(p, axis=0), axis=1)]
        step[first] = 0.0
        run = np.cumsum(first) - 1  # drive number per slot, 0..D-1
        starts = np.flatnonzero(first)
        ends = np.r_[starts[1:], n]
        cum = np.cumsum(step)
        arc = cum - cum[starts][run]
        steps = step[~first]
        spacing = float(np.median(steps[steps > 0])) if (steps > 0).any() else 1.0
        spacing = max(spacing, MIN_SPACING_M)
        lengths = arc[ends - 1]
        offsets = np.r_[0.0, np.cumsum(lengths + 10.0 * spacing)[:-1]]  # any gap works: ranges are clamped
        u = arc + offsets[run]
        radius = float(radius_m) if radius_m is not None else 2.5 * spacing
        heads = None if headings is None else np.asarray(headings, np.float64).reshape(-1)[order]
        i, j, dist = radius_pairs(p, radius)
        if heads is not None:
            diff = heading_difference(heads[i], heads[j])
            keep = diff <= np.radians(max_heading_diff_deg)
            i, j, dist = i[keep], j[keep], dist[keep]
        # a neighbour on the same drive that is near in arc length is just the chain: not a transfer
        other = (run[i] != run[j]) | (np.abs(arc[i] - arc[j]) > 2.0 * radius + spacing)
        xs, xd = i[other], j[other]
        by_src = np.argsort(xs, kind="stable")
        xs, xd = xs[by_src], xd[by_src]
        cont_d, gap_d = _continuations(i, j, dist, other, ends)
        g = cls(order=order, slot=slot, positions=p, arc=arc, u=u, start=starts[run], end=ends[run],
                cont=cont_d[run], cont_gap=gap_d[run], xfer_src=xs, xfer_dst=xd,
                xfer_deg=np.bincount(xs, minlength=n), spacing_m=spacing, radius_m=radius, headings=heads)
        log.debug("place graph: %d places, %d drives, %d transfer edges, %d continuations, spacing %.2f m",
                  n, len(starts), len(xs), int((cont_d >= 0).sum()), spacing)
        return g

    def band_ranges(self, lo: float, hi: float) -> MotionPlan:
        """Where belief at each slot goes when it moves by a displacement in [lo, hi] metres.

        A band that holds two places or more spreads the slot's mass evenly over them: slots [a, b) on
        the own drive plus [a2, b2) on the continuation's drive (past the drive's last place and the gap
        to the continuation). A band that holds at most one place (narrower than the spacing) moves the
        mass to its centre x = u + (lo + hi) / 2 and splits it linearly between the places k, k + 1 on
        either side, (u_{k+1} - x) / (u_{k+1} - u_k) and the complement: a vehicle doing 2.1 places a
        frame is then tracked at 2.1, not rounded to 2 (which drifts a place behind every ten frames).
        Beyond an open road end (no continuation) the road is extended by one spacing of virtual places:
        what lands there is dropped, not piled on the last place (the filter renormalises), so a road end
        never collects belief. Before a drive's first place (backward odometry) belief stays at the start.
        The split is a second plan, `MotionPlan.next`, with per-source weights folded into `inv_count`.
        """
        lo, hi = float(lo), float(hi)
        u, start, end = self.u, self.start, self.end
        n = len(u)
        a = np.clip(np.searchsorted(u, u + lo, "left"), start, end)
        b = np.clip(np.searchsorted(u, u + hi, "right"), start, end)
        a2 = np.zeros(n, np.int64)
        b2 = np.zeros(n, np.int64)
        rest = self.arc[end - 1] - self.arc + self.cont_gap  # distance to the continuation place
        has = self.cont >= 0
        if has.any():
            c = self.cont[has]
            lo2 = u[c] + np.maximum(lo - rest[has], 0.0)
            hi2 = u[c] + hi - rest[has]
            ok = hi2 >= u[c]
            a2[has] = np.where(ok, np.clip(np.searchsorted(u, lo2, "left"), self.start[c], self.end[c]), 0)
            b2[has] = np.where(ok, np.clip(np.searchsorted(u, hi2, "right"), self.start[c], self.end[c]), 0)
            b2 = np.maximum(b2, a2)
        b = np.maximum(b, a)
        # wide bands: the share of the band beyond half a spacing past an open end is dropped
        width = max(hi - lo, 1e-12)
        past_end = (u[end - 1] + 0.5 * self.spacing_m - (u + lo)) / width
        weight = np.where(has, 1.0, np.clip(past_end, 0.0, 1.0))
        narrow = (b - a) + (b2 - a2) <= 1
        t2 = np.zeros(n, np.int64)
        w2 = np.zeros(n)
        if narrow.any():
            e = np.flatnonzero(narrow)
            t1, w1, t2[e], w2[e] = self._split(e, 0.5 * (lo + hi), rest[e])
            a[e], b[e], a2[e], b2[e], weight[e] = t1, t1 + 1, 0, 0, w1
        second = MotionPlan.of(t2, t2 + 1, np.zeros(n, np.int64), np.zeros(n, np.int64), w2)
        return MotionPlan.of(a, b, a2, b2, weight, second if (w2 > 0).any() else None)

    def _split(self, e: np.ndarray, d: float, rest: np.ndarray) -> tuple[np.ndarray, ...]:
        """Sources e moved by exactly d: (first target, its weight, second target, its weight), linear
        between the places on either side (see `band_ranges`); weights sum to less than 1 past an open end."""
        u, s = self.u, self.spacing_m
        x = u[e] + d
        lo, hi = self.start[e], self.end[e] - 1
        t1, t2, w2 = self._bracket(x, lo, hi)
        w1 = 1.0 - w2
        last = u[hi]
        over = x > last
        cont = self.cont[e]
        # past the last place, no continuation: towards a virtual place one spacing further (dropped)
        open_end = over & (cont < 0)
        w1 = np.where(open_end, np.clip(1.0 - (x - last) / s, 0.0, 1.0), w1)
        w2 = np.where(open_end, 0.0, w2)
        t1 = np.where(over, hi, t1)
        # past the last place, with a continuation: towards the continuation place across the gap ...
        gap = over & (cont >= 0)
        if gap.any():
            g = np.flatnonzero(gap)
            c = cont[g]
            frac = (x[g] - last[g]) / np.maximum(self.cont_gap[e[g]], 1e-9)
            w1[g], t2[g], w2[g] = 1.0 - np.minimum(frac, 1.0), c, np.minimum(frac, 1.0)
            # ... and on along the continuation's drive, once past the gap
            on = g[frac > 1.0]
            if len(on):
                c = self.cont[e[on]]
                y = u[c] + (d - rest[on])
                clo, chi = self.start[c], self.end[c] - 1
                k1, k2, v2 = self._bracket(y, clo, chi)
                beyond = y > u[chi]
                t1[on], t2[on] = np.where(beyond, chi, k1), k2
                w1[on] = np.where(beyond, np.clip(1.0 - (y - u[chi]) / s, 0.0, 1.0), 1.0 - v2)
                w2[on] = np.where(beyond, 0.0, v2)
        return t1, w1, t2, w2

    def _bracket(self, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For coordinates x on drives spanning slots [lo, hi]: slots k <= k + 1 around x and the weight of
        k + 1, (x - u_k) / (u_{k+1} - u_k); x before lo goes to lo, x at or past hi to hi (weight 0)."""
        u = self.u
        k = np.clip(np.searchsorted(u, x, "right") - 1, lo, hi)
        k2 = np.minimum(k + 1, hi)
        span = u[k2] - u[k]
        w = np.where(span > 0, np.clip((x - u[k]) / np.where(span > 0, span, 1.0), 0.0, 1.0), 0.0)
        return k, k2, w

    def shift(self, belief: np.ndarray, plan: MotionPlan | tuple[np.ndarray, ...]) -> np.ndarray:
        """Move belief (chain order) along a `band_ranges` plan: each slot's mass, times its weight, is
        spread evenly over its targets, plus its share along the plan's `second` part (a linear split).
        Target j receives the shares of the sources with a_i <= j minus those with b_i <= j: two gathers
        from one prefix sum (ranges are sorted along a chain), plus the few continuation targets. Mass
        whose weights sum below 1 (past an open road end) is gone: the caller renormalises."""
        plan = plan if isinstance(plan, MotionPlan) else MotionPlan.of(*plan)
        out = self._shift_part(belief, plan)
        if plan.second is not None:
            out += self._shift_part(belief, plan.second)
        return out

    @staticmethod
    def _shift_part(belief: np.ndarray, plan: MotionPlan) -> np.ndarray:
        share = belief * plan.inv_count
        if plan.a_perm is None and plan.b_perm is None:  # along chains (the usual case): one prefix sum
            c = MotionPlan.prefix(share)
            out = c[plan.a_rank]
            out -= c[plan.b_rank]
        else:
            out = plan.below(share, plan.a_perm, plan.a_rank) - plan.below(share, plan.b_perm, plan.b_rank)
        if len(plan.cont_dst):
            out += np.bincount(plan.cont_dst, share[plan.cont_src], len(out))
        return np.maximum(out, 0.0, out=out)  # prefix-sum round-off can dip a hair below zero

    def transfer(self, belief: np.ndarray, prob: float) -> np.ndarray:
        """A share `prob` of the belief at places with transfer neighbours moves evenly to them.

        The edges arriving at a place come from runs of consecutive slots of other passes (a stretch of
        road), so the inflow is a few prefix-sum differences per place (`TransferPlan`), not a scatter
        over every edge."""
        if prob <= 0.0 or len(self.xfer_src) == 0:
            return belief
        plan = self.transfer_plan
        moved = prob * belief
        out = belief - np.where(plan.has, moved, 0.0)
        out += plan.inflow(moved * plan.inv_deg)
        return out

    @functools.cached_property
    def transfer_plan(self) -> TransferPlan:
        """Built on first use and kept (the graph is immutable)."""
        return TransferPlan.of(self.xfer_src, self.xfer_dst, self.xfer_deg)


TRANSFER_RUNS = 4  # runs of sources per place handled by prefix sums; further runs go edge by edge


@dataclass(frozen=True, eq=False)
class TransferPlan:
    """Transfer edges regrouped by destination into runs of consecutive source slots.

    Place j receives sum_i x_i over its in-edges; the sources of one run [lo, hi) add up to
    c[hi] - c[lo] with c the prefix sum of x. `lo`/`hi` (K, N) hold each place's first K runs (empty
    runs are [0, 0)); the edges of any further runs are kept as a short edge list.
    """

    has: np.ndarray  # (N,) the place has transfer edges (it gives a share away)
    inv_deg: np.ndarray  # (N,) 1 / number of transfer edges (0 where none)
    lo: np.ndarray
    hi: np.ndarray
    extra_src: np.ndarray
    extra_dst: np.ndarray

    @classmethod
    def of(cls, src: np.ndarray, dst: np.ndarray, deg: np.ndarray) -> TransferPlan:
        n = len(deg)
        inv = np.divide(1.0, deg, out=np.zeros(n), where=deg > 0)
        if len(src) == 0:
            empty = np.zeros((0, n), np.int64)
            return cls(deg > 0, inv, empty, empty, np.zeros(0, np.int64), np.zeros(0, np.int64))
        by_dst = np.lexsort((src, dst))
        s, d = src[by_dst], dst[by_dst]
        first = np.r_[True, (d[1:] != d[:-1]) | (s[1:] != s[:-1] + 1)]  # a run starts here
        last = np.r_[first[1:], True]
        r_dst, r_lo, r_hi = d[first], s[first], s[last] + 1
        starts = np.flatnonzero(np.r_[True, r_dst[1:] != r_dst[:-1]])  # first run of each destination
        rank = np.arange(len(r_dst)) - np.repeat(starts, np.diff(np.r_[starts, len(r_dst)]))
        k = int(min(TRANSFER_RUNS, rank.max() + 1))
        lo, hi = np.zeros((k, n), np.int64), np.zeros((k, n), np.int64)
        ell = rank < k
        lo[rank[ell], r_dst[ell]], hi[rank[ell], r_dst[ell]] = r_lo[ell], r_hi[ell]
        spill = ~ell[np.cumsum(first) - 1]  # edges of runs beyond the first k
        return cls(deg > 0, inv, lo, hi, s[spill], d[spill])

    def inflow(self, x: np.ndarray) -> np.ndarray:
        """Per place: the sum of x over its transfer sources."""
        c = MotionPlan.prefix(x)
        out = np.zeros(len(x))
        for lo, hi in zip(self.lo, self.hi):
            out += c[hi]
            out -= c[lo]
        if len(self.extra_dst):
            out += np.bincount(self.extra_dst, x[self.extra_src], len(x))
        return out


def _continuations(i: np.ndarray, j: np.ndarray, dist: np.ndarray, other: np.ndarray,
                   ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per drive: the nearest 'other pass' neighbour of its last place (-1 if none) and its distance.

    The last place's own drive within twice the radius is the road just driven, never a continuation.
    """
    cont = np.full(len(ends), -1, np.int64)
    gap = np.zeros(len(ends))
    last = np.zeros(int(ends[-1]), bool)
    last[ends - 1] = True
    sel = last[i] & other
    if sel.any():
        si, sj, sd = i[sel], j[sel], dist[sel]
        best = np.lexsort((sj, sd, si))  # per source: nearest first, ties to the smaller slot
        si, sj, sd = si[best], sj[best], sd[best]
        firsts = np.r_[True, si[1:] != si[:-1]]
        drive_of_last = np.searchsorted(ends - 1, si[firsts])
        cont[drive_of_last], gap[drive_of_last] = sj[firsts], sd[firsts]
    return cont, gap


__all__ = ["MotionPlan", "PlaceGraph", "TransferPlan", "heading_difference", "headings_from_quats", "radius_pairs"]
