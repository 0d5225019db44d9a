"""Condition selection on a pose-less route (Nordland-style): held-out frames, node choices through the real
recogniser + fusion + hysteresis, and R@1 per encoder choice on hand-built codes; the latency benchmark's CLI."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from disam_ros import conditions
from disam_ros.bench import condition as bench_condition
from disam_ros.bench.table_encoder import TableEncoder
from disam_ros.conditions.fusion import Hysteresis
from disam_ros.eval.condition_route import (
    RouteFrames,
    held_out_range,
    load_route,
    node_choices,
    recognise_route,
    route_paths,
    selection_route,
)
from disam_ros.model.condition_head import N_FEATURES, ConditionHead
from disam_ros.relocalizer import AutoCondition

BRIGHT = np.full((8, 8, 3), 204, np.uint8)  # luma 0.8: -log(0.801) = 0.22
DARK = np.full((8, 8, 3), 13, np.uint8)  # luma 0.051: -log(0.052) = 2.96


def darkness_head() -> ConditionHead:
    """winter logit = 5 * (-log brightness) - 7.5, summer 0: bright -> P(winter) 0.0017, dark -> 0.9993."""
    head = ConditionHead({"domain": ("summer", "winter")}, hidden=2)
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
        head.trunk[0].weight[0, N_FEATURES - 1] = -1.0  # the last feature is log mean brightness
        head.heads["domain"].weight[1, 0] = 5.0
        head.heads["domain"].bias[1] = -7.5
    return head.eval()


def _selector() -> conditions.ConditionSelector:
    return conditions.ConditionSelector(("summer", "winter"), conditions.load_config(None), reference="summer")


def test_held_out_part_and_layouts(tmp_path):
    assert held_out_range(1788, 0.5) == range(894, 1788)
    assert held_out_range(5, 0.0) == range(5)
    with pytest.raises(ValueError, match="train fraction"):
        held_out_range(5, 1.0)
    (tmp_path / "summer").mkdir()
    (tmp_path / "winter" / "images").mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(tmp_path / "summer" / f"f{i}.png"), BRIGHT)
        cv2.imwrite(str(tmp_path / "winter" / "images" / f"f{i}.png"), DARK if i == 3 else BRIGHT)
    assert [p.name for p in route_paths(tmp_path, "winter")] == ["f0.png", "f1.png", "f2.png", "f3.png"]
    with pytest.raises(FileNotFoundError, match="autumn"):
        route_paths(tmp_path, "autumn")
    route = load_route(tmp_path, ["summer", "winter"], 0.5, min_brightness=20)
    assert route["winter"].places.tolist() == [2, 3]  # frames [2, 4): name ranks 2 and 3
    assert route["winter"].scored.tolist() == [True, False]  # f3 is dark: 99th percentile 13 < 20


def test_node_choice_follows_the_image_through_hysteresis():
    # no stamp: the clock is neutral, the image decides; hysteresis (alpha 0.5, margin 0.2, hold 3) smooths
    # P(winter): B B -> 0.0017; D -> 0.50 (lead 0.001 < margin); B -> 0.25; D -> 0.63, 0.81, 0.91 (leads 0.25,
    # 0.62, 0.81): the third confirming frame (7th) switches
    head = darkness_head()
    auto = AutoCondition(head, Hysteresis(alpha=0.5, margin=0.2, hold=3))
    seq = [BRIGHT, BRIGHT, DARK, BRIGHT, DARK, DARK, DARK, DARK]
    assert node_choices(auto, _selector(), seq) == ["summer"] * 6 + ["winter"] * 2
    frames = RouteFrames("winter", seq, np.arange(8), np.ones(8, bool))
    r = recognise_route(head, auto, _selector(), frames, "winter")
    assert (r.frames, r.frame_accuracy, r.node_accuracy, r.confused_with) == (8, 5 / 8, 2 / 8, "summer")
    frames = RouteFrames("winter", seq, np.arange(8), np.array([False, False, True] + [True] * 5))
    assert recognise_route(head, auto, _selector(), frames, "winter").frame_accuracy == 5 / 6  # 5 D of 6 scored


class AngleEncoder:
    """Codes (B, 2, 1, 2) whose eq. 16 similarity is cos(angle difference): place p sits at p * 40 degrees.
    Token k < 10 is summer place k; 10 + p is winter place p. The winter encoder reads winter right; the summer
    encoder reads winter place p as place PERM[p] + 15 degrees (less distinctive: best cos 15, second cos 25)."""

    domains = ("summer", "winter")
    PERM = (0, 2, 1, 3)

    def encode(self, images, domain):
        angles = []
        for im in images:
            k = TableEncoder.key(im)
            if k < 10:
                angles.append(40.0 * k)
            else:
                p = k - 10
                angles.append(40.0 * p if domain == "winter" else 40.0 * self.PERM[p] + 15.0)
        a = torch.tensor([math.radians(x) for x in angles])
        return torch.stack([torch.cos(a), torch.sin(a)], 1)[:, None, None, :].repeat(1, 2, 1, 1)


def test_r_at_1_per_encoder_choice():
    db = RouteFrames("summer", [TableEncoder.image_for(p) for p in range(4)], np.arange(4), np.ones(4, bool))
    q = RouteFrames("winter", [TableEncoder.image_for(10 + p) for p in range(4)], np.arange(4),
                    np.array([True, True, True, False]))  # place 3 is a dark frame: not scored
    rows = selection_route(AngleEncoder(), db, "summer", q, "winter",
                           {"oracle": "winter", "clock": "summer", "auto": ["winter", "summer", "winter", "summer"]},
                           tolerance=0)
    # scored places 0, 1, 2. summer encoder: nearest of 0/40/80/120 to PERM[p]*40+15 is PERM[p]: only p = 0 right.
    # auto: winter (right), summer (PERM[1] = 2, wrong), winter (right). brute: winter's margin 1 - cos 40 = 0.23
    # beats summer's cos 15 - cos 25 = 0.06 (15, 95 and 55 degrees all lie between two places), so it always
    # picks the right encoder
    assert rows["oracle"] == 1.0
    assert rows["clock"] == pytest.approx(1 / 3)
    assert rows["auto"] == pytest.approx(2 / 3)
    assert rows["brute"] == 1.0
    assert rows["frames"] == 3
    assert rows["auto_true_domain"] == pytest.approx(2 / 3)


def test_latency_benchmark_writes_its_table_and_rejects_bad_input(tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "cond.json"
    assert bench_condition.main(["--reps", "3", "--no-encoder", "--json", str(out)]) == 0
    blob = json.loads(out.read_text())
    assert blob["suite"] == "condition"
    assert [r["frame"] for r in blob["results"]] == ["640x480", "64x64"]
    assert all(r["added_ms"] > 0 and r["reps"] == 3 for r in blob["results"])
    assert "added ms/frame" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        bench_condition.main(["--reps", "0"])
    assert exc.value.code == 2
    assert "--reps must be >= 1" in capsys.readouterr().err
