"""Building map geometry (`disam-build-map --geometry {auto,depth,triangulate,none}`), one map image at a time.

- depth: SIFT keypoints of the map image, lifted to the map frame through its depth (pose/backproject.py, with
  its edge / range checks); exact where the depth is.
- triangulate: SIFT keypoints of map image i matched (ratio test + mutual NN) to its neighbours i-k..i+k in the
  drive (build order = stamp order: folders are sorted by name with poses.txt in that order, bags by stamp),
  each keypoint's track triangulated with the known poses and intrinsics (pose/triangulate.py: DLT, then the
  behind-camera, reprojection and parallax checks, then the depth path's range 0.1..60 m in the map image);
  keypoints whose track fails keep a NaN point.

Memory is bounded: the depth path holds one image's features, triangulation a window of 2k + 1 images'
features (never the images). Keypoints are in the pixels of the image the frame source gives (the original: the
encoder resizes only its own copy); when that image's size differs from the intrinsics' (camera.yaml written for
another resolution), the intrinsics are scaled to it (Intrinsics.scaled) and the scaled ones are stored.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.maps.geometry_store import GeometryWriter
from disam_ros.pose.backproject import DepthLimits, backproject
from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.features import MAP_SIFT, SiftConfig, detect_sift, match_descriptors
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
    neighbours: int = 2  # triangulate: match to i-2..i+2
    min_views: int = 2  # triangulate: views per track (the map image + matched neighbours)
    ratio: float = 0.8
    depth_limits: DepthLimits = field(default_factory=DepthLimits)
    tri_limits: TriangulationLimits = field(default_factory=lambda: TriangulationLimits(max_error_px=2.0))


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
    log.info("map geometry: %s (%s)", method, "SIFT + depth" if method == "depth" else "SIFT matched to neighbours, "
             "triangulated with the known poses")
    return GeometryPlan(method, camera, depth_of if method == "depth" else None)


@dataclass
class _Item:
    index: int
    name: str
    keypoints: np.ndarray
    descriptors: np.ndarray
    view: View


class GeometryBuilder:
    """Feed every map frame in order (`add`), then `finish()` -> the manifest's "geometry" record."""

    def __init__(self, plan: GeometryPlan, directory: Path) -> None:
        self.plan = plan
        self.writer = GeometryWriter(directory)
        self.cam: Intrinsics | None = None
        self._window: deque[_Item] = deque()
        self._next = 0  # next index of the window to write (triangulation)
        self._count = 0
        self.seconds = 0.0

    def _camera(self, image: np.ndarray, name: str) -> Intrinsics:
        h, w = image.shape[:2]
        if self.cam is None:
            cam = self.plan.intrinsics
            if (cam.width, cam.height) != (w, h):
                log.info("map images are %dx%d, the intrinsics %dx%d: scaling them to the images", w, h, cam.width,
                         cam.height)
                cam = cam.scaled(w, h)
            self.cam = cam
        elif (self.cam.width, self.cam.height) != (w, h):
            raise ValueError(f"map image {name} is {w}x{h}, the earlier ones {self.cam.width}x{self.cam.height}: map "
                             "geometry needs one camera; pass --geometry none or resize the images alike")
        return self.cam

    def add(self, index: int, image: np.ndarray, position: np.ndarray, quat: np.ndarray, name: str) -> None:
        t0 = time.perf_counter()
        cam = self._camera(image, name)
        feats = detect_sift(image, self.plan.sift)
        if self.plan.method == "depth":
            depth = self.plan.depth_of(index) if self.plan.depth_of is not None else None
            if depth is None:
                points = np.full((len(feats), 3), np.nan)
            else:
                if depth.shape != image.shape[:2]:
                    raise ValueError(f"map image {name}: depth is {depth.shape[1]}x{depth.shape[0]}, the image "
                                     f"{image.shape[1]}x{image.shape[0]}; pass --geometry triangulate")
                points = backproject(feats.keypoints, depth, cam, position, quat, self.plan.depth_limits).points
            self.writer.add(feats.keypoints, feats.descriptors, points)
        else:
            self._window.append(_Item(index, name, feats.keypoints, feats.descriptors,
                                      View.from_pose(cam, np.asarray(position), np.asarray(quat))))
            self._drain(final=False)
        self._count += 1
        self.seconds += time.perf_counter() - t0

    def _drain(self, final: bool) -> None:
        k = self.plan.neighbours
        while self._window and any(it.index == self._next for it in self._window) and (
                final or self._window[-1].index >= self._next + k):
            self.writer.add(*self._triangulated(self._next))
            self._next += 1
            while self._window and self._window[0].index < self._next - k:
                self._window.popleft()

    def _triangulated(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        items = {it.index: it for it in self._window}
        ref = items[i]
        others = [items[j] for j in range(i - self.plan.neighbours, i + self.plan.neighbours + 1)
                  if j != i and j in items]
        n = len(ref.keypoints)
        points = np.full((n, 3), np.nan)
        if n == 0 or not others:
            return ref.keypoints, ref.descriptors, points
        obs = np.full((n, len(others), 2), np.nan)
        for s, other in enumerate(others):
            m = match_descriptors(ref.descriptors, other.descriptors, self.plan.ratio)
            obs[m[:, 0], s] = other.keypoints[m[:, 1]]
        seen = np.isfinite(obs[:, :, 0])
        codes = seen @ (1 << np.arange(len(others)))
        for code in np.unique(codes[codes > 0]):
            rows = np.flatnonzero(codes == code)
            slots = [s for s in range(len(others)) if code >> s & 1]
            if len(slots) + 1 < self.plan.min_views:
                continue
            uv = np.concatenate([ref.keypoints[rows, None].astype(np.float64), obs[rows][:, slots]], 1)
            tri = triangulate([ref.view] + [others[s].view for s in slots], uv, self.plan.tri_limits)
            z = np.where(tri.ok, tri.points @ ref.view.R[2] + ref.view.t[2], np.nan)  # depth in the map image
            lim = self.plan.depth_limits  # the depth path's range: a far two-view point is mostly a mismatch
            ok = tri.ok & (z >= lim.min_depth_m) & (z <= lim.max_depth_m)
            points[rows[ok]] = tri.points[ok]
        return ref.keypoints, ref.descriptors, points

    def finish(self) -> dict[str, Any]:
        """Write what is left, close the files and return the manifest's "geometry" record."""
        t0 = time.perf_counter()
        try:
            if self.plan.method == "triangulate":
                self._drain(final=True)
        finally:
            self.writer.close()
        self.seconds += time.perf_counter() - t0
        cam = self.cam or self.plan.intrinsics
        extra: dict[str, Any] = {"seconds": round(self.seconds, 3)}
        if self.plan.method == "triangulate":
            extra["neighbours"] = self.plan.neighbours
        return self.writer.record(self.plan.method, cam, features=self.plan.sift.to_record(), **extra)
