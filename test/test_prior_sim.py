"""Simulated GNSS fixes for `disam-eval --prior-sigma-m` (eval/prior_sim.py): repeatable per frame whatever the
order, spread as the sigma says (sample statistics against the closed form), the covariance the retrieval gate
reads (a point at 2.9 sigma along an axis is inside the 3-sigma gate, one at 3.1 sigma outside), bad sigmas
refused in one line, and the command line takes the option."""
from __future__ import annotations

import numpy as np
import pytest

from disam_ros.eval.prior_sim import PriorNoise


def test_the_same_frame_gets_the_same_fix_and_other_frames_other_ones():
    noise, truth = PriorNoise(5.0), np.array([10.0, -3.0, 1.5])
    a = noise.prior_for("snow", "000007.png", truth)
    b = noise.prior_for("snow", "000007.png", truth)
    assert np.array_equal(a.position, b.position)
    assert not np.array_equal(a.position, noise.prior_for("snow", "000008.png", truth).position)
    assert not np.array_equal(a.position, noise.prior_for("rain", "000007.png", truth).position)
    assert not np.array_equal(a.position, PriorNoise(5.0, seed=1).prior_for("snow", "000007.png", truth).position)


def test_the_fixes_spread_as_the_sigma_says():
    sigma, truth = 4.0, np.array([1.0, 2.0, 3.0])
    noise = PriorNoise(sigma)
    d = np.array([noise.prior_for("fog", f"{i:06d}.png", truth).position - truth for i in range(4000)])
    # mean 0 +- 4 standard errors, std sigma +- 4 standard errors of a std (sigma / sqrt(2n))
    assert np.all(np.abs(d.mean(axis=0)) < 4 * sigma / np.sqrt(len(d)))
    assert np.all(np.abs(d.std(axis=0) - sigma) < 4 * sigma / np.sqrt(2 * len(d)))
    assert abs(np.corrcoef(d.T)[0, 1]) < 4 / np.sqrt(len(d))  # the axes independent


def test_the_gate_keeps_three_sigma_of_the_fix():
    sigma, truth = 5.0, np.zeros(3)
    prior = PriorNoise(sigma).prior_for("night", "000001.png", truth)
    assert np.allclose(prior.covariance, np.eye(3) * sigma**2)
    places = prior.position + np.array([[2.9 * sigma, 0, 0], [0, -3.1 * sigma, 0], [2.0 * sigma, 2.0 * sigma, 0]])
    # Mahalanobis distances by hand: 2.9, 3.1 and sqrt(8) = 2.83 sigma against the 3-sigma gate
    assert prior.gate(places).tolist() == [True, False, True]


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_sigmas_are_one_line_errors(sigma):
    with pytest.raises(ValueError, match="must be a positive number of metres") as err:
        PriorNoise(sigma)
    assert "\n" not in str(err.value)


def test_the_command_line_takes_the_option_and_refuses_a_negative_one(capsys):
    from disam_ros.eval.offline import build_parser

    base = ["--map", "m", "--dataset", "d", "--out", "o"]
    assert build_parser().parse_args(base).prior_sigma_m == 0.0
    assert build_parser().parse_args(base + ["--prior-sigma-m", "5"]).prior_sigma_m == 5.0
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(base + ["--prior-sigma-m", "-2"])
    assert exit_.value.code == 2 and "prior-sigma-m" in capsys.readouterr().err
