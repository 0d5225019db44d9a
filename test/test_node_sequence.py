"""The localizer node in its stream modes, over real DDS (loopback, private domain): on the same frames the
sequence filter beats single-frame retrieval, `~/reset` (a real service call) empties the belief, odometry
messages move it where the images say nothing, and on a calibrated map only poses whose calibrated confidence
reaches the threshold are published.

World: conftest's `node_world` (synthetic town, random-init micro encoders, map of the sunny drive, 3 m
apart). The query drive is `sunny_repeat` in order with Gaussian sensor noise (sigma 40 grey levels, seeded
per frame), which makes single-frame retrieval wrong on some frames while the filter keeps the place. Two node
processes start once for the module: `seq` (mode sequence, odometry on `odom`) and `one` (mode single).
"""
from __future__ import annotations

import math
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from conftest import NodeWorld

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NOISE_SIGMA = 40.0
RIGHT_M = 5.0  # the (5 m, 10 deg) band; poses are map poses, so the distance decides


@dataclass
class Running:
    proc: subprocess.Popen
    client: object
    log: Path


def _start(world: NodeWorld, map_dir: Path, log: Path, namespace: str, **params) -> subprocess.Popen:
    from disam_ros.ros import launcher

    params = {"diagnostics_period_s": 0.2, "weather": "sunny", "latitude": world.latitude,
              "longitude": world.longitude, **params}
    with open(log, "wb") as f:
        return launcher.start(map=map_dir, device="cpu", namespace=namespace, parameters=params, stdout=f,
                              stderr=subprocess.STDOUT, env={"OMP_NUM_THREADS": "1"})


def _stop(run: Running) -> None:
    if run.proc.poll() is None:
        run.proc.send_signal(signal.SIGTERM)
        try:
            run.proc.wait(15)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            run.proc.wait(10)
    if run.client is not None:
        run.client.close()


def _tail(run: Running) -> str:
    return run.log.read_text(errors="replace")[-3000:] if run.log.exists() else "(no log)"


@pytest.fixture(scope="module")
def nodes(node_world, tmp_path_factory):
    from disam_ros.ros.client import LocalizerClient

    tmp = tmp_path_factory.mktemp("seq_nodes")
    modes = {"seq": dict(mode="sequence", odom_topic="odom"), "one": dict(mode="single")}
    running = {ns: Running(_start(node_world, node_world.map_dir, tmp / f"{ns}.log", ns, **p), None,
                           tmp / f"{ns}.log") for ns, p in modes.items()}
    try:
        for ns, run in running.items():
            run.client = LocalizerClient(namespace=ns)
        for ns, run in running.items():
            if not run.client.wait_for_node(compressed=False, timeout=60.0):
                pytest.fail(f"node {ns} did not come up:\n{_tail(run)}")
        yield running
    finally:
        for run in running.values():
            _stop(run)


def _world_root(world: NodeWorld) -> Path:
    from disam_ros.maps import LocalizationMap
    from disam_ros.relocalizer import map_source

    m = LocalizationMap.load(world.map_dir)
    try:
        source = map_source(m)
    finally:
        m.close()
    assert source is not None, "node_world's map no longer records its source world"
    return source[0]


def _noisy_drive(world: NodeWorld) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """(rgb with sensor noise, stamp, ground-truth position) of every sunny_repeat frame, in driving order."""
    from disam_ros.data.folders import iter_frames, load_condition

    out = []
    for k, f in enumerate(iter_frames(load_condition(_world_root(world), "sunny_repeat", require_poses=True))):
        noise = np.random.default_rng(k).normal(0.0, NOISE_SIGMA, f.image.shape)
        out.append((np.clip(f.image + noise, 0, 255).astype(np.uint8), float(f.stamp), np.asarray(f.position)))
    return out


def _position(pose) -> np.ndarray:
    p = pose.pose.position
    return np.array([p.x, p.y, p.z])


def _map_index(world: NodeWorld, pose) -> int:
    """The map place a published pose is; it must BE a map pose (the node publishes no pose it did not take
    from the map)."""
    p = _position(pose)
    i = int(np.argmin(np.linalg.norm(world.positions - p, axis=1)))
    assert np.allclose(p, world.positions[i], atol=1e-6), "published a pose that is not a map pose"
    return i


def _done(d: dict[str, str]) -> int:
    """Frames whose step is over (published or not). Not `processed`: the node counts a frame there as it takes it,
    so a report between that count and the end of its step still shows the frame before's belief."""
    return int(d["localized"]) + int(d["not_localized"])


def _diag(client, predicate, t0: float, timeout: float = 10.0) -> dict[str, str]:
    d = client.wait_diagnostics(predicate, timeout, after=t0)
    assert d is not None, client.rx.diagnostics[-1:]
    return d


def test_sequence_beats_single_on_the_same_frames(node_world, nodes):
    """The same noisy frames, in driving order, to both nodes: every frame gets a pose from both (the map is
    not calibrated, so the heuristic gate is 0), and the sequence node's poses are right more often."""
    import time

    drive = _noisy_drive(node_world)
    right: dict[str, list[bool]] = {"seq": [], "one": []}
    keys = []
    # Counters are cumulative over the module's node: compare against a snapshot, so checks that ran before
    # (in any order) do not count here.
    base = {ns: _diag(nodes[ns].client, lambda d: True, time.monotonic()) for ns in right}
    done = {ns: _done(base[ns]) for ns in right}
    for rgb, stamp, gt in drive:
        sent = {ns: nodes[ns].client.publish_raw(rgb, stamp) for ns in right}
        keys.append(sent["seq"])
        for ns, key in sent.items():
            pose = nodes[ns].client.wait_pose(key, 15.0)
            assert pose is not None, f"node {ns} published no pose for {key}:\n{_tail(nodes[ns])}"
            right[ns].append(bool(np.linalg.norm(_position(pose) - gt) <= RIGHT_M))
            _map_index(node_world, pose)
    n, seq, one = len(drive), sum(right["seq"]), sum(right["one"])
    assert one < n, "single-frame retrieval is already perfect here: the comparison would show nothing"
    assert seq > one and seq >= 0.9 * n, (f"sequence {seq}/{n} vs single {one}/{n}",
                                          "".join("x" if r else "." for r in right["seq"]),
                                          "".join("x" if r else "." for r in right["one"]))
    # Loop-closure hints: single mode hints every answer; sequence mode only after 3 consistent frames.
    seq_client, one_client = nodes["seq"].client, nodes["one"].client
    assert seq_client.wait(lambda: sum(k in seq_client.rx.loop for k in keys) >= n // 2, 5.0)
    assert keys[0] not in seq_client.rx.loop and keys[1] not in seq_client.rx.loop
    assert one_client.wait(lambda: len(one_client.rx.loop) >= n, 5.0)
    # The node counts a hint when it publishes it, and diagnostics are periodic: wait until both sides have
    # settled on the same count rather than comparing a snapshot taken between publish and count.
    hints = lambda: sum(k in seq_client.rx.loop for k in keys)  # noqa: E731
    hints0 = int(base["seq"]["loop_closures"])
    d = _diag(seq_client, lambda d: _done(d) >= done["seq"] + n and int(d["loop_closures"]) - hints0 == hints(), 0.0)
    assert d["mode"] == "sequence" and d["calibration"].startswith("none")
    assert "min_heuristic_confidence 0" in d["confidence_gate"]
    assert int(d["consistent_frames"]) >= 3 and int(d["loop_closures"]) - hints0 >= n // 2
    assert float(d["belief_entropy"]) < float(d["belief_entropy_max"]) - 1.0  # the belief has concentrated
    assert _diag(one_client, lambda d: _done(d) >= done["one"] + n, 0.0)["mode"] == "single"


def test_reset_service_empties_the_belief_and_stamps_restart_it(node_world, nodes):
    """~/reset over a real std_srvs/Trigger call: the belief is uniform again (entropy = log N, each place 1/N);
    afterwards a stamp gap and a backwards stamp each re-initialise it, as diagnostics say."""
    import time

    client, n = nodes["seq"].client, len(node_world.positions)
    resets = int(_diag(client, lambda d: True, time.monotonic())["belief_resets"])  # other tests may have reset it
    ok, message = client.reset()
    assert ok and message == f"belief reset to uniform over {n} map places (mode sequence)"
    d = _diag(client, lambda d: int(d["belief_resets"]) > resets, 0.0)
    assert float(d["belief_entropy_max"]) == pytest.approx(math.log(n), abs=1e-3)
    assert float(d["belief_entropy"]) == pytest.approx(math.log(n), abs=1e-3)
    assert float(d["top_place_mass"]) == pytest.approx(1.0 / n, abs=1e-3)
    assert nodes["one"].client.reset() == (True, "mode single keeps no belief: nothing to reset")

    rgb, stamp, _ = _noisy_drive(node_world)[5]
    for dt, why in ((0.0, "reset"), (60.0, "stamp gap 60.000 s > max_gap_s"), (30.0, "stamp went back 30.000 s")):
        done = _done(d) + 1
        key = client.publish_raw(rgb, stamp + 1000.0 + dt)
        assert client.wait_pose(key, 15.0) is not None
        d = _diag(client, lambda d, done=done: _done(d) >= done, time.monotonic() - 1.0)
        assert why in d["reinitialised"], (dt, d["reinitialised"])


def test_odometry_moves_the_belief(node_world, nodes):
    """A prior pins the belief to one place; the images then carry no usable evidence (snow frames in shuffled
    order: these untrained encoders cannot place them), so where the published pose goes is odometry's doing:
    6 m per frame moves it two map places (3 m apart) per frame, 0 m keeps it."""
    import time

    from geometry_msgs.msg import PoseWithCovarianceStamped

    from disam_ros.data.folders import iter_frames, load_condition

    client = nodes["seq"].client
    snow = [f.image for f in iter_frames(load_condition(_world_root(node_world), "snow"))]
    assert client.wait(lambda: client.odometry_publisher("odom").get_subscription_count() > 0, 30.0)
    assert client.wait(lambda: client.pub_prior.get_subscription_count() > 0, 30.0)
    stamp0 = node_world.queries[0][1]
    for run, (step_m, start) in enumerate(((0.0, 5), (6.0, 8))):
        assert client.reset()[0]
        prior = PoseWithCovarianceStamped()
        prior.header.frame_id = node_world.frame_id
        prior.pose.pose.position.x, prior.pose.pose.position.y, prior.pose.pose.position.z = \
            (float(v) for v in node_world.positions[start])
        prior.pose.pose.orientation.w = 1.0
        prior.pose.covariance = [0.25 if i in (0, 7, 14) else 0.0 for i in range(36)]  # sigma 0.5 m
        client.pub_prior.publish(prior)
        time.sleep(0.5)
        base = int(_diag(client, lambda d: True, time.monotonic())["odometry_received"])
        places = []
        for k in range(6):
            t = stamp0 + 2000.0 + 100.0 * run + k
            client.publish_odometry((k * step_m, 0.0, 0.0), t)
            want = base + k + 1
            _diag(client, lambda d, want=want: int(d["odometry_received"]) >= want, time.monotonic() - 1.0)
            pose = client.wait_pose(client.publish_raw(snow[(7 * k) % len(snow)], t), 15.0)
            assert pose is not None, _tail(nodes["seq"])
            places.append(_map_index(node_world, pose))
        assert places == [start + round(k * step_m / 3.0) for k in range(6)], (step_m, places)
    d = _diag(client, lambda d: True, time.monotonic())
    assert d["odometry"] == "odom" and int(d["odometry_ignored"]) == 0


def _calibrated_map(world: NodeWorld, drive, tmp: Path) -> tuple[Path, set[int]]:
    """A copy of the map with a hand-made sequence calibration: the raw feature the calibration maps
    (`Tracker.last_feature`) below a cut -> 0.2, above -> 0.97, threshold 0.9. The cut is the widest gap near
    the middle of this drive's features, run offline through the same Tracker, so about half the frames must be
    published and none sits on the edge; returns the map and the frames (by position in the drive) the node
    must publish."""
    from disam_ros.maps.map_calibration import MapCalibration, write_calibration
    from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
    from disam_ros.retrieval import SearchConfig
    from disam_ros.tracking.calibration import Calibration
    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    map_dir = tmp / "calibrated_map"
    shutil.copytree(world.map_dir, map_dir)
    reloc = Relocalizer.from_map(map_dir, RelocalizerConfig(search=SearchConfig(device="cpu"), weather="sunny"))
    tracker = Tracker(reloc, TrackerConfig(mode="sequence"))
    feature = []
    for rgb, stamp, _ in drive:
        tracker.step(rgb, stamp)
        feature.append(tracker.last_feature)
    reloc.map.close()
    s = np.sort(feature)
    mid = range(len(s) // 4, 3 * len(s) // 4)
    i = max(mid, key=lambda j: s[j + 1] - s[j])
    cut = float((s[i] + s[i + 1]) / 2.0)
    cal = Calibration("isotonic", x=(-1e6, cut), y=(0.2, 0.97), mode="sequence", samples=len(s))
    write_calibration(map_dir, MapCalibration(modes={"sequence": cal}, min_confidence={"sequence": 0.9},
                                              fitted="test", source="hand-made"))
    return map_dir, {k for k, f in enumerate(feature) if f >= cut}


def test_calibrated_map_publishes_only_confident_poses(node_world, tmp_path):
    """On a calibrated map the node publishes exactly the frames whose calibrated confidence reaches the map's
    own threshold (NaN default), says so in diagnostics, and a stricter min_confidence set at run time
    publishes nothing it does not reach."""
    import time

    from disam_ros.ros.client import LocalizerClient

    drive = _noisy_drive(node_world)
    map_dir, expected = _calibrated_map(node_world, drive, tmp_path)
    assert 0 < len(expected) < len(drive)
    run = Running(_start(node_world, map_dir, tmp_path / "cal.log", "cal", mode="sequence", diagnostics_period_s=0.05),
                  None, tmp_path / "cal.log")
    try:
        run.client = client = LocalizerClient(namespace="cal")
        assert client.wait_for_node(compressed=False, timeout=60.0), _tail(run)
        keys = []
        for k, (rgb, stamp, _) in enumerate(drive):
            t0 = time.monotonic()
            keys.append(client.publish_raw(rgb, stamp))
            _diag(client, lambda d, k=k: _done(d) >= k + 1, t0, 15.0)
        time.sleep(0.5)
        published = {k for k, key in enumerate(keys) if key in client.rx.pose}
        assert published == expected, (sorted(published), sorted(expected))
        d = _diag(client, lambda d: _done(d) >= len(drive), 0.0)
        assert d["calibration"].startswith("isotonic") and d["calibrated_min_confidence"] == "0.900"
        assert d["confidence_gate"] == "min_confidence 0.9 (calibrated; the map calibration's threshold)"
        assert int(d["not_localized"]) == len(drive) - len(expected)
        hints = [client.rx.loop[k][1] for k in keys if k in client.rx.loop]
        assert hints and all(h["confidence"] == pytest.approx(0.97) for h in hints)
        assert client.set_parameters({"min_confidence": 0.99}) == [(True, "")]
        t1 = time.monotonic()
        rgb, stamp, _ = drive[-1]
        late = client.publish_raw(rgb, stamp + 0.1)
        d = _diag(client, lambda d: _done(d) > len(drive), t1, 15.0)
        assert "below min_confidence 0.99 (calibrated)" in d["last_reason"]
        assert late not in client.rx.pose
    finally:
        _stop(run)
