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
        online, queries, answers = evaluate_online(w["map"], drives, tmp_path / "online", rate=2.0, device="cpu",
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
