"""Epipolar-constrained matching between map images of known pose (pose/epipolar.py), against closed forms."""
from __future__ import annotations

import numpy as np
import pytest

from disam_ros.pose.epipolar import epipolar_distances, epipolar_match, essential
from disam_ros.pose.features import match_descriptors


def _rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])


def test_sideways_baseline_gives_horizontal_lines():
    """Camera 2 one metre to the right of camera 1, same orientation (x2 = x1 - (1,0,0)): every epipolar line
    is the row y = const, so a point's distance from another's line is |y2 - y1| in both images."""
    x1 = np.array([[0.1, 0.2], [-0.3, 0.05]])
    x2 = np.array([[0.4, 0.2], [0.0, -0.1], [0.2, 0.25]])
    in2, in1 = epipolar_distances(x1, x2, essential(np.eye(3), np.array([-1.0, 0.0, 0.0])))
    expect = np.abs(x2[None, :, 1] - x1[:, None, 1])
    np.testing.assert_allclose(in2, expect, atol=1e-12)
    np.testing.assert_allclose(in1, expect, atol=1e-12)


def test_true_correspondences_lie_on_their_lines():
    """Points projected into two cameras of a general relative pose satisfy x2^T E x1 = 0."""
    rng = np.random.default_rng(0)
    X = rng.uniform([-5, -2, 4], [5, 2, 20], (50, 3))
    R, t = _rot_y(12.0), np.array([-0.8, 0.1, 0.3])
    X2 = X @ R.T + t
    x1, x2 = X[:, :2] / X[:, 2:], X2[:, :2] / X2[:, 2:]
    in2, in1 = epipolar_distances(x1, x2, essential(R, t))
    assert np.abs(np.diag(in2)).max() < 1e-12 and np.abs(np.diag(in1)).max() < 1e-12


def test_look_alikes_off_the_line_do_not_steal_the_match():
    """Each true correspondence has a look-alike in image 2 (the same descriptor, slightly perturbed) placed off
    its epipolar line. Plain matching loses most true pairs to the ratio test; matching along the lines keeps
    every one of them, and never pairs a point with a look-alike."""
    rng = np.random.default_rng(1)
    n = 40
    X = rng.uniform([-5, -2, 4], [5, 2, 20], (n, 3))
    R, t = _rot_y(-8.0), np.array([1.0, 0.0, 0.2])
    X2 = X @ R.T + t
    x1, x2 = X[:, :2] / X[:, 2:], X2[:, :2] / X2[:, 2:]
    d = rng.normal(size=(n, 128)).astype(np.float32)
    look = x2 + np.array([0.0, 0.05])  # 0.05 normalised: ~23 px at f = 457, far off a 4 px band
    d_look = d + rng.normal(scale=0.01, size=d.shape).astype(np.float32)  # nearly the true descriptor
    x2_all, d2_all = np.vstack([x2, look]), np.vstack([d, d_look])
    d1 = d + rng.normal(scale=0.05, size=d.shape).astype(np.float32)
    band = (4.0 / 457.0, 4.0 / 457.0)
    lone = epipolar_match(x1[:1], d1[:1], x2_all[:1], d2_all[:1], R, t, band, ratio=0.8)
    assert len(lone) == 0  # the only candidate on the line has nothing to beat: no match is claimed
    epipole = t[:2] / t[2]  # camera 1's centre seen by camera 2: every epipolar line in image 2 passes it
    along = (x2 - epipole) / np.linalg.norm(x2 - epipole, axis=1, keepdims=True)
    x2_all = np.vstack([x2_all, x2 + 0.2 * along])  # a second keypoint on each true line ...
    d2_all = np.vstack([d2_all, rng.normal(size=(n, 128)).astype(np.float32)])  # ... that looks different
    pairs = epipolar_match(x1, d1, x2_all, d2_all, R, t, band, ratio=0.8)
    assert sorted(map(tuple, pairs.tolist())) == [(i, i) for i in range(n)]
    plain = match_descriptors(d1, d2_all, ratio=0.8)
    assert len(plain) < n // 2  # each true match has a near twin: the ratio test refuses it


def test_ratio_one_is_mutual_nearest_neighbours_alone():
    """Learned descriptors (64 unit floats) are matched with ratio 1.0: no ratio test, so a lone candidate in the
    band matches (with 0.8 it does not), a near twin no longer blocks the true match, and the mutual check still
    refuses a keypoint whose candidate prefers another."""
    rng = np.random.default_rng(4)
    R, t = np.eye(3), np.array([-1.0, 0.0, 0.0])  # sideways: every epipolar line is a row
    band = (0.01, 0.01)
    unit = rng.normal(size=(4, 64)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    x1 = np.array([[0.0, 0.0], [0.1, 0.3]])
    x2 = np.array([[0.2, 0.0], [0.3, 0.3], [0.5, 0.3]])  # one candidate on row 0, two on row 0.3
    d2 = np.stack([unit[0], unit[1], unit[1] + 0.01 * unit[2]])  # row 0.3: the truth and a near twin
    d1 = np.stack([unit[0], unit[1] + 0.03 * unit[3]])  # keypoint 1: the truth seen again, a little changed
    d1, d2 = (d / np.linalg.norm(d, axis=1, keepdims=True) for d in (d1, d2))
    assert epipolar_match(x1, d1, x2, d2, R, t, band, ratio=0.8).tolist() == []
    assert epipolar_match(x1, d1, x2, d2, R, t, band, ratio=1.0).tolist() == [[0, 0], [1, 1]]
    x1b, d1b = np.vstack([x1, [[0.15, 0.3]]]), np.vstack([d1, d2[1]])  # a keypoint exactly like candidate 1
    assert epipolar_match(x1b, d1b, x2, d2, R, t, band, ratio=1.0).tolist() == [[0, 0], [2, 1]]  # not 1: mutual
    assert match_descriptors(d1, d2, ratio=1.0).tolist() == [[0, 0], [1, 1]]  # plain matching agrees


def test_bad_ratio_is_refused():
    with pytest.raises(ValueError, match="ratio"):
        epipolar_match(np.zeros((1, 2)), np.zeros((1, 4)), np.zeros((2, 2)), np.zeros((2, 4)), np.eye(3),
                       np.array([1.0, 0, 0]), (0.01, 0.01), ratio=1.5)


def test_matching_in_blocks_gives_the_pairs_of_one_block(monkeypatch):
    """Rows are matched BLOCK at a time (bounded memory); the mutual check spans blocks: the same pairs as
    matching all rows at once, on random points with many candidates per line."""
    import disam_ros.pose.epipolar as epi

    rng = np.random.default_rng(3)
    x1, x2 = rng.uniform(-0.5, 0.5, (300, 2)), rng.uniform(-0.5, 0.5, (250, 2))
    d1, d2 = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(250, 16)).astype(np.float32)
    R, t, band = _rot_y(5.0), np.array([1.0, 0.1, 0.0]), (0.02, 0.02)
    whole = epipolar_match(x1, d1, x2, d2, R, t, band, ratio=0.9)
    monkeypatch.setattr(epi, "BLOCK", 7)
    blocked = epipolar_match(x1, d1, x2, d2, R, t, band, ratio=0.9)
    assert len(whole) >= 10 and np.array_equal(whole, blocked)


def test_line_distances_in_pixels_by_hand():
    """Sideways baseline (horizontal epipolar lines): a pair's distance is |y2 - y1| times the focal length, the
    same in both images."""
    from disam_ros.pose.epipolar import line_distances_px

    x1 = np.array([[0.1, 0.2], [-0.3, 0.05]])
    x2 = np.array([[0.4, 0.21], [0.0, 0.05]])
    d = line_distances_px(x1, x2, np.eye(3), np.array([-1.0, 0.0, 0.0]), 500.0)
    np.testing.assert_allclose(d, [5.0, 0.0], atol=1e-9)
