"""The first look (VerifyConfig.first_scale): the candidates tried with SIFT at reduced scale before anything else,
the first sure verified look ending the frame (verify/verifier.py's module docstring says why).

Kept apart from the verifier so that its state, how many frames in a row the looks saw nothing (`misses`) and how
many keypoints they found, lives beside the rules that read it: after two blind frames the looks run only every
`first_probe_every`-th frame; and a keyframe whose looks were blind where full-scale SIFT sees no more (`hopeless`)
runs the dense search before the full-scale SIFT steps. Why the two signs: on validation town 7, keyframes each
verified cold, full-scale SIFT verified no rain or snow frame the looks had missed (their half-scale SIFT finds
1,090-2,000 keypoints there, 75-730 in fog, dusk and at night), and few night frames (mean grey 31-55, every other
condition 86 and up); in fog and at dusk it verifies a third of them, and its poses there seed the flow chains
that dense poses cannot (docs/notes/pose.md).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.features import Features, SiftConfig, detection_scale
from disam_ros.verify.config import VerifyConfig
from disam_ros.verify.gate import sure
from disam_ros.verify.result import Verification


def half_sift(sift: SiftConfig, cfg: VerifyConfig, rgb: np.ndarray) -> SiftConfig | None:
    """The map's SIFT recipe at `first_scale` (the first look's and the flow prior's half-scale features), keeping the
    `first_max_keypoints` strongest; None when the image would be narrower than `first_min_width_px` at that scale."""
    h, w = rgb.shape[:2]
    n, cap = sift.nfeatures, cfg.first_max_keypoints  # 0: unlimited, either of them
    half = replace(sift, scale=max(0.1, sift.scale * cfg.first_scale), max_side=round(sift.max_side * cfg.first_scale),
                   nfeatures=min(n, cap) if n and cap else n or cap)
    return half if w * detection_scale(half, w, h) >= cfg.first_min_width_px else None


def near_look(looks: list[Verification], cfg: VerifyConfig) -> Verification | None:
    """The look refused only for too few inliers or too low an inlier ratio (solved, so at least the solver's
    `min_agreeing_inliers`; not one refused as far from its guide) with the most inliers: the keyframe polishes it
    as an unsure verified look (`first_polish_near`). Why: at dusk and in fog a look at the right place often finds
    11-20 inliers among ~80 matches, under the gate's 0.25 ratio; its pose is close enough for the pooled solve
    around it to find 50-150, and without it the keyframe pays full-scale SIFT and every candidate (~250 ms)."""
    solved = [v for v in looks if v.outcome == "too_few_inliers" and v.inliers >= cfg.min_agreeing_inliers
              and np.isfinite(v.position).all()]
    return max(solved, key=lambda v: v.inliers, default=None)


def is_dark(rgb: np.ndarray, cfg: VerifyConfig) -> bool:
    """Night for the keyframe rules: mean grey under `keyframe_dense_dark` (0: never)."""
    return cfg.keyframe_dense_dark > 0 and float(np.mean(rgb)) < cfg.keyframe_dense_dark


class FirstLook:
    """The looks of one drive (reset with it)."""

    def __init__(self, config: VerifyConfig) -> None:
        self.config = config
        self.misses = 0  # frames in a row whose looks verified nothing (or were skipped after such)
        self.keypoints = 0  # the latest looks' half-scale keypoints (kept through the frames that skip them)
        self.tried = False  # the latest frame's looks ran, or were skipped as blind (not: none apply to it)

    def reset(self) -> None:
        self.misses = self.keypoints = 0
        self.tried = False

    def hopeless(self, rgb: np.ndarray, sift: SiftConfig) -> str:
        """Why the full-scale SIFT steps would see no more than the latest looks, which verified nothing (or were
        skipped after such): "dark" (mean grey under `keyframe_dense_dark`: night, where SIFT's responses are noise)
        or "cluttered" (the looks found at least `keyframe_dense_clutter` of the recipe's keypoint cap, an unlimited
        recipe's read as the default 2,000 rather than 0: rain streaks and snowflakes, which match nothing); "" when
        neither, or the looks saw something."""
        cfg = self.config
        if self.misses == 0:
            return ""
        if self.keypoints >= cfg.keyframe_dense_clutter * (sift.nfeatures or SiftConfig.nfeatures):
            return "cluttered"
        return "dark" if is_dark(rgb, cfg) else ""

    def run(self, verifier: Any, rgb: np.ndarray, ks: list[int], cam: Intrinsics
            ) -> tuple[list[Verification], Verification | None, Features | None]:
        """The first `first_candidates` candidates tried in order at `first_scale`, up to the first sure one; none
        when off, when the image would be narrower than `first_min_width_px` at that scale, or on the frames
        `first_probe_every` skips after two blind ones (no look verified: night, rain, snow; an unsure look still
        polishes at dusk). Returns the looks, the sure one (None: the full-scale steps then run as if no look had
        been tried) and the half-scale features. `tried` says whether the looks ran or were skipped as blind (a
        frame no look applies to is neither)."""
        cfg = self.config
        self.tried = False
        if cfg.first_scale >= 1.0 or not ks:
            return [], None, None
        sift = half_sift(verifier.sift, cfg, rgb)
        if sift is None:
            return [], None, None
        self.tried = True
        if self.misses >= 2 and self.misses % cfg.first_probe_every:
            self.misses += 1
            return [], None, None
        query = verifier._features(rgb, sift)
        self.keypoints = len(query)
        looks: list[Verification] = []
        answer = None
        for k in ks[: cfg.first_candidates] if len(query) >= cfg.min_inliers else []:
            if looks and verifier._late():
                break
            looks.append(verifier._attempt(query, k, cam, max_trials=cfg.first_max_trials))
            looks[-1].scale = cfg.first_scale
            if sure(looks[-1], cfg):
                answer = looks[-1]
                break
        self.misses = 0 if any(v.verified for v in looks) else self.misses + 1  # blind looks only
        return looks, answer, query
