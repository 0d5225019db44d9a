"""A verified pose feeds the sequence belief (VerifyConfig.belief_sigma_m): on a rendered drive with a depth-geometry
map, the belief after a verified frame is the belief without the feedback times the floored Gaussian of the
distance from each map place to the verified position, computed here from the map's poses alone (places whose
camera looks more than 90 degrees away from the verified camera's get the floor only)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from disam_ros.data.folders import load_condition, read_image
from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
from disam_ros.retrieval import SearchConfig
from disam_ros.tracking.tracker import Tracker, TrackerConfig
from disam_ros.verify.verifier import VerifyConfig


def yaw(quats_xyzw: np.ndarray) -> np.ndarray:
    """Direction of the optical (z) axis in the map's x-y plane."""
    axis = Rotation.from_quat(np.atleast_2d(quats_xyzw)).as_matrix()[:, :, 2]
    return np.arctan2(axis[:, 1], axis[:, 0])


def tracker(map_dir, sigma: float) -> Tracker:
    reloc = Relocalizer.from_map(map_dir, RelocalizerConfig(search=SearchConfig(device="cpu"), domain="sunny"))
    verify = VerifyConfig(track_frames=0, belief_sigma_m=sigma, belief_floor=0.05)
    return Tracker(reloc, TrackerConfig(mode="sequence", verify=verify))


def test_a_verified_frame_reweights_the_belief_by_its_distance_to_each_place(geometry_world):
    qf = load_condition(geometry_world["world"], "sunny_repeat", require_poses=True)
    plain, fed = tracker(geometry_world["map"], 0.0), tracker(geometry_world["map"], 2.0)
    rgb, stamp = read_image(qf.image_paths[0]), float(qf.trajectory.stamps[0])
    a, b = plain.step(rgb, stamp), fed.step(rgb, stamp)
    va, vb = a.result.verification, b.result.verification
    assert vb.verified, "a same-condition frame on a depth map should verify"
    assert va.verified and np.allclose(va.position, vb.position)  # the feedback acts after the frame's answer
    positions = np.asarray(plain.reloc.map.positions, np.float64)
    d2 = np.sum((positions - vb.position) ** 2, axis=1)
    turn = np.abs(np.angle(np.exp(1j * (yaw(np.asarray(plain.reloc.map.quats)) - yaw(vb.quat)))))
    lik = np.where(turn <= np.pi / 2, 0.95 * np.exp(-d2 / (2 * 2.0**2)) + 0.05, 0.05)
    want = plain._seq.posterior() * lik
    assert fed._seq.posterior() == pytest.approx(want / want.sum(), rel=1e-9, abs=1e-15)
    near = int(np.argmin(d2))
    assert fed._seq.posterior()[near] > plain._seq.posterior()[near]


def test_feedback_settings_are_checked():
    with pytest.raises(ValueError, match="belief_sigma_m"):
        VerifyConfig(belief_sigma_m=-1.0)
    with pytest.raises(ValueError, match="belief_floor"):
        VerifyConfig(belief_floor=0.0)
