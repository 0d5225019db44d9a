"""Local features: SIFT on a synthetic texture and the same texture shifted by (7, 3) px matches with that
displacement; hand-made descriptors show the ratio test and the mutual check; bad images are refused."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from disam_ros.pose.features import SiftConfig, detect_sift, match_descriptors, match_unit_descriptors, root_sift

SHIFT = np.array([7.0, 3.0])  # (x, y) pixels


def texture(seed: int = 0, h: int = 240, w: int = 320) -> np.ndarray:
    """Blurred noise plus random discs and bars: blobs and corners at many scales, an RGB uint8 image."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 2.0)
    img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)
    for _ in range(60):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            cv2.circle(img, c, int(rng.integers(3, 15)), float(rng.integers(0, 256)), -1)
        else:
            cv2.rectangle(img, c, (c[0] + int(rng.integers(4, 30)), c[1] + int(rng.integers(4, 30))),
                          float(rng.integers(0, 256)), -1)
    grey = img.astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def test_shifted_image_matches_with_the_shift():
    img = texture()
    shifted = np.roll(img, shift=(3, 7), axis=(0, 1))  # content moves by +7 in x, +3 in y
    f1, f2 = detect_sift(img), detect_sift(shifted)
    assert f1.keypoints.dtype == np.float32 and f1.descriptors.shape == (len(f1), 128)
    assert f1.descriptors.dtype == np.float32
    pairs = match_descriptors(f1.descriptors, f2.descriptors, ratio=0.8, mutual=True)
    assert len(pairs) >= 50
    d = f2.keypoints[pairs[:, 1]] - f1.keypoints[pairs[:, 0]]
    good = np.linalg.norm(d - SHIFT, axis=1) <= 0.5
    assert good.mean() >= 0.9, (good.mean(), len(pairs))


def test_deterministic_and_sorted_by_response():
    img = texture(1)
    a, b = detect_sift(img, SiftConfig(nfeatures=300)), detect_sift(img, SiftConfig(nfeatures=300))
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_array_equal(a.descriptors, b.descriptors)
    assert 0 < len(a) <= 300 + 10  # OpenCV keeps ties at the cut
    assert np.all(np.diff(a.responses) <= 0)
    np.testing.assert_array_equal(match_descriptors(a.descriptors, b.descriptors),
                                  match_descriptors(a.descriptors, b.descriptors))


def test_root_sift_is_unit_norm_and_a_mask_limits_detection():
    img = texture(2)
    f = detect_sift(img, SiftConfig(root_sift=True))
    np.testing.assert_allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, atol=1e-5)
    mask = np.zeros(img.shape[:2], np.uint8)
    mask[:, :160] = 1
    left = detect_sift(img, mask=mask)
    assert len(left) > 0 and np.all(left.keypoints[:, 0] < 161)
    assert len(detect_sift(np.full((50, 60), 128, np.uint8))) == 0  # no texture, no features, no error


def test_ratio_and_mutual_by_hand():
    d1 = np.array([[0, 0], [10, 0], [5, 5.0], [0.2, 0.1]], np.float32)
    d2 = np.array([[0.1, 0], [10, 0.2], [5, 4.0], [5, 6.0], [30, 30]], np.float32)
    # d1[0] -> d2[0] (0.1 vs 10.0): kept; d1[1] -> d2[1]: kept; d1[2] is 1.0 from both d2[2] and d2[3]:
    # ambiguous, dropped by the ratio test; d1[3] -> d2[0] but d2[0]'s nearest is d1[0]: not mutual
    assert match_descriptors(d1, d2, ratio=0.8, mutual=True).tolist() == [[0, 0], [1, 1]]
    assert match_descriptors(d1, d2, ratio=0.8, mutual=False).tolist() == [[0, 0], [1, 1], [3, 0]]
    assert match_descriptors(d1, d2[:1]).shape == (0, 2)  # one candidate: no ratio test possible
    assert match_descriptors(np.zeros((0, 2), np.float32), d2).shape == (0, 2)


@pytest.mark.parametrize("image, what", [
    (np.zeros((0, 0), np.uint8), "empty"),
    (np.zeros((40, 40), np.float64), "uint8"),
    (np.zeros((40, 40, 4), np.uint8), "shape"),
    ([[1, 2], [3, 4]], "non-array"),
])
def test_bad_images_are_refused_in_one_line(image, what):
    with pytest.raises(ValueError, match=what) as err:
        detect_sift(image)
    assert "\n" not in str(err.value)


def test_unit_descriptor_matching_by_hand():
    # unit vectors at angles 0, 90, 45 and 12 deg against 5, 85, 40, 50 and 180 deg (distance 2 sin(angle / 2)):
    # d1[0] -> d2[0] (5 deg against 40 deg to the runner-up: 0.087 vs 0.684, kept); d1[1] -> d2[1] (kept); d1[2] is
    # 5 deg from both d2[2] and d2[3] (ambiguous, dropped); d1[3] -> d2[0] (7 deg) but d2[0]'s nearest is d1[0]
    # (5 deg): not mutual
    def unit(*deg):
        a = np.radians(np.array(deg, np.float64))
        return np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)

    d1, d2 = unit(0, 90, 45, 12), unit(5, 85, 40, 50, 180)
    assert match_unit_descriptors(d1, d2, ratio=0.8, mutual=True).tolist() == [[0, 0], [1, 1]]
    assert match_unit_descriptors(d1, d2, ratio=0.8, mutual=False).tolist() == [[0, 0], [1, 1], [3, 0]]
    assert match_unit_descriptors(d1, d2[:1]).shape == (0, 2)
    with pytest.raises(ValueError, match="ratio"):
        match_unit_descriptors(d1, d2, ratio=0.0)


def test_unit_descriptor_matching_gives_opencvs_pairs_on_real_sift():
    """The matrix-product matcher against OpenCV's brute-force kNN on RootSIFT of a texture and its shifted copy
    (real descriptors, hundreds of true matches and many ambiguous ones): the same pairs."""
    a, b = detect_sift(texture(0)), detect_sift(np.roll(texture(0), (3, 7), axis=(0, 1)))
    da, db = root_sift(a.descriptors), root_sift(b.descriptors)
    for ratio in (0.6, 0.8, 0.95):
        for mutual in (True, False):
            want = match_descriptors(da, db, ratio, mutual)
            assert len(want) > 50
            assert match_unit_descriptors(da, db, ratio, mutual).tolist() == want.tolist()


def test_bad_descriptors_and_ratio_are_refused():
    with pytest.raises(ValueError, match=r"\(N,D\) and \(M,D\)"):
        match_descriptors(np.zeros((3, 128)), np.zeros((3, 64)))
    with pytest.raises(ValueError, match="ratio"):
        match_descriptors(np.zeros((3, 2)), np.zeros((3, 2)), ratio=1.5)


def test_half_scale_keypoints_land_on_the_full_scale_image():
    # a texture drawn at 2x and shrunk by exactly 2 (area average): a keypoint found at scale 0.5 of the big image
    # must sit where the small image's own keypoint is, mapped by the pixel-centre rule x_big = 2 x_small + 0.5
    small = texture(3)
    big = cv2.resize(small, (small.shape[1] * 2, small.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
    half = detect_sift(big, SiftConfig(scale=0.5))
    own = detect_sift(cv2.resize(big, small.shape[1::-1], interpolation=cv2.INTER_AREA))
    np.testing.assert_allclose(half.keypoints, own.keypoints * 2 + 0.5, atol=1e-3)
    np.testing.assert_array_equal(half.descriptors, own.descriptors)
    np.testing.assert_allclose(half.scales, own.scales * 2, rtol=1e-6)
    with pytest.raises(ValueError, match="scale"):
        SiftConfig(scale=2.0)


def test_the_longer_side_cap_sets_the_detection_scale_by_hand():
    from disam_ros.pose.features import MAP_SIFT, detection_scale

    assert detection_scale(MAP_SIFT, 640, 480) == 1.0  # the demo's images are untouched by the map recipe's cap
    assert detection_scale(SiftConfig(max_side=1600), 4000, 3000) == 0.4
    assert detection_scale(SiftConfig(max_side=1600, scale=0.5), 2000, 1500) == 0.5  # the smaller factor wins
    assert detection_scale(SiftConfig(max_side=1600, scale=0.5), 4000, 3000) == 0.4
    assert detection_scale(SiftConfig(), 9000, 9000) == 1.0  # 0 = no cap
    old = {k: v for k, v in MAP_SIFT.to_record().items() if k != "max_side"}  # a map written before the cap
    assert SiftConfig.from_record(old).max_side == 0
    with pytest.raises(ValueError, match="max_side=-1 must be >= 0"):
        SiftConfig(max_side=-1)


def test_a_capped_big_image_gives_the_keypoints_of_its_half_size_copy():
    small = texture(3)
    big = cv2.resize(small, (small.shape[1] * 2, small.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
    capped = detect_sift(big, SiftConfig(max_side=max(small.shape[:2])))
    own = detect_sift(cv2.resize(big, small.shape[1::-1], interpolation=cv2.INTER_AREA))
    np.testing.assert_allclose(capped.keypoints, own.keypoints * 2 + 0.5, atol=1e-3)
    np.testing.assert_array_equal(capped.descriptors, own.descriptors)
