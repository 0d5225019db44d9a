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
            diff = np.abs(np.angle(np.exp(1j * (heads[i] - heads[j]))))
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
                xfer_deg=np.bincount(xs, minlength=n), spacing_m=spacing, radius_m=radius)
        log.debug("place graph: %d places, %d drives, %d transfer edges, %d continuations, spacing %.2f m",
                  n, len(starts), len(xs), int((cont_d >= 0).sum()), spacing)
        return g

    def nearest(self, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Slot nearest to coordinate x within the slot range [lo, hi) (one drive)."""
        u = self.u
        idx = np.searchsorted(u, x)
        prev = np.clip(idx - 1, lo, hi - 1)
        idx = np.clip(idx, lo, hi - 1)
        return np.where(np.abs(u[prev] - x) <= np.abs(u[idx] - x), prev, idx)

    def band_ranges(self, lo: float, hi: float) -> MotionPlan:
        """Where belief at each slot goes when it moves by a displacement in [lo, hi] metres.

        Plans (a, b, a2, b2): targets are slots [a, b) on the own drive plus [a2, b2) on the
        continuation's drive (past the drive's last place and the gap to the continuation). A band that
        holds no place (narrower than the spacing) goes to the place nearest its centre, so a displacement
        of exactly one spacing lands on the next place, not spread over two; belief with nowhere to go
        (past the end of a road without continuation, before a drive's start) stays at that end.
        """
        lo, hi = float(lo), float(hi)
        u, start, end = self.u, self.start, self.end
        a = np.clip(np.searchsorted(u, u + lo, "left"), start, end)
        b = np.clip(np.searchsorted(u, u + hi, "right"), start, end)
        a2 = np.zeros(len(u), np.int64)
        b2 = np.zeros(len(u), np.int64)
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
        empty = (b <= a) & (b2 <= a2)
        if empty.any():
            e = np.flatnonzero(empty)
            centre = u[e] + 0.5 * (lo + hi)
            own = self.nearest(centre, start[e], end[e])
            a[e], b[e] = own, own + 1
            # past the last place by more than half the gap: the continuation's side of the road
            go_on = e[(self.cont[e] >= 0) & (centre - u[end[e] - 1] > 0.5 * self.cont_gap[e])]
            if len(go_on):
                c = self.cont[go_on]
                x = u[c] + np.maximum(0.5 * (lo + hi) - rest[go_on], 0.0)
                t = self.nearest(x, self.start[c], self.end[c])
                a[go_on] = b[go_on] = 0
                a2[go_on], b2[go_on] = t, t + 1
        return MotionPlan.of(a, np.maximum(b, a), a2, b2)

    def shift(self, belief: np.ndarray, plan: MotionPlan | tuple[np.ndarray, ...]) -> np.ndarray:
        """Move belief (chain order) along a `band_ranges` plan: each slot's mass is spread evenly over its
        targets. Target j receives the shares of the sources with a_i <= j minus those with b_i <= j: two
        gathers from one prefix sum (ranges are sorted along a chain), plus the few continuation targets."""
        plan = plan if isinstance(plan, MotionPlan) else MotionPlan.of(*plan)
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


@dataclass(frozen=True, eq=False)
class MotionPlan:
    """One displacement band, prepared once and reused every frame with that band (the filter caches it).

    Sources move to [a, b) on their drive and [a2, b2) past its end. `shift` needs, per target j, the
    number of sources with a_i <= j (`a_rank`, with `a_perm` sorting a when it is not already sorted,
    which it is along a chain) and the same for b; continuation targets are listed pair by pair.
    """

    a: np.ndarray
    b: np.ndarray
    a2: np.ndarray
    b2: np.ndarray
    inv_count: np.ndarray
    a_perm: np.ndarray | None
    a_rank: np.ndarray
    b_perm: np.ndarray | None
    b_rank: np.ndarray
    cont_src: np.ndarray
    cont_dst: np.ndarray

    @classmethod
    def of(cls, a: np.ndarray, b: np.ndarray, a2: np.ndarray, b2: np.ndarray) -> MotionPlan:
        n = len(a)
        extra = b2 - a2
        src = np.flatnonzero(extra > 0)
        counts = extra[src]
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        dst = np.repeat(a2[src], counts) + within
        return cls(a, b, a2, b2, 1.0 / ((b - a) + extra), *cls._rank(a, n), *cls._rank(b, n),
                   np.repeat(src, counts), dst)

    @staticmethod
    def _rank(x: np.ndarray, n: int) -> tuple[np.ndarray | None, np.ndarray]:
        perm = None if bool(np.all(x[1:] >= x[:-1])) else np.argsort(x, kind="stable")
        xs = x if perm is None else x[perm]
        return perm, np.searchsorted(xs, np.arange(n), "right")

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """(N, 5) per source: a, a2, b - a, number of targets, 1 / that, as float64 (indices are exact far
        beyond any map): one row gather per source for the sparse belief, built once per plan."""
        n1 = self.b - self.a
        return np.stack([self.a, self.a2, n1, n1 + self.b2 - self.a2, self.inv_count], axis=1).astype(np.float64)

    @staticmethod
    def prefix(x: np.ndarray) -> np.ndarray:
        """(len + 1,) prefix sums starting at 0: c[k] = sum of x[:k]."""
        c = np.empty(len(x) + 1)
        c[0] = 0.0
        np.cumsum(x, out=c[1:])
        return c

    @staticmethod
    def below(share: np.ndarray, perm: np.ndarray | None, rank: np.ndarray) -> np.ndarray:
        """Per target j: the sum of share over sources whose bound is <= j."""
        return MotionPlan.prefix(share if perm is None else share[perm])[rank]


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


__all__ = ["MotionPlan", "PlaceGraph", "TransferPlan", "headings_from_quats", "radius_pairs"]
