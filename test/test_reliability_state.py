"""Reliability of the state the localizer carries between frames and loads at start: glitchy odometry loses no
distance and moves a step it corrupted by the speed band; calibration.json is range-checked by the one check the
loader and verify_map (`disam-map-info --verify`) share; the condition recogniser file is tied to its checkpoint
and checked before anything is allocated from it. Every refusal is one line naming the file, field and fix."""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from disam_ros.bench.table_encoder import TableEncoder, token_frames
from disam_ros.conditions import ConditionSelector, load_config
from disam_ros.maps import LocalizationMap, MapError, build_map, settings_for_mode
from disam_ros.maps.confidence_fit import Calibration
from disam_ros.maps.map_calibration import MapCalibration, write_calibration
from disam_ros.maps.map_format import CALIBRATION_JSON, MANIFEST
from disam_ros.maps.model_check import verify_map
from disam_ros.maps.observation import ObservationModel
from disam_ros.model import DisamNet, Encoder, condition_head, preset, save_checkpoint
from disam_ros.model.condition_head import (
    ConditionHead,
    find_condition_head,
    load_condition_head,
    save_condition_head,
    sidecar_path,
)
from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
from disam_ros.retrieval import Localizer, SearchConfig
from disam_ros.retrieval.frame_gate import GateConfig
from disam_ros.ros.node_stats import OdometryDistance
from disam_ros.tracking.sequence import SequenceConfig, SequenceLocalizer
from disam_ros.tracking.tracker import Tracker, TrackerConfig

NAN = float("nan")


# ------------------------------------------------------------------------------------------ odometry
def _same(got, want) -> bool:
    if got is None or want is None:
        return got is want
    return math.isnan(got) and math.isnan(want) or got == pytest.approx(want)


def test_nan_odometry_samples_lose_no_distance_and_mark_the_frames_they_corrupt():
    """2 m/s along x, a sample every 0.1 s (0.2 m), a frame every 5 samples (1.0 m), 60 frames; every 4th sample
    NaN. The takes add up to the clean 60 m (the previous code lost the two steps around each NaN: 30 m). A
    NaN inside a frame interval is bridged there (1.0 m, not degraded); a NaN on the sample a frame takes after
    (k = 15, 35, ... : frames 3, 7, ...) leaves that frame 0.8 m and the next 1.2 m, both degraded."""
    samples = [(0.1 * k, (NAN, NAN, NAN) if k % 4 == 3 else (0.2 * k, 0.0, 0.0)) for k in range(301)]
    odo, total = OdometryDistance(max_step_speed_mps=3.0), 0.0
    for k, (t, p) in enumerate(samples):
        odo.add(t, p)
        if k % 5 == 0:
            total += odo.take() or 0.0
    assert total == pytest.approx(60.0)
    odo = OdometryDistance(max_step_speed_mps=3.0)
    takes = []
    for k, (t, p) in enumerate(samples):
        assert odo.add(t, p) == (k % 4 != 3)  # only the NaN samples are refused
        if k % 5 == 0:
            takes.append(odo.take_step())
    assert takes[0] == (None, False)  # the first sample starts the chain
    assert sum(d for d, _ in takes[1:]) == pytest.approx(60.0)
    for j, (d, degraded) in enumerate(takes[1:], start=1):
        want = (0.8, True) if j % 4 == 3 else (1.2, True) if j % 4 == 0 else (1.0, False)
        assert (d, degraded) == (pytest.approx(want[0]), want[1]), j


def test_odometry_bridges_a_long_glitch_with_the_jump_check_scaled_by_time():
    """After 10 NaN samples (1.1 s at 2 m/s: 2.2 m) the next good sample bridges them at 2 m/s < 3 m/s; a true
    reset after a glitch (100 m in 0.2 s) adds nothing, restarts the chain and marks the interval degraded; a
    frame that could not use its odometry gives it back, degraded flag and all."""
    odo = OdometryDistance(max_step_speed_mps=3.0)
    assert odo.add(0.0, (0.0, 0.0, 0.0))
    for k in range(1, 11):
        assert not odo.add(0.1 * k, (NAN, 0.0, 0.0))
    assert odo.add(1.1, (2.2, 0.0, 0.0))
    assert odo.take_step() == (pytest.approx(2.2), False)  # bridged inside one frame interval
    assert not odo.add(1.2, (NAN, NAN, NAN))
    assert not odo.add(1.3, (102.2, 0.0, 0.0))  # 100 m in 0.2 s: a reset, no distance
    assert odo.add(1.4, (102.4, 0.0, 0.0))
    d, degraded = odo.take_step()
    assert d == pytest.approx(0.2) and degraded
    odo.restore(d, degraded)  # a junk frame: the next frame gets both
    assert odo.take_step() == (pytest.approx(0.2), True)
    assert odo.take_step() == (None, False)


def _chain(n: int) -> np.ndarray:
    return np.array([[float(i), 0.0, 0.0] for i in range(n)])


def test_filter_moves_a_step_with_bad_odometry_by_the_speed_band():
    """Three places 1 m apart, speed band [0, 1] m/s, one speed bin. After a frame with likelihoods (1, 2, 1):
    (1/4, 1/2, 1/4). A 1 s step with NaN odometry is the speed band's: (1/7, 3/7, 3/7) (each place's mass
    halves to itself and the next; the last one's band runs half off the open end); with good odometry of
    1 m (band 1 +- 0.2 m) it would be (0, 1/3, 2/3). The previous code raised on NaN."""
    cfg = SequenceConfig(min_speed_mps=0.0, max_speed_mps=1.0, odom_noise_m=0.1, odom_noise_frac=0.0, speed_bins=1,
                         speed_change_prob=0.0, teleport_prob=0.0, transfer_prob=0.0)
    flat = (np.arange(3), np.zeros(3))
    first = (np.arange(3), np.log([1.0, 2.0, 1.0]))
    want = {NAN: [1 / 7, 3 / 7, 3 / 7], math.inf: [1 / 7, 3 / 7, 3 / 7], None: [1 / 7, 3 / 7, 3 / 7],
            1.0: [0.0, 1 / 3, 2 / 3]}
    for odom, post in want.items():
        loc = SequenceLocalizer.from_map(_chain(3), config=cfg, observation=ObservationModel(gain=1.0, wrong_scale=1.0))
        loc.update(first, stamp=10.0)
        est = loc.update(flat, stamp=11.0, odom=odom)
        assert loc.posterior() == pytest.approx(post), odom
        assert np.isfinite(est.covariance).all()


@pytest.fixture(scope="module")
def table_world(tmp_path_factory):
    """20 map places 3 m apart (table features, exact search); a noisy forward drive, one place per 0.3 s."""
    n = 20
    rng = np.random.default_rng(0)
    places = rng.standard_normal((n, 4, 2, 2)).astype(np.float32)
    drive = places + 0.8 * np.random.default_rng(1).standard_normal(places.shape).astype(np.float32)
    enc = TableEncoder(np.concatenate([places, drive]))
    pos = np.stack([3.0 * np.arange(n), np.zeros(n), np.zeros(n)], 1)
    frames = [(img, 0.3 * i, p, q, name) for i, (img, _, p, q, name) in enumerate(token_frames(n, pos))]
    root = tmp_path_factory.mktemp("reliability_table")
    build_map(frames, enc, None, root / "map", "ref", settings_for_mode("exact"), progress=False, source="test")
    images = [TableEncoder.image_for(n + k) for k in range(n)]
    return {"map": root / "map", "enc": enc, "images": images, "stamps": [1000.0 + 0.3 * k for k in range(n)]}


def _relocalizer(world):
    selector = ConditionSelector(("ref", "query"), load_config(None), reference="ref", override="query")
    return Relocalizer(Localizer(LocalizationMap.load(world["map"]), world["enc"], None, SearchConfig(device="cpu")),
                       selector, None, GateConfig(enabled=False))


def _tracker_config():
    return TrackerConfig(mode="sequence", sequence=SequenceConfig(max_speed_mps=15.0), standstill_ratio=0.0,
                         place_contrast_frames=0.0)


def test_node_tracking_gives_the_tracker_the_speed_band_for_glitched_frames(table_world):
    """Odometry 5 samples a frame (0.6 m each, 3.0 m a frame), every 4th NaN, through the node's NodeTracking:
    the tracker gets 3.0 m on clean frames and NaN (speed band) on frames 3, 4, 7, 8, ... (by hand as in the
    OdometryDistance test), and its belief after every frame equals a second Tracker's fed that hand-made
    sequence with None (no odometry) for the glitched frames. The previous code gave partial distances
    (1.8 m / 2.4 m) as if they were the whole motion."""
    from disam_ros.ros.node_tracking import NodeTracking

    reloc = _relocalizer(table_world)
    cfg = SimpleNamespace(mode="sequence", min_speed_mps=0.0, max_speed_mps=15.0, speed_change_prob=0.1,
                          standstill_ratio=0.0, loop_closure_min_consecutive=3, odom_topic="odom", verify=True,
                          verify_candidates=3, verify_min_inliers=15, verify_track_frames=5,
                          verify_belief_sigma_m=2.0, verify_unguided_candidates=0,
                          verify_turn_search_deg=25.0, verify_first_scale=0.5, verify_dense_candidates=2,
                          verify_motion_speed_factor=1.5, verify_flow_frames=0, verify_polish_images=3,
                          verify_prior_min_inliers=40, verify_dense_max_tilt_deg=4.0, verify_dense_with_prior=False,
                          verify_regate_far_poses=False, verify_features="map",
                          verify_keyframes=False, verify_wait_ms=50.0, verify_budget_ms=0.0,
                          verify_flow_skips_retrieval=False)
    node = NodeTracking(reloc, cfg)
    assert node.tracker.config.flow_skips_retrieval is False  # the node parameter reaches the tracker
    node.tracker = Tracker(reloc, _tracker_config())
    ref = Tracker(_relocalizer(table_world), _tracker_config())
    got = []
    real_step = node.tracker.step
    node.tracker.step = lambda rgb, stamp, prior, odom: (got.append(odom), real_step(rgb, stamp, prior, odom))[1]
    stamps, images = table_world["stamps"], table_world["images"]
    for j, (rgb, stamp) in enumerate(zip(images, stamps)):
        for i in range(5 if j else 1):  # samples 5j-4 .. 5j at 0.06 s spacing, 0.6 m apart
            k = 5 * j - (4 - i) if j else 0
            p = (NAN, NAN, NAN) if k % 4 == 3 else (0.6 * k, 0.0, 0.0)
            node.add_odometry(stamps[0] + 0.06 * k, p)
        node.step(rgb, stamp, None)
        want = None if j == 0 else NAN if j % 4 in (3, 0) else 3.0
        assert _same(got[-1], want), (j, got[-1])
        ref.step(rgb, stamp, None, None if want is None or math.isnan(want) else want)
        np.testing.assert_allclose(node.tracker._seq.posterior(), ref._seq.posterior(), rtol=1e-9, atol=1e-15)
    assert node.diagnostics()["odometry_degraded_steps"] == sum(1 for j in range(1, 20) if j % 4 in (3, 0))


def test_tracker_step_with_nan_odometry_is_the_no_odometry_step(table_world):
    """The same frames to three Trackers; on frame 6 one gets NaN odometry, one None, one the true 3 m: NaN is
    None's wider motion model exactly (the belief spreads more than with the true distance)."""
    reloc = _relocalizer(table_world)
    trackers = {key: Tracker(reloc, _tracker_config()) for key in ("nan", "none", "odom")}
    frames = list(zip(table_world["images"], table_world["stamps"]))
    for k, (rgb, stamp) in enumerate(frames[:7]):
        for key, tr in trackers.items():
            tr.step(rgb, stamp, None, {"nan": NAN, "none": None, "odom": 3.0}[key] if k == 6 else 3.0 if k else None)
    post = {key: tr._seq.posterior() for key, tr in trackers.items()}
    np.testing.assert_allclose(post["nan"], post["none"], rtol=1e-12, atol=1e-15)
    entropy = {key: float(-(p[p > 0] * np.log(p[p > 0])).sum()) for key, p in post.items()}
    assert entropy["nan"] > entropy["odom"]


# ------------------------------------------------------------------------------------------ calibration.json
@pytest.fixture(scope="module")
def real_map(tmp_path_factory):
    """A map of 8 random frames built with a micro checkpoint recorded in its manifest: verify_map passes it."""
    d = tmp_path_factory.mktemp("reliability_map")
    torch.manual_seed(0)
    cfg = preset("micro", ("ref", "night"))
    save_checkpoint(d / "coarse.pt", DisamNet(cfg), cfg)
    rng = np.random.default_rng(0)
    frames = [(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), float(i), np.array([3.0 * i, 0, 0]),
               np.array([0, 0, 0, 1.0]), f"img{i}") for i in range(8)]
    build_map(frames, Encoder.from_checkpoint(d / "coarse.pt", device="cpu"), None, d / "map", "ref", progress=False,
              checkpoint_paths=(d / "coarse.pt", None), source="test")
    return d


def _calibration():
    return MapCalibration(
        modes={"sequence": Calibration("isotonic", x=(0.0, 1.5), y=(0.2, 0.95), mode="sequence", samples=40,
                                       extra={"covariance_scale": 0.5, "feature_key": "support"})},
        min_confidence={"sequence": 0.9}, observation=ObservationModel(gain=0.4, self_separation=2.5, rows=6))


def _tamper(map_dir, edit) -> None:
    """calibration.json edited and listed again with its new size and sha256: only the content check can refuse."""
    path = map_dir / CALIBRATION_JSON
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))  # NaN is written as the JSON extension NaN, which json.loads reads back
    manifest = json.loads((map_dir / MANIFEST).read_text())
    manifest["files"][CALIBRATION_JSON] = {"bytes": path.stat().st_size,
                                           "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    (map_dir / MANIFEST).write_text(json.dumps(manifest))


def _put(d, key: str, value=None, drop: bool = False) -> None:
    """Set (or delete) d[a][b][c] for key 'a/b/c'; a tuple value (index, v) sets one element of a tensor."""
    *path, last = key.split("/")
    for part in path:
        d = d[part]
    if drop:
        del d[last]
    elif isinstance(value, tuple):
        d[last][value[0]] = value[1]
    else:
        d[last] = value


SEQ = "modes/sequence/"
BAD_CALIBRATIONS = [
    ("observation/gain", 1e9, "field observation.gain is 1000000000.0"),
    ("observation/gain", "abc", "field observation.gain is 'abc'"),
    ("observation/wrong_scale", 1e-12, "field observation.wrong_scale"),
    ("observation/rows", -1, "field observation.rows"),
    (SEQ + "extra/covariance_scale", 1e-12, "field modes.sequence.extra.covariance_scale"),
    (SEQ + "extra/covariance_scale", "big", "field modes.sequence.extra.covariance_scale"),
    (SEQ + "extra/feature_key", "nonsense", "field modes.sequence.extra.feature_key"),
    (SEQ + "x", [NAN, 1.5], "field modes.sequence.x holds nan"),
    (SEQ + "y", [0.2, NAN], "field modes.sequence.y holds nan"),
    (SEQ + "x", ["0", 1.5], "field modes.sequence.x holds '0'"),
    (SEQ + "y", [0.9, 0.2], "field modes.sequence.y decreases"),
    (SEQ + "y", [0.2, 1.5], "field modes.sequence.y holds 1.5"),
    (SEQ + "y", [-0.1, 0.5], "field modes.sequence.y holds -0.1"),
    (SEQ + "samples", "40", "field modes.sequence.samples"),
    ("precision_target", 5, "field precision_target"),
]


@pytest.mark.parametrize("key, value, words", BAD_CALIBRATIONS)
def test_calibration_fields_are_range_checked_by_loader_and_verify(real_map, tmp_path, key, value, words):
    """Each tampered calibration.json (manifest hash updated) is refused by the map loader and by verify_map
    (what `disam-map-info --verify` runs) with the same one line: the file, the field, the fix."""
    map_dir = tmp_path / "map"
    shutil.copytree(real_map / "map", map_dir)
    write_calibration(map_dir, _calibration())
    assert verify_map(map_dir) == [] and LocalizationMap.load(map_dir).calibration is not None
    _tamper(map_dir, lambda d: _put(d, key, value))
    with pytest.raises(MapError) as err:
        LocalizationMap.load(map_dir)
    line = str(err.value)
    assert "\n" not in line and "calibration.json" in line and words in line, line
    assert "re-run disam-calibrate" in line
    assert verify_map(map_dir) == [line]


@pytest.mark.parametrize("where, value, ok", [
    ("observation/gain", 10.0, True), ("observation/gain", 1e-4, True), ("observation/gain", 10.5, False),
    ("observation/gain", 0.0, False), ("observation/gain", True, False),
    ("modes/sequence/extra/covariance_scale", 1e-3, True), ("modes/sequence/extra/covariance_scale", 1e3, True),
    ("modes/sequence/extra/covariance_scale", 1e-4, False), ("modes/sequence/extra/covariance_scale", 2e3, False),
    ("modes/sequence/a", -1.0, False),
])
def test_calibration_bounds_by_hand(where, value, ok):
    """The edges: gain 10 (1 nat / the d' floor 0.1) and 1e-4 (1 nat / d' 1e4) load, 10.5 does not;
    covariance_scale 1e-3 and 1e3 load, 1e-4 and 2e3 do not; a logistic fit may not decrease (a < 0)."""
    d = json.loads(_calibration().to_json())
    if where.endswith("/a"):
        d["modes"]["sequence"].update(kind="logistic", b=0.0)
    _put(d, where, value)
    if ok:
        MapCalibration.from_dict(d)
    else:
        with pytest.raises(ValueError, match=where.replace("/", ".").replace("extra.", "extra\\.")):
            MapCalibration.from_dict(d)


# ------------------------------------------------------------------------------------------ condition recogniser
def _head():
    torch.manual_seed(0)
    return ConditionHead({"domain": ("ref", "night")}, hidden=8)


def _one_line(exc_info, path) -> str:
    text = str(exc_info.value)
    assert "\n" not in text and str(path) in text and "disam-train-condition" in text, text
    assert "weights_only=False" not in text
    return text


def test_recogniser_records_its_checkpoint_and_refuses_another(real_map, tmp_path):
    """Saved beside coarse.pt, the file records coarse.pt's sha256 (hashlib here); beside another checkpoint
    it is refused in one line naming both files; a file without the record (written before it existed) loads
    with a warning from the relocalizer."""
    ckpt, other = tmp_path / "coarse.pt", tmp_path / "other.pt"
    shutil.copyfile(real_map / "coarse.pt", ckpt)
    other.write_bytes(ckpt.read_bytes() + b"\0")  # other bytes, other sha256
    save_condition_head(sidecar_path(ckpt), _head())
    payload = torch.load(sidecar_path(ckpt), weights_only=True)
    assert payload["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert find_condition_head(ckpt).checkpoint_sha256 == payload["checkpoint_sha256"]
    shutil.copyfile(sidecar_path(ckpt), sidecar_path(other))
    with pytest.raises(ValueError) as err:
        find_condition_head(other)
    text = _one_line(err, sidecar_path(other))
    assert str(other) in text and "retrain the recogniser on this model" in text
    # the map's own checkpoint with a recogniser trained for another one beside it: the relocalizer refuses
    save_condition_head(sidecar_path(real_map / "coarse.pt"), _head(), checkpoint=other)
    cfg = RelocalizerConfig(search=SearchConfig(device="cpu"), condition_source="auto", weather="sunny")
    try:
        with pytest.raises(ValueError) as err:
            Relocalizer.from_map(real_map / "map", cfg)
        _one_line(err, sidecar_path(real_map / "coarse.pt"))
        del payload["checkpoint_sha256"]  # an older file: loads, with a warning
        torch.save(payload, sidecar_path(real_map / "coarse.pt"))
        reloc = Relocalizer.from_map(real_map / "map", cfg)
        assert reloc.condition_source == "auto" and reloc.auto.head.checkpoint_sha256 is None
        assert any("records no encoder checkpoint sha256" in w for w in reloc.warnings), reloc.warnings
    finally:
        sidecar_path(real_map / "coarse.pt").unlink()


BAD_RECOGNISERS = {
    "garbage": (None, "not a condition recogniser torch.load can read safely"),
    "foreign_object": (None, "not a condition recogniser torch.load can read safely"),
    "no_tasks": (("tasks", None, True), "field tasks"),
    "tasks_wrong_type": (("tasks", "domain"), "field tasks"),
    "hidden_string": (("hidden", "8"), "field hidden"),
    "hidden_mismatch": (("hidden", 16), "weight trunk.0.weight is torch.float32 (8, "),
    "missing_weight": (("state_dict/trunk.0.bias", None, True), "field state_dict must hold exactly"),
    "nan_weight": (("state_dict/heads.domain.weight", ((0, 0), NAN)), "weight heads.domain.weight holds NaN"),
    "inf_mean": (("state_dict/mean", (3, math.inf)), "weight mean holds NaN or inf"),
    "zero_std": (("state_dict/std", (0, 0.0)), "weight std holds values <= 0"),
    "bad_sha": (("checkpoint_sha256", "abc"), "field checkpoint_sha256"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECOGNISERS))
def test_bad_recogniser_files_are_one_line_errors(tmp_path, case):
    """Garbage, a pickle weights_only refuses (PyTorch's text advises weights_only=False), missing keys, wrong
    types, declared sizes that differ from the tensors, NaN/inf weights, a zero std, a malformed hash."""
    path, (edit, words) = tmp_path / "coarse.condition.pt", BAD_RECOGNISERS[case]
    if case == "garbage":
        path.write_bytes(b"\x80\x02not a torch file at all" * 10)
    elif case == "foreign_object":
        torch.save({"format": "disam_ros.condition_head", "when": datetime.date(2024, 1, 1)}, path)
    else:
        p = _head().to_payload()
        _put(p, *edit)
        torch.save(p, path)
    with pytest.raises(ValueError) as err:
        load_condition_head(path)
    assert words in _one_line(err, path)


def test_declared_sizes_are_checked_before_anything_is_allocated(tmp_path, monkeypatch):
    """A small file declaring 3,000,000 hidden units is refused before any layer of that size exists (the
    previous code built a 1.6 GB model, then refused it): any Linear larger than a real recogniser fails the
    test here instead of allocating."""
    real = nn.Linear.__init__
    max_hidden = getattr(condition_head, "MAX_HIDDEN", 4096)

    def guarded(self, n_in, n_out, *args, **kw):
        assert n_in * n_out <= 10 * max_hidden * 256, f"allocating a {n_in} x {n_out} layer from a declared size"
        real(self, n_in, n_out, *args, **kw)

    monkeypatch.setattr(nn.Linear, "__init__", guarded)
    path = tmp_path / "big.condition.pt"
    for hidden, words in ((3_000_000, "field hidden is 3000000"), (max_hidden + 1, "field hidden")):
        p = _head().to_payload()
        p["hidden"] = hidden
        torch.save(p, path)
        assert path.stat().st_size < 100_000
        with pytest.raises(ValueError) as err:
            load_condition_head(path)
        assert words in _one_line(err, path)
