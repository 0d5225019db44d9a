"""Late loop-closure hints over real DDS (loopback, private domain: conftest.py): a node verifying beside its frame
loop (`verify_keyframes`, `verify_wait_ms` 0, so no frame waits for its keyframe) answers each frame at once without
a verified pose, and publishes each keyframe verified after its frame as a second hint at that frame's stamp with
`"late": true`. Checked against the drive's ground truth, not against the node: each late hint's pose is within
(0.25 m, 2 deg) of its own frame's recorded pose, its frame's pose message is the on-time (unverified) answer, and
the node's counter matches the hints received here.
"""
from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from disam_ros.geometry import quat_angle_deg

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NS = "late"
LATE_ALONE_S = 5.0  # how long a frame answered pending waits for its late hint before the next frame is sent


@pytest.fixture(scope="module")
def late_run(tmp_path_factory, geometry_world):
    """The repeat drive through the node, one frame at a time; each next frame waits until the node has solved
    the keyframe in flight (its diagnostics' `keyframe_in_flight`), so each keyframe ends before the next frame."""
    from disam_ros.data.folders import load_condition, read_image
    from disam_ros.ros import launcher
    from disam_ros.ros.client import LocalizerClient
    from disam_ros.ros.eval_nodes import stop_nodes

    world, map_dir = geometry_world["world"], geometry_world["map"]
    qf = load_condition(world, "sunny_repeat", require_poses=True)
    log = tmp_path_factory.mktemp("node_late") / "node.log"
    params = dict(mode="sequence", verify_keyframes=True, verify_wait_ms=0.0, loop_closure_min_consecutive=1,
                  diagnostics_period_s=0.2, weather="sunny", publish_debug_image=True, debug_rate_hz=50.0)
    with open(log, "wb") as f:
        proc = launcher.start(map=map_dir, device="cpu", namespace=NS, stdout=f, stderr=subprocess.STDOUT,
                              parameters=params)
    client = None
    try:
        client = LocalizerClient(namespace=NS)
        tail = lambda: log.read_text(errors="replace")[-3000:]  # noqa: E731
        if not client.wait_for_node(False, timeout=60.0):
            pytest.fail(f"node did not come up:\n{tail()}")
        sent, alone = [], set()
        for i in range(len(qf)):
            base = client.frames_done()
            key = client.publish_raw(read_image(qf.image_paths[i]), float(qf.trajectory.stamps[i]))
            assert client.wait_frames_done(1, base, idle_s=20.0), f"frame {i} not accounted for:\n{tail()}"
            sent.append((key, np.asarray(qf.trajectory.positions[i]), np.asarray(qf.trajectory.quats[i])))
            idle = client.wait_diagnostics(lambda d: d.get("keyframe_in_flight") == "False", 30.0,
                                           after=time.monotonic())
            assert idle is not None, f"frame {i}'s keyframe did not end:\n{tail()}"
            if client.rx.loop.get(key, (None, {}))[1].get("verification") == "pending":  # a late hint may follow
                client.wait(lambda k=key: k in client.rx.late, LATE_ALONE_S)
            if key in client.rx.late:  # this frame's late hint came before the next frame was sent
                alone.add(key)
        yield client, sent, tail, alone
    finally:
        stop_nodes([proc])
        if client is not None:
            client.close()


def test_keyframes_answered_late_come_out_as_late_hints_at_their_frames_stamps(late_run):
    client, sent, tail, alone = late_run
    truth = {key: (pos, quat) for key, pos, quat in sent}
    last = client.wait_diagnostics(lambda d: int(d["late_loop_closures"]) == len(client.rx.late), 5.0)
    assert last is not None, (len(client.rx.late), client.rx.diagnostics[-1:])
    late = client.rx.late
    assert len(late) >= len(sent) // 2, f"{len(late)} late hints for {len(sent)} frames:\n{tail()}"
    # each late hint is a keyframe that verified (a renewal keyframe of a flow-verified frame verifies without one)
    assert len(late) <= int(last["keyframes_verified"]) <= int(last["keyframes_solved"]) <= len(sent), last
    for key, (_, doc) in late.items():
        assert key in truth and doc["late"] is True and doc["verified"] is True and doc["inliers"] >= 15
        pos, quat = truth[key]
        err_m = float(np.linalg.norm(np.asarray(doc["position"]) - pos))
        err_deg = float(quat_angle_deg(np.asarray(doc["orientation_xyzw"]), quat))
        assert err_m < 0.25 and err_deg < 2.0, (key, err_m, err_deg)
        on_time = client.rx.loop[key][1]  # the frame's own hint went out first, without the keyframe's pose
        assert on_time["late"] is False and on_time["verification"] == "pending"
        p = client.rx.pose[key][1].pose.position
        np.testing.assert_allclose([p.x, p.y, p.z], on_time["position"], atol=1e-9)


def test_a_late_hint_goes_out_without_waiting_for_the_next_frame(late_run):
    """The keyframe thread wakes the frame loop: every late hint arrived before the next frame was sent, the last
    frame's included (before, a late hint went out with the next frame, and the drive's last one never)."""
    client, sent, tail, alone = late_run
    assert set(client.rx.late) == alone, sorted(set(client.rx.late) - alone)
    last = sent[-1][0]
    if client.rx.loop[last][1]["verification"] == "pending":
        assert last in alone, f"the last frame's keyframe gave no late hint:\n{tail()}"


def test_a_late_keyframe_is_drawn_on_its_own_frame_with_its_inliers(late_run):
    """`publish_debug_image`: a frame answered `pending` is drawn without dots; its keyframe, verified late, is drawn
    again at the frame's stamp with its inliers as pure green dots (a colour neither JET nor its blend with an image
    makes). Before, a late keyframe's verification was never drawn."""
    from disam_ros.ros.messages import DEBUG_PANEL, INLIER_RGB

    client, sent, tail, alone = late_run
    green: dict[tuple[int, int], list[int]] = {}
    for _, m in client.rx.debug:
        left = np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.width, 3)[:, :DEBUG_PANEL[0]]
        key = (m.header.stamp.sec, m.header.stamp.nanosec)
        green.setdefault(key, []).append(int((left == INLIER_RGB).all(axis=2).sum()))
    late = sorted(client.rx.late)
    assert late, f"no late hint to draw:\n{tail()}"
    drawn = [k for k in late if any(n > 0 for n in green.get(k, []))]
    assert len(drawn) >= len(late) - 1, (len(drawn), len(late), {k: green.get(k) for k in late})  # the last may wait
    for key, _, _ in sent:
        if client.rx.loop.get(key, (None, {}))[1].get("verification") == "pending":
            assert sum(n == 0 for n in green.get(key, [])) <= 1, (key, green.get(key))  # one undotted: on time
            if key not in client.rx.late:
                assert all(n == 0 for n in green.get(key, [])), (key, green.get(key))


def test_late_hints_keep_exact_stamps_for_recent_frames_only():
    """The exact header stamp (nanoseconds a float loses) for a remembered frame; the float's rounding for one
    LATE_STAMPS frames back; a closed gate or a non-finite pose sends nothing."""
    import json
    from types import SimpleNamespace

    from builtin_interfaces.msg import Time

    from disam_ros.ros import late_hints as L
    from disam_ros.tracking.tracker_config import LateAnswer

    sent = []
    node = SimpleNamespace(pub_loop=SimpleNamespace(publish=sent.append), frame_id="map", map=None,
                           stats=SimpleNamespace(add=lambda name: None))
    hints = L.LateHints()
    t0 = 1_700_000_000.0
    for k in range(L.LATE_STAMPS + 1):
        hints.remember(t0 + k, Time(sec=1_700_000_000 + k, nanosec=123), "night")
    res = SimpleNamespace(position=np.zeros(3), quat=np.array([0.0, 0.0, 0.0, 1.0]), topk=[], index=0, name="a",
                          stamp=0.0, confidence=0.9, covariance=np.eye(6))
    bad = SimpleNamespace(**{**vars(res), "position": np.full(3, np.nan)})
    answers = [LateAnswer(t0 + 1, res, True), LateAnswer(t0, res, True), LateAnswer(t0 + 2, res, False),
               LateAnswer(t0 + 3, bad, True)]
    assert hints.publish(node, answers) == 2
    docs = [json.loads(m.data) for m in sent]
    assert docs[0]["query_stamp_ns"] == (1_700_000_000 + 1) * 10**9 + 123 and docs[0]["domain"] == "night"
    assert docs[0]["late"] is True
    assert docs[1]["query_stamp_ns"] == 1_700_000_000 * 10**9 and docs[1]["domain"] == ""  # forgotten: the float's


def test_online_evaluation_scores_late_hints(geometry_world, tmp_path):
    """`disam-eval-online` with `verify_keyframes` (paced, wait 0): the node's late hints are recorded in the outputs
    bag beside the frames' own hints, joined to their own frames, and scored in the report's hint table; on this
    drive every late hint is within (0.25 m, 2 deg) of its frame's ground truth, late hints come only for frames not
    verified in time, so the hinted frames are the two counts added."""
    from disam_ros.data.bags import BagWriteOptions, bag_info, write_folder_bag
    from disam_ros.eval.hints import hint_rows
    from disam_ros.eval.queries import world_weather
    from disam_ros.ros.online_eval import Drive, camera_topic, evaluate_online_modes, report_online
    from disam_ros.ros.pace import PACED

    world, map_dir = geometry_world["world"], geometry_world["map"]
    bag = tmp_path / "bags" / "sunny_repeat"
    write_folder_bag(world, "sunny_repeat", bag, BagWriteOptions(compression="png"))
    drive = Drive("sunny_repeat", bag, world_weather(world, "sunny_repeat"), *camera_topic(bag))
    params = {"verify_keyframes": True, "verify_wait_ms": 0.0}
    with open(tmp_path / "node.log", "w") as log:
        runs, queries = evaluate_online_modes(map_dir, [drive], tmp_path / "out", ("sequence",), PACED, device="cpu",
                                              node_params=params, log=log)
    tail = (tmp_path / "node.log").read_text()[-2000:]
    run = runs["sequence"]
    assert run.late, f"no late hint recorded:\n{tail}"
    total = hint_rows(run.tracked, {"sequence": run.late})[-1]
    assert total.condition == "all" and total.frames == len(queries)
    assert total.late == len(run.late) == total.late_within
    assert total.hinted == total.in_time + total.late_within > total.in_time
    counts = {t.topic: t.count for t in bag_info(tmp_path / "out" / "node_outputs").topics}
    assert counts["/disam_localizer/loop_closure"] == counts["/disam_localizer/pose"] + len(run.late)
    rows, paths = report_online(map_dir, runs, queries, tmp_path / "out")
    assert "## Loop-closure hints" in paths["markdown"].read_text()
    assert any(r.startswith(f"hints sequence: {total.hinted}/{total.frames} ") for r in rows), rows
