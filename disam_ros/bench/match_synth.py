"""`disam-bench match`, part `synth`: daylight map frames against nearby query frames under every other condition,
with exact ground truth from the rendered world.

Why: the synthetic town renders depth and exact poses, so a map keypoint's true position in the query is known
under a real viewpoint change (each drive has its own lane offset, heading wobble and spacing): back-project the
keypoint with the map frame's depth, pose and intrinsics, project the 3D point into the query's true pose. A
match whose map keypoint has no usable depth (sky, silhouette: pose/backproject.py's checks) or whose point is
hidden in the query (query depth there more than 10 % nearer than the point) has no ground truth and is left out
of MMA. The pose is what the product solves: the map keypoints' 3D points against the query keypoints, PnP in
RANSAC (cv2.solvePnPRansac, 8 px as the product's solver at 640x480, at least 15 inliers), scored in the
product's (0.25 m, 2 deg), (0.5 m, 5 deg), (5 m, 10 deg) buckets.

Pairs: the town is rendered with the map drive (`sunny`) and one drive per condition; every query frame is
paired with the map frame nearest in position, kept when within 5 m and 15 deg (frames at the ends of a drive
may have no map frame near), the first `pairs` kept per condition.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from disam_ros.bench.match_methods import METHODS, LocalFeatures, match
from disam_ros.bench.match_metrics import POSE_BUCKETS, median, mma, pose_error, within
from disam_ros.data.folders import ConditionFolder, load_condition, read_image
from disam_ros.geometry import quat_angle_deg
from disam_ros.pose.backproject import backproject
from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.frames import cam_from_map, project

MAP_CONDITION = "sunny"
THRESHOLDS = (5.0, 10.0, 20.0)
PAIR_MAX_M, PAIR_MAX_DEG = 5.0, 15.0
PNP_PX, PNP_MIN_INLIERS = 8.0, 15
OCCLUSION = 0.1  # a point is hidden when the query's depth there is this share nearer than the point


@dataclass(frozen=True)
class SynthPair:
    """A query frame of one condition and the map frame nearest to it."""

    condition: str
    query: int
    map: int


def render_town(root: Path, seed: int, size: tuple[int, int], frames: int, conditions: tuple[str, ...]) -> Path:
    """The town rendered into `root` (reused as it is when `root` already holds a world)."""
    from disam_ros.data.synthetic import WorldConfig, make_world

    if (root / "world.yaml").is_file():
        return root
    cfg = WorldConfig(seed=seed, image_size=size, frames=frames, workers=2, sheet_places=2,
                      conditions=(MAP_CONDITION, *conditions))
    return make_world(cfg, root, progress=False)


def synth_pairs(ref: ConditionFolder, query: ConditionFolder, limit: int) -> list[SynthPair]:
    """The first `limit` query frames whose nearest map frame is within PAIR_MAX_M and PAIR_MAX_DEG."""
    rp, rq = ref.trajectory.positions, ref.trajectory.quats
    out = []
    for k, (pos, quat) in enumerate(zip(query.trajectory.positions, query.trajectory.quats, strict=True)):
        j = int(np.argmin(np.linalg.norm(rp - pos, axis=1)))
        if np.linalg.norm(rp[j] - pos) <= PAIR_MAX_M and quat_angle_deg(rq[j], quat) <= PAIR_MAX_DEG:
            out.append(SynthPair(query.name, k, j))
        if len(out) == limit:
            break
    return out


def visible(points: np.ndarray, R: np.ndarray, t: np.ndarray, cam: Intrinsics,
            depth: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Map points (N,3) -> their true query pixels (N,2), NaN where behind, outside, or hidden (query depth)."""
    uv, z = project(points, R, t, cam)
    uv = np.where(np.isfinite(uv), uv, -1.0)
    col, row = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    ok = (z > 0) & (col >= 0) & (row >= 0) & (col < cam.width) & (row < cam.height)
    if depth is not None:
        d = np.zeros(len(z))
        d[ok] = depth[row[ok], col[ok]]
        ok &= ~((d > 0) & (d < (1.0 - OCCLUSION) * z))
    uv[~ok] = np.nan
    return uv, ok


def solve_pnp(p3: np.ndarray, p2: np.ndarray, cam: Intrinsics) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Camera-from-map (R, t) and inliers by cv2.solvePnPRansac; None under PNP_MIN_INLIERS."""
    if len(p3) < max(6, PNP_MIN_INLIERS):
        return None
    cv2.setRNGSeed(0)
    ok, rvec, tvec, inl = cv2.solvePnPRansac(p3.astype(np.float64), p2.astype(np.float64), cam.matrix(), cam.dist(),
                                             iterationsCount=2000, reprojectionError=PNP_PX, confidence=0.9999)
    if not ok or inl is None or len(inl) < PNP_MIN_INLIERS:
        return None
    return cv2.Rodrigues(rvec)[0], tvec.ravel(), len(inl)


@dataclass
class MapSide:
    """A map frame's features and their 3D points (NaN where the depth refused them), computed once."""

    features: LocalFeatures
    points: np.ndarray


def map_side(ref: ConditionFolder, cam: Intrinsics, j: int, fn: Callable[[np.ndarray], LocalFeatures]) -> MapSide:
    f = fn(read_image(ref.image_paths[j]))
    bp = backproject(f.keypoints, ref.depth(j), cam, ref.trajectory.positions[j], ref.trajectory.quats[j])
    return MapSide(f, np.where(bp.ok[:, None], bp.points, np.nan))


def score_pair(side: MapSide, query: ConditionFolder, k: int, cam: Intrinsics, fn) -> dict:
    """One query frame against its map frame: MMA under the true projection and the PnP pose error."""
    t0 = time.perf_counter()
    qf = fn(read_image(query.image_paths[k]))
    ms = 1000.0 * (time.perf_counter() - t0)
    pairs = match(qf, side.features)
    q_px, pts = qf.keypoints[pairs[:, 0]].astype(np.float64), side.points[pairs[:, 1]]
    has3d = np.isfinite(pts).all(axis=1)
    R, t = cam_from_map(query.trajectory.positions[k], query.trajectory.quats[k])
    true_px, _ = visible(np.nan_to_num(pts), R, t, cam, query.depth(k))
    true_px[~has3d] = np.nan
    err = np.linalg.norm(q_px - true_px, axis=1)
    sol = solve_pnp(pts[has3d], q_px[has3d], cam)
    pose = pose_error(sol[0], sol[1], R, t) if sol else (float("inf"), float("inf"))
    return {"mma": mma(err, THRESHOLDS), "matches": len(pairs), "with_truth": int(np.isfinite(err).sum()),
            "inliers": sol[2] if sol else 0, "pose": pose, "ms": ms}


def summarise(method: str, condition: str, scores: list[dict]) -> dict:
    row = {"part": "synth", "method": method, "group": condition, "pairs": len(scores)}
    for i, t in enumerate(THRESHOLDS):
        row[f"mma@{t:g}"] = float(np.mean([s["mma"][i] for s in scores])) if scores else 0.0
    for (m, d), share in zip(POSE_BUCKETS, within([s["pose"] for s in scores]), strict=True):
        row[f"pose@{m:g}m{d:g}deg"] = share
    row.update(median_matches=median([s["matches"] for s in scores]),
               median_with_truth=median([s["with_truth"] for s in scores]),
               median_inliers=median([s["inliers"] for s in scores]), ms=median([s["ms"] for s in scores]))
    return row


def run_synth(world: Path, methods: tuple[str, ...], conditions: tuple[str, ...], pairs: int,
              tick: Callable[[], None]) -> list[dict]:
    """Rows per method and condition, then `all` pooled over the conditions."""
    ref = load_condition(world, MAP_CONDITION, require_poses=True)
    if not ref.has_depth or ref.camera is None:
        raise ValueError(f"{world}/{MAP_CONDITION}: no depth/ or camera.yaml: render the town with depth "
                         "(disam-synth without --no-depth) or leave --world out")
    cam = Intrinsics.from_camera(ref.camera)
    plan = {}
    for c in conditions:
        query = load_condition(world, c, require_poses=True)
        plan[c] = (query, synth_pairs(ref, query, pairs))
    rows = []
    for name in methods:
        fn, sides, every = METHODS[name], {}, []
        for cond, (query, todo) in plan.items():
            scores = []
            for p in todo:
                if p.map not in sides:
                    sides[p.map] = map_side(ref, cam, p.map, fn)
                scores.append(score_pair(sides[p.map], query, p.query, cam, fn))
                tick()
            rows.append(summarise(name, cond, scores))
            every += scores
        rows.append(summarise(name, "all", every))
    return rows
