"""Verification with learned local features (verify/learned_step.py, VerifyConfig.verify_features): which
features a map verifies with and when a second candidate seconds a learned pose, by hand; and on a rendered night
drive against a map that stores both kinds, given each frame's true nearest map image and its neighbours (a
retrieval's top 3): the learned matching and solve verify frames SIFT cannot, each pose within a few decimetres
of the ground truth and marked `learned`; SIFT guided from such a pose brings it within centimetres to decimetres;
with the default agreement rule every learned pose published has a second map image's solve beside it; `sift` on
such a map gives exactly what the same map gives without its learned block."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from disam_ros.geometry import quat_angle_deg
from disam_ros.verify.config import VerifyConfig
from disam_ros.verify.learned_step import resolve_features


def test_features_follow_the_map_unless_asked_and_refuse_what_the_map_lacks():
    learned = SimpleNamespace(verify_features="both")
    assert resolve_features("map", None, "M") == "sift"
    assert resolve_features("map", learned, "M") == "both"
    assert resolve_features("sift", learned, "M") == "sift"
    assert resolve_features("learned", learned, "M") == "learned"
    with pytest.raises(ValueError, match="M has no learned features; rebuild it with disam-build-map"):
        resolve_features("both", None, "M")
    with pytest.raises(ValueError, match="expected one of map, sift, learned, both"):
        resolve_features("orb", learned, "M")
    with pytest.raises(ValueError, match="verify_features"):
        VerifyConfig(verify_features="orb")


@pytest.fixture(scope="module")
def night_town(tmp_path_factory):
    """A 320x240 town (seed 5: the pairs the shipped network is known to solve at night where SIFT cannot,
    test_keypoints) with a sunny reference drive (depth) and a night drive; maps of the reference with and
    without learned keypoints."""
    from disam_ros.data.synthetic import WorldConfig, make_world
    from disam_ros.maps import MapBuildConfig, build_map_from_folder
    from disam_ros.shipped import shipped_path

    tmp = tmp_path_factory.mktemp("night_town")
    world = make_world(WorldConfig(seed=5, image_size=(320, 240), frames=10, workers=1,
                                   conditions=("sunny", "night")), tmp / "world", progress=False)
    maps = {}
    for name, features in (("both", "both"), ("sift", "sift")):
        maps[name] = build_map_from_folder(MapBuildConfig(
            out=tmp / name, dataset=world, condition="sunny", coarse=shipped_path("demo"), progress=False,
            geometry="depth", verify_features=features))
    return SimpleNamespace(world=world, maps=maps)


def _night_frames(world):
    from disam_ros.data.folders import load_condition, read_image

    qf = load_condition(world, "night", require_poses=True)
    return [(read_image(qf.image_paths[i]), qf.trajectory.positions[i], qf.trajectory.quats[i],
             float(qf.trajectory.stamps[i])) for i in range(len(qf))]


def _run(map_dir, config, frames):
    from disam_ros.maps import LocalizationMap
    from disam_ros.verify.verifier import Verifier

    m = LocalizationMap.load(map_dir)
    verifier = Verifier(m, config)
    positions = np.asarray(m.positions)
    out = []
    for rgb, pos, quat, _ in frames:
        k = int(np.argmin(np.linalg.norm(positions - pos, axis=1)))
        verifier.reset()  # each frame on its own: no flow, no tracking between them
        out.append((verifier.verify(rgb, [k, min(k + 1, len(positions) - 1), max(k - 1, 0)]), pos, quat))
    return out


def test_learned_step_verifies_night_frames_sift_cannot(night_town):
    frames = _night_frames(night_town.world)
    cfg = VerifyConfig(gradient_candidates=0, track_frames=0, flow_frames=0, polish_images=0, learned_agree_m=0.0)
    sift = _run(night_town.maps["both"], replace(cfg, verify_features="sift"), frames)
    learned = _run(night_town.maps["both"], replace(cfg, verify_features="learned"), frames)
    assert sum(v.verified for v, _, _ in learned) >= sum(v.verified for v, _, _ in sift) + 3
    errors = []
    for v, pos, quat in learned:
        if v.verified:  # the right place (map images stand 3 m apart), decimetres off: whole-pixel keypoints
            assert v.features == "learned" and v.support is None and v.polished == 0
            errors.append(np.linalg.norm(v.position - pos))
            assert errors[-1] < 2.0 and quat_angle_deg(v.quat, quat) < 2.5
    assert np.median(errors) < 0.6


def test_sift_on_a_map_with_learned_keypoints_is_the_sift_map(night_town):
    frames = _night_frames(night_town.world)[:5]
    cfg = VerifyConfig(verify_features="sift", gradient_candidates=0)
    a = _run(night_town.maps["both"], cfg, frames)
    b = _run(night_town.maps["sift"], VerifyConfig(gradient_candidates=0), frames)
    for (va, _, _), (vb, _, _) in zip(a, b):
        assert va.outcome == vb.outcome and va.inliers == vb.inliers and va.features == "sift"
        assert np.array_equal(va.position, vb.position, equal_nan=True)


def test_both_keeps_sift_answers_and_sift_sharpens_the_learned_ones(night_town):
    frames = _night_frames(night_town.world)
    cfg = VerifyConfig(gradient_candidates=0, track_frames=0, flow_frames=0, learned_agree_m=0.0)  # polish: 3 images
    sift = _run(night_town.maps["both"], replace(cfg, verify_features="sift"), frames)
    learned = _run(night_town.maps["both"], replace(cfg, verify_features="learned"), frames)
    both = _run(night_town.maps["both"], replace(cfg, verify_features="both"), frames)
    for (vs, _, _), (vb, _, _) in zip(sift, both):
        if vs.verified:  # SIFT runs first: its answer stands
            assert vb.verified and vb.features == "sift" and np.allclose(vb.position, vs.position)
    assert sum(v.verified for v, _, _ in both) > sum(v.verified for v, _, _ in sift)
    # a learned pose SIFT solved again from (polished > 0) lands within a few decimetres; learned alone does not
    sharpened = [(np.linalg.norm(vb.position - pos), np.linalg.norm(vl.position - pos))
                 for (vb, pos, _), (vl, _, _) in zip(both, learned) if vb.features == "learned" and vb.polished]
    assert len(sharpened) >= 4 and all(b < 0.3 for b, _ in sharpened)
    assert np.median([b for b, _ in sharpened]) < np.median([a for _, a in sharpened])


def test_sift_refinement_leaves_what_it_cannot_refine():
    from disam_ros.verify.learned_step import sift_refined
    from disam_ros.verify.result import Verification

    v = Verification("verified", index=0, position=np.zeros(3), quat=np.array([0.0, 0.0, 0.0, 1.0]))
    v.features = "learned"
    for case, query, cfg in (("no SIFT features this frame", None, VerifyConfig()),
                             ("switched off", SimpleNamespace(keypoints=np.zeros((50, 2))), VerifyConfig(
                                 learned_sift_radius=0.0))):
        assert sift_refined(v, query, None, None, None, None, cfg) is v and v.polished == 0, case
    sift_answer = Verification("verified", position=np.zeros(3), quat=np.array([0.0, 0.0, 0.0, 1.0]))
    assert sift_refined(sift_answer, None, None, None, None, None, VerifyConfig()) is sift_answer


def test_a_learned_pose_needs_a_second_map_image_beside_it():
    from disam_ros.verify.learned_step import _seconded
    from disam_ros.verify.result import Verification

    def solved(index, x, inliers=40, outcome="verified"):
        return Verification(outcome, index=index, position=np.array([x, 0.0, 0.0]), inliers=inliers)

    cfg = VerifyConfig()  # learned_agree_m 2, min_agreeing_inliers 10
    v = solved(4, 0.0)
    assert _seconded(v, [v, solved(5, 1.9, outcome="too_few_inliers")], cfg)  # any outcome, 1.9 m away
    assert not _seconded(v, [v, solved(5, 2.1)], cfg)  # too far
    assert not _seconded(v, [v, solved(5, 0.5, inliers=9)], cfg)  # too few inliers to count
    assert not _seconded(v, [v, solved(4, 0.5)], cfg)  # the same map image seconds nothing


def test_published_learned_poses_are_seconded(night_town):
    frames = _night_frames(night_town.world)
    cfg = VerifyConfig(verify_features="learned", gradient_candidates=0, track_frames=0, flow_frames=0)
    plain = _run(night_town.maps["both"], replace(cfg, learned_agree_m=0.0), frames)
    seconded = _run(night_town.maps["both"], cfg, frames)
    assert 0 < sum(v.verified for v, _, _ in seconded) < sum(v.verified for v, _, _ in plain)
    for (v, _, _), (p, _, _) in zip(seconded, plain):
        assert not v.verified or p.verified  # the rule only takes away
        if v.verified:
            others = [a for a in v.attempts if a.index != v.index and a.features == "learned"]
            assert any(np.linalg.norm(a.position - v.position) <= cfg.learned_agree_m for a in others)


def test_the_network_is_loaded_once_per_file_and_device(tmp_path):
    import shutil

    import torch

    from disam_ros.pose.learned import load_net
    from disam_ros.shipped import KEYPOINTS

    copy = tmp_path / "same.pt"
    shutil.copyfile(KEYPOINTS, copy)
    net = load_net(KEYPOINTS)
    assert load_net(copy) is net  # the same content is the same network
    assert all(p.device == torch.device("cpu") for p in net.parameters())


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA; tools/gpu_check.sh runs it on a "
                    "lent GPU")
def test_learned_verification_on_cuda_matches_the_cpu(night_town):
    frames = _night_frames(night_town.world)
    cfg = VerifyConfig(verify_features="learned", gradient_candidates=0, track_frames=0, flow_frames=0)

    def run(device):
        from disam_ros.maps import LocalizationMap
        from disam_ros.verify.verifier import Verifier

        m = LocalizationMap.load(night_town.maps["both"])
        verifier, positions = Verifier(m, cfg, device=device), np.asarray(m.positions)
        out = []
        for rgb, pos, _, _ in frames:
            k = int(np.argmin(np.linalg.norm(positions - pos, axis=1)))
            verifier.reset()
            out.append(verifier.verify(rgb, [k, min(k + 1, len(positions) - 1), max(k - 1, 0)]))
        return out

    for c, g in zip(run("cpu"), run("cuda")):
        assert c.outcome == g.outcome
        if c.verified:
            assert np.linalg.norm(c.position - g.position) < 0.05
