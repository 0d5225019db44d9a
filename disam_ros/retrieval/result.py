"""What one query returns, and the two pure functions that qualify the answer: confidence and covariance.

Confidence ("distinctiveness"): a retrieval is trustworthy when the chosen place clearly beats every
*other place*. Map images next to the match are near-duplicates of it and score almost as high, so a plain
top-1 vs top-2 margin would call every correct match in a dense map ambiguous. Instead, over the coarse
ranking of the M best candidates (M = `SearchConfig.confidence_pool`), with s_1 the top and s_M the last
coarse score,

    s_alt      = best coarse score among candidates farther than `distinct_radius` from the chosen image
                 (s_M when there is none: the place dominates the whole shortlist)
    confidence = clip((s_chosen - s_alt) / (s_1 - s_M), 0, 1)

so 1 means the chosen place dominates the shortlist, 0 means another place scores as well (or better: the
fine stage picked a candidate that the coarse stage ranks below a different place). Dividing by the
shortlist spread makes it independent of the model's score scale. Fewer than two candidates give 0.

Covariance (ROS order x, y, z, rot_x, rot_y, rot_z): a retrieved pose is the pose of a map image, so its
error is at least about half the spacing between map images (floor: 5 cm and 1 degree); the standard
deviations are that floor divided by max(confidence, 0.05), i.e. they grow up to 20x as confidence drops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIN_POS_SIGMA_M = 0.05
MIN_ROT_SIGMA_RAD = math.radians(1.0)
MIN_CONFIDENCE_FOR_SIGMA = 0.05


@dataclass(eq=False)
class RetrievalResult:
    """ok=False means no pose: position/quat/stamp/covariance are NaN and index is -1; `reason` says why,
    and topk / coarse_topn / confidence still show what the search saw.

    topk is the final ranking: the coarse top-N re-ranked by fine cosine (scores are fine cosines), then
    the following coarse candidates in coarse order (scores are eq. 16 values). Without a fine model all
    scores are eq. 16 values.
    """

    ok: bool
    reason: str
    index: int
    name: str
    stamp: float
    position: np.ndarray
    quat: np.ndarray
    topk: list[tuple[int, float]]
    coarse_topn: list[tuple[int, float]]
    confidence: float
    covariance: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)
    query_fine: np.ndarray | None = None
    used_prior: bool = False
    verification: Any = None  # disam_ros.verify.verifier.Verification once the tracker verified the answer

    @classmethod
    def failure(cls, reason: str, **kw) -> RetrievalResult:
        nan = float("nan")
        base = dict(index=-1, name="", stamp=nan, position=np.full(3, nan), quat=np.full(4, nan), topk=[],
                    coarse_topn=[], confidence=0.0, covariance=np.full((6, 6), nan))
        base.update(kw)
        return cls(ok=False, reason=reason, **base)


def distinctiveness(chosen: int, ids: np.ndarray, scores: np.ndarray, positions: np.ndarray, radius: float) -> float:
    """Confidence in [0, 1] from the coarse ranking `ids`/`scores` (best first) over the searched candidates."""
    ids = np.asarray(ids)
    scores = np.asarray(scores, dtype=np.float64)
    if len(ids) < 2 or chosen not in ids:
        return 0.0
    spread = scores[0] - scores[-1]
    if not np.isfinite(spread) or spread <= 1e-12:
        return 0.0
    s_chosen = scores[np.flatnonzero(ids == chosen)[0]]
    far = np.linalg.norm(positions[ids] - positions[chosen], axis=1) > radius
    s_alt = scores[far].max() if far.any() else scores[-1]
    return float(np.clip((s_chosen - s_alt) / spread, 0.0, 1.0))


def pose_covariance(confidence: float, spacing_m: float, spacing_rad: float) -> np.ndarray:
    """Diagonal 6x6 covariance (m^2, rad^2) for PoseWithCovariance, from map spacing and confidence."""
    scale = 1.0 / max(float(confidence), MIN_CONFIDENCE_FOR_SIGMA)
    sigma_p = max(spacing_m / 2.0, MIN_POS_SIGMA_M) * scale
    sigma_r = max(spacing_rad / 2.0, MIN_ROT_SIGMA_RAD) * scale
    return np.diag([sigma_p**2] * 3 + [sigma_r**2] * 3)
