"""The relocalizer's condition sources: `auto` picks the domain the recogniser sees over the clock
rule's, holds it with hysteresis, forgets it on reset; `auto` without a recogniser is `clock` with a warning;
`fixed` uses `domain`. Real map, real micro models, and a real recogniser trained on the first half of the tiny
world's drives (the frames the tests feed are the second half: held out)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from disam_ros.data.folders import load_condition, read_image
from disam_ros.model.condition_head import find_condition_head, save_condition_head, sidecar_path
from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
from disam_ros.retrieval import SearchConfig
from disam_ros.tracking.tracker import Tracker, TrackerConfig
from disam_ros.training.condition import ConditionTrainConfig, load_labelled, train_head

pytestmark = pytest.mark.usefixtures("one_thread")
DOMAINS = ("sunny", "night", "snow")


@pytest.fixture(scope="module")
def auto_ckpt(tiny_eval_world, tmp_path_factory):
    """A copy of the map's coarse checkpoint (same bytes, same sha256) with a recogniser beside it, so the
    session's shared checkpoint stays without one."""
    d = tmp_path_factory.mktemp("auto_ckpt")
    ckpt = d / "coarse.pt"
    shutil.copyfile(tiny_eval_world["coarse"], ckpt)
    data = load_labelled(tiny_eval_world["world"], DOMAINS, span=(0.0, 0.5))
    save_condition_head(sidecar_path(ckpt), train_head(data, ConditionTrainConfig(steps=300)))
    return ckpt


def held_out(world, condition: str) -> list[tuple[np.ndarray, float]]:
    """(image, capture stamp) of the second half of a drive."""
    folder = load_condition(world["world"], condition)
    stamps = [float(ln.split()[0]) for ln in (world["world"] / condition / "poses.txt").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    n = len(folder)
    return [(read_image(folder.image_paths[i]), stamps[i]) for i in range(n // 2, n)]


def _reloc(world, **kw) -> Relocalizer:
    return Relocalizer.from_map(world["map"], RelocalizerConfig(search=SearchConfig(device="cpu"), **kw))


def test_auto_picks_the_recognised_domain_over_the_clock(tiny_eval_world, auto_ckpt):
    """Snow frames with the weather parameter left at `sunny`: the clock rule says sunny, auto says snow."""
    clock = _reloc(tiny_eval_world)
    auto = _reloc(tiny_eval_world, coarse_checkpoint=str(auto_ckpt), condition_source="auto")
    assert auto.condition_source == "auto" and clock.condition_source == "clock" and not any(
        "recogniser" in w for w in auto.warnings)
    for rgb, stamp in held_out(tiny_eval_world, "snow"):
        assert clock.localize(rgb, stamp)[0].domain == "sunny"  # daytime stamp + weather sunny
        sel, res = auto.localize(rgb, stamp)
        assert sel.domain == "snow" and sel.reason.startswith("auto: recognised snow") and res.ok
        assert sel.query == clock.select(stamp).query  # the stamp's attributes are still the clock's
    diag = auto.condition_diagnostics()
    assert diag["condition_source"] == "auto" and diag["recognised_domain"] == "snow"
    assert 0.5 < diag["recognised_probability"] <= 1.0
    assert "condition" in res.timings_ms


def test_hysteresis_holds_then_switches_and_reset_forgets(tiny_eval_world, auto_ckpt):
    """After snow, one sunny frame does not swap the encoder; a few more do. A junk frame keeps the held
    domain without feeding the recogniser. A tracker reset takes the next frame as it is."""
    reloc = _reloc(tiny_eval_world, coarse_checkpoint=str(auto_ckpt), condition_source="auto",
                   hysteresis_margin=0.2, hysteresis_hold=3)
    snow, sunny = held_out(tiny_eval_world, "snow"), held_out(tiny_eval_world, "sunny")
    for rgb, stamp in snow:
        reloc.localize(rgb, stamp)
    smoothed = dict(reloc.auto.hysteresis.smoothed)
    sel, res = reloc.localize(np.zeros_like(snow[0][0]), snow[0][1])  # black: junk
    assert not res.ok and sel.domain == "snow" and sel.reason == "auto: holding snow"
    assert reloc.auto.hysteresis.smoothed == smoothed  # the recogniser did not see the junk frame
    seen = [reloc.localize(rgb, stamp)[0].domain for rgb, stamp in sunny]
    assert seen[0] == "snow" and seen[1] == "snow"  # hold = 3: not before the third confirming frame
    assert seen[-1] == "sunny"
    assert reloc.select(sunny[0][1]).domain == "sunny"  # what a re-selection after a parameter change gets

    tracker = Tracker(reloc, TrackerConfig(mode="single"))
    assert tracker.step(*snow[0]).selection.domain == "sunny"  # held from the sunny frames above
    tracker.reset("test")
    assert reloc.auto.hysteresis.current is None
    assert tracker.step(*snow[0]).selection.domain == "snow"  # first frame after a reset: taken as is
    assert tracker.step(*sunny[0]).selection.domain == "snow"  # ... and then held
    tracker.reset("test")
    assert reloc.auto.hysteresis.current is None and reloc.condition_diagnostics()["recognised_domain"] == ""
    assert tracker.step(*sunny[0]).selection.domain == "sunny"  # first frame after a reset: taken as is


def test_auto_without_a_recogniser_is_clock_with_a_warning(tiny_eval_world):
    assert find_condition_head(tiny_eval_world["coarse"]) is None
    reloc = _reloc(tiny_eval_world, condition_source="auto", weather="snow")
    assert reloc.condition_source == "clock" and reloc.auto is None
    notes = [w for w in reloc.warnings if "no condition recogniser" in w]
    assert len(notes) == 1 and "using 'clock'" in notes[0] and "disam-train-condition" in notes[0]
    rgb, stamp = held_out(tiny_eval_world, "sunny")[0]
    assert reloc.localize(rgb, stamp)[0].domain == "snow"  # the weather parameter decides, as with clock
    assert reloc.condition_diagnostics() == {"condition_source": "clock"}


def test_fixed_and_override(tiny_eval_world, auto_ckpt):
    """`fixed` encodes every frame with `domain`; a `domain` override wins over `auto` too."""
    with pytest.raises(ValueError, match="condition_source 'fixed' needs the model domain"):
        RelocalizerConfig(condition_source="fixed")
    with pytest.raises(ValueError, match="condition_source 'sky' is not valid"):
        RelocalizerConfig(condition_source="sky")
    with pytest.raises(ValueError, match="hysteresis needs margin >= 0 and hold >= 1"):
        RelocalizerConfig(condition_source="auto", hysteresis_hold=0)
    fixed = _reloc(tiny_eval_world, condition_source="fixed", domain="night")
    auto = _reloc(tiny_eval_world, coarse_checkpoint=str(auto_ckpt), condition_source="auto", domain="night")
    for rgb, stamp in held_out(tiny_eval_world, "snow")[:2]:
        assert fixed.localize(rgb, stamp)[0].domain == "night"
        assert auto.localize(rgb, stamp)[0].domain == "night"
    assert auto.auto.hysteresis.current is None  # the override skips the recogniser
    auto.selector.set_override("")
    assert auto.localize(*held_out(tiny_eval_world, "snow")[0])[0].domain == "snow"


@pytest.mark.ros
@pytest.mark.slow
def test_node_reports_the_recognised_condition_over_dds(node_world, tmp_path):
    """A node with condition_source auto and weather sunny, fed held-out snow frames: /diagnostics says the
    source is auto and the encoder is the recognised snow one."""
    import signal
    import subprocess

    from disam_ros.ros import launcher
    from disam_ros.ros.client import LocalizerClient

    root = node_world.map_dir.parent
    ckpt = tmp_path / "coarse.pt"
    shutil.copyfile(root / "coarse.pt", ckpt)
    doms = ("sunny", "snow", "overcast")
    save_condition_head(sidecar_path(ckpt), train_head(load_labelled(root / "world", doms, span=(0.0, 0.5)),
                                                       ConditionTrainConfig(steps=300)))
    snow = held_out({"world": root / "world"}, "snow")
    log = tmp_path / "node.log"
    with open(log, "wb") as f:
        proc = launcher.start(map=node_world.map_dir, device="cpu", namespace="auto_cond", stdout=f,
                              stderr=subprocess.STDOUT, parameters=dict(
                                  diagnostics_period_s=0.3, weather="sunny", mode="single", condition_source="auto",
                                  coarse_checkpoint=str(ckpt), latitude=node_world.latitude,
                                  longitude=node_world.longitude))
    client = LocalizerClient(namespace="auto_cond")
    try:
        assert client.wait_for_node(False, timeout=60.0), log.read_text()[-3000:]
        for rgb, stamp in snow[:6]:
            client.publish_raw(rgb, stamp)
        # the recogniser's fields are read at the diagnostics tick, the domain after the frame: wait for both
        d = client.wait_diagnostics(lambda d: d.get("recognised_domain") == "snow" and d.get("domain") == "snow", 20.0)
        assert d is not None, (client.rx.diagnostics[-1:], log.read_text()[-3000:])
        assert d["condition_source"] == "auto" and d["domain"] == "snow"
        assert d["domain_reason"].startswith("auto: recognised snow") and 0.5 < float(d["recognised_probability"]) <= 1
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
