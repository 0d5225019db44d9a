"""A dark keyframe verified densely around its own flow pose (verify/prior_step.py, `prior_dense_dark`) on the shared
rendered town: a frame rendered in snow at a known pose, which SIFT cannot verify, is answered by one dense search of
the map image nearest its guide, metric against where it was rendered and without any SIFT detection; the answer is
held to the guide (`polish_max_shift_m`), bright frames and the rule off take the SIFT pools as before, and a guide
at a far place finds nothing. Expected values are the render poses and the verifier's own gate."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from disam_ros.geometry import quat_angle_deg, quat_to_rot, rot_to_quat
from disam_ros.pose.frames import about_y
from disam_ros.verify.config import VerifyConfig

# the town's 320 px frames: looks at 160 px; every frame counts as dark (mean grey < 255)
DARK = VerifyConfig(first_min_width_px=160, first_probe_every=1, keyframe_dense_dark=255.0)


@pytest.fixture(scope="module")
def town(geometry_world):
    from disam_ros.data.synthetic import WorldConfig
    from disam_ros.data.synthetic.generate import load_world
    from disam_ros.maps import LocalizationMap

    world, info = load_world(geometry_world["world"])
    camera = WorldConfig(seed=info.seed, image_size=tuple(info.image_size), fov_deg=info.fov_deg).camera()
    m = LocalizationMap.load(geometry_world["map"])
    yield world, camera, m
    m.close()


def _beside(town, k: int, condition: str):
    """Map image k's view from 0.8 m to its right and 0.5 m ahead, in `condition`: image, position, quaternion."""
    from disam_ros.data.synthetic.shade import render

    world, camera, m = town
    quat = np.asarray(m.quats[k], np.float64)
    pos = np.asarray(m.positions[k], np.float64) + quat_to_rot(quat) @ np.array([0.8, 0.0, 0.5])
    return render(world, (pos, quat), camera, condition, frame=k), pos, quat


def _guide(pos: np.ndarray, quat: np.ndarray, side_m: float, turn_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """A flow pose's kind of error: `side_m` along the camera's x axis and `turn_deg` about its vertical."""
    R = quat_to_rot(np.asarray(quat, np.float64))
    return np.asarray(pos, np.float64) + R[:, 0] * side_m, rot_to_quat(R @ about_y(turn_deg))


def _far_place(m, pos) -> int:
    return int(np.argmax(np.linalg.norm(np.asarray(m.positions) - pos, axis=1)))


def _counting(monkeypatch):
    """Every SIFT detection's scale, as the verifier asks for them."""
    from disam_ros.verify import verifier as vmod

    scales: list[float] = []
    detect = vmod.detect_sift
    monkeypatch.setattr(vmod, "detect_sift", lambda rgb, cfg, *a: scales.append(cfg.scale) or detect(rgb, cfg, *a))
    return scales


@pytest.mark.parametrize("k", [10, 11])
def test_a_dark_keyframe_is_solved_densely_around_its_flow_pose_without_sift(town, k, monkeypatch):
    """Offered only the farthest map image and guided 0.15 m and 0.5 deg off, a snow frame is answered by one dense
    search: within (0.25 m, 2 deg) of where it was rendered, closer than its guide, held by the dense gate's
    inliers, its covariance scaled as the dense search's, and no SIFT feature was detected."""
    from disam_ros.verify.verifier import Verifier

    _, _, m = town
    rgb, pos, quat = _beside(town, k, "snow")
    guide = _guide(pos, quat, 0.15, 0.5)
    scales = _counting(monkeypatch)
    v = Verifier(m, DARK).verify(rgb, [_far_place(m, pos)], keyframe=True, prior=guide)
    assert v.verified and v.dense and v.order == "around the flow pose" and v.tried == 1 and scales == []
    err = float(np.linalg.norm(v.position - pos))
    assert err < 0.25 and err < float(np.linalg.norm(guide[0] - pos)) and float(quat_angle_deg(v.quat, quat)) < 2.0
    assert v.inliers >= DARK.gradient_min_inliers and v.inlier_ratio >= DARK.gradient_min_inlier_ratio
    plain = Verifier(m, replace(DARK, gradient_covariance_scale=1.0)).verify(rgb, [_far_place(m, pos)],
                                                                             keyframe=True, prior=guide)
    np.testing.assert_allclose(v.covariance, plain.covariance * DARK.gradient_covariance_scale, rtol=1e-9)


def test_bright_frames_and_the_rule_off_take_the_sift_pools(town, monkeypatch):
    """The same frame and guide, as bright as the bound (not dark) or with `prior_dense_dark` off: no dense answer
    around the guide; SIFT features are detected for the pooled solve first."""
    from disam_ros.verify.verifier import Verifier

    _, _, m = town
    rgb, pos, quat = _beside(town, 10, "snow")
    guide = _guide(pos, quat, 0.15, 0.5)
    for cfg in (replace(DARK, keyframe_dense_dark=float(rgb.mean())), replace(DARK, prior_dense_dark=False)):
        scales = _counting(monkeypatch)
        v = Verifier(m, cfg).verify(rgb, [_far_place(m, pos)], keyframe=True, prior=guide)
        assert scales and not (v.order == "around the flow pose" and v.dense), (v.order, v.dense)


def test_the_answer_is_held_to_its_guide_and_a_far_guide_finds_nothing(town):
    """`dense_prior_attempt` directly: a guide 0.15 m off gives a pose 0.1-0.25 m from it, refused once
    `polish_max_shift_m` is below that shift; a guide at the farthest map image's pose is not verified."""
    from disam_ros.verify.prior_step import dense_prior_attempt
    from disam_ros.verify.verifier import Verifier

    _, _, m = town
    rgb, pos, quat = _beside(town, 11, "snow")
    verifier = Verifier(m, DARK)
    cam, _ = verifier.camera_for(rgb.shape[1], rgb.shape[0])

    def attempt(guide, cfg=DARK):
        return dense_prior_attempt(lambda: verifier._grid(rgb, cam), guide, cam, m, verifier._forwards(),
                                   verifier._map_side, cfg)

    guide = _guide(pos, quat, 0.15, 0.5)
    v = attempt(guide)
    shift = float(np.linalg.norm(v.position - guide[0]))
    assert v is not None and 0.05 < shift < 0.3, shift
    assert attempt(guide, replace(DARK, polish_max_shift_m=shift - 1e-6)) is None
    assert attempt(guide, replace(DARK, polish_max_shift_m=shift + 1e-6)) is not None
    far = _far_place(m, pos)
    assert attempt((np.asarray(m.positions[far]), np.asarray(m.quats[far]))) is None



def test_a_failed_search_around_the_guide_shares_its_grid_with_the_dense_search_after(town, monkeypatch):
    """Guided from the farthest map image, the search around the guide finds nothing; the keyframe then runs its
    usual steps and is verified by the dense search of its right candidates, the query's grid computed once."""
    from disam_ros.verify import verifier as vmod

    _, _, m = town
    rgb, pos, quat = _beside(town, 10, "snow")
    grids: list[int] = []
    build = vmod.query_grid
    monkeypatch.setattr(vmod, "query_grid", lambda *a: grids.append(1) or build(*a))
    far = _far_place(m, pos)
    v = vmod.Verifier(m, DARK).verify(rgb, [10, 11], keyframe=True, prior=(np.asarray(m.positions[far]),
                                                                            np.asarray(m.quats[far])))
    assert v.verified and v.dense and v.order != "around the flow pose" and grids == [1]
    assert float(np.linalg.norm(v.position - pos)) < 0.25 and float(quat_angle_deg(v.quat, quat)) < 2.0
