"""Online evaluation over real DDS (loopback): bags replayed into a localizer node process give the same
per-query answers as offline evaluation of the same bags, and the node's outputs are recorded."""
from __future__ import annotations

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


def test_paced_replay_answers_every_frame_of_a_slow_node(tiny_eval_world, tmp_path):
    """A node made slow on purpose (max_rate_hz: at most 4 frames a second) drops most frames of a drive replayed
    as fast as possible; paced by its answers (the default) it drops none and answers every frame, and a frame
    that waits longer than the per-frame timeout is counted and reported, not silently lost."""
    from disam_ros.ros.online_eval import Drive, camera_topic, evaluate_online_modes, losses_line
    from disam_ros.ros.pace import PACED, Pace

    w, bag = tiny_eval_world, tmp_path / "bags" / "sunny_repeat"
    write_folder_bag(w["world"], "sunny_repeat", bag, BagWriteOptions(compression="png"))
    drive = Drive("sunny_repeat", bag, world_weather(w["world"], "sunny_repeat"), *camera_topic(bag))
    frames = len(list(bag_queries(bag, "sunny_repeat")))

    def run(pace: Pace, name: str):
        with open(tmp_path / f"{name}.log", "w") as log:
            runs, _ = evaluate_online_modes(w["map"], [drive], tmp_path / name, ("single",), pace, device="cpu",
                                            node_params={"max_rate_hz": 4.0}, log=log)
        return runs["single"], (tmp_path / f"{name}.log").read_text()[-2000:]

    paced, log = run(PACED, "paced")
    assert (paced.dropped, paced.timed_out) == (0, []), log
    assert sum(a.index is not None for a in paced.answers) == frames == 10, log
    assert losses_line({"single": paced}) == "single 0 dropped, 0 past the timeout"

    burst, log = run(Pace("realtime", rate=3.0), "realtime")  # frames 0.1 s apart: drops are still counted
    answered = sum(a.index is not None for a in burst.answers)
    assert burst.dropped > 0 and answered == frames - burst.dropped and burst.timed_out == [], log

    hurried, log = run(Pace(frame_timeout_s=0.05), "timeout")  # shorter than the node's 0.25 s between frames
    answered = sum(a.index is not None for a in hurried.answers)
    assert hurried.timed_out and len(set(hurried.timed_out)) == len(hurried.timed_out) <= frames, log
    assert hurried.dropped > 0 and answered == frames - hurried.dropped, log
    assert f"{len(hurried.timed_out)} past the timeout" in losses_line({"single": hurried})


def test_two_drives_that_share_stamps_are_each_answered_by_their_own_frames(tiny_eval_world, tmp_path):
    """A drive and a copy of it (as a drive and its camera-rate twin start at the same stamp): answers are keyed by
    stamp, so without a fresh store per drive the copy's frames found the first drive's answers already there, the
    paced gate let the next frame through at once and a slow node dropped them (and the first drive's answers were
    scored for them). Now every frame of both is answered by the node, none dropped, and the record holds both."""
    from disam_ros.ros.online_eval import Drive, camera_topic, evaluate_online_modes
    from disam_ros.ros.pace import PACED

    w = tiny_eval_world
    drives = []
    for name in ("sunny_repeat", "copy"):
        bag = tmp_path / "bags" / name
        write_folder_bag(w["world"], "sunny_repeat", bag, BagWriteOptions(compression="png"))
        drives.append(Drive(name, bag, world_weather(w["world"], "sunny_repeat"), *camera_topic(bag)))
    frames = len(list(bag_queries(drives[0].bag, "sunny_repeat")))
    with open(tmp_path / "node.log", "w") as log:
        runs, queries = evaluate_online_modes(w["map"], drives, tmp_path / "out", ("single",), PACED, device="cpu",
                                              node_params={"max_rate_hz": 4.0}, log=log)
    run, tail = runs["single"], (tmp_path / "node.log").read_text()[-2000:]
    assert (run.dropped, run.timed_out) == (0, []), tail
    assert len(queries) == 2 * frames and sum(a.index is not None for a in run.answers) == 2 * frames, tail
    first, second = run.answers[:frames], run.answers[frames:]
    assert [a.index for a in first] == [a.index for a in second]  # the same images, each answered alike
    counts = {t.topic: t.count for t in bag_info(tmp_path / "out" / "node_outputs").topics}
    assert counts["/disam_localizer/pose"] == counts["/disam_localizer/loop_closure"] == 2 * frames
