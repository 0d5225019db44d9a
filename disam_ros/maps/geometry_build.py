"""Building map geometry (`disam-build-map --geometry {auto,depth,triangulate,none}`), one map image at a time.

- depth: SIFT keypoints of the map image, lifted to the map frame through its depth (pose/backproject.py, with
  its edge / range checks); exact where the depth is.
- triangulate: SIFT keypoints of map image i matched (ratio test + mutual NN among the partner's keypoints within
  `epipolar_px` of the epipolar line the two known poses give: pose/epipolar.py) to its pose partners: up to
  `partners` (4) other map images that look the same way (optical axes within `partner_max_angle_deg`, 45) and
  stand nearest, at a baseline (maps/covisibility.py); each keypoint's track triangulated with the known poses
  and intrinsics (pose/triangulate.py: DLT, then the behind-camera, reprojection and parallax checks, then the
  depth path's range 0.1..60 m in the map image); keypoints whose track fails keep a NaN point.
  An image whose nearest partners give 3D points for fewer than `widen_below` (10 %) of the keypoints they
  matched (matches that fail the parallax check, not a lack of matches) tries
  partners `widen_factor` (4) times farther than its farthest, up to `widen_steps` (3) times, keeping the try
  with the most points: the nearest images of a map recorded as video stand a few cm apart, too close for the
  1.5 deg parallax check at a few metres' depth, so without it such a map would hold almost no points.
  The epipolar band and the reprojection check widen from 2 px to 3 sigma of the poses' own noise (measured on
  strong matches before pass 2, at most 8 px): ground truth from mocap or GPS/INS is tenths of a degree off.

Why partners from poses and not build order: a folder of real photographs with metric poses (TUM poses.txt +
camera.yaml, no depth) is often not in spatial order by name (photo collections, sparse captures, a loop back to
the same place), so images i-2..i+2 may not see the same scene while images that do would never be tried. On a
straight drive the partners are i-2..i+2 anyway, so driven maps keep theirs.

Partners need every pose, so triangulation takes two passes with bounded memory: `add` detects SIFT and streams
keypoints and descriptors (uint8, as the store) to a hidden folder in the map's staging directory, keeping only
the small View per image in RAM; `finish` chooses the partners, then for each image in index order reads its and
its partners' features (memory-mapped), triangulates and writes. The folder is removed at the end and on any
failure (`close`), and is never part of the map (hidden, and a folder: write_manifest lists neither). The depth
path holds one image's features (never the images). Keypoints are in the pixels of the image the frame source
gives (the original: the encoder resizes only its own copy); when that image's size differs from the
intrinsics' (camera.yaml written for another resolution), the intrinsics are scaled to it (Intrinsics.scaled)
and the scaled ones are stored.

Learned keypoints (`--verify-features learned|both`, maps/feature_kind.py) are a second GeometryBuilder over the
same images with the learned kind: detected by the map's copy of the network, lifted through the same depth, or
matched to the same pose partners (mutual nearest neighbours within the same epipolar band: `finish(like=...)`
takes the SIFT builder's measured band and reprojection check, since the poses' noise is the poses', not the
features') and triangulated with the same checks, into the geometry_learned_* files.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from disam_ros.maps.covisibility import PARTNER_RULE, choose_partners, wider_partners
from disam_ros.maps.feature_kind import FEATURES_DIR, SIFT_KIND, FeatureKind, FeatureSpill, LearnedPlan
from disam_ros.maps.geometry_store import DESCRIPTOR_DIM, SPARSE_IMAGE_POINTS, GeometryWriter
from disam_ros.pose.backproject import DepthLimits, backproject
from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.epipolar import epipolar_match, line_distances_px
from disam_ros.pose.features import MAP_SIFT, SiftConfig, detect_sift, match_descriptors
from disam_ros.pose.frames import normalized
from disam_ros.pose.gradients import GRADIENT_CELL, keypoint_descriptors
from disam_ros.pose.triangulate import TriangulationLimits, View, triangulate

GEOMETRY_CHOICES = ("auto", "depth", "triangulate", "none")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeometryPlan:
    """How to build a map's geometry. depth_of(i): (H, W) metres of frame i (0 = invalid) or None."""

    method: str  # "depth" or "triangulate"
    intrinsics: Intrinsics
    depth_of: Callable[[int], np.ndarray | None] | None = None
    sift: SiftConfig = MAP_SIFT  # recorded in the map: queries are treated alike
    gradient_cell: int | None = GRADIENT_CELL  # each keypoint's dense-search descriptor at this cell (None: none)
    partners: int = 4  # triangulate: match to this many pose partners (maps/covisibility.py)
    partner_max_angle_deg: float = 45.0  # triangulate: partners look within this angle of the map image's axis
    min_views: int = 2  # triangulate: views per track (the map image + matched partners)
    widen_below: float = 0.1  # triangulate: an image with 3D points for fewer than this share of its matched
    #                           keypoints (those a partner matched) ...
    widen_factor: float = 4.0  # ... tries partners farther than this x its farthest partner ...
    widen_steps: int = 3  # ... up to this many times, keeping the try with the most points (video: cm apart)
    ratio: float = 0.8  # SIFT's ratio test (the learned kind's is its own: FeatureKind.ratio)
    epipolar_px: float = 2.0  # triangulate: a partner's match must lie this close to its epipolar line, the ratio
    #                           test runs among those (pose/epipolar.py; 0 = plain matching). 2 px chosen on the
    #                           dev town over 4 and 8 (docs/maps.md)
    noise_sigmas: float = 3.0  # triangulate: ... and both that band and the triangulation's reprojection check
    #                            widen to this many sigmas of the poses' own noise, measured on the map's strong
    #                            matches (exact poses: ~0.5 px, so 2 px stays), up to max_threshold_px; 0 = fixed
    max_threshold_px: float = 8.0
    depth_limits: DepthLimits = field(default_factory=DepthLimits)
    tri_limits: TriangulationLimits = field(default_factory=lambda: TriangulationLimits(max_error_px=2.0))

    def __post_init__(self) -> None:
        if isinstance(self.partners, bool) or not (isinstance(self.partners, int) and 1 <= self.partners <= 30):
            raise ValueError(f"GeometryPlan.partners={self.partners!r} must be an integer in 1..30 (a track's views "
                             "are a bit mask)")
        if not 0.0 < self.partner_max_angle_deg <= 180.0:
            raise ValueError(f"GeometryPlan.partner_max_angle_deg={self.partner_max_angle_deg!r} must be in (0, 180]")
        if not (self.noise_sigmas >= 0 and self.max_threshold_px >= max(self.epipolar_px, 0.0)):
            raise ValueError(f"GeometryPlan: noise_sigmas={self.noise_sigmas!r} must be >= 0 and max_threshold_px="
                             f"{self.max_threshold_px!r} >= epipolar_px={self.epipolar_px!r}")
        if not (0.0 <= self.widen_below <= 1.0 and self.widen_factor > 1.0 and self.widen_steps >= 0):
            raise ValueError(f"GeometryPlan: widen_below={self.widen_below!r} must be in [0, 1], widen_factor="
                             f"{self.widen_factor!r} > 1 and widen_steps={self.widen_steps!r} >= 0")


def plan_geometry(choice: str, camera: Intrinsics | None, has_depth: bool, metric_poses: bool, where: str,
                  depth_of: Callable[[int], np.ndarray | None] | None = None) -> GeometryPlan | None:
    """Resolve --geometry: auto = depth when the reference has depth, else triangulate, else (no intrinsics or no
    metric poses) none, said in one log line. An explicit depth/triangulate that cannot be built is a ValueError."""
    if choice not in GEOMETRY_CHOICES:
        raise ValueError(f"--geometry {choice!r}: expected one of {', '.join(GEOMETRY_CHOICES)}")
    if choice == "none":
        return None
    missing = [w for w, ok in (("camera intrinsics (camera.yaml / CameraInfo)", camera is not None),
                               ("metric poses (poses.txt / pose topic)", metric_poses)) if not ok]
    if choice == "auto" and missing:
        log.info("%s has no %s: building a retrieval-only map (no map geometry, no metric poses)", where,
                 " and no ".join(missing))
        return None
    if missing:
        raise ValueError(f"--geometry {choice} needs {' and '.join(missing)}, which {where} lacks: add them or pass "
                         "--geometry none")
    method = ("depth" if has_depth else "triangulate") if choice == "auto" else choice
    if method == "depth" and not has_depth:
        raise ValueError(f"--geometry depth needs depth images ({where} has none, e.g. <condition>/depth/*.png): "
                         "pass --geometry triangulate")
    log.info("map geometry: %s (%s)", method, "SIFT + depth" if method == "depth" else "SIFT matched to pose "
             "partners, triangulated with the known poses")
    return GeometryPlan(method, camera, depth_of if method == "depth" else None)


class GeometryBuilder:
    """Feed every map frame in index order (`add`), then `finish()` -> the manifest's "geometry" record (for a kind
    other than SIFT: its own record, geometry.learned). A build that fails calls `close()` instead (an exception
    inside `add` or `finish` does so itself)."""

    def __init__(self, plan: GeometryPlan, directory: Path, kind: FeatureKind = SIFT_KIND) -> None:
        self.plan, self.kind = plan, kind
        self.cell = plan.gradient_cell if kind.is_sift else None  # gradient descriptors: SIFT's only
        self.ratio = plan.ratio if kind.ratio is None else kind.ratio
        self.writer = GeometryWriter(directory, self.cell, kind)
        self.cam: Intrinsics | None = None
        self._views: list[View] = []  # triangulate: the poses, all that pass 1 keeps in RAM
        spill = Path(directory) / (FEATURES_DIR if kind.is_sift else f"{FEATURES_DIR}_{kind.name}")
        self._spill = FeatureSpill(spill, kind, None if self.cell is None else DESCRIPTOR_DIM) \
            if plan.method == "triangulate" else None
        self.seconds = 0.0
        self.widened = 0  # triangulate: images whose points came from partners farther than the nearest
        self.epipolar_px, self.tri_limits = plan.epipolar_px, plan.tri_limits  # widened by _set_thresholds
        self.pose_noise_px: float | None = None

    def _camera(self, image: np.ndarray, name: str) -> Intrinsics:
        h, w = image.shape[:2]
        if self.cam is None:
            cam = self.plan.intrinsics
            if (cam.width, cam.height) != (w, h):
                if self.kind.is_sift:  # said once, not per kind
                    log.info("map images are %dx%d, the intrinsics %dx%d: scaling them to the images", w, h,
                             cam.width, cam.height)
                cam = cam.scaled(w, h)
            self.cam = cam
        elif (self.cam.width, self.cam.height) != (w, h):
            raise ValueError(f"map image {name} is {w}x{h}, the earlier ones {self.cam.width}x{self.cam.height}: map "
                             "geometry needs one camera; pass --geometry none or resize the images alike")
        return self.cam

    def add(self, index: int, image: np.ndarray, position: np.ndarray, quat: np.ndarray, name: str) -> None:
        t0 = time.perf_counter()
        try:
            self._add(index, image, position, quat, name)
        except BaseException:
            self.close()
            raise
        self.seconds += time.perf_counter() - t0

    def _add(self, index: int, image: np.ndarray, position: np.ndarray, quat: np.ndarray, name: str) -> None:
        cam = self._camera(image, name)
        feats = detect_sift(image, self.plan.sift) if self.kind.detect is None else self.kind.detect(image)
        cell = self.cell
        grads = None if cell is None else keypoint_descriptors(image, feats.keypoints, cell)
        if self._spill is None:  # depth
            depth = self.plan.depth_of(index) if self.plan.depth_of is not None else None
            if depth is None:
                points = np.full((len(feats), 3), np.nan)
            else:
                if depth.shape != image.shape[:2]:
                    raise ValueError(f"map image {name}: depth is {depth.shape[1]}x{depth.shape[0]}, the image "
                                     f"{image.shape[1]}x{image.shape[0]}; pass --geometry triangulate")
                points = backproject(feats.keypoints, depth, cam, position, quat, self.plan.depth_limits).points
            self.writer.add(feats.keypoints, feats.descriptors, points, grads)
            return
        if index != len(self._views):  # the partners and the written rows refer to positions in this order
            raise ValueError(f"map image {name} came as index {index}, expected {len(self._views)}: feed map images "
                             "in index order")
        self._spill.add(feats.keypoints, feats.descriptors, grads)
        self._views.append(View.from_pose(cam, np.asarray(position), np.asarray(quat)))

    def _triangulate_all(self, progress: bool = False, like: GeometryBuilder | None = None) -> None:
        """Pass 2: partners from all poses, then every map image in index order (a progress bar: a few minutes
        for thousands of images); the band and reprojection check measured here, or taken from `like`."""
        if not self._views:
            return
        centres = np.stack([v.centre for v in self._views])
        axes = np.stack([np.asarray(v.R)[2] for v in self._views])  # optical axis (camera z) in the map frame
        plan = self.plan
        partners = choose_partners(centres, axes, plan.partners, plan.partner_max_angle_deg)
        if like is None:
            self._set_thresholds(partners)
        else:
            self.epipolar_px, self.tri_limits, self.pose_noise_px = (like.epipolar_px, like.tri_limits,
                                                                     like.pose_noise_px)
        desc = "triangulate" + ("" if self.kind.is_sift else f" ({self.kind.name})")
        for i, others in enumerate(tqdm(partners, desc=desc, unit="img", disable=not progress)):
            row, matched = self._triangulated(i, [int(j) for j in others])
            widened = False
            for _ in range(plan.widen_steps):
                if not len(others) or _found(row) >= plan.widen_below * matched:
                    break
                reach = plan.widen_factor * float(np.linalg.norm(centres[others] - centres[i], axis=1).max())
                others = wider_partners(i, centres, axes, plan.partners, plan.partner_max_angle_deg, reach)
                if not len(others):
                    break
                wider, wider_matched = self._triangulated(i, [int(j) for j in others])
                if _found(wider) > _found(row):
                    row, matched, widened = wider, wider_matched, True
            self.widened += widened
            self.writer.add(*row)

    def _triangulated(self, i: int, others: list[int]
                      ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], int]:
        """Image i's (keypoints, descriptors, points, gradients) triangulated with partners `others`, and how many
        of its keypoints matched at least one partner."""
        assert self._spill is not None
        kp, desc, grads = self._spill.get(i)
        ref = self._views[i]
        n = len(kp)
        points = np.full((n, 3), np.nan)
        if n == 0 or not others:
            return (kp, desc, points, grads), 0
        obs = np.full((n, len(others), 2), np.nan)
        xn = normalized(kp, ref.cam) if self.epipolar_px > 0 else None  # once, not per partner
        for s, j in enumerate(others):
            other_kp, other_desc, _ = self._spill.get(j)
            m = self._match(i, xn, desc, j, other_kp, other_desc)
            obs[m[:, 0], s] = other_kp[m[:, 1]]
        seen = np.isfinite(obs[:, :, 0])
        codes = seen @ (1 << np.arange(len(others)))
        for code in np.unique(codes[codes > 0]):
            rows = np.flatnonzero(codes == code)
            slots = [s for s in range(len(others)) if code >> s & 1]
            if len(slots) + 1 < self.plan.min_views:
                continue
            uv = np.concatenate([kp[rows, None].astype(np.float64), obs[rows][:, slots]], 1)
            tri = triangulate([ref] + [self._views[others[s]] for s in slots], uv, self.tri_limits)
            z = np.where(tri.ok, tri.points @ ref.R[2] + ref.t[2], np.nan)  # depth in the map image
            lim = self.plan.depth_limits  # the depth path's range: a far two-view point is mostly a mismatch
            ok = tri.ok & (z >= lim.min_depth_m) & (z <= lim.max_depth_m)
            points[rows[ok]] = tri.points[ok]
        return (kp, desc, points, grads), int(seen.any(axis=1).sum())

    def _set_thresholds(self, partners: list[np.ndarray]) -> None:
        """The poses' noise in pixels from strong plain matches (ratio 0.6) of up to 30 map images with their
        nearest partner: 1.4826 x the median point-to-line distance (a robust sigma); the epipolar band and the
        reprojection check become `noise_sigmas` of it, never below the plan's, never above max_threshold_px.
        Why: the plan's 2 px suit exact poses; ground truth from mocap or GPS/INS is off by a few tenths of a
        degree, which puts right matches several pixels off their lines (development town, poses perturbed by 0.2
        deg and 2 cm: 4 px kept 23 % more points and 7.5 points more frames within 0.25 m, docs/maps.md)."""
        plan, cam = self.plan, self.cam or self.plan.intrinsics
        self.epipolar_px, self.tri_limits, self.pose_noise_px = plan.epipolar_px, plan.tri_limits, None
        if plan.noise_sigmas <= 0 or plan.epipolar_px <= 0:
            return
        dists = []
        for i in np.unique(np.linspace(0, len(partners) - 1, min(30, len(partners))).astype(int)):
            if not len(partners[i]):
                continue
            j = int(partners[i][0])
            (kp, desc, _), (kq, dq, _) = self._spill.get(int(i)), self._spill.get(j)
            m = match_descriptors(desc, dq, 0.6)
            R, t = self._relative(int(i), j)
            dists.append(line_distances_px(normalized(kp[m[:, 0]], cam), normalized(kq[m[:, 1]], cam), R, t, cam.fx))
        d = np.concatenate(dists) if dists else np.zeros(0)
        if len(d) < 50:  # too few to tell: keep the plan's
            return
        self.pose_noise_px = float(1.4826 * np.median(d))
        px = float(np.clip(plan.noise_sigmas * self.pose_noise_px, plan.epipolar_px, plan.max_threshold_px))
        self.epipolar_px = px
        self.tri_limits = replace(plan.tri_limits, max_error_px=max(plan.tri_limits.max_error_px, px))

    def _relative(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(R, t) taking map image i's camera coordinates to map image j's."""
        a, b = self._views[i], self._views[j]
        R = np.asarray(b.R) @ np.asarray(a.R).T
        return R, np.asarray(b.t).reshape(3) - R @ np.asarray(a.t).reshape(3)

    def _match(self, i: int, xn: np.ndarray | None, desc: np.ndarray, j: int, other_kp: np.ndarray,
               other_desc: np.ndarray) -> np.ndarray:
        """Map image i's keypoints (normalised: `xn`) matched to partner j's: near the epipolar line the poses
        give, or plainly (xn None)."""
        if xn is None:
            return match_descriptors(desc, other_desc, self.ratio)
        R, t = self._relative(i, j)
        cam = self._views[i].cam
        band = self.epipolar_px / cam.fx
        return epipolar_match(xn, desc, normalized(other_kp, cam), other_desc, R, t, (band, band), self.ratio)

    def close(self) -> None:
        """Close the geometry files and remove the temporary features; safe to call again."""
        try:
            self.writer.close()
        finally:
            if self._spill is not None:
                self._spill.remove()

    def finish(self, progress: bool = False, like: GeometryBuilder | None = None) -> dict[str, Any]:
        """Triangulate (two-pass; with the epipolar band and reprojection check of `like`, a finished builder over
        the same images, when given), close the files, remove the temporary features and return the manifest's
        "geometry" record (a kind other than SIFT: its recipe and counts, for geometry.<kind>)."""
        t0 = time.perf_counter()
        try:
            if self._spill is not None:
                self._triangulate_all(progress, like)
        finally:
            self.close()
        self.seconds += time.perf_counter() - t0
        if not self.kind.is_sift:
            widened = {"widened": self.widened} if self.plan.method == "triangulate" else {}
            return {**(self.kind.record or {}), **self.writer.counts(), "seconds": round(self.seconds, 3), **widened}
        cam = self.cam or self.plan.intrinsics
        extra: dict[str, Any] = {"seconds": round(self.seconds, 3)}
        if self.plan.method == "triangulate":
            extra.update(partners=self.plan.partners, partner_max_angle_deg=self.plan.partner_max_angle_deg,
                         partner_rule=PARTNER_RULE, epipolar_px=self.epipolar_px, widened=self.widened,
                         pose_noise_px=None if self.pose_noise_px is None else round(self.pose_noise_px, 3),
                         reprojection_px=self.tri_limits.max_error_px)
        sparse, images = self.writer.sparse_images, len(self.writer.offsets) - 1
        if sparse:
            fix = ("photographs that overlap a neighbour looking the same way" if self.plan.method == "triangulate"
                   else "valid depth for them")
            log.warning("map geometry: %d of %d map images have fewer than %d 3D points, so frames answered there "
                        "cannot be verified: add %s", sparse, images, SPARSE_IMAGE_POINTS, fix)
        return self.writer.record(self.plan.method, cam, features=self.plan.sift.to_record(), **extra)


def check_learned(plan: GeometryPlan | None, learned: LearnedPlan | None) -> None:
    """A ValueError when learned features are asked for without map geometry to hold them."""
    if plan is None and learned is not None:
        raise ValueError(f"--verify-features {learned.verify_features} needs map geometry (camera intrinsics and "
                         "metric poses, --geometry auto/depth/triangulate): add them or pass --verify-features sift")


def geometry_builders(plan: GeometryPlan | None, learned: LearnedPlan | None, directory: Path
                      ) -> list[GeometryBuilder]:
    """The map's geometry builders: SIFT's, then (with `learned`) the learned kind's over the same images, which
    reads each depth image once more from a one-image cache, not from disk (`check_learned` first)."""
    check_learned(plan, learned)
    if plan is None:
        return []
    if learned is None:
        return [GeometryBuilder(plan, directory)]
    if plan.depth_of is not None:
        plan = replace(plan, depth_of=functools.lru_cache(maxsize=1)(plan.depth_of))
    log.info("map geometry: learned keypoints too (%s, verify_features %s)", learned.net, learned.verify_features)
    sift = GeometryBuilder(plan, directory)
    try:
        return [sift, GeometryBuilder(plan, directory, learned.kind_in(directory))]
    except BaseException:
        sift.close()
        raise


def _found(row: tuple[np.ndarray, ...]) -> int:
    """3D points an image's triangulation found (rows are keypoints, descriptors, points, gradients)."""
    return int(np.isfinite(row[2][:, 0]).sum())


def geometry_budget(plan: GeometryPlan | None, learned: Any = None) -> tuple[int, bool, int, int] | None:
    """(SIFT keypoints per image at most, triangulated?, learned keypoints at most, the network's bytes) for the
    map's size estimate; None without geometry. An unlimited SIFT (nfeatures 0) is budgeted at 8000 keypoints,
    about what a 1600 px photograph gives. `learned`: the LearnedPlan (maps/feature_kind.py) or None."""
    if plan is None:
        return None
    net = Path(learned.net) if learned is not None else None
    return (plan.sift.nfeatures or 8000, plan.method == "triangulate", learned.config.limit if learned else 0,
            net.stat().st_size if net is not None and net.is_file() else 0)
