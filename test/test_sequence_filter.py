"""Sequence localizer: hand-worked posteriors, teleport recovery, re-initialisation, estimate fields."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from disam_ros.tracking.sequence import ObservationModel, SequenceConfig, SequenceLocalizer

# one speed bin, no teleport / transfer: the filter is then the textbook forward algorithm
PLAIN = dict(speed_bins=1, speed_change_prob=0.0, teleport_prob=0.0, transfer_prob=0.0)
UNIT = ObservationModel(gain=1.0, wrong_scale=1.0)  # shortlist z = score - lowest score, likelihood = exp(z)


def chain(n: int) -> np.ndarray:
    return np.array([[float(i), 0.0, 0.0] for i in range(n)])


def shortlist(likelihoods: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose likelihoods under UNIT are the given numbers (all places listed, the lowest is 1)."""
    return np.arange(len(likelihoods)), np.log(np.asarray(likelihoods, dtype=np.float64))


def test_three_place_chain_posterior_by_hand():
    cfg = SequenceConfig(mass_radius_m=0.5, odom_noise_m=0.1, odom_noise_frac=0.0, **PLAIN)
    loc = SequenceLocalizer.from_map(chain(3), config=cfg, observation=UNIT)
    # frame 1: uniform prior 1/3 each, likelihood (1, 2, 1) -> (1, 2, 1) / 4 = (0.25, 0.5, 0.25)
    est = loc.update(shortlist([1, 2, 1]), stamp=0.0)
    assert loc.posterior() == pytest.approx([0.25, 0.5, 0.25])
    assert est.index == 1 and est.mass == pytest.approx(0.5) and est.reinitialised == "reset"
    # frame 2: odometry 1 m (band 1 +- 0.2 m): 0 -> 1, 1 -> 2, and 2 runs off the open end of the road
    # (dropped): (0, 0.25, 0.5), renormalised (0, 1/3, 2/3); likelihood (1, 1, 3): (0, 1/3, 2) / (7/3)
    # = (0, 1/7, 6/7)
    est = loc.update(shortlist([1, 1, 3]), stamp=1.0, odom=1.0)
    assert loc.posterior() == pytest.approx([0.0, 1 / 7, 6 / 7])
    assert est.index == 2 and est.place_mass == pytest.approx(6 / 7) and est.mass == pytest.approx(6 / 7)
    assert est.log_odds == pytest.approx(math.log(6))  # (6/7) / (1/7)
    assert est.entropy == pytest.approx(-(1 / 7 * math.log(1 / 7) + 6 / 7 * math.log(6 / 7)))
    # covariance about place 2: 1/7 * (-1 m)^2 along x, plus the spacing floor (1 m / 2)^2 on every axis
    assert est.covariance == pytest.approx(np.diag([1 / 7 + 0.25, 0.25, 0.25]))
    assert est.position.tolist() == [2.0, 0.0, 0.0]
    assert est.consistent_frames == 2  # moved 1 m, within the 1.2 m allowed plus the 0.5 m radius



def test_belief_that_drove_off_the_map_starts_again_uniform():
    """Odometry of 5 m on a 3-place road (1 m spacing, open ends) moves every hypothesis past the last place: all
    mass is dropped, so the belief must restart uniform (1/3 each), never divide 0 by 0 into NaN."""
    cfg = SequenceConfig(odom_noise_m=0.1, odom_noise_frac=0.0, **PLAIN)
    loc = SequenceLocalizer.from_map(chain(3), config=cfg, observation=UNIT)
    loc.update(shortlist([1, 2, 1]), stamp=0.0)
    loc.update(shortlist([1, 1, 1]), stamp=1.0, odom=5.0)
    assert loc.posterior() == pytest.approx([1 / 3, 1 / 3, 1 / 3])

def test_speed_band_without_odometry_by_hand():
    cfg = SequenceConfig(min_speed_mps=0.0, max_speed_mps=1.0, **PLAIN)
    loc = SequenceLocalizer.from_map(chain(3), config=cfg, observation=UNIT)
    loc.update(shortlist([1, 2, 1]), stamp=10.0)  # (0.25, 0.5, 0.25)
    # dt 1 s, band [0, 1] m: 0 -> halves to 0, 1; 1 -> halves to 1, 2; 2's band [2, 3] m holds only
    # place 2, so its centre 2.5 m counts: half a spacing past the open end, half stays, half is dropped:
    # (0.125, 0.125 + 0.25, 0.25 + 0.125) = (0.125, 0.375, 0.375), / 0.875 = (1/7, 3/7, 3/7); flat
    # likelihood keeps it
    loc.update(shortlist([1, 1, 1]), stamp=11.0)
    assert loc.posterior() == pytest.approx([1 / 7, 3 / 7, 3 / 7])
    # a stopped vehicle (dt 0) does not move the belief
    loc.update(shortlist([1, 1, 1]), stamp=11.0)
    assert loc.posterior() == pytest.approx([1 / 7, 3 / 7, 3 / 7])


def test_teleport_mixes_uniform_mass_by_hand():
    cfg = SequenceConfig(odom_noise_m=0.1, odom_noise_frac=0.0, **{**PLAIN, "teleport_prob": 0.2})
    loc = SequenceLocalizer.from_map(chain(4), config=cfg, observation=UNIT)
    loc.set_prior(np.array([0.0, 0.0, 0.0]), sigma_m=1e-3)  # floor 0.01: (0.9925, 0.0025, 0.0025, 0.0025)
    loc.update(shortlist([1, 1, 1, 1]), stamp=0.0)
    # shift by 1 m: (0, 0.9925, 0.0025, 0.0025), place 3's 0.0025 runs off the road end: total 0.9975;
    # renormalised (0, 0.994987, 0.0025063, 0.0025063) -> 0.8 * that + 0.2 / 4
    # = (0.05, 0.795990 + 0.05, 0.0020050 + 0.05, 0.0020050 + 0.05)
    loc.update(shortlist([1, 1, 1, 1]), stamp=1.0, odom=1.0)
    assert loc.posterior() == pytest.approx([0.05, 0.845990, 0.052005, 0.052005], abs=1e-6)


def kidnap_run(teleport: float) -> tuple[list[int], list[float]]:
    """20 places; the vehicle drives 0..5 with clear views, then is carried to 12 and drives on."""
    cfg = SequenceConfig(odom_noise_m=0.1, odom_noise_frac=0.0, mass_radius_m=1.0, prior_floor=0.0,
                         **{**PLAIN, "teleport_prob": teleport})
    loc = SequenceLocalizer.from_map(chain(20), config=cfg, observation=UNIT)
    loc.set_prior(np.zeros(3), sigma_m=1e-3)  # the vehicle starts known at place 0
    truth = list(range(6)) + list(range(12, 18))
    best, mass = [], []
    for t, place in enumerate(truth):
        lik = np.ones(20)
        lik[place] = 20.0
        est = loc.update(shortlist(lik.tolist()), stamp=float(t), odom=1.0)
        best.append(est.index)
        mass.append(est.mass)
    return best, mass


def test_teleport_recovers_a_kidnapped_vehicle():
    best, mass = kidnap_run(0.05)
    assert best[:6] == list(range(6))
    # steady state before the jump (worked by hand): the tracked place holds 0.99740, every other place
    # 1.3775e-4. First frame after the jump: prediction 0.95 * 0.99740 + 0.0025 = 0.95003 at 6, and
    # 0.95 * 1.3775e-4 + 0.0025 = 0.0026309 elsewhere; likelihood 20 at 12 -> total 1 + 19 * 0.0026309 =
    # 1.049987; mass within 1 m of 6 = (0.95003 + 2 * 0.0026309) / 1.049987 = 0.90981: wrong, and less sure
    assert best[6] == 6 and mass[6] == pytest.approx(0.90981, abs=2e-4)
    # next: 7 gets 0.95 * 0.9048 + 0.0025 = 0.862, 13 gets (0.95 * 0.0501 + 0.0025) * 20 = 1.00: recovered
    assert best[7:] == list(range(13, 18))
    stuck, _ = kidnap_run(0.0)  # without teleport no mass ever reaches the new place
    assert stuck[6:] == list(range(6, 12))


def test_stamp_gap_backwards_stamp_and_reset_reinitialise():
    cfg = SequenceConfig(max_gap_s=5.0, **PLAIN)
    loc = SequenceLocalizer.from_map(chain(3), config=cfg, observation=UNIT)
    loc.update(shortlist([1, 8, 1]), stamp=0.0)
    est = loc.update(shortlist([1, 1, 2]), stamp=10.0)  # 10 s gap: uniform restart, then (1, 1, 2) / 4
    assert "gap" in est.reinitialised and loc.posterior() == pytest.approx([0.25, 0.25, 0.5])
    est = loc.update(shortlist([2, 1, 1]), stamp=9.0)
    assert "back" in est.reinitialised and loc.posterior() == pytest.approx([0.5, 0.25, 0.25])
    loc.reset()
    assert loc.posterior() == pytest.approx([1 / 3] * 3)
    assert loc.update(shortlist([1, 1, 1]), stamp=100.0).reinitialised == "reset"


def test_spatial_prior_centres_the_belief():
    loc = SequenceLocalizer.from_map(chain(5), config=SequenceConfig(prior_floor=0.0, **PLAIN), observation=UNIT)
    loc.set_prior(np.array([2.0, 0.0, 0.0]), sigma_m=1.0)
    # Gaussian weights exp(-d^2 / 2) for d = 2, 1, 0, 1, 2
    w = np.exp(-0.5 * np.array([4.0, 1.0, 0.0, 1.0, 4.0]))
    assert loc.posterior() == pytest.approx(w / w.sum())


@pytest.mark.parametrize("sparse", [False, True])
def test_a_measured_position_reweights_the_belief_by_hand(sparse, monkeypatch):
    """A verified pose at x = 2 m (sigma 1 m, floor 0.1) on a belief q over places at 0..4 m: the posterior is
    q (0.9 exp(-d^2 / 2) + 0.1) normalised, d = 2, 1, 0, 1, 2. The sparse belief holds every place of q in its
    support here, so it must give the same numbers."""
    if sparse:
        monkeypatch.setattr(SequenceLocalizer, "exact_cells", 0)
    loc = SequenceLocalizer.from_map(chain(5), config=SequenceConfig(prior_floor=0.0, **PLAIN), observation=UNIT)
    assert (loc._sparse is not None) == sparse
    loc.set_prior(np.array([1.0, 0.0, 0.0]), sigma_m=2.0)
    q = np.exp(-0.5 * np.array([1.0, 0.0, 1.0, 4.0, 9.0]) / 4.0)
    loc.observe_position(np.array([2.0, 0.0, 0.0]), sigma_m=1.0, floor=0.1)
    assert loc.posterior() == pytest.approx(q / q.sum())  # no frame since the prior: nothing to correct yet
    loc.update(shortlist([1, 1, 1, 1, 1]), stamp=0.0)
    loc.observe_position(np.array([2.0, 0.0, 0.0]), sigma_m=1.0, floor=0.1)
    w = q * (0.9 * np.exp(-0.5 * np.array([4.0, 1.0, 0.0, 1.0, 4.0])) + 0.1)
    assert loc.posterior() == pytest.approx(w / w.sum())
    # a far-off (wrong) measurement cannot rule a place out: every place keeps the floor's share
    loc.observe_position(np.array([100.0, 0.0, 0.0]), sigma_m=1.0, floor=0.1)
    assert loc.posterior() == pytest.approx(w / w.sum())


@pytest.mark.parametrize("sparse", [False, True])
def test_a_measured_pose_does_not_pull_the_belief_to_the_road_driven_the_other_way(sparse, monkeypatch):
    """Places 0..4 m driven east (yaw 0) and the same spots driven back west (yaw pi): a verified pose at x = 2 m
    looking east (sigma 1 m, floor 0.1) multiplies the eastbound places by 0.9 exp(-d^2 / 2) + 0.1 and the
    westbound ones, seen facing the other way, by the floor 0.1 alone, whatever their distance. The sparse
    belief keeps only its support exactly (the rest shares the floor), so there the check is the ratio of the
    two places at x = 2 m, both in the support: it must grow by (0.9 + 0.1) / 0.1 = 10."""
    if sparse:
        monkeypatch.setattr(SequenceLocalizer, "exact_cells", 0)
    x = np.arange(5.0)
    positions = np.r_[chain(5), chain(5)[::-1]]
    drives, stamps = np.repeat([0, 1], 5), np.r_[x, 100.0 + x]
    headings = np.r_[np.zeros(5), np.full(5, np.pi)]
    loc = SequenceLocalizer.from_map(positions, drives, stamps, config=SequenceConfig(**PLAIN), observation=UNIT,
                                     headings=headings)
    loc.update(shortlist([1, 2, 3, 2, 1, 1, 2, 3, 2, 1]), stamp=0.0)
    before = loc.posterior()
    loc.observe_position(np.array([2.0, 0.0, 0.0]), sigma_m=1.0, floor=0.1, heading=0.05)
    after = loc.posterior()
    if sparse:
        assert {2, 7} <= set(loc.graph.order[loc._sparse.support].tolist())
        assert after[2] / after[7] == pytest.approx(10.0 * before[2] / before[7])
        return
    lik = np.r_[0.9 * np.exp(-0.5 * (x - 2.0) ** 2) + 0.1, np.full(5, 0.1)]
    assert after == pytest.approx(before * lik / np.sum(before * lik))


def test_a_measured_position_leaves_window_mode_alone():
    loc = SequenceLocalizer.from_map(chain(5), config=SequenceConfig(mode="window", **PLAIN), observation=UNIT)
    loc.update(shortlist([1, 3, 1, 1, 1]), stamp=0.0)
    before = loc.posterior()
    loc.observe_position(np.array([4.0, 0.0, 0.0]), sigma_m=1.0, floor=0.1)
    assert loc.posterior() == pytest.approx(before)  # window mode keeps no belief to correct


def test_full_score_vector_is_standardised_per_frame():
    obs = ObservationModel(gain=1.0)
    # scores (0, 0, 0, 4): mean 1, std sqrt(3); z = (0, 0, 0, 3 / sqrt 3) = (0, 0, 0, sqrt 3)
    assert obs.frame_z(np.array([0.0, 0.0, 0.0, 4.0])) == pytest.approx([0, 0, 0, math.sqrt(3.0)])
    # the same frame shifted and scaled gives the same z: no per-map or per-condition tuning of scale
    assert obs.frame_z(np.array([5.0, 5.0, 5.0, 13.0])) == pytest.approx([0, 0, 0, math.sqrt(3.0)])
    # a shortlist floors unscored places at its lowest score: z = (s - 0.2) / wrong_scale 0.1
    z = ObservationModel(wrong_scale=0.1).shortlist_z(np.array([4, 1]), np.array([0.5, 0.2]), 6)
    assert z == pytest.approx([0, 0, 0, 0, 3.0, 0])


def test_observation_model_from_map_self_scores_by_hand():
    pos = np.array([[0.0, 0, 0], [1.0, 0, 0], [10.0, 0, 0], [20.0, 0, 0]])
    # row of place 0 against the map: wrong places (> 2 m) score 0.2, 0.4 -> mean 0.3, std 0.1;
    # the other image of the same place (1 m) scores 0.8 -> d' = (0.8 - 0.3) / 0.1 = 5 -> gain 1 / 5
    obs = ObservationModel.estimate(np.array([[1.0, 0.8, 0.2, 0.4]]), np.array([0]), pos, exclusion_m=2.0)
    assert obs.self_separation == pytest.approx(5.0)
    assert obs.gain == pytest.approx(0.2)
    assert obs.wrong_mean == pytest.approx(0.3) and obs.wrong_scale == pytest.approx(0.1)
    again = ObservationModel.from_dict(json.loads(json.dumps(obs.to_dict())))
    assert again == obs
    with pytest.raises(ValueError, match="version"):
        ObservationModel.from_dict({**obs.to_dict(), "version": 99})


def test_modes_share_one_estimate_format():
    rng = np.random.default_rng(1)
    scores = rng.normal(0, 1, (8, 30))
    scores[np.arange(8), np.arange(8) * 2 + 3] += 6.0  # the vehicle passes places 3, 5, ..., 17 at 2 m/s
    for mode in ("single", "sequence", "window"):
        loc = SequenceLocalizer.from_map(chain(30), config=SequenceConfig(mode=mode, max_speed_mps=3.0,
                                                                          window_min_speed_mps=1.0))
        est = [loc.update(s, float(t)) for t, s in enumerate(scores)]
        assert est[-1].index == 17 and est[-1].mode == mode
        assert est[-1].covariance.shape == (3, 3) and 0.0 <= est[-1].mass <= 1.0


def test_bad_frames_are_one_clear_error():
    loc = SequenceLocalizer.from_map(chain(3))
    with pytest.raises(ValueError, match="one score per map image"):
        loc.update(np.zeros(4), 0.0)
    with pytest.raises(ValueError, match="not finite"):
        loc.update(np.array([0.0, np.nan, 1.0]), 0.0)
    with pytest.raises(ValueError, match="map indices"):
        loc.update((np.array([5]), np.array([1.0])), 0.0)
    with pytest.raises(ValueError, match="speed band"):
        SequenceConfig(min_speed_mps=3.0, max_speed_mps=1.0)
    with pytest.raises(ValueError, match="unknown"):
        SequenceConfig(mode="hmm")


def test_localizer_place_scores_feed_the_filter(tmp_path):
    """Localizer.place_scores: eq. 16 against every map image (flat numpy backend), a shortlist otherwise."""
    from disam_ros.bench.table_encoder import TableEncoder, token_frames
    from disam_ros.maps import LocalizationMap, build_map, settings_for_mode
    from disam_ros.retrieval import Localizer, SearchConfig

    rng = np.random.default_rng(3)
    feats = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    enc = TableEncoder(feats)
    build_map(token_frames(6), enc, None, tmp_path / "m", "ref", settings_for_mode("exact"), progress=False)
    m = LocalizationMap.load(tmp_path / "m")

    def eq16(a: np.ndarray, b: np.ndarray) -> float:  # mean over channels of the cosine of spatial maps
        return float(np.mean([np.sum(a[k] * b[k]) / np.linalg.norm(a[k]) / np.linalg.norm(b[k])
                              for k in range(a.shape[0])]))

    want = [eq16(feats[6], feats[i]) for i in range(6)]
    full = Localizer(m, enc, config=SearchConfig(device="cpu", backend="numpy")).place_scores(
        TableEncoder.image_for(6), "query")
    assert full.shape == (6,) and full == pytest.approx(want, abs=1e-5)
    ids, s = Localizer(m, enc, config=SearchConfig(device="cpu", backend="faiss")).place_scores(
        TableEncoder.image_for(6), "query", shortlist=3)
    top = np.argsort(want)[::-1][:3]
    assert ids.tolist() == top.tolist() and s == pytest.approx(np.array(want)[top], abs=1e-5)
    loc = SequenceLocalizer.from_map(m.positions)
    assert loc.update(full, 0.0).index == int(np.argmax(want))
