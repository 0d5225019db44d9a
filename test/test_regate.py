"""A SIFT pose refused only for lying far from the map image that guided it, judged again at itself
(verify/regate.py, VerifyConfig.regate_far_poses): the gate's `far_only` mark and outcome order, the map images
near a pose by hand-worked distances and angles, the order, budget and agreement rule with stand-in attempts,
and on the rendered town (conftest `geometry_world`) frames handed only a far candidate: a right pose refused
without the step is verified within a few cm at the map image beside it with it, wrong poses stay refused, and
with the switch off the verifier does exactly what it does without the step."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from disam_ros.geometry import quat_angle_deg, quat_to_rot, rot_to_quat
from disam_ros.pose.solver import PoseSolution
from disam_ros.verify.config import VerifyConfig
from disam_ros.verify.gate import judged
from disam_ros.verify.regate import agree, nearby, regated
from disam_ros.verify.result import Verification

ON = VerifyConfig(regate_far_poses=True)
OFF = VerifyConfig(regate_far_poses=False)


def rz(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


# ------------------------------------------------------------------------------------------------ by hand
def _solution(position, quat, inliers: int, ratio: float, std_m: float) -> PoseSolution:
    cov = np.diag([std_m ** 2] * 3 + [1e-6] * 3)
    return PoseSolution(np.eye(3), np.zeros(3), np.asarray(position, float), np.asarray(quat, float),
                        np.ones(inliers, bool), inliers, ratio, 1.0, 1.0, np.ones(inliers), 1.0, cov, 0.0)


@pytest.mark.parametrize("far, weak, unsure", list(itertools.product((False, True), repeat=3)))
def test_the_gate_keeps_its_order_and_marks_a_pose_failing_only_by_its_guide(far, weak, unsure):
    # guide at the origin; far: 12 m away (max_shift_m 10); weak: 10 inliers (min 15); unsure: sigma 2 m (max 1)
    cfg = VerifyConfig()
    sol = _solution([12.0 if far else 3.0, 0.0, 0.0], IDENTITY, 10 if weak else 40, 0.5, 2.0 if unsure else 0.1)
    v = judged(sol, 4, 80, np.zeros(3), IDENTITY, cfg)
    want = "inconsistent" if far else "too_few_inliers" if weak else "uncertain" if unsure else "verified"
    assert v.outcome == want and v.index == 4
    assert v.far_only == (far and not weak and not unsure)
    # a turn beyond max_turn_deg (25 > 20 deg) is far just as a shift is; another step's gate never marks it
    turned = judged(_solution([3.0, 0.0, 0.0], rot_to_quat(rz(25)), 40, 0.5, 0.1), 4, 80, np.zeros(3), IDENTITY, cfg)
    assert turned.outcome == "inconsistent" and turned.far_only
    assert not judged(sol, 4, 80, np.zeros(3), IDENTITY, cfg, (45.0, 12, 0.0)).far_only


def _line_map() -> SimpleNamespace:
    """11 map images 3 m apart along x (0..30 m), all facing alike except image 3 (x = 9, turned 30 deg: beyond
    max_turn_deg 20) and image 4 (x = 12, turned 15 deg: within it)."""
    quats = [IDENTITY] * 11
    quats[3], quats[4] = rot_to_quat(rz(30)), rot_to_quat(rz(15))
    return SimpleNamespace(positions=np.array([[3.0 * i, 0.0, 0.0] for i in range(11)]), quats=np.array(quats))


def test_nearby_map_images_by_hand():
    m, cfg = _line_map(), VerifyConfig()
    # at x = 7: images 0..5 lie 7, 4, 1, 2, 5, 8 m away; 3 is turned 30 deg, 6 (11 m) is beyond 10 m
    assert nearby(m, [7.0, 0.0, 0.0], IDENTITY, cfg) == [2, 1, 4, 0, 5]
    assert nearby(m, [7.0, 0.0, 0.0], IDENTITY, cfg, exclude=[1, 99]) == [2, 4, 0, 5]
    # at x = 4.5 images 1 and 2 tie (1.5 m): the lower index first; image 5 (10.5 m) is out, 10 m exactly is in
    assert nearby(m, [4.5, 0.0, 0.0], IDENTITY, cfg) == [1, 2, 0, 4]
    assert nearby(m, [5.0, 0.0, 0.0], IDENTITY, cfg)[-1] == 5
    # a pose turned 25 deg sees only images within 20 deg of itself: 3 (5 deg off) and 4 (10 deg off)
    assert nearby(m, [7.0, 0.0, 0.0], rot_to_quat(rz(25)), cfg) == [3, 4]
    # 15 m beside the road: nothing within 10 m
    assert nearby(m, [7.0, 15.0, 0.0], IDENTITY, cfg) == []


def _far(index: int, x: float, inliers: int = 40, **kw) -> Verification:
    return Verification("inconsistent", index=index, position=np.array([x, 0.0, 0.0]), quat=IDENTITY.copy(),
                        inliers=inliers, far_only=True, **kw)


class Stand:
    """attempt(j) for regated: the Verification given for j (too_few_inliers otherwise); records the calls."""

    def __init__(self, results: dict[int, Verification]) -> None:
        self.results, self.calls = results, []

    def __call__(self, j: int) -> Verification:
        self.calls.append(j)
        return self.results.get(j, Verification("too_few_inliers", index=j))


def _at(j: int, x: float, turn_deg: float = 0.0) -> Verification:
    return Verification("verified", index=j, position=np.array([x, 0.0, 0.0]), quat=rot_to_quat(rz(turn_deg)),
                        inliers=90, support="handed on")


def test_a_confirming_nearby_image_verifies_the_frame():
    m = _line_map()
    first = _far(9, 7.0)  # solved at x = 7, guided by image 9 (x = 27, 20 m away)
    ignored = [_far(8, 30.0, inliers=60, scale=0.5), _far(7, 30.0, inliers=60, hops=1),  # a first look, tracking
               Verification("inconsistent", index=6, position=np.array([30.0, 0, 0]), quat=IDENTITY, inliers=70)]
    attempts = [first, *ignored]
    stand = Stand({2: _at(2, 7.3)})  # image 2 (x = 6, nearest x = 7) puts the camera 0.3 m from the first pose
    got = regated(first, attempts, [9], m, stand, ON)
    assert stand.calls == [2] and got is attempts[-1] and got.verified and got.index == 2 and got.regated_from == 9
    assert np.allclose(got.position, [7.3, 0.0, 0.0]) and got.support == "handed on"


def test_a_second_solve_elsewhere_is_inconsistent_and_the_budget_holds():
    m = _line_map()
    first = _far(9, 7.0)
    # image 2 passes the gate but 1 m from the first pose (agree_m 0.5); image 1 fails; image 4 would confirm,
    # but regate_images 2 ends the search first
    stand = Stand({2: _at(2, 6.0), 4: _at(4, 7.1)})
    attempts = [first]
    assert regated(first, attempts, [9], m, stand, ON) is first and first.outcome == "inconsistent"
    assert stand.calls == [2, 1] and [a.index for a in attempts] == [9, 2, 1]
    assert attempts[1].outcome == "inconsistent" and attempts[1].support is None and attempts[1].regated_from == 9
    # with a budget of 3 image 4 is tried and confirms; tried candidates are skipped (2 was a candidate)
    stand = Stand({2: _at(2, 6.0), 4: _at(4, 7.1)})
    got = regated(first, [first], [9, 2], m, stand, VerifyConfig(regate_far_poses=True, regate_images=3))
    assert stand.calls == [1, 4] and got.index == 4 and got.verified
    # a second solve on the spot but turned 3 deg from the first (agree_deg 2) does not agree either
    assert not agree(first, _at(2, 7.0, 3.0), ON) and agree(first, _at(2, 7.0, 1.5), ON)


def test_the_strongest_far_pose_is_judged_first_and_nothing_runs_when_not_needed():
    m = _line_map()
    weak, strong = _far(9, 7.0, inliers=20), _far(10, 25.0, inliers=50)  # both guides tried as candidates
    stand = Stand({})
    regated(weak, [weak, strong], [9, 10], m, stand, ON)
    assert stand.calls == [8, 7]  # x = 24 and 21, the strong pose's two nearest untried: the whole budget
    for best, cfg in ((_at(3, 9.0), ON), (weak, OFF)):  # verified already; off
        stand = Stand({2: _at(2, 7.0)})
        assert regated(best, [weak], [9], m, stand, cfg) is best and stand.calls == []


def test_regate_images_must_be_positive():
    with pytest.raises(ValueError, match="regate_images=0"):
        VerifyConfig(regate_images=0)


def test_the_switch_reaches_the_verifier_from_disam_eval_and_the_node():
    from disam_ros.eval import offline

    def parsed(*extra):
        return offline.tracker_config(offline.build_parser().parse_args(
            ["--map", "m", "--dataset", "d", "--out", "o", *extra])).verify

    assert parsed().regate_far_poses is True and parsed("--regate-far-poses", "off").regate_far_poses is False
    pytest.importorskip("rclpy")
    from disam_ros.ros.node_params import PARAMETERS, check_value

    param = next(p for p in PARAMETERS if p.name == "verify_regate_far_poses")
    assert param.default is True and check_value(param.name, False) is False


# ------------------------------------------------------------------------------------ on the rendered town
@pytest.fixture(scope="module")
def town(geometry_world):
    """The shared 320x240 town (conftest), its map and a renderer of a frame at a pose beside a map image."""
    from disam_ros.data.synthetic import WorldConfig
    from disam_ros.data.synthetic.generate import load_world
    from disam_ros.data.synthetic.shade import render
    from disam_ros.maps import LocalizationMap

    world, info = load_world(geometry_world["world"])
    camera = WorldConfig(seed=info.seed, image_size=tuple(info.image_size), fov_deg=info.fov_deg).camera()
    m = LocalizationMap.load(geometry_world["map"])

    def frame(j: int, offset: tuple[float, float, float], condition: str):
        """Map image j's view moved by `offset` (its camera axes, m): (rgb, position, xyzw)."""
        quat = np.asarray(m.quats[j], np.float64)
        pos = np.asarray(m.positions[j], np.float64) + quat_to_rot(quat) @ np.asarray(offset)
        return render(world, (pos, quat), camera, condition, frame=0), pos, quat

    return m, frame


def _verify(m, rgb, k: int, cfg: VerifyConfig) -> Verification:
    """Single mode's way (no dense search: Tracker), handed ONLY candidate k."""
    from disam_ros.verify.verifier import Verifier

    return Verifier(m, cfg).verify(rgb, [k], dense=False)


def _err(v: Verification, pos, quat) -> tuple[float, float]:
    return float(np.linalg.norm(v.position - pos)), float(quat_angle_deg(v.quat, quat))


# frames beside map image j (0.3-0.7 m), handed only map image k 12-15 m away, whose map points they also see
RIGHT = [(9, (0.3, 0.0, 0.5), "sunny_repeat", 13), (12, (-0.4, 0.0, -0.6), "sunny", 8)]


@pytest.mark.parametrize("j, offset, condition, k", RIGHT)
def test_a_right_pose_guided_by_a_far_image_is_verified_at_the_image_beside_it(town, j, offset, condition, k):
    m, frame = town
    rgb, pos, quat = frame(j, offset, condition)
    dists = np.linalg.norm(np.asarray(m.positions) - pos, axis=1)
    assert dists[k] > VerifyConfig().max_shift_m and int(np.argmin(dists)) == j
    off = _verify(m, rgb, k, OFF)
    # today: a pose within agree_m (0.5 m) of the truth, refused because its guide lies over 10 m away
    assert off.outcome == "inconsistent" and off.index == k and _err(off, pos, quat)[0] < 0.5
    on = _verify(m, rgb, k, ON)
    assert on.verified and on.index == j and on.regated_from == k, (on.outcome, on.index)
    err_m, err_deg = _err(on, pos, quat)
    assert err_m < 0.05 and err_deg < 0.5, (err_m, err_deg)
    assert [a.index for a in on.attempts if a.regated_from == k] == [j]  # the nearest image confirmed it
    assert on.diagnostics()["regated_from"] == k and off.diagnostics()["regated_from"] == -1


# frames handed only a far image whose solve lands metres from the truth (3.0 and 5.9 m), near other map images
WRONG = [(7, (-0.4, 0.0, -0.6), "sunny_repeat", 11), (5, (0.3, 0.0, 0.5), "sunny_repeat", 9)]


@pytest.mark.parametrize("j, offset, condition, k", WRONG)
def test_a_wrong_far_pose_near_map_images_needs_their_confirmation(town, j, offset, condition, k):
    m, frame = town
    rgb, pos, quat = frame(j, offset, condition)
    off, on = _verify(m, rgb, k, OFF), _verify(m, rgb, k, ON)
    first = next(a for a in on.attempts if a.far_only and a.scale == 1.0)
    assert _err(first, pos, quat)[0] > 1.0  # a wrong pose that passed every check but its guide's distance
    seconds = [a for a in on.attempts if a.regated_from == k]
    assert [a.index for a in seconds] == nearby(m, first.position, first.quat, ON, [k])[:ON.regate_images]
    # the images near it are matched, and solve the frame elsewhere than the wrong pose or not at all
    assert not any(a.verified for a in seconds)
    assert (off.outcome, off.index) == (on.outcome, on.index) == ("inconsistent", k)


def test_a_wrong_far_pose_near_no_map_image_stays_inconsistent(town):
    from disam_ros.verify.verifier import Verifier

    m, frame = town
    j, offset, condition, k = RIGHT[0]
    rgb, pos, _ = frame(j, offset, condition)
    verifier = Verifier(m, ON)
    real, calls = verifier._attempt, []

    def moved(query, i, cam, *args, **kw):  # candidate k's real attempt, put 40 m beside the road
        calls.append(i)
        v = real(query, i, cam, *args, **kw)
        if i == k and v.far_only:
            v.position = v.position + np.array([0.0, -40.0, 0.0])
        return v

    verifier._attempt = moved
    v = verifier.verify(rgb, [k], dense=False)
    far = [a for a in v.attempts if a.far_only and a.scale == 1.0]
    assert far and min(np.linalg.norm(np.asarray(m.positions) - far[0].position, axis=1)) > ON.max_shift_m
    assert v.outcome == "inconsistent" and v.index == k and set(calls) == {k}
    assert all(a.regated_from == -1 for a in v.attempts)


def test_off_is_the_verifier_without_the_step(town, monkeypatch):
    import disam_ros.verify.verifier as verifier_module

    m, frame = town
    frames = [frame(j, offset, condition) + (k,) for j, offset, condition, k in RIGHT + WRONG]

    def run(cfg):
        out = []
        for rgb, _, _, k in frames:
            v = _verify(m, rgb, k, cfg)
            out.append((v.outcome, v.index, v.inliers, v.tried, tuple(np.round(v.position, 9)),
                        [(a.outcome, a.index, a.inliers, a.regated_from) for a in v.attempts]))
        return out

    off, on = run(OFF), run(ON)
    monkeypatch.setattr(verifier_module, "regated", lambda best, *args: best)
    assert run(OFF) == off  # switched off, the step changes nothing
    assert run(ON) != on and run(ON) == off  # ... and it is what makes the difference when on


def test_evaluation_records_say_which_attempts_were_far_only_or_judged_again():
    from disam_ros.eval.scoring import attempt_record
    from disam_ros.verify.result import Verification

    plain = attempt_record(Verification("too_few_inliers", index=2), np.zeros(3), np.array([0, 0, 0, 1.0]))
    assert plain["far_only"] is False and plain["regated_from"] == -1
    far = Verification("inconsistent", index=4, position=np.array([3.0, 4.0, 0.0]), quat=np.array([0, 0, 0, 1.0]),
                       far_only=True)
    second = Verification("verified", index=7, position=np.zeros(3), quat=np.array([0, 0, 0, 1.0]), regated_from=4)
    rec_far = attempt_record(far, np.zeros(3), np.array([0, 0, 0, 1.0]))
    rec_second = attempt_record(second, np.zeros(3), np.array([0, 0, 0, 1.0]))
    assert rec_far["far_only"] is True and rec_far["t_m"] == pytest.approx(5.0)
    assert rec_second["regated_from"] == 4 and rec_second["keyframe"] == 7
