"""A map triangulated from video: map images a few cm apart (a handheld or slow camera at 30 Hz), whose nearest
pose partners stand too close for parallax, get their 3D points from partners farther away
(GeometryPlan.widen_*), checked against the depth the renderer computed for the same pixels."""
from __future__ import annotations

import numpy as np

from disam_ros.maps.geometry_build import GeometryBuilder, GeometryPlan
from disam_ros.maps.map_format import GEOM_KEYPOINTS, GEOM_OFFSETS, GEOM_POINTS
from disam_ros.pose.camera import Intrinsics

STEP_M = 0.03  # between frames: 1 m/s at 30 Hz
FRAMES = 16


def _video(world_dir):
    """FRAMES views from map pose 5 of the shared town, each STEP_M further to the camera's right (same
    orientation): (rgb, position, rendered optical-frame depth) each, the quaternion and the intrinsics."""
    from disam_ros.data.synthetic import WorldConfig
    from disam_ros.data.synthetic.generate import load_world
    from disam_ros.data.synthetic.shade import render
    from disam_ros.data.tum import read_tum
    from disam_ros.geometry import quat_to_rot

    town, info = load_world(world_dir)
    cam = WorldConfig(seed=info.seed, image_size=tuple(info.image_size), fov_deg=info.fov_deg).camera()
    intr = Intrinsics(fx=cam.fx, fy=cam.fy, cx=cam.cx, cy=cam.cy, width=cam.width, height=cam.height)
    track = read_tum(world_dir / "sunny" / "poses.txt")
    p0, quat = np.asarray(track.positions[5]), np.asarray(track.quats[5])
    right = quat_to_rot(quat)[:, 0]
    frames = []
    for j in range(FRAMES):
        pos = p0 + right * STEP_M * j
        rgb, _, depth = render(town, (pos, quat), cam, "sunny", buffers=True)
        frames.append((rgb, pos, depth))
    return frames, quat, intr


def _build(frames, quat, intr, out, widen_steps):
    out.mkdir()
    builder = GeometryBuilder(GeometryPlan("triangulate", intr, widen_steps=widen_steps), out)
    for j, (rgb, pos, _) in enumerate(frames):
        builder.add(j, rgb, pos, quat, f"{j:03d}.png")
    return builder.finish()


def _relative_depth_errors(frames, quat, out):
    """|z - rendered z| / rendered z of every stored point, z along each image's optical axis at its keypoint."""
    from disam_ros.geometry import quat_to_rot

    axis = quat_to_rot(quat)[:, 2]
    pts, kp, off = np.load(out / GEOM_POINTS), np.load(out / GEOM_KEYPOINTS), np.load(out / GEOM_OFFSETS)
    errs = []
    for j, (_, pos, depth) in enumerate(frames):
        p, k = pts[off[j]:off[j + 1]], kp[off[j]:off[j + 1]]
        uv = np.clip(np.round(k).astype(int), 0, [depth.shape[1] - 1, depth.shape[0] - 1])
        truth = depth[uv[:, 1], uv[:, 0]]
        ok = np.isfinite(truth) & (truth > 0)
        errs.append(np.abs((p[ok] - pos) @ axis - truth[ok]) / truth[ok])
    return np.concatenate(errs)


def test_a_map_recorded_as_video_takes_partners_far_enough_for_parallax(geometry_world, tmp_path):
    """3 cm between frames, a street 5-40 m deep: the four nearest partners (<= 6 cm) give under a degree of
    parallax, so nearly every keypoint fails the 1.5 deg check and those that pass are far off. Partners 4x
    farther (and again) give most images their points, at the accuracy a baseline of tens of cm allows."""
    frames, quat, intr = _video(geometry_world["world"])
    near = _build(frames, quat, intr, tmp_path / "near", widen_steps=0)
    wide = _build(frames, quat, intr, tmp_path / "wide", widen_steps=3)
    assert near["widened"] == 0 and wide["widened"] >= FRAMES // 2
    assert wide["with_point"] >= 5 * max(near["with_point"], 1), (near["with_point"], wide["with_point"])
    assert wide["sparse_images"] <= FRAMES // 3 < near["sparse_images"]
    errors = _relative_depth_errors(frames, quat, tmp_path / "wide")
    assert len(errors) >= 0.95 * wide["with_point"]  # the rest landed on sky pixels: mismatches the checks kept
    assert np.median(errors) < 0.25, np.median(errors)
