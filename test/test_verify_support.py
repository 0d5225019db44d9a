"""What a verified frame hands on for map-point tracking (verify/support.py): its inliers, then every other map
point the solved pose puts within the radius of a keypoint nobody claimed, closest claims first."""
from __future__ import annotations

import numpy as np

from disam_ros.verify.support import support_pairs


def _plain(inliers: np.ndarray, keypoints: np.ndarray, predicted: np.ndarray, radius: float):
    """The rule written out by brute force: every (map point, its nearest keypoint) pair, closest first."""
    taken_q, taken_m = set(inliers[:, 0].tolist()), set(inliers[:, 1].tolist())
    q_out, m_out = list(inliers[:, 0]), list(inliers[:, 1])
    claims = []
    for m, p in enumerate(predicted):
        if not np.isfinite(p).all():
            continue
        d = np.hypot(*(keypoints - p).T)
        q = int(np.argmin(d))
        claims.append((float(d[q]), m, q))
    for d, m, q in sorted(claims):
        if d <= radius and q not in taken_q and m not in taken_m:
            taken_q.add(q)
            taken_m.add(m)
            q_out.append(q)
            m_out.append(m)
    return np.array(q_out, np.int64), np.array(m_out, np.int64)


def test_a_hand_worked_case():
    keypoints = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    predicted = np.array([[0.5, 0.0], [10.0, 1.5], [9.5, 0.0], [30.0, 0.0], [np.nan, 0.0], [20.0, 0.0]])
    inliers = np.array([[2, 5]])  # keypoint 2 and map point 5 are already the RANSAC inlier pair
    q, m = support_pairs(inliers, keypoints, predicted, 2.0)
    # map 0 -> kp 0 at 0.5 px; map 2 -> kp 1 at 0.5 px (before map 1 at 1.5 px, which then finds kp 1 taken);
    # map 3 is 10 px from anything; map 4 has no projection
    assert q.tolist() == [2, 0, 1] and m.tolist() == [5, 0, 2]


def test_random_frames_match_the_rule_written_out():
    rng = np.random.default_rng(3)
    for _ in range(20):
        keypoints = rng.uniform(0, 80, (300, 2))
        predicted = rng.uniform(-5, 85, (400, 2))
        predicted[200:260] = predicted[100:160]  # map points projected onto one pixel: equal distances
        predicted[rng.random(400) < 0.1] = np.nan
        inliers = np.stack([rng.choice(300, 15, replace=False), rng.choice(400, 15, replace=False)], 1)
        got = support_pairs(inliers, keypoints, predicted, 2.0)
        want = _plain(inliers, keypoints, predicted, 2.0)
        assert [a.tolist() for a in got] == [a.tolist() for a in want]
        assert len(set(got[0].tolist())) == len(got[0]) and len(set(got[1].tolist())) == len(got[1])
