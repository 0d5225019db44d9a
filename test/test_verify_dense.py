"""The verifier's dense search (verify/gradient_search.py) on the shared rendered town: a frame rendered in snow
at a known pose that SIFT cannot verify is verified by it, within (0.25 m, 2 deg) of the pose it was
rendered at, and hands on map points for tracking; a wrong place is not verified; a map built without gradient
descriptors is verified as before, without the search; the map keeps its gradients through a load."""
from __future__ import annotations

import numpy as np
import pytest

from disam_ros.geometry import quat_angle_deg, quat_to_rot
from disam_ros.verify.verifier import Verifier, VerifyConfig


@pytest.fixture(scope="module")
def town(geometry_world):
    from disam_ros.data.synthetic import WorldConfig
    from disam_ros.data.synthetic.generate import load_world
    from disam_ros.maps import LocalizationMap

    world, info = load_world(geometry_world["world"])
    camera = WorldConfig(seed=info.seed, image_size=tuple(info.image_size), fov_deg=info.fov_deg).camera()
    return world, camera, LocalizationMap.load(geometry_world["map"])


def _render_beside(town, k: int, condition: str):
    """Map image k's view from 0.8 m to its right and 0.5 m ahead, in `condition`."""
    from disam_ros.data.synthetic.shade import render

    world, camera, m = town
    quat = np.asarray(m.quats[k], np.float64)
    pos = np.asarray(m.positions[k], np.float64) + quat_to_rot(quat) @ np.array([0.8, 0.0, 0.5])
    return render(world, (pos, quat), camera, condition, frame=k), pos, quat


@pytest.mark.parametrize("condition, k", [("snow", 10), ("snow", 11)])
def test_a_frame_sift_cannot_verify_is_verified_metric_by_the_dense_search(town, condition, k):
    _, _, m = town
    rgb, pos, quat = _render_beside(town, k, condition)
    off = Verifier(m, VerifyConfig(gradient_candidates=0)).verify(rgb, [k])
    assert not off.verified and not any(a.dense for a in off.attempts)
    on = Verifier(m, VerifyConfig()).verify(rgb, [k])
    assert on.verified and on.dense and on.index == k and on.diagnostics()["verified_dense"]
    assert float(np.linalg.norm(on.position - pos)) < 0.25 and float(quat_angle_deg(on.quat, quat)) < 2.0
    assert on.inliers >= VerifyConfig().gradient_min_inliers
    assert on.support is not None and len(on.support.points) >= 15  # tracking carries on from it
    assert np.all(np.linalg.eigvalsh(on.covariance[:3, :3]) > 0)
    plain = Verifier(m, VerifyConfig(gradient_covariance_scale=1.0)).verify(rgb, [k])  # the same solve, unscaled
    np.testing.assert_allclose(on.covariance, plain.covariance * VerifyConfig().gradient_covariance_scale, rtol=1e-9)


def test_a_wrong_place_is_not_verified_by_the_dense_search(town):
    _, _, m = town
    rgb, _, _ = _render_beside(town, 2, "rain")
    v = Verifier(m, VerifyConfig()).verify(rgb, [9])  # ~20 m further on
    assert not v.verified and v.attempts[-1].dense


def test_a_map_without_gradient_descriptors_verifies_without_the_search(town, geometry_world):
    from disam_ros.maps import LocalizationMap

    m = LocalizationMap.load(geometry_world["map"])
    assert m.map_geometry.gradient_cell == 8 and m.map_geometry.image_gradients(0).shape[1] == 128
    m.map_geometry.gradients = None  # as a map built before them
    rgb, _, _ = _render_beside(town, 2, "rain")
    v = Verifier(m, VerifyConfig()).verify(rgb, [2])
    assert not v.verified and not any(a.dense for a in v.attempts)


def test_the_tracker_searches_densely_in_sequence_mode_and_in_single_mode_only_when_asked(geometry_world):
    from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
    from disam_ros.retrieval.search import SearchConfig
    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    reloc = Relocalizer.from_map(geometry_world["map"], RelocalizerConfig(search=SearchConfig(device="cpu"),
                                                                          domain="sunny"))
    cand = VerifyConfig().gradient_candidates
    assert cand > 0
    assert Tracker(reloc, TrackerConfig(mode="sequence")).verifier.config.gradient_candidates == cand
    assert Tracker(reloc, TrackerConfig(mode="single")).verifier.config.gradient_candidates == 0
    asked = TrackerConfig(mode="single", verify=VerifyConfig(gradient_single=True))
    assert Tracker(reloc, asked).verifier.config.gradient_candidates == cand


def test_the_query_is_described_at_the_maps_angular_scale():
    """The cell spans the same angle of view in map and query: 8 px at the map camera's 640 px; a query at half
    the resolution (focal length halved) gets 4 px, one with a 1.5x longer lens at the same size 12 px."""
    from disam_ros.pose.camera import Intrinsics
    from disam_ros.verify.gradient_search import query_grid

    map_cam = Intrinsics(fx=457.0, fy=457.0, cx=319.5, cy=239.5, width=640, height=480)
    cfg = VerifyConfig()
    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    assert query_grid(rgb, 8, map_cam, map_cam, cfg).cell == 8
    assert query_grid(rgb[::2, ::2], 8, map_cam, map_cam.scaled(320, 240), cfg).cell == 4
    assert query_grid(rgb[::2, ::2], 8, map_cam, map_cam.scaled(320, 240), cfg).grid.stride == 2
    tele = Intrinsics(fx=685.5, fy=685.5, cx=319.5, cy=239.5, width=640, height=480)
    assert query_grid(rgb, 8, map_cam, tele, cfg).cell == 12


def test_a_large_query_is_searched_on_a_shrunk_copy_and_stays_metric(town):
    """A 1280x960 frame (a snow frame upscaled 4x; the map's intrinsics scaled to it) is searched on a 1024 px
    working copy, its finds mapped back to the frame's own pixels: the pose is as metric as at 320 px."""
    import cv2

    from disam_ros.pose.gradients import MAX_SIDE, from_working, to_working, working_scale

    assert working_scale(1280, 960) == MAX_SIDE / 1280 and working_scale(640, 480) == 1.0
    xy = np.array([[0.0, 0.0], [639.0, 479.0], [10.25, 3.5]])
    np.testing.assert_allclose(from_working(to_working(xy, 0.8), 0.8), xy, atol=1e-12)
    np.testing.assert_allclose(to_working(np.array([[-0.5, -0.5]]), 0.8), [[-0.5, -0.5]])  # the image corner stays
    _, _, m = town
    rgb, pos, quat = _render_beside(town, 10, "snow")
    big = cv2.resize(rgb, (rgb.shape[1] * 4, rgb.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    on = Verifier(m, VerifyConfig()).verify(big, [10])
    assert on.verified and on.dense and "scaled to 1280x960" in on.camera
    assert float(np.linalg.norm(on.position - pos)) < 0.25 and float(quat_angle_deg(on.quat, quat)) < 2.0
