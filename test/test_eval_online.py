"""Online evaluation over real DDS (loopback): bags replayed into a localizer node process give the same
per-query answers as offline evaluation of the same bags, and the node's outputs are recorded."""
from __future__ import annotations

import re

import pytest

from disam_ros.data.bags import BagWriteOptions, bag_info, write_folder_bag
from disam_ros.eval.offline import QueryGroup, evaluate
from disam_ros.eval.queries import bag_queries, world_weather
from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
from disam_ros.retrieval import SearchConfig

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_online_equals_offline(tiny_eval_world, tmp_path):
    from disam_ros.ros.online_eval import Drive, camera_topic, evaluate_online

    w = tiny_eval_world
    drives = []
    for cond in ("sunny_repeat", "night"):
        bag = tmp_path / "bags" / cond
        write_folder_bag(w["world"], cond, bag, BagWriteOptions(compression="png"))
        topic, compressed = camera_topic(bag)
        assert compressed and topic == "/camera/image_raw/compressed"
        drives.append(Drive(cond, bag, world_weather(w["world"], cond), topic, compressed))

    with open(tmp_path / "node.log", "w") as log:
        online, queries, answers = evaluate_online(w["map"], drives, tmp_path / "online", device="cpu",
                                                   log=log)
    reloc = Relocalizer.from_map(w["map"], RelocalizerConfig(search=SearchConfig(device="cpu")))
    groups = [QueryGroup(d.condition, d.weather, list(bag_queries(d.bag, d.condition))) for d in drives]
    offline, _, off_answers = evaluate(reloc, groups, examples_per_condition=0, progress=False)

    assert len(online) == len(offline) == 20
    assert all(r.answered for r in online), (tmp_path / "node.log").read_text()[-2000:]
    assert [r.name for r in online] == [r.name for r in offline]
    assert [r.match_name for r in online] == [r.match_name for r in offline]
    assert [a.domain for a in answers] == [a.domain for a in off_answers]
    assert {a.domain for a, q in zip(answers, queries) if q.condition == "night"} == {"night"}
    assert all(a.latency_s is not None and 0 < a.latency_s < 10 for a in answers)
    counts = {t.topic: t.count for t in bag_info(tmp_path / "online" / "node_outputs").topics}
    assert counts["/disam_localizer/loop_closure"] == counts["/disam_localizer/pose"] == 20


@pytest.mark.long
def test_paced_replay_answers_every_frame_of_a_slow_node(tiny_eval_world, tmp_path):
    """A node made slow on purpose (max_rate_hz: at most 4 frames a second) drops most frames of a drive replayed
    as fast as possible; paced by its answers (the default) it drops none and answers every frame, and a frame
    that waits longer than the per-frame timeout is counted and reported, not silently lost.
    The paced run replays the drive and then a copy of it, whose stamps are the same (as a drive and its camera-rate
    twin start together): answers are keyed by stamp, and without a fresh store per drive the copy's frames found
    the first drive's answers already there, the gate let the next frame through at once and the slow node dropped
    them (the first drive's answers were then scored for them)."""
    from disam_ros.ros.online_eval import Drive, camera_topic, evaluate_online_modes, losses_line
    from disam_ros.ros.pace import PACED, Pace

    w, drives = tiny_eval_world, []
    for name in ("sunny_repeat", "copy"):
        bag = tmp_path / "bags" / name
        write_folder_bag(w["world"], "sunny_repeat", bag, BagWriteOptions(compression="png"))
        drives.append(Drive(name, bag, world_weather(w["world"], "sunny_repeat"), *camera_topic(bag)))
    frames = len(list(bag_queries(drives[0].bag, "sunny_repeat")))

    lines: dict[str, list[str]] = {}  # the line per replayed drive a user sees on stderr

    def run(pace: Pace, name: str, replayed: list):
        with open(tmp_path / f"{name}.log", "w") as log:
            runs, _ = evaluate_online_modes(w["map"], replayed, tmp_path / name, ("single",), pace, device="cpu",
                                            node_params={"max_rate_hz": 4.0}, log=log,
                                            progress=lines.setdefault(name, []).append)
        return runs["single"], (tmp_path / f"{name}.log").read_text()[-2000:]

    paced, log = run(PACED, "paced", drives)
    assert (paced.dropped, paced.timed_out) == (0, []), log
    assert sum(a.index is not None for a in paced.answers) == 2 * frames == 20, log
    assert [a.index for a in paced.answers[:frames]] == [a.index for a in paced.answers[frames:]]  # alike
    counts = {t.topic: t.count for t in bag_info(tmp_path / "paced" / "node_outputs").topics}
    assert counts["/disam_localizer/pose"] == counts["/disam_localizer/loop_closure"] == 2 * frames
    assert losses_line({"single": paced}) == "single 0 dropped, 0 past the timeout"
    assert [re.sub(r"in [0-9.]+ s", "in T s", line) for line in lines["paced"]] == [
        f"drive 1/2 sunny_repeat: {frames} frames in T s (single 0 dropped)",
        f"drive 2/2 copy: {frames} frames in T s (single 0 dropped)"]

    burst, log = run(Pace("realtime", rate=3.0), "realtime", drives[:1])  # frames 0.1 s apart: drops are still counted
    answered = sum(a.index is not None for a in burst.answers)
    assert burst.dropped > 0 and answered == frames - burst.dropped and burst.timed_out == [], log

    hurried, log = run(Pace(frame_timeout_s=0.05), "timeout", drives[:1])  # shorter than the 0.25 s between frames
    answered = sum(a.index is not None for a in hurried.answers)
    assert hurried.timed_out and len(set(hurried.timed_out)) == len(hurried.timed_out) <= frames, log
    assert hurried.dropped > 0 and answered == frames - hurried.dropped, log
    assert f"{len(hurried.timed_out)} past the timeout" in losses_line({"single": hurried})
    lost = f"(single {hurried.dropped} dropped, {len(hurried.timed_out)} past the timeout)"
    assert lines["timeout"][0].endswith(lost)

