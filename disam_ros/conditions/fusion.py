"""Image evidence + solar prior -> domain probabilities, and hysteresis so the chosen encoder does not flap.

Why fuse: a recogniser on one frame confuses dusk with an overcast day or a tunnel with night, while the sun's
elevation from the stamp is reliable about darkness but blind to weather. Multiplying the image's probabilities
by a soft prior from the elevation keeps the best of each: the image decides weather and foliage, the clock
vetoes "night" at noon. Why hysteresis: one misread frame must not swap the encoder (every swap changes the
feature space the map is searched in); a change has to be confirmed over a few frames.

Pure numpy/math (the conditions layer never imports torch); probabilities are mappings name -> p.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from disam_ros.conditions.solar import DEFAULT_THRESHOLDS_DEG
from disam_ros.conditions.table import ConditionTable, ScoringRule
from disam_ros.conditions.vocabulary import DAYLIGHTS

FLOOR = 1e-4  # no class is ever impossible: a confident wrong recogniser must still be recoverable by the prior


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def normalise(p: Mapping[str, float], floor: float = 0.0) -> dict[str, float]:
    """p + floor, scaled to sum 1; all-zero (or empty weight) input becomes uniform."""
    vals = {k: max(float(v), 0.0) + floor for k, v in p.items()}
    total = sum(vals.values())
    if not vals:
        return {}
    if total <= 0 or not math.isfinite(total):
        return {k: 1.0 / len(vals) for k in vals}
    return {k: v / total for k, v in vals.items()}


def daylight_prior(elevation_deg: float | None, thresholds: Mapping[str, float] | None = None,
                   softness_deg: float = 2.0) -> dict[str, float]:
    """P(daylight class | solar elevation): the hard classes of solar.daylight_class, blurred by logistic edges
    of width `softness_deg` (the stamp, the site and the horizon are all a little off). Unknown elevation
    (sim time, no site) gives a uniform prior, i.e. the image alone decides."""
    if elevation_deg is None or not math.isfinite(elevation_deg):
        return {d: 1.0 / len(DAYLIGHTS) for d in DAYLIGHTS}
    th = {**DEFAULT_THRESHOLDS_DEG, **(thresholds or {})}
    s = max(softness_deg, 1e-6)
    # P(elevation above edge) for the three edges, darkest-bound last
    above = [_sigmoid((elevation_deg - th[k]) / s) for k in ("day", "low_sun", "twilight")]
    probs = {"day": above[0], "low_sun": above[1] - above[0], "twilight": above[2] - above[1],
             "night": 1.0 - above[2]}
    return normalise(probs)


def _ordinal(value: str, accepted: Sequence[str], order: Sequence[str]) -> float:
    if not accepted:
        return 0.0
    return float(min(abs(order.index(value) - order.index(a)) for a in accepted))


def domain_daylight_likelihood(prior: Mapping[str, float], table: ConditionTable, domains: Sequence[str],
                               rule: ScoringRule) -> dict[str, float]:
    """How well each domain's daylight fits the prior: sum_v P(v) exp(-daylight_weight * steps(v, domain)).
    A domain without daylight attributes (or outside the table) is neutral (1): the clock says nothing of it."""
    out = {}
    for d in domains:
        attrs = table.domains.get(d)
        if attrs is None or not attrs.daylight:
            out[d] = 1.0
            continue
        out[d] = sum(p * math.exp(-rule.daylight_weight * _ordinal(v, attrs.daylight, DAYLIGHTS))
                     for v, p in prior.items())
    return out


def fuse(image: Mapping[str, float], prior: Mapping[str, float], prior_weight: float = 1.0,
         floor: float = FLOOR) -> dict[str, float]:
    """Posterior over the image's classes: (p_image + floor) * prior^prior_weight, normalised. Classes the prior
    does not name are neutral (1); prior_weight 0 ignores the prior, larger trusts the clock more."""
    img = normalise(image, floor)
    post = {k: p * (max(float(prior.get(k, 1.0)), 0.0) ** prior_weight) for k, p in img.items()}
    return normalise(post)


def fuse_domain(image: Mapping[str, float], elevation_deg: float | None, table: ConditionTable,
                rule: ScoringRule, thresholds: Mapping[str, float] | None = None, prior_weight: float = 1.0,
                softness_deg: float = 2.0) -> dict[str, float]:
    """Domain probabilities from the recogniser's domain head fused with the solar prior (the auto source).

    Without a usable elevation (no stamp, sim time, no site) the clock says nothing, so every domain is neutral
    and the image alone decides. Not the uniform daylight prior pushed through the table: that would give each
    tabled domain ~0.26 (the mean of exp(-3 * steps) over four classes) and an untabled one 1, a 4x bias
    towards domains the table does not describe (Nordland's `winter` beside the synthetic table's `summer`)."""
    if elevation_deg is None or not math.isfinite(elevation_deg):
        return fuse(image, {}, prior_weight)
    prior = daylight_prior(elevation_deg, thresholds, softness_deg)
    like = domain_daylight_likelihood(prior, table, list(image), rule)
    return fuse(image, like, prior_weight)


def attribute_probs(domain_probs: Mapping[str, float], table: ConditionTable, attribute: str,
                    values: Sequence[str]) -> dict[str, float]:
    """Marginal P(attribute value) implied by domain probabilities through the table (a domain that accepts
    several values spreads its mass evenly; domains outside the table or without the attribute are dropped).
    Used for diagnostics ("recognised: night 0.97")."""
    out = dict.fromkeys(values, 0.0)
    for d, p in domain_probs.items():
        attrs = table.domains.get(d)
        accepted = getattr(attrs, attribute, ()) if attrs is not None else ()
        for v in accepted:
            out[v] += p / len(accepted)
    return normalise(out) if sum(out.values()) > 0 else out


def argmax(p: Mapping[str, float]) -> tuple[str, float]:
    """(name, probability) of the most probable entry; ties go to the first in mapping order."""
    best = max(p, key=lambda k: (p[k], -list(p).index(k)))
    return best, float(p[best])


@dataclass
class Hysteresis:
    """Smoothed, sticky choice over frames.

    Probabilities are smoothed with an exponential moving average (`alpha` = weight of the new frame); the
    current choice changes only when another class leads it by at least `margin` in the smoothed
    probabilities for `hold` consecutive frames. The first frame (or the first after `reset`) is taken as is.
    """

    alpha: float = 0.5
    margin: float = 0.2
    hold: int = 3
    current: str | None = field(default=None, init=False)
    smoothed: dict[str, float] = field(default_factory=dict, init=False)
    _streak: int = field(default=0, init=False)
    _candidate: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"hysteresis alpha {self.alpha} must be in (0, 1]")
        if self.margin < 0 or self.hold < 1:
            raise ValueError(f"hysteresis needs margin >= 0 and hold >= 1, got {self.margin}, {self.hold}")

    def reset(self) -> None:
        self.current, self.smoothed, self._streak, self._candidate = None, {}, 0, None

    def update(self, probs: Mapping[str, float]) -> tuple[str, float]:
        """Feed one frame's probabilities; returns (chosen class, its smoothed probability)."""
        p = normalise(probs)
        if not p:
            raise ValueError("hysteresis update needs at least one class probability")
        if self.current is None or set(p) != set(self.smoothed):
            self.smoothed = p
            self.current, _ = argmax(p)
            self._streak, self._candidate = 0, None
            return self.current, self.smoothed[self.current]
        a = self.alpha
        self.smoothed = {k: a * p[k] + (1 - a) * self.smoothed[k] for k in p}
        best, pb = argmax(self.smoothed)
        if best != self.current and pb - self.smoothed[self.current] >= self.margin:
            self._streak = self._streak + 1 if best == self._candidate else 1
            self._candidate = best
            if self._streak >= self.hold:
                self.current, self._streak, self._candidate = best, 0, None
        else:
            self._streak, self._candidate = 0, None
        return self.current, self.smoothed[self.current]


def entropy(p: Mapping[str, float]) -> float:
    """Shannon entropy in nats (diagnostics: how sure the recogniser is)."""
    arr = np.asarray([v for v in p.values() if v > 0], dtype=np.float64)
    return float(-(arr * np.log(arr)).sum()) if arr.size else 0.0
