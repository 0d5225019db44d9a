"""Coarse-to-fine localization against a map (paper Sec. IV-C).

Coarse: rank the map by eq. 16 (mean over channels of the spatial-map cosine) and keep the top N (N = 3
in the paper). Fine: re-rank those N by the plain cosine of the flattened fine features; the best one's
pose is the answer. An optional spatial prior restricts the coarse search to map images near a position
estimate (seed 004), falling back to global search when no map image lies inside its gate.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from disam_ros.maps.descriptors import fine_vectors
from disam_ros.maps.fused import query_vectors
from disam_ros.maps.localization_map import LocalizationMap
from disam_ros.maps.map_format import MapError
from disam_ros.maps.model_check import check_encoders, load_with_encoders
from disam_ros.retrieval.index import make_index, rank, resolve_device
from disam_ros.retrieval.prior import SpatialPrior
from disam_ros.retrieval.refine import refined_ranking
from disam_ros.retrieval.result import RetrievalResult, distinctiveness, pose_covariance

if TYPE_CHECKING:  # typing only: torch and the model package load where a search runs (see retrieval/index.py)
    import torch

    from disam_ros.model.inference import EncoderLike

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchConfig:
    """top_n: coarse candidates re-ranked by the fine model; top_k: length of the reported ranking;
    min_confidence: below it the result is ok=False. The rest tune backends and the confidence estimate."""

    top_n: int = 3
    top_k: int = 5
    min_confidence: float = 0.0
    device: str = "auto"
    backend: str = "auto"
    nprobe: int | None = None  # IVF lists visited per query; None: 16, on ivfpq maps ivfpq.IVFPQ_NPROBE
    ef_search: int = 64  # HNSW beam width
    confidence_pool: int = 20  # coarse candidates that define the score spread for the confidence
    distinct_radius: float | None = None  # metres; None: 3x the map's median image spacing

    def __post_init__(self) -> None:
        for name in ("top_n", "top_k", "nprobe", "ef_search", "confidence_pool"):
            v = getattr(self, name)
            if v is None and name == "nprobe":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"SearchConfig.{name}={v!r} must be a positive integer")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"SearchConfig.min_confidence={self.min_confidence!r} must lie in [0, 1]")


class Localizer:
    """Coarse-to-fine retrieval against one map; `coarse` may be None to use only `localize_features`."""

    def __init__(self, m: LocalizationMap, coarse: EncoderLike | None, fine: EncoderLike | None = None,
                 config: SearchConfig | None = None, _ckpts: tuple[Path | None, Path | None] = (None, None), *,
                 allow_unverified_model: bool = False, _checked: bool = False) -> None:
        self.map = m
        self.config = config or SearchConfig()
        if not _checked:  # from_map_dir checked them while loading
            check_encoders(m, coarse, fine, _ckpts, allow_unverified_model)
        self.coarse, self.fine = coarse, fine
        self.device = resolve_device(self.config.device)
        self.index = make_index(m, self.config.backend, self.config.device, self.config.nprobe, self.config.ef_search)
        radius = self.config.distinct_radius
        self.distinct_radius = radius if radius is not None else max(3.0 * m.spacing_m, 1e-6)
        self._positions = np.asarray(m.positions, dtype=np.float64)

    @classmethod
    def from_map_dir(cls, map_dir: str | Path, coarse_ckpt: str | Path | None = None,
                     fine_ckpt: str | Path | None = None, config: SearchConfig | None = None,
                     mmap: bool = True, verify: bool | None = None, *,
                     allow_unverified_model: bool = False) -> Localizer:
        """Load the map and its encoders (the checkpoints recorded in the manifest unless given): the node's
        start-up checks (`maps.model_check.load_with_encoders`). Every problem is a one-line MapError naming
        the file and the fix."""
        config = config or SearchConfig()
        m, coarse, fine, paths = load_with_encoders(map_dir, coarse_ckpt, fine_ckpt, device=config.device, mmap=mmap,
                                                    verify=verify, allow_unverified_model=allow_unverified_model)
        return cls(m, coarse, fine, config, _ckpts=paths, _checked=True)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def localize(self, image: np.ndarray, domain: str, prior: SpatialPrior | None = None) -> RetrievalResult:
        """Encode an RGB uint8 image under `domain` and retrieve; raises ValueError on a bad image/domain."""
        if self.coarse is None:
            raise ValueError("this Localizer has no coarse encoder: construct it with one, or use localize_features")
        t0 = time.perf_counter()
        coarse_feat = self.coarse.encode(image, domain)
        self._sync()
        t1 = time.perf_counter()
        fine_feat = self.fine.encode(image, domain) if self.fine is not None else None
        self._sync()
        t2 = time.perf_counter()
        timings = {"encode_coarse": (t1 - t0) * 1e3, "encode_fine": (t2 - t1) * 1e3}
        return self.localize_features(coarse_feat, fine_feat, prior, _timings=timings, _t0=t0, domain=domain)

    def query_fine(self, image: np.ndarray, domain: str) -> np.ndarray | None:
        """The query's fine code as a result's `query_fine` holds it (None without a fine model or map side)."""
        if self.fine is None or not self.map.has_fine:
            return None
        return self._fine_vector(self.fine.encode(image, domain)).reshape(self.map.fine_shape).cpu().numpy()

    def _fine_vector(self, fine_feat: Any) -> torch.Tensor:
        """One frame's fine features (C,h,w) / (1,C,h,w) as the pooled vector the re-rank compares."""
        return fine_vectors(self._check_shape(fine_feat, "fine"), self.map.settings.fine_grid)[0]

    def _gate(self, prior: SpatialPrior | None) -> np.ndarray | None:
        if prior is None:
            return None
        subset = prior.candidates(self._positions)
        return subset if len(subset) else None

    def localize_features(self, coarse_feat: Any, fine_feat: Any = None, prior: SpatialPrior | None = None,
                          _timings: dict[str, float] | None = None, _t0: float | None = None,
                          _full: np.ndarray | None = None, domain: str | None = None) -> RetrievalResult:
        """The same search from content codes (C,h,w) / (1,C,h,w), numpy or torch, e.g. encoded elsewhere.

        `_full`: this frame's (N,) coarse scores over the whole map, already computed by `localize_and_score`;
        the numpy backend then ranks them instead of scoring the map a second time (the same top-k: scores
        differ from a fresh search only by the float32 round-off of adding a PCA map's constant offset).
        `domain`: the condition the features were encoded under (a seed 002 branch may weight depth per condition)."""
        t0 = time.perf_counter() if _t0 is None else _t0
        timings = {"encode_coarse": 0.0, "coarse_search": 0.0, "encode_fine": 0.0, "fine_rerank": 0.0}
        timings.update(_timings or {})
        cfg, m = self.config, self.map
        problem = getattr(m, "integrity_problem", None)  # found by the background check after start
        if problem is not None:
            return self._failure(f"map failed its integrity check: {problem}", timings, t0)
        # NaN/inf survive pooling and normalisation, so checking the small descriptors checks the input
        tf = time.perf_counter()
        qf = None
        if fine_feat is not None and m.has_fine:
            qf = self._fine_vector(fine_feat)
        ts = time.perf_counter()
        z = self._check_shape(coarse_feat, "coarse")
        q = query_vectors(m, self.coarse, z, domain)[0]  # eq. 16 [+ depth]
        import torch

        if not bool(torch.isfinite(q).all()) or (qf is not None and not bool(torch.isfinite(qf).all())):
            return self._failure("query features are not finite (NaN/inf): check the camera image and encoder",
                                 timings, t0)
        subset = self._gate(prior)
        ids, scores = self._coarse_search(q, subset, _full, self._full_grid_query(z, domain))
        timings["coarse_search"] = (time.perf_counter() - ts) * 1e3

        tr = time.perf_counter()
        head, head_scores, query_fine = self._rerank(ids[:cfg.top_n], scores[:cfg.top_n], qf)
        timings["fine_rerank"] = (time.perf_counter() - tr + ts - tf) * 1e3

        best, n = int(head[0]), len(head)
        topk = [(int(i), float(s)) for i, s in zip(head, head_scores)]
        topk += [(int(i), float(s)) for i, s in zip(ids[n:], scores[n:])]
        conf = distinctiveness(best, ids, scores, self._positions, self.distinct_radius)
        common = dict(topk=topk[:cfg.top_k], coarse_topn=[(int(i), float(s)) for i, s in zip(ids[:n], scores[:n])],
                      confidence=conf, query_fine=query_fine, used_prior=subset is not None)
        if conf < cfg.min_confidence:
            return self._failure(f"confidence {conf:.3f} below min_confidence {cfg.min_confidence:.3f}", timings, t0,
                                 **common)
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return RetrievalResult(
            ok=True, reason="", index=best, name=m.names[best], stamp=float(m.stamps[best]),
            position=np.array(m.positions[best], dtype=np.float64), quat=np.array(m.quats[best], dtype=np.float64),
            covariance=pose_covariance(conf, m.spacing_m, m.spacing_rad), timings_ms=timings, **common)

    def _check_shape(self, feat: Any, role: str) -> torch.Tensor:
        """(1, C, h, w) tensor; a feature map of another model's shape is a caller error, not a bad frame."""
        import torch

        t = torch.as_tensor(feat)
        t = t.unsqueeze(0) if t.dim() == 3 else t
        want = tuple(self.map.model_info(role)["content_shape"])
        if t.dim() != 4 or t.shape[0] != 1 or tuple(t.shape[1:]) != want:
            raise ValueError(f"{role} features of shape {tuple(torch.as_tensor(feat).shape)} do not match the map's "
                             f"{want}: pass one image's content code from the model the map was built with")
        return t

    def _full_grid_query(self, z: torch.Tensor, domain: str | None) -> np.ndarray | None:
        """The query's full-grid vector when the map re-scores its shortlist on full-grid rows (pca-full)."""
        if self.map.coarse_full is None:
            return None
        return query_vectors(self.map, self.coarse, z, domain, full=True)[0].detach().float().cpu().numpy()

    def _coarse_search(self, q: torch.Tensor, subset: np.ndarray | None, full: np.ndarray | None = None,
                       q_full: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Eq. 16 ranking of the map (or the gated subset) for a coarse vector: the confidence pool, best first.
        With `q_full` the best `coarse_refine` are re-scored on the map's full-grid rows (retrieval/refine.py)."""
        cfg, m = self.config, self.map
        k = max(cfg.top_n, cfg.top_k, cfg.confidence_pool)
        r = int(m.settings.coarse_refine or 0) if q_full is not None else 0
        if full is not None and getattr(self.index, "backend", "") == "numpy":  # the very scores numpy would make
            ids, scores = rank(np.arange(len(full)) if subset is None else subset,
                               full if subset is None else full[subset], max(k, r))
        else:
            offset = 0.0
            if m.pca is not None:
                q, off = m.pca.project_query(q)
                offset = float(off)
            ids, scores = self.index.search(q, max(k, r), subset)
            self._sync()
            scores = scores + np.float32(offset)
        if r:
            return refined_ranking(ids, scores, m.coarse_full, q_full, r, k)
        return ids[:k], scores[:k]

    def _rerank(self, head: np.ndarray, head_scores: np.ndarray,
                qf: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Fine re-rank of the coarse top-N by the fine vector (ties keep coarse order); coarse order without one."""
        m = self.map
        if qf is None:
            return head, head_scores, None
        import torch

        qf = qf.to(self.device)
        rows = torch.from_numpy(m.fine_rows(head)).to(self.device)
        fine_scores = (rows @ qf).cpu().numpy()
        self._sync()
        order = np.lexsort((np.arange(len(head)), -fine_scores))
        return head[order], fine_scores[order], qf.reshape(m.fine_shape).cpu().numpy()

    def _failure(self, reason: str, timings: dict[str, float], t0: float, **kw) -> RetrievalResult:
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return RetrievalResult.failure(reason, timings_ms=timings, **kw)

    def place_scores(self, image: np.ndarray, domain: str,
                     shortlist: int = 256) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Coarse (eq. 16) scores of one image for `tracking.sequence.SequenceLocalizer.update`.

        Flat maps searched by the numpy/torch backends score every map image: an (N,) vector, one matvec.
        Approximate indexes (ivf/hnsw, or faiss) cannot: they give an (ids, scores) shortlist of the
        `shortlist` best, and the filter puts unscored places at the shortlist's floor.
        """
        if self.coarse is None:
            raise ValueError("this Localizer has no coarse encoder: construct it with one to score images")
        return self.place_scores_features(self.coarse.encode(image, domain), shortlist, domain)

    def place_scores_features(self, coarse_feat: Any, shortlist: int = 256,
                              domain: str | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """`place_scores` from a content code already encoded (the tracker encodes each frame once)."""
        import torch

        q = query_vectors(self.map, self.coarse, self._check_shape(coarse_feat, "coarse"), domain)[0]
        if not bool(torch.isfinite(q).all()):
            raise ValueError("query features are not finite (NaN/inf): check the camera image and encoder")
        offset = 0.0
        if self.map.pca is not None:
            q, off = self.map.pca.project_query(q)
            offset = float(off)
        rows = getattr(self.index, "x", None)  # the resident vectors of the numpy / torch flat backends
        if rows is None:
            ids, scores = self.index.search(q, min(int(shortlist), len(self.map)))
            return ids, scores + np.float32(offset)
        if isinstance(rows, torch.Tensor):
            scores = (rows @ q.to(rows.device, rows.dtype)).float().cpu().numpy()
        else:
            scores = rows @ q.detach().float().cpu().numpy()
        self._sync()
        return np.asarray(scores, dtype=np.float32) + np.float32(offset)

    def localize_and_score(self, coarse_feat: Any, fine_feat: Any = None, prior: SpatialPrior | None = None,
                           shortlist: int = 256, _timings: dict[str, float] | None = None, _t0: float | None = None,
                           domain: str | None = None,
                           ) -> tuple[RetrievalResult, np.ndarray | tuple[np.ndarray, np.ndarray] | None]:
        """One frame's retrieval AND its place scores from one encoding (what `tracking.Tracker` runs).

        Scores are None when the frame gives no evidence: a map that failed its integrity check or
        features that are not finite (the result then says why). With the numpy backend the map is scored
        once: the full score vector also gives the coarse ranking."""
        t0 = time.perf_counter() if _t0 is None else _t0
        problem = getattr(self.map, "integrity_problem", None)
        tp = time.perf_counter()
        try:
            scores = None if problem is not None else self.place_scores_features(coarse_feat, shortlist, domain)
        except ValueError as exc:
            if "not finite" not in str(exc):
                raise  # a shape mismatch is the caller's error, as in localize_features
            scores = None
        full = scores if isinstance(scores, np.ndarray) else None
        t_scores = (time.perf_counter() - tp) * 1e3
        res = self.localize_features(coarse_feat, fine_feat, prior, _timings=_timings, _t0=t0, _full=full,
                                     domain=domain)
        res.timings_ms.setdefault("place_scores", t_scores)
        return res, scores

__all__ = ["Localizer", "MapError", "SearchConfig"]
