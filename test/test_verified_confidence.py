"""The confidence of verified poses: the Clopper-Pearson bound against scipy's beta quantile (an independent
implementation), the per-bin fit by hand, the record's checks in a map's calibration, and `disam-calibrate
--verify` on the rendered geometry town: the node's Tracker then publishes the fitted bound for verified frames."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from disam_ros.maps.verified_confidence import (
    check_record,
    clopper_pearson_lower,
    fit_verified,
    verified_confidence,
)


@pytest.mark.parametrize("k, n", [(5, 10), (1, 3), (97, 100), (180, 200), (7, 8)])
def test_clopper_pearson_matches_the_beta_quantile(k, n):
    from scipy.stats import beta

    assert clopper_pearson_lower(k, n) == pytest.approx(beta.ppf(0.05, k, n - k + 1), abs=1e-9)


def test_clopper_pearson_closed_forms():
    assert clopper_pearson_lower(0, 12) == 0.0
    assert clopper_pearson_lower(10, 10) == pytest.approx(0.05 ** 0.1)  # 0.7411: ten of ten right
    assert clopper_pearson_lower(200, 200) == pytest.approx(math.exp(math.log(0.05) / 200))
    with pytest.raises(ValueError, match="0 <= k <= n"):
        clopper_pearson_lower(5, 4)


def test_fit_by_hand():
    """Bins [0, 30), [30, 60), [60, 120), [120, inf): 10 frames with 20 inliers (9 right), 5 with 40 (5 right), none
    with 60-119, 3 with 200 (3 right). Bounds 9/10, 5/5, -, 3/3, then made non-decreasing."""
    inliers = [20] * 10 + [40] * 5 + [200] * 3
    right = [True] * 9 + [False] + [True] * 8
    rec = fit_verified(inliers, right)
    assert rec["frames"] == [10, 5, 0, 3] and rec["right"] == [9, 5, 0, 3]
    b0 = clopper_pearson_lower(9, 10)
    b1 = 0.05 ** (1 / 5)  # 0.549
    assert rec["confidence"] == pytest.approx([b0, max(b0, b1), max(b0, b1), max(b0, b1, 0.05 ** (1 / 3))])
    assert verified_confidence(rec, 15) == pytest.approx(b0)
    assert verified_confidence(rec, 30) == pytest.approx(max(b0, b1))
    assert verified_confidence(rec, 1000) == rec["confidence"][-1]
    check_record(json.loads(json.dumps(rec)), "x")  # what the fit writes passes the map's check
    with pytest.raises(ValueError, match="one inlier count"):
        fit_verified([], [])


@pytest.mark.parametrize("edit, words", [
    (lambda r: r.update(edges=[5, 30]), "must be increasing whole inlier counts from 0"),
    (lambda r: r.update(confidence=[0.9, 0.5, 0.95, 0.99]), "non-decreasing probability per bin"),
    (lambda r: r.update(confidence=[0.9]), "one non-decreasing probability per bin"),
    (lambda r: r.update(confidence=[0.9, 0.9, 1.0, 1.5]), "one non-decreasing probability per bin"),
])
def test_bad_records_name_the_field(edit, words):
    rec = fit_verified([20, 40, 80, 200], [True] * 4)
    edit(rec)
    with pytest.raises(ValueError, match=words):
        check_record(rec, "modes.single.extra.verified")


def test_calibrate_verify_fits_the_bound_and_the_tracker_publishes_it(geometry_world):
    """Calibrate on the geometry town's query drive with --verify: verified frames' inliers and ground truth give
    the record; a Tracker on the calibrated map reports, for each verified frame, exactly the record's bound for
    its inlier count, and for unverified frames the retrieval's calibrated confidence."""
    from disam_ros.eval.calibrate import calibrate
    from disam_ros.eval.offline import QueryGroup
    from disam_ros.eval.queries import folder_queries
    from disam_ros.maps.map_calibration import write_calibration
    from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    world, map_dir = geometry_world["world"], geometry_world["map"]
    queries = list(folder_queries(world, "sunny_repeat"))
    reloc = Relocalizer.from_map(map_dir, RelocalizerConfig())
    try:
        cal = calibrate(reloc, [QueryGroup("sunny_repeat", None, queries)], ("single",), TrackerConfig(), 0.9,
                        "test", progress=False, verify=True)
    finally:
        reloc.map.close()
    rec = cal.modes["single"].extra["verified"]
    seen = cal.stats["single"]["verified"]
    assert seen["frames"] == len(queries) and seen["verified"] >= len(queries) // 2
    assert sum(rec["frames"]) == seen["verified"] and sum(rec["right"]) == seen["right"]
    from scipy.stats import beta

    bounds = [beta.ppf(0.05, k, n - k + 1) if 0 < k < n else (0.05 ** (1 / n) if k == n > 0 else 0.0)
              for k, n in zip(rec["right"], rec["frames"])]
    assert rec["confidence"] == pytest.approx(np.maximum.accumulate(bounds).tolist(), abs=1e-9)
    backup = map_dir.parent / "calibrated"
    import shutil

    shutil.copytree(map_dir, backup)
    write_calibration(backup, cal)
    reloc = Relocalizer.from_map(backup, RelocalizerConfig())
    try:
        tracker = Tracker(reloc, TrackerConfig(mode="single"))
        checked = 0
        for q in queries[:6]:
            res = tracker.step(q.image, q.stamp).result
            if res.ok and res.verification is not None and res.verification.verified:
                assert res.confidence == pytest.approx(verified_confidence(rec, res.verification.inliers))
                checked += 1
        assert checked >= 2
    finally:
        reloc.map.close()
        shutil.rmtree(backup)


def test_calibrate_verify_needs_geometry(node_world):
    """A map without geometry (the node tests' map) cannot fit verified confidence: one line naming the fix,
    before any frame is run."""
    from disam_ros.eval.calibrate import calibrate
    from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
    from disam_ros.tracking.tracker import TrackerConfig

    reloc = Relocalizer.from_map(node_world.map_dir, RelocalizerConfig())
    try:
        with pytest.raises(ValueError, match="--verify: the map has no geometry .*--geometry auto"):
            calibrate(reloc, [], ("single",), TrackerConfig(), 0.9, "test", progress=False, verify=True)
    finally:
        reloc.map.close()
