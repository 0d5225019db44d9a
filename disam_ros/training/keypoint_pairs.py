"""Training pairs for the keypoint network: a daylight frame and a frame of another condition from a nearby
pose, with exact pixel correspondences from the rendered world's depth and poses.

Why rendered towns: a real drive under night and snow with pixel-exact correspondences to a daylight map does
not exist here, while the synthetic world renders depth (optical-frame z) and exact poses for every drive. A
pixel of frame A with depth d back-projects to a 3D point, which projects into frame B; the pair is kept only
where B's own depth at that pixel agrees (within OCCLUSION) so that hidden points never become positives.
Pairs are the nearest daylight frame to each query frame (1-2 m apart, each drive has its own lane offset and
heading wobble) or its neighbour along the route (a few metres more), in either order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from disam_ros.data.depth import read_depth
from disam_ros.data.folders import CameraIntrinsics, ConditionFolder, load_condition, read_image
from disam_ros.geometry import quat_angle_deg, quat_to_rot

REFERENCE = "sunny"
OCCLUSION = 0.1  # B's depth must agree with the projected point's depth within this share
PAIR_MAX_M, PAIR_MAX_DEG = 8.0, 20.0


@dataclass(frozen=True)
class View:
    """One rendered frame: where its image and depth are, and its pose (T_map_optical)."""

    image: Path
    depth: Path
    position: np.ndarray
    quat: np.ndarray


def transfer(uv: np.ndarray, depth_a: np.ndarray, a: View, b: View, cam: CameraIntrinsics,
             depth_b: np.ndarray) -> np.ndarray:
    """Integer pixels uv (N,2: x, y) of A -> their true pixels in B (N,2), NaN where A has no depth, the point is
    behind B or outside it, or B's depth there disagrees (hidden or a silhouette). The pinhole arithmetic of
    pose/backproject.py and pose/frames.project, which training may not import (training sits on model/data);
    test_keypoints checks that the two agree."""
    u, v = uv[:, 0].astype(int), uv[:, 1].astype(int)
    z = depth_a[v, u].astype(np.float64)
    p_cam = np.stack([(u - cam.cx) / cam.fx * z, (v - cam.cy) / cam.fy * z, z], 1)
    world = p_cam @ quat_to_rot(a.quat).T + a.position
    p_b = (world - b.position) @ quat_to_rot(b.quat)
    zb = p_b[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.stack([cam.fx * p_b[:, 0] / zb + cam.cx, cam.fy * p_b[:, 1] / zb + cam.cy], 1)
    h, w = depth_b.shape
    col, row = np.round(out[:, 0]), np.round(out[:, 1])
    ok = (z > 0) & (zb > 0) & (col >= 0) & (row >= 0) & (col < w) & (row < h)
    seen = np.zeros(len(z))
    seen[ok] = depth_b[row[ok].astype(int), col[ok].astype(int)]
    ok &= np.abs(seen - zb) <= OCCLUSION * np.maximum(zb, 1e-9)
    out[~ok] = np.nan
    return out


def views(folder: ConditionFolder) -> list[View]:
    traj = folder.trajectory
    return [View(Path(p), Path(d), traj.positions[i], traj.quats[i])
            for i, (p, d) in enumerate(zip(folder.image_paths, folder.depth_paths, strict=True))]


Pairs = list[tuple[View, View]]


def world_pairs(root: Path, conditions: tuple[str, ...] | None = None) -> tuple[Pairs, CameraIntrinsics]:
    """Every (daylight, query) pair of one rendered town: each query frame with its nearest daylight frame and
    with that frame's next neighbour, kept within PAIR_MAX_M and PAIR_MAX_DEG."""
    ref = load_condition(root, REFERENCE, require_poses=True)
    if not ref.has_depth or ref.camera is None:
        raise ValueError(f"{root}: no depth/ or camera.yaml: render the town with depth (disam-synth without "
                         "--no-depth)")
    cam = ref.camera
    if np.any(cam.dist() != 0):
        raise ValueError(f"{root}: camera.yaml has lens distortion; the correspondences assume an ideal pinhole "
                         "(rendered towns): train on disam-synth towns")
    names = conditions or tuple(p.name for p in sorted(root.iterdir()) if (p / "images").is_dir())
    rv, pairs = views(ref), []
    rp = np.array([v.position for v in rv])
    for name in names:
        if name == REFERENCE:
            continue
        for q in views(load_condition(root, name, require_poses=True)):
            j = int(np.argmin(np.linalg.norm(rp - q.position, axis=1)))
            for m in (j, j + 1):
                if m < len(rv) and np.linalg.norm(rv[m].position - q.position) <= PAIR_MAX_M and \
                        quat_angle_deg(rv[m].quat, q.quat) <= PAIR_MAX_DEG:
                    pairs.append((rv[m], q))
    return pairs, cam


@dataclass
class Crop:
    """A training sample: two RGB crops and matching pixel lists (pts_a[i] in A shows what pts_b[i] shows in B),
    plus pixels of A that have no true match in B (sky, hidden, outside B's crop)."""

    a: np.ndarray
    b: np.ndarray
    pts_a: np.ndarray
    pts_b: np.ndarray
    unmatched_a: np.ndarray


def grid_points(rng: np.random.Generator, x0: int, y0: int, size: int, step: int) -> np.ndarray:
    """One random pixel in every step x step block of the crop at (x0, y0): spread, never two in one block."""
    g = np.arange(0, size, step)
    gx, gy = np.meshgrid(g, g)
    jitter = rng.integers(0, step, (gx.size, 2))
    return np.stack([gx.ravel() + x0, gy.ravel() + y0], 1) + jitter


def sample_crop(rng: np.random.Generator, a: View, b: View, cam: CameraIntrinsics, size: int = 256,
                step: int = 8) -> Crop | None:
    """A random size x size crop of A, the crop of B around where its points land, and their correspondences;
    None when fewer than 32 points of A land in B's crop."""
    if rng.random() < 0.5:
        a, b = b, a
    img_a, img_b = read_image(a.image), read_image(b.image)
    dep_a, dep_b = read_depth(a.depth), read_depth(b.depth)
    h, w = img_a.shape[:2]
    x0, y0 = int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))
    pts = grid_points(rng, x0, y0, size, step)
    true_b = transfer(pts, dep_a, a, b, cam, dep_b)
    ok = np.isfinite(true_b).all(1)
    if ok.sum() < 32:
        return None
    cx, cy = np.median(true_b[ok], axis=0)
    bx0 = int(np.clip(round(cx - size / 2), 0, w - size))
    by0 = int(np.clip(round(cy - size / 2), 0, h - size))
    inside = ok & (true_b[:, 0] >= bx0) & (true_b[:, 0] <= bx0 + size - 1) & \
        (true_b[:, 1] >= by0) & (true_b[:, 1] <= by0 + size - 1)
    if inside.sum() < 32:
        return None
    off_a, off_b = np.array([x0, y0]), np.array([bx0, by0])
    return Crop(img_a[y0:y0 + size, x0:x0 + size], img_b[by0:by0 + size, bx0:bx0 + size],
                (pts[inside] - off_a).astype(np.float32), (true_b[inside] - off_b).astype(np.float32),
                (pts[~inside] - off_a).astype(np.float32))
