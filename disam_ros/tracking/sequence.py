"""Sequence-consistent localization: a forward Bayes filter over map places (no ROS).

Why: single-frame retrieval across seasons is right for a minority of frames, and its wrong answers are
jumps a vehicle cannot make. Filtering the same scores over the stream (predict with the vehicle's motion
along the place graph, correct with the frame's scores) is what makes the answer usable. The node and the
offline evaluation call the same object, one frame at a time::

    loc = SequenceLocalizer(PlaceGraph.build(positions, drives, stamps), SequenceConfig(), observation)
    est = loc.update(scores, stamp, odom=None)     # scores: (N,) over the map, or (ids, scores) shortlist
    est.index, est.mass, est.covariance, est.entropy, est.consistent_frames

Predict: move the belief by a displacement band along the graph (odometry distance +- its noise when
given, else [min_speed, max_speed] x dt), let a share hop to other passes of the same road (transfer),
and mix in a small uniform teleport probability so a kidnapped vehicle is found again. Re-initialise to
uniform on a stamp gap, a backwards stamp, `reset()`, or to a Gaussian around a spatial prior.

Correct: log L_j = gain * z_j with z_j the frame's score of place j standardised by the frame's own spread
(scores below the frame mean are floored there, so one bad frame cannot erase a hypothesis), or for a
shortlist, (s_j - s_min) / the map's wrong-place spread with 0 for unscored places. `gain` comes from the
map: `ObservationModel.estimate` scores map images against the map outside their own neighbourhood.

Modes: "sequence" (the filter), "window" (SeqSLAM, `window.py`), "single" (this frame only). All three
return the same `SequenceEstimate` from a posterior over places, so they calibrate and compare alike.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from disam_ros.maps.confidence_fit import SEQUENCE_MODES
from disam_ros.maps.observation import EVIDENCE_NATS_PER_FRAME, OBSERVATION_VERSION, ObservationModel
from disam_ros.tracking.belief import SparseBelief, checked_frame
from disam_ros.tracking.place_graph import MotionPlan, PlaceGraph, heading_difference
from disam_ros.tracking.summary import PlaceGeometry
from disam_ros.tracking.window import WindowMatcher

log = logging.getLogger(__name__)

MIN_POS_SIGMA_M = 0.05  # as retrieval.result: a covariance is never tighter than 5 cm


@dataclass(frozen=True)
class SequenceConfig:
    """How the vehicle may move between frames and what the estimate reports (metres, seconds)."""

    mode: str = "sequence"
    min_speed_mps: float = 0.0  # 0: stopping is allowed
    max_speed_mps: float = 15.0
    odom_noise_frac: float = 0.1  # odometry distance sigma = noise_m + noise_frac * distance
    odom_noise_m: float = 0.3
    speed_bins: int = 6  # the belief is over (place, speed bin): a vehicle keeps its speed between frames
    speed_change_prob: float = 0.1  # per frame: share of each speed bin moving to each neighbouring bin
    teleport_prob: float = 0.01  # per frame: share of belief spread uniformly (kidnap recovery)
    transfer_prob: float = 0.1  # per frame: share moving to other passes of the same road
    max_gap_s: float = 10.0  # a larger stamp gap re-initialises the belief
    mass_radius_m: float = 5.0  # `mass` = posterior mass within this distance of the best place
    window_frames: int = 10
    window_speeds: int = 0  # 0: as many as the map spacing tells apart over the window (window.speed_grid)
    window_min_speed_mps: float = 1.0  # SeqSLAM has no stops: a static path through one strong place would win
    prior_floor: float = 0.01  # share of uniform belief mixed into a spatial prior

    def __post_init__(self) -> None:
        if self.mode not in SEQUENCE_MODES:
            raise ValueError(f"sequence mode {self.mode!r} is unknown: use one of {list(SEQUENCE_MODES)}")
        if not 0.0 <= self.min_speed_mps <= self.max_speed_mps:
            raise ValueError(f"speed band [{self.min_speed_mps}, {self.max_speed_mps}] m/s is empty or negative: "
                             "set 0 <= min_speed_mps <= max_speed_mps")
        for name in ("teleport_prob", "transfer_prob", "prior_floor", "speed_change_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"SequenceConfig.{name}={getattr(self, name)!r} must lie in [0, 1)")
        for name in ("max_gap_s", "mass_radius_m"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"SequenceConfig.{name}={getattr(self, name)!r} must be positive")
        if self.window_frames < 1 or self.window_speeds < 0 or self.speed_bins < 1:
            raise ValueError("window_frames and speed_bins must be >= 1 and window_speeds >= 0 (0: derived from the "
                             "map spacing): e.g. 10, 6 and 0")


@dataclass(frozen=True, eq=False)
class SequenceEstimate:
    """One frame's answer. `mass` is the posterior mass within `mass_radius_m` of the best place: the
    feature calibration maps to a confidence. `covariance` (3x3, m^2) is the posterior's spread about the
    best place plus the map-spacing floor; `entropy` in nats; `reinitialised` names why the belief restarted."""

    index: int
    position: np.ndarray
    mass: float
    log_odds: float  # log(mass / (1 - mass)) with 1 - mass summed directly: does not saturate at mass = 1
    place_mass: float
    covariance: np.ndarray
    entropy: float
    consistent_frames: int
    stamp: float
    mode: str
    reinitialised: str = ""


def normalise_log(logp: np.ndarray) -> np.ndarray:
    """exp(logp) / sum, computed without overflow."""
    p = np.exp(logp - logp.max())
    return p / p.sum()


def summarise(p: np.ndarray, graph: PlaceGraph, mass_radius: float) -> tuple[int, float, float, float, np.ndarray,
                                                                           float]:
    """(best slot, mass within radius, its log-odds, the best place's own mass, 3x3 covariance about it,
    entropy) of a chain-order posterior (one-off; a localizer keeps its `PlaceGeometry`)."""
    best, inside, odds, own, spread, ent = PlaceGeometry(graph.positions, mass_radius).summary(p)
    return best, inside, odds, own, spread + spacing_floor(graph), ent


def spacing_floor(graph: PlaceGraph) -> np.ndarray:
    """The covariance every estimate carries: half the map spacing (at least 5 cm) on each axis."""
    return np.eye(3) * max(graph.spacing_m / 2.0, MIN_POS_SIGMA_M) ** 2


class SequenceLocalizer:
    """Per-frame sequence localization over one map's places (see the module docstring).

    A map of more than `exact_cells` (speed bin x place) cells keeps its sequence belief sparse (a flat
    floor plus the places that matter, `belief.SparseBelief`), so an update costs about a millisecond at
    100k places; smaller maps run the dense filter exactly. What the sparse form gives up is listed in
    `belief.py`; its measured effect is in docs/benchmarks.md (sequence filter benchmark)."""

    exact_cells = 1 << 16  # 65536 cells: up to ~10k places with 6 speed bins run dense

    def __init__(self, graph: PlaceGraph, config: SequenceConfig | None = None,
                 observation: ObservationModel | None = None) -> None:
        self.graph = graph
        self.config = config or SequenceConfig()
        self.observation = observation or ObservationModel()
        cfg = self.config
        lowest = min(max(cfg.min_speed_mps, cfg.window_min_speed_mps), cfg.max_speed_mps)
        band = (lowest, cfg.max_speed_mps)
        fixed = np.linspace(*band, cfg.window_speeds) if cfg.window_speeds else None
        self.window = WindowMatcher(graph, cfg.window_frames, fixed, None if cfg.window_speeds else band)
        self.geometry = PlaceGeometry(graph.positions, cfg.mass_radius_m)
        sparse = cfg.mode == "sequence" and cfg.speed_bins * len(graph) > self.exact_cells
        self._sparse = SparseBelief(graph, cfg.speed_bins) if sparse else None
        self._ranges: dict[tuple[int, int], MotionPlan] = {}
        self.reset()

    @classmethod
    def from_map(cls, positions: np.ndarray, drives: np.ndarray | None = None, stamps: np.ndarray | None = None,
                 config: SequenceConfig | None = None, observation: ObservationModel | None = None,
                 **graph_kw) -> SequenceLocalizer:
        return cls(PlaceGraph.build(positions, drives, stamps, **graph_kw), config, observation)

    @property
    def belief(self) -> np.ndarray:
        """(speed bins, N) cell masses in chain order (built on demand from the sparse form of a large map)."""
        return self._sparse.dense() if self._sparse is not None else self._belief

    def _restart_belief(self) -> None:
        v, n = self.config.speed_bins, len(self.graph)
        if self._sparse is not None:
            self._sparse.uniform()
        else:
            self._belief = np.full((v, n), 1.0 / (v * n))

    def reset(self) -> None:
        """Forget everything: uniform belief, no history (the node's ~/reset)."""
        self._restart_belief()
        self.window.reset()
        self._window_p: np.ndarray | None = None
        self._stamp: float | None = None
        self._prev_best: np.ndarray | None = None
        self._consistent = 0
        self._pending = "reset"

    def set_prior(self, position: np.ndarray, sigma_m: float) -> None:
        """Restart the belief as a Gaussian around a position estimate (with a uniform floor)."""
        d2 = np.sum((self.graph.positions - np.asarray(position, np.float64).reshape(1, 3)) ** 2, axis=1)
        g = normalise_log(-0.5 * d2 / max(float(sigma_m), 1e-6) ** 2)
        f, v = self.config.prior_floor, self.config.speed_bins
        q = (1.0 - f) * g + f / len(g)
        if self._sparse is not None:
            self._sparse.set_places(q)
        else:
            self._belief = np.tile(q / v, (v, 1))
        self.window.reset()
        self._stamp = None  # the next frame starts from the prior as it is, without a motion step
        self._consistent = 0
        self._pending = "prior"

    def observe_position(self, position: np.ndarray, sigma_m: float, floor: float, heading: float | None = None
                         ) -> None:
        """Evidence of where the camera is that does not come from the scores (a verified metric pose): the
        belief is multiplied by a Gaussian over places around it, floored at `floor` so that one wrong
        measurement is outvoted by the frames that follow instead of ruling the right place out. With the
        camera's `heading` (yaw, rad) and a graph that knows its places' headings, places seen facing more than
        90 degrees away (the same road driven the other way) get only the floor: the pose says which way the
        camera looks, not only where it is. Speeds are kept (a measured place says nothing about speed). Only
        the sequence filter keeps a belief to correct."""
        if self.config.mode != "sequence" or self._stamp is None:
            return
        d2 = np.sum((self.graph.positions - np.asarray(position, np.float64).reshape(1, 3)) ** 2, axis=1)
        lik = (1.0 - floor) * np.exp(-0.5 * d2 / max(float(sigma_m), 1e-6) ** 2) + floor  # chain order
        if heading is not None and self.graph.headings is not None:
            lik = np.where(heading_difference(self.graph.headings, heading) <= 0.5 * np.pi, lik, floor)
        if self._sparse is not None:
            self._sparse.observe_map(lik[self.graph.slot], self.graph.order, self.graph.slot)
            return
        post = self._belief * lik[None, :]
        self._belief = post / post.sum()  # > 0: every cell keeps at least `floor` of its mass

    def posterior(self) -> np.ndarray:
        """The current belief over places (speeds summed out), in map order."""
        p = self._sparse.place_masses() if self._sparse is not None else self._belief.sum(axis=0)
        return p[self.graph.slot]

    def top_places(self, k: int) -> list[tuple[int, float]]:
        """The k map places with the most posterior mass, best first, ties to the lower map index (as an
        argsort of `posterior()`, but O(support) on a large map instead of building an (N,) array)."""
        if k <= 0:
            return []
        if self._sparse is not None:
            ids, mass = self._sparse.top(k)
            return [(int(i), float(m)) for i, m in zip(ids, mass)]
        p = self.posterior()
        k = min(k, len(p))
        top = np.flatnonzero(p >= np.partition(p, len(p) - k)[len(p) - k])  # every place tied with the k-th
        top = top[np.lexsort((top, -p[top]))][:k]
        return [(int(i), float(p[i])) for i in top]

    def _ranges_for(self, lo: float, hi: float) -> MotionPlan:
        """Band ranges, cached by band quantised to an eighth of the spacing (far below the widening)."""
        q = self.graph.spacing_m / 8.0
        key = (round(lo / q), round(hi / q))
        if key not in self._ranges:
            if len(self._ranges) >= 16:
                self._ranges.pop(next(iter(self._ranges)))
            self._ranges[key] = self.graph.band_ranges(key[0] * q, key[1] * q)
        return self._ranges[key]

    def _band(self, dt: float, odom: float | None) -> tuple[float, float]:
        cfg = self.config
        odom = usable_odometry(odom)
        if odom is not None:
            sigma = cfg.odom_noise_m + cfg.odom_noise_frac * abs(float(odom))
            return float(odom) - 2.0 * sigma, float(odom) + 2.0 * sigma
        return cfg.min_speed_mps * dt, cfg.max_speed_mps * dt

    def _bands(self, dt: float, odom: float | None) -> list[tuple[float, float]]:
        """One displacement band per speed bin: the bin's share of the speed band, or odometry for all."""
        cfg = self.config
        if usable_odometry(odom) is not None:
            return [self._band(dt, odom)] * cfg.speed_bins
        edges = np.linspace(cfg.min_speed_mps, cfg.max_speed_mps, cfg.speed_bins + 1) * dt
        return list(zip(edges[:-1], edges[1:]))

    def predict(self, dt: float, odom: float | None = None) -> float:
        """Motion step in place; returns the largest displacement it allowed (for the consistency count)."""
        cfg = self.config
        bands = self._bands(dt, odom)
        plans = [self._ranges_for(lo, hi) for lo, hi in bands]
        if self._sparse is not None:
            self._sparse.predict(plans, cfg.transfer_prob, cfg.speed_change_prob, cfg.teleport_prob)
        else:
            b = np.stack([self.graph.transfer(self.graph.shift(row, plan), cfg.transfer_prob)
                          for row, plan in zip(self._belief, plans)])
            c = cfg.speed_change_prob
            if c > 0 and len(b) > 1:  # neighbouring speed bins exchange a share; the end bins reflect
                up, down = np.vstack([b[1:], b[-1:]]), np.vstack([b[:1], b[:-1]])
                b = (1.0 - 2.0 * c) * b + c * (up + down)
            eps, total = cfg.teleport_prob, float(b.sum())
            if not total > 0.0:  # every hypothesis drove off an open road end: nothing is known, start again
                b, total = np.ones_like(b), float(b.size)
            self._belief = (1.0 - eps) * b / total + eps / b.size
        return max(max(abs(lo), abs(hi)) for lo, hi in bands)

    def _restart_reason(self, stamp: float) -> str:
        if self._stamp is None:
            return self._pending
        dt = stamp - self._stamp
        if dt < 0:
            return f"stamp went back {-dt:.3f} s"
        if dt > self.config.max_gap_s:
            return f"stamp gap {dt:.3f} s > max_gap_s {self.config.max_gap_s}"
        return ""

    def update(self, scores: np.ndarray | tuple[np.ndarray, np.ndarray], stamp: float,
               odom: float | None = None) -> SequenceEstimate:
        """One frame: (N,) scores over the whole map or an (ids, scores) shortlist; odom = distance
        travelled since the previous frame in metres (None, or NaN for odometry known to be bad over this
        step: use the speed band)."""
        n = len(self.graph)
        ids, s = checked_frame(scores, n)
        stamp = float(stamp)
        reason = self._restart_reason(stamp)
        if reason and self._stamp is not None:
            log.info("sequence localizer re-initialised: %s", reason)
            self._restart_belief()
            self.window.reset()
            self._prev_best = None
        mode = self.config.mode
        moved = self._band(0.0 if self._stamp is None else stamp - self._stamp, odom)[1]
        if mode == "sequence" and self._stamp is not None and not reason:
            moved = self.predict(stamp - self._stamp, odom)
        self._stamp = stamp
        self._pending = ""
        if self._sparse is not None:
            self._sparse.observe_frame(ids, s, self.observation.gain, self.observation.wrong_scale)
            return self._estimate(self._sparse.summary(self.geometry), stamp, moved, reason)
        obs = self.observation
        z = (obs.frame_z(s) if ids is None else obs.shortlist_z(ids, s, n))[self.graph.order]
        if not np.isfinite(z).all():
            raise ValueError("frame scores are not finite (NaN/inf): check the query features")
        gain = obs.gain
        if mode == "sequence":
            post = self._belief * np.exp(gain * (z - z.max()))
            total = post.sum()
            if total > 1e-300:
                self._belief = post / total
            else:
                self._restart_belief()
            p = self._belief.sum(axis=0)
        elif mode == "window":
            p = self._window_p = normalise_log(gain * self.window.push(z, stamp))
        else:
            p = normalise_log(gain * z)
        return self._estimate(self.geometry.summary(p), stamp, moved, reason)

    def hold(self, stamp: float, distance_m: float = 0.0) -> SequenceEstimate | None:
        """A frame showing the vehicle standing still: a motion step of zero distance (odometry 0) and no
        observation, because a repeated image is not new evidence; counting it again and again is what let
        one misleading view at a stop pull the belief away. `distance_m`: a frame whose place is known from
        elsewhere (optical flow from the last verified pose, which the caller then observes) moves by that
        much instead. None when there is nothing to hold (no frame since a (re)start, a stamp gap or
        backwards stamp, single mode): the caller updates instead."""
        stamp, moved = float(stamp), abs(float(distance_m))
        if self._stamp is None or self._restart_reason(stamp) or self.config.mode == "single":
            return None
        if self.config.mode == "window":
            if self._window_p is None:
                return None
            p = self._window_p
        else:
            self.predict(stamp - self._stamp, moved)
            if self._sparse is not None:
                self._stamp = stamp
                return self._estimate(self._sparse.summary(self.geometry), stamp, moved, "")
            p = self._belief.sum(axis=0)
        self._stamp = stamp
        return self._estimate(self.geometry.summary(p), stamp, moved, "")

    def _estimate(self, summary: tuple[int, float, float, float, np.ndarray, float], stamp: float, moved: float,
                  reason: str) -> SequenceEstimate:
        g, cfg = self.graph, self.config
        best, mass, odds, own, spread, ent = summary
        cov = spread + spacing_floor(g)
        pos = g.positions[best].copy()
        if self._prev_best is not None and np.linalg.norm(pos - self._prev_best) <= moved + cfg.mass_radius_m:
            self._consistent += 1
        else:
            self._consistent = 1
        self._prev_best = pos
        return SequenceEstimate(index=int(g.order[best]), position=pos, mass=mass, log_odds=odds, place_mass=own,
                                covariance=cov, entropy=ent, consistent_frames=self._consistent, stamp=stamp,
                                mode=cfg.mode, reinitialised=reason)


def usable_odometry(odom: float | None) -> float | None:
    """The odometry distance a motion step may use: None for none, and for NaN/inf, which the node passes for
    a step whose odometry was bad (a glitch or reset spans it): that step takes the speed band, the motion
    model without odometry, so its uncertainty widens instead of a wrong distance moving a tight belief."""
    return None if odom is None or not math.isfinite(odom) else float(odom)


def max_entropy(n: int) -> float:
    """Entropy of a uniform belief over n places (nats): the diagnostics' scale."""
    return math.log(max(n, 1))


__all__ = ["EVIDENCE_NATS_PER_FRAME", "OBSERVATION_VERSION", "SEQUENCE_MODES", "ObservationModel", "SequenceConfig",
           "SequenceEstimate", "SequenceLocalizer", "max_entropy", "normalise_log", "summarise",
           "usable_odometry"]
