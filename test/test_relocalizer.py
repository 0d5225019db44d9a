"""Relocalizer.localize, the per-frame call of the node and of offline evaluation: junk frames and non-finite
features get no pose, unstamped frames are judged by the wall clock, and map image names stay in their folder.
Real map, real random-init micro models (test/conftest.py `tiny_eval_world`)."""
from __future__ import annotations

import logging
import math
import os
import time

import cv2
import numpy as np
import pytest
import torch

from disam_ros.conditions.solar import solar_elevation
from disam_ros.data.folders import read_image
from disam_ros.relocalizer import Relocalizer, RelocalizerConfig, query_stamp
from disam_ros.retrieval import SearchConfig
from disam_ros.retrieval.frame_gate import GateConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _reloc(world, **kw) -> Relocalizer:
    return Relocalizer.from_map(world["map"], RelocalizerConfig(search=SearchConfig(device="cpu"), **kw))


@pytest.fixture(scope="module")
def reloc(tiny_eval_world) -> Relocalizer:
    return _reloc(tiny_eval_world)


@pytest.fixture(scope="module")
def real_frame(tiny_eval_world) -> tuple[np.ndarray, float]:
    """A query frame of the world's repeat drive and its capture stamp (from poses.txt)."""
    cond = tiny_eval_world["world"] / "sunny_repeat"
    path = sorted((cond / "images").iterdir())[3]
    stamp = float((cond / "poses.txt").read_text().split("\n")[3].split()[0])
    return read_image(path), stamp


def _no_pose(res) -> bool:
    return not res.ok and res.index == -1 and not np.isfinite(res.position).any()


def test_real_frame_gets_a_pose(reloc, real_frame):
    rgb, stamp = real_frame
    sel, res = reloc.localize(rgb, stamp)
    assert res.ok and res.index >= 0 and np.isfinite(res.position).all(), res.reason
    assert sel.domain == "sunny"
    assert {"gate", "encode_coarse", "encode_fine", "coarse_search", "total"} <= set(res.timings_ms)


@pytest.mark.parametrize("name", ["black", "white", "grey", "grey+-2", "noise"])
def test_junk_frames_get_no_pose(reloc, real_frame, name):
    rgb, stamp = real_frame
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(1)
    frame = {"black": np.zeros_like(rgb), "white": np.full_like(rgb, 255), "grey": np.full_like(rgb, 128),
             "grey+-2": np.repeat((128 + rng.integers(-2, 3, (h, w, 1))).astype(np.uint8), 3, axis=2),
             "noise": rng.integers(0, 256, rgb.shape, dtype=np.uint8)}[name]
    # Without the gate retrieval answers these like any frame (the defect): prove it on the same map.
    assert reloc.localizer.localize(frame, "sunny").ok
    sel, res = reloc.localize(frame, stamp)
    assert _no_pose(res) and res.reason.startswith("junk frame: "), res.reason
    assert "encode_coarse" not in res.timings_ms  # refused before the encoder ran
    assert sel.domain == "sunny"
    # The gate can be turned off (e.g. to study what the model does with such frames).
    off = Relocalizer(reloc.localizer, reloc.selector, reloc.source, GateConfig(enabled=False))
    assert off.localize(frame, stamp)[1].ok


@pytest.mark.parametrize("role", ["coarse", "fine"])
def test_non_finite_features_are_a_junk_frame(tiny_eval_world, real_frame, role):
    """An encoder that outputs NaN (here: its real weights overwritten with NaN) gives no pose."""
    rgb, stamp = real_frame
    r = _reloc(tiny_eval_world)
    enc = getattr(r.localizer, role)
    with torch.no_grad():
        for module in enc._encoders.values():
            for p in module.parameters():
                p.fill_(float("nan"))
    assert not torch.isfinite(enc.encode(rgb, "sunny")).all()
    _, res = r.localize(rgb, stamp)
    assert _no_pose(res) and res.reason.startswith("junk frame: non-finite features"), res.reason


@pytest.mark.parametrize("stamp", [None, 0.0, -3.0, float("nan")])
def test_unstamped_frames_use_the_wall_clock(reloc, real_frame, stamp):
    """Daylight for an unstamped frame follows the real sun now, as for a frame stamped now."""
    rgb, _ = real_frame
    lat, lon = reloc.selector.latitude, reloc.selector.longitude
    assert lat is not None and lon is not None  # the map's site (world.yaml)
    t0 = time.time()
    sel, _ = reloc.localize(rgb, stamp)
    t1 = time.time()
    elev = sel.query.elevation_deg
    assert elev is not None, "an unstamped frame was judged without a clock"
    lo, hi = sorted((solar_elevation(t0, lat, lon), solar_elevation(t1, lat, lon)))
    assert lo - 0.01 <= elev <= hi + 0.01
    assert sel.query.daylight == reloc.select(t1).query.daylight or abs(elev) < 10  # same class, off the edges
    assert query_stamp(stamp) >= t0 and query_stamp(1234.5) == 1234.5


def test_map_image_names_stay_in_their_folder(tiny_eval_world, tmp_path, caplog):
    r = _reloc(tiny_eval_world)
    assert r.source is not None
    images = r.source[0] / r.source[1] / "images"
    secret = tmp_path / "secret.png"
    cv2.imwrite(str(secret), np.full((8, 8, 3), 77, np.uint8))
    escape = os.path.relpath(secret, images)
    assert escape.startswith("..")
    legit = r.map_image(1)
    assert legit is not None and legit.shape == read_image(images / r.map.names[1]).shape
    r.map.names[0] = escape
    r.map.names[2] = str(secret)  # an absolute name
    (images / "link.png").symlink_to(secret)  # a link the dataset holds: its owner's choice, followed
    r.map.names[4] = "link.png"
    r.map.names[5] = "sub/../../link.png"  # leaves by its own words, though a file of that name is near
    r.map.names[3] = f"../images/{r.map.names[3]}"  # leaves and comes back: names a file inside, so it is read
    with caplog.at_level(logging.WARNING, logger="disam_ros"):
        try:
            assert r.map_image(0) is None and r.map_image(2) is None and r.map_image(5) is None
            assert r.map_image(0) is None
            linked = r.map_image(4)
            assert linked is not None and linked.shape == (8, 8, 3) and (linked == 77).all()
        finally:
            (images / "link.png").unlink()
    warnings = [rec for rec in caplog.records if "leaves" in rec.getMessage()]
    assert len(warnings) == 1 and escape in warnings[0].getMessage()  # logged once, not once per frame
    assert r.map_image(3) is not None and r.map_image(1) is not None


def test_query_stamp_is_finite():
    assert math.isfinite(query_stamp(float("inf"))) and query_stamp(float("inf")) > 1.6e9


@pytest.mark.parametrize("mode", ["sequence", "window", "single"])
def test_a_stream_tracker_skips_the_fine_encoder_and_answers_the_same(tiny_eval_world, mode):
    """Sequence and window modes answer from the belief over coarse scores, so the fine re-rank would be thrown
    away: they never run the fine encoder, and every answer equals the one of a tracker that runs it. Single mode
    answers by the fine re-rank and runs it on every frame. The debug maps still come, from the frame itself."""
    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    cond = tiny_eval_world["world"] / "sunny_repeat"
    stamps = [float(line.split()[0]) for line in (cond / "poses.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    frames = list(zip((read_image(p) for p in sorted((cond / "images").iterdir())[:8]), stamps))
    answers, calls, heats = {}, {}, {}
    for forced in (False, True):
        r = _reloc(tiny_eval_world)
        encode, n = r.localizer.fine.encode, [0]

        def counted(*a, _encode=encode, _n=n, **k):
            _n[0] += 1
            return _encode(*a, **k)

        r.localizer.fine.encode = counted
        if forced:
            scored = r.localize_scored
            r.localize_scored = lambda *a, _scored=scored, **k: _scored(*a, **{**k, "fine": True})
        tr = Tracker(r, TrackerConfig(mode=mode))
        steps = [tr.step(rgb, t).result for rgb, t in frames]
        tr.close()
        answers[forced] = [(s.ok, s.index, s.position.tolist(), s.confidence, s.topk) for s in steps]
        calls[forced] = n[0]
        last, domain = steps[-1], r.select(frames[-1][1]).domain
        heats[forced] = r.activation_maps(last, frames[-1][0], domain)
        assert all(h is not None and np.isfinite(h).all() for h in heats[forced])
    assert answers[False] == answers[True]
    for skipped, kept in zip(heats[False], heats[True]):
        np.testing.assert_allclose(skipped, kept, rtol=1e-5, atol=1e-6)
    assert calls == {False: 0 if mode != "single" else len(frames), True: len(frames)}
