"""Belief storage for the sequence filter: a sparse form for large maps, and O(answer) summaries (no ROS).

Why: the dense forward filter touches every (speed bin, place) cell several times per frame: 23 ms at
100k places and 6 speed bins before this module, 15 ms for the dense filter at its fastest (docs/benchmarks.md,
`disam-bench sequence`), against a goal of 2 ms. Away from the places the evidence has picked out, the
belief is little more than the teleport floor, nearly flat and irrelevant to the answer. So a large
map's belief is held as

    b[v, j] = floor + excess[v, k]    where j = support[k]
    b[v, j] = floor                   elsewhere

and a frame costs O(support x bins) plus one O(N) pass turning the frame's scores into likelihoods.

What this gives up against the dense filter (every step conserves mass; `SequenceLocalizer` keeps the
dense filter for maps up to `exact_cells` cells; `test_sequence_fastpath` checks both against a dense
reference):

* the floor stays flat under motion: the dense floor thins at drive starts, piles up at road ends and
  leans towards places with more transfer edges;
* the floor forgets its own likelihood pattern: off-support places take the floor's mean likelihood,
  except the PROMOTE_TOP likeliest above (1 + PROMOTE) x that mean, which join the support (a shortlist
  is flat off its list: nothing is lost there);
* a transfer share arriving below TRANSFER_MIN x floor goes to the floor; a place whose excess is within
  DEMOTE x floor in every bin gives it back to the floor; at most MAX_SUPPORT places (most excess) stay.

With a zero floor (no teleport, a prior without floor) none of this applies and the update is the dense
filter's to round-off. Measured effect (docs/benchmarks.md): Nordland dev with the sparse form forced on (431 places
a half) gives the same R@1, coverage and precision as the dense filter; at 100k places on synthetic
drives (4 seeds) R@1 is 85.8 % vs 86.5 % dense at d' 2.8 and 71.9 % vs 72.1 % at d' 1.5.
"""
from __future__ import annotations

import numpy as np

from disam_ros.tracking.place_graph import MotionPlan, PlaceGraph
from disam_ros.tracking.summary import PlaceGeometry, runs

PROMOTE = 0.5  # an off-support place joins the support when its likelihood exceeds 1.5x the floor's mean
DEMOTE = 0.05  # ... and leaves when its excess is within 5 % of the floor in every speed bin
PROMOTE_TOP = 64  # ... at most this many per frame (the likeliest)
MAX_SUPPORT = 1024  # places with an excess at most (the cost of a frame grows with it)
TRANSFER_MIN = 0.5  # a transfer share arriving below this x floor goes to the floor instead


def checked_frame(scores: np.ndarray | tuple[np.ndarray, np.ndarray], n: int) -> tuple[np.ndarray | None, np.ndarray]:
    """A frame as the sequence localizer takes it, checked: (None, (N,) scores) or (shortlist ids, their
    scores) as float32 or float64; a wrong length, an id off the map or a NaN is one clear ValueError."""
    if isinstance(scores, tuple):
        ids, s = scores
        if len(ids) != len(s) or (len(ids) and (np.min(ids) < 0 or np.max(ids) >= n)):
            raise ValueError(f"shortlist of {len(ids)} ids / {len(s)} scores does not index a map of {n} places: "
                             "pass map indices in [0, N) with one score each")
        ids, s = np.asarray(ids, dtype=np.int64).reshape(-1), np.asarray(s, dtype=np.float64).reshape(-1)
    else:
        s = np.asarray(scores).reshape(-1)  # float32 stays float32 (no (N,) copy); anything else -> float64
        ids, s = None, s if s.dtype in (np.float32, np.float64) else s.astype(np.float64)
        if len(s) != n:
            raise ValueError(f"{len(s)} scores for a map of {n} places: pass one score per map image "
                             "(or an (ids, scores) shortlist)")
    if not np.isfinite(s).all():
        raise ValueError("frame scores are not finite (NaN/inf): check the query features")
    return ids, s


class SparseBelief:
    """The belief over (speed bin, place) of one map, chain order, in the floor + support form above."""

    def __init__(self, graph: PlaceGraph, bins: int) -> None:
        self.graph = graph
        self.bins, self.n = int(bins), len(graph)
        self.cells = self.bins * self.n
        self._xptr = np.r_[0, np.cumsum(graph.xfer_deg)]  # transfer edges of slot i: xfer_dst[ptr[i]:ptr[i+1]]
        self._flag = np.zeros(self.n, bool)  # scratch for unions of slot sets (always left all False)
        self._pos = np.zeros(self.n, np.int64)  # scratch: slot -> position in the latest union
        self._buf = np.zeros(self.n)  # scratch: a frame's likelihoods
        self.uniform()

    # ----------------------------------------------------------------------------------- state
    def uniform(self) -> None:
        self.floor = 1.0 / self.cells
        self.support = np.zeros(0, np.int64)
        self.excess = np.zeros((self.bins, 0))

    def set_places(self, q: np.ndarray) -> None:
        """Restart from place masses q (N,) in chain order, spread evenly over the speed bins."""
        q = np.asarray(q, dtype=np.float64) / self.bins
        self.floor = float(q.min())
        sup = np.flatnonzero(q > self.floor)
        self.support, self.excess = sup, np.tile(q[sup] - self.floor, (self.bins, 1))
        self._compact()

    def dense(self) -> np.ndarray:
        """(bins, N) cell masses in chain order."""
        b = np.full((self.bins, self.n), self.floor)
        b[:, self.support] += self.excess
        return b

    def places(self) -> tuple[float, np.ndarray]:
        """(mass of a place off the support, masses of the support places)."""
        return self.bins * self.floor, self.bins * self.floor + self.excess.sum(axis=0)

    def place_masses(self) -> np.ndarray:
        """(N,) place masses (speed bins summed) in chain order."""
        base, p = self.places()
        out = np.full(self.n, base)
        out[self.support] = p
        return out

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Map ids and masses of the k places with the most mass, best first, ties to the lower map id."""
        base, p = self.places()
        ids = self.graph.order[self.support]
        free = np.setdiff1d(np.arange(min(self.n, k + len(ids))), ids)[:k]  # the floor's first map ids
        cand, mass = np.r_[ids, free], np.r_[p, np.full(len(free), base)]
        best = np.lexsort((cand, -mass))[:k]
        return cand[best], mass[best]

    def _union(self, *parts: np.ndarray) -> np.ndarray:
        """Sorted union of slot arrays; afterwards `_pos[s]` is the position of slot s in it."""
        for p in parts:
            self._flag[p] = True
        out = np.flatnonzero(self._flag)
        self._flag[out] = False
        self._pos[out] = np.arange(len(out))
        return out

    def _compact(self) -> None:
        """Give excess within DEMOTE x floor (or exactly zero) back to the floor; keep MAX_SUPPORT places."""
        size = np.abs(self.excess).max(axis=0) if self.excess.size else np.zeros(0)
        keep = size > DEMOTE * self.floor
        if keep.sum() > MAX_SUPPORT:  # the places with the most excess stay
            e = np.where(keep, self.excess.sum(axis=0), -np.inf)
            keep[:] = False
            keep[np.argpartition(e, len(e) - MAX_SUPPORT)[-MAX_SUPPORT:]] = True
        if keep.all():
            return
        self.floor += float(self.excess[:, ~keep].sum()) / self.cells
        self.support, self.excess = self.support[keep], self.excess[:, keep]

    # ----------------------------------------------------------------------------------- motion
    def predict(self, plans: list[MotionPlan], transfer_prob: float, change_prob: float, teleport_prob: float) -> None:
        """One motion step (the dense filter's order: shift per bin, transfer, speed change, teleport)."""
        sup, r = self.support, self.excess
        if len(sup):
            sup, r = self._shift(plans, sup, r)
            if transfer_prob > 0.0 and len(self.graph.xfer_src):
                sup, r = self._transfer(sup, r, transfer_prob)
            if change_prob > 0.0 and self.bins > 1:  # as the dense filter: neighbours exchange, ends reflect
                c, mixed = change_prob, (1.0 - 2.0 * change_prob) * r
                mixed[:-1] += c * r[1:]
                mixed[1:] += c * r[:-1]
                mixed[0] += c * r[0]
                mixed[-1] += c * r[-1]
                r = mixed
        total = self.floor * self.cells + float(r.sum())  # below 1 where mass ran off an open road end
        if not total > 1e-300:  # every hypothesis drove off the map: start again (as the dense filter)
            self.uniform()
            return
        self.floor = (1.0 - teleport_prob) * self.floor / total + teleport_prob / self.cells
        r = (1.0 - teleport_prob) / total * r
        self.support, self.excess = sup, np.maximum(r, -self.floor)  # no cell below zero (flat-floor motion)

    def _shift(self, plans: list[MotionPlan], sup: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each support cell's excess, times its weight, spread evenly over its plan's targets ([a, b) and
        [a2, b2)), and over those of the plan's `second` part (a linear split) as a second set of sources."""
        rows = np.stack([p.rows[sup] for p in plans])  # (bins, m, 5): a, a2, b - a, targets, weight / targets
        if any(p.second is not None for p in plans):
            none = np.zeros((len(sup), 5))  # a plan without a split: its second part sends nothing
            rows = np.concatenate([rows, np.stack([none if p.second is None else p.second.rows[sup]
                                                   for p in plans])], axis=1)
            r = np.concatenate([r, r], axis=1)
        m = rows.shape[1]
        a, a2, n1, cnt = (rows[..., c].astype(np.int64) for c in range(4))
        share = r * rows[..., 4]
        owner, offset = runs(cnt.ravel())
        first = n1.ravel()[owner]
        tgt = np.where(offset < first, a.ravel()[owner] + offset, a2.ravel()[owner] + offset - first)
        new = self._union(tgt)
        key = (owner // m) * len(new) + self._pos[tgt]
        return new, np.bincount(key, share.ravel()[owner], self.bins * len(new)).reshape(self.bins, len(new))

    def _transfer(self, sup: np.ndarray, r: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
        """A share `prob` of each support cell moves evenly along its place's transfer edges; a share that
        would arrive below TRANSFER_MIN x floor on every edge goes to the floor instead."""
        deg = self.graph.xfer_deg[sup]
        has = deg > 0
        big = has & (np.abs(r).max(axis=0) * prob > TRANSFER_MIN * self.floor * np.maximum(deg, 1))
        small = has & ~big
        if small.any():
            self.floor += prob * float(r.sum(axis=0) @ small) / self.cells
        stay = r * (1.0 - prob * has)
        src = np.flatnonzero(big)
        if not len(src):
            return sup, stay
        d = deg[src]
        owner, offset = runs(d)
        dst = self.graph.xfer_dst[self._xptr[sup[src]][owner] + offset]
        new = self._union(sup, dst)
        per_edge = r[:, src[owner]] * (prob / d[owner])
        key = (np.arange(self.bins)[:, None] * len(new) + self._pos[dst]).ravel()
        out = np.bincount(key, per_edge.ravel(), self.bins * len(new)).reshape(self.bins, len(new))
        out[:, self._pos[sup]] += stay
        return new, out

    # ----------------------------------------------------------------------------------- evidence
    def observe(self, lik_support: np.ndarray, add: np.ndarray, lik_add: np.ndarray, lik_rest: float) -> None:
        """Multiply by a likelihood: `lik_support` (m,) at the support, `lik_add` at the slots `add` (off the
        support, joining it), and `lik_rest` = the mean likelihood of every other place (the floor's)."""
        floor = self.floor * float(lik_rest)
        r = (self.floor + self.excess) * np.asarray(lik_support, dtype=np.float64) - floor
        sup = self.support
        if len(add):
            new = self._union(sup, add)
            full = np.empty((self.bins, len(new)))
            full[:, self._pos[sup]] = r
            full[:, self._pos[add]] = self.floor * np.asarray(lik_add, dtype=np.float64) - floor
            sup, r = new, full
        total = floor * self.cells + float(r.sum())
        if not total > 1e-300:  # every place ruled out at once: start again (as the dense filter)
            self.uniform()
            return
        self.floor, self.support, self.excess = floor / total, sup, r / total
        self._compact()

    def observe_map(self, lik: np.ndarray, order: np.ndarray, slot: np.ndarray) -> None:
        """Full-map likelihoods in map order (`order[k]` the map index of slot k, `slot` its inverse)."""
        sup = self.support
        lik_sup = lik[order[sup]]
        rest = self.n - len(sup)
        if rest == 0:
            self.observe(lik_sup, sup[:0], lik_sup[:0], 0.0)
            return
        free = float(lik.sum(dtype=np.float64)) - float(lik_sup.sum(dtype=np.float64))
        cand = self._promoted(lik, slot, (1.0 + PROMOTE) * free / rest)
        add, lik_add = slot[cand], lik[cand]
        rest -= len(add)
        free -= float(lik_add.sum(dtype=np.float64))
        self.observe(lik_sup, add, lik_add, free / rest if rest else 0.0)

    def _promoted(self, lik: np.ndarray, slot: np.ndarray, thr: float) -> np.ndarray:
        """Map indices of the PROMOTE_TOP likeliest off-support places with likelihood above thr, or, if none
        is, of the likeliest place (the frame's best is always represented, however flat the frame)."""
        n, k = len(lik), PROMOTE_TOP
        cut = thr
        if n > 64 * k:  # first a higher cut from a strided sample, expected to leave ~8k places above it
            sub = lik[:: n // (32 * k)]
            j = len(sub) - (8 * k * len(sub)) // n - 1
            cut = max(thr, float(np.partition(sub, j)[j]))
        while True:
            cand = np.flatnonzero(lik > cut)
            self._flag[self.support] = True
            cand = cand[~self._flag[slot[cand]]]
            self._flag[self.support] = False
            if len(cand) >= k or cut <= thr:
                break
            cut = thr  # the sampled cut left too few: use the rule's own threshold
        if len(cand) > k:
            return cand[np.argpartition(lik[cand], len(cand) - k)[-k:]]
        if not len(cand):
            best = int(np.argmax(lik))
            self._flag[self.support] = True
            cand = np.array([best] if not self._flag[slot[best]] else [], np.int64)
            self._flag[self.support] = False
        return cand

    def observe_full(self, s: np.ndarray, gain: float) -> None:
        """Full-map scores (N,) in map order: the dense filter's likelihood exp(gain (z - max z)) with
        z = max(s - mean, 0) / std (`ObservationModel.frame_z`), without a chain-order copy of z."""
        if self._buf.dtype != s.dtype:
            self._buf = np.zeros(self.n, s.dtype)
        lik = np.subtract(s, s.mean(dtype=np.float64), out=self._buf)  # one (N,) buffer, frame after frame
        std = max(float(np.sqrt(lik @ lik / len(lik))), 1e-12)
        np.maximum(lik, 0.0, out=lik)
        lik -= lik.max()
        lik *= gain / std
        self.observe_map(np.exp(lik, out=lik), self.graph.order, self.graph.slot)

    def observe_shortlist(self, ids: np.ndarray, s: np.ndarray, gain: float, wrong_scale: float) -> None:
        """A shortlist (map ids, scores): z = (s - lowest) / wrong_scale on it and 0 off it
        (`ObservationModel.shortlist_z`): flat off the list, so the floor loses nothing."""
        if not len(ids):
            return  # z = 0 everywhere: a flat likelihood
        ids, last = np.unique(ids[::-1], return_index=True)  # a repeated id keeps its last score
        z = (s[::-1][last] - s.min()) / max(wrong_scale, 1e-12)
        base, lik = np.exp(-gain * z.max()), np.exp(gain * (z - z.max()))
        slots, sup = self.graph.slot[ids], self.support
        k = np.minimum(np.searchsorted(sup, slots), max(len(sup) - 1, 0))
        on = sup[k] == slots if len(sup) else np.zeros(len(slots), bool)
        lik_sup = np.full(len(sup), base)
        lik_sup[k[on]] = lik[on]
        add = ~on & (z > 0)
        self.observe(lik_sup, slots[add], lik[add], base)

    def observe_frame(self, ids: np.ndarray | None, s: np.ndarray, gain: float, wrong_scale: float) -> None:
        """A checked frame (see `checked_frame`): full-map scores or a shortlist."""
        if ids is None:
            self.observe_full(s, gain)
        else:
            self.observe_shortlist(ids, s, gain, wrong_scale)

    # ----------------------------------------------------------------------------------- answers
    def best(self, places: tuple[float, np.ndarray] | None = None) -> int:
        """Chain slot with the most mass; ties to the lowest slot (as np.argmax on the dense posterior)."""
        base, p = self.places() if places is None else places
        sup = self.support
        free = np.flatnonzero(sup != np.arange(len(sup)))
        free_slot = int(free[0]) if len(free) else (len(sup) if len(sup) < self.n else -1)
        if not len(sup):
            return 0
        k = int(np.argmax(p))
        if free_slot < 0 or p[k] > base or (p[k] == base and sup[k] < free_slot):
            return int(sup[k])
        return free_slot

    def summary(self, geo: PlaceGeometry) -> tuple[int, float, float, float, np.ndarray, float]:
        """As `PlaceGeometry.summary` of the dense posterior, in O(support + places near the best)."""
        base, p = self.places()
        sup, e = self.support, p - base
        best = self.best((base, p))
        idx = geo.near.query(geo.near.positions[best])
        k = np.minimum(np.searchsorted(sup, idx), max(len(sup) - 1, 0))
        hit = k[sup[k] == idx] if len(sup) else k[:0]
        mask = np.ones(len(sup), bool)
        mask[hit] = False
        inside = base * len(idx) + float(e[hit].sum())
        outside = base * (self.n - len(idx)) + float(e[mask].sum())
        log_odds = np.log(max(inside, 1e-300)) - np.log(max(outside, 1e-300))
        kb = np.searchsorted(sup, best)
        own = float(p[kb]) if kb < len(sup) and sup[kb] == best else base
        c = geo.centred[sup]
        cov = geo.spread(geo.centred[best], base * self.n + float(e.sum()), base * geo.s1 + e @ c,
                         base * geo.s2 + c.T @ (c * e[:, None]))
        pos = p[p > 0]
        ent = -float(pos @ np.log(pos)) - ((self.n - len(sup)) * base * np.log(base) if base > 0 else 0.0)
        return best, inside, float(log_odds), own, cov, ent


__all__ = ["DEMOTE", "MAX_SUPPORT", "PROMOTE", "PROMOTE_TOP", "TRANSFER_MIN", "SparseBelief", "checked_frame"]
