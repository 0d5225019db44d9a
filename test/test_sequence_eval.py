"""Issue 10's Nordland target through `disam-sequence-eval`'s own code path, on the real held-out half.

SeqSLAM's patch-normalised pixels are weak single-frame features (about a quarter right); the sequence filter
must lift them above 90 % and publish, at the threshold chosen on the FIRST half, only right poses."""
from __future__ import annotations

import numpy as np
import pytest

from disam_ros.eval import sequence_eval as se

pytestmark = pytest.mark.skipif(not (se.NORDLAND_DEFAULT / "winter").is_dir(),
                                reason="../shared/data/nordland_trimmed_dev is absent (real data is not shipped)")


@pytest.fixture(scope="module")
def rows():
    summer, winter, frames = se.nordland_frames(se.NORDLAND_DEFAULT)
    fn = se.patch_normalised_features()
    first, second = se.halves("patchnorm", fn(summer), fn(winter), frames)
    assert len(first.scores) >= 800 and len(second.scores) >= 800  # 1,729 kept frames, split in two
    return {r["mode"]: r for r in se.compare(first, second, se.NORDLAND_CONFIG, tol_m=2.0)}


def test_sequence_lifts_weak_frames_and_publishes_only_right_poses(rows):
    single, seq = rows["single"], rows["sequence"]
    assert single["r1"] < 0.5  # weak features: the point of the target
    assert seq["r1"] >= 0.90 and seq["r1"] - single["r1"] >= 0.40  # measured 23.6 -> 96.5 %
    assert seq["coverage"] >= 0.5 and seq["precision"] >= 0.99  # measured 89.9 % published, 100 % right
    assert seq["ece"] <= 0.05


def test_the_feature_is_chosen_by_auc_on_the_first_half(rows):
    for mode in ("sequence", "window"):
        table = rows[mode]["feature_table"]
        assert set(table) == {"support", "mass"}
        assert rows[mode]["feature"] == max(table, key=lambda k: table[k]["auc"])
    assert rows["single"]["feature"] == "distinctiveness"
    assert np.isfinite(rows["sequence"]["threshold"])
