"""Soak the pose-graph node: the real `disam-posegraph` process over real DDS, fed 100 Hz odometry (and a verified
hint every second) for N minutes, then a report of what was sent, what the node says it processed, merged or
refused, whether anything was lost unseen, and whether it ever published a non-finite number.

Why: the node must keep up with odometry at its real rate for as long as a vehicle drives; a bench of the callbacks
cannot show queue overflow, and DDS drops past the subscription queue are invisible to the node itself.

    .venv/bin/python tools/odometry_soak.py --minutes 10 --json /tmp/soak.json

DDS stays on loopback in a private random domain (disam_ros.ros.env.isolated_env, before rclpy starts).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.ros import env

env.isolated_env()  # before anything imports rclpy: loopback discovery, a private random ROS_DOMAIN_ID

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from nav_msgs.msg import Path as PathMsg  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from disam_ros.bench.posegraph import closure_args, drive  # noqa: E402
from disam_ros.ros.client import DdsPeer  # noqa: E402
from disam_ros.ros.messages import stamp_to_sec  # noqa: E402
from disam_ros.ros.posegraph_drive import NODE_DT_S, NODE_STEP_M, T0, hint_text, odometry_msg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LAP_MESSAGES = 2000  # the drive repeats a 200 m lap (2000 messages at 0.1 m): ground truth for hints stays exact


class SoakPeer(DdsPeer):
    """Publishes odometry and hints; counts what the node publishes and any non-finite number in it."""

    def __init__(self, ns: str) -> None:
        super().__init__("soak_peer")
        fqn = f"/{ns}/disam_posegraph"
        self.fqn = fqn
        rel = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_odom = self.node.create_publisher(Odometry, f"/{ns}/odom", rel)
        self.pub_hint = self.node.create_publisher(String, f"/{ns}/loop_closure", rel)
        self.counts = {"pose": 0, "map_to_odom": 0, "path": 0, "nonfinite": 0}
        self.sent_at: dict[float, float] = {}
        self.latency_ms: list[float] = []
        self.diag: dict[str, str] = {}
        sub = self.node.create_subscription
        sub(PoseWithCovarianceStamped, f"{fqn}/pose", self._on_pose, rel)
        sub(TransformStamped, f"{fqn}/map_to_odom", self._on_tf, rel)
        sub(PathMsg, f"{fqn}/path", self._on_path, QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
        sub(DiagnosticArray, "/diagnostics", self._on_diag, rel)
        self.start()

    def _bad(self, values: Any) -> None:
        if not np.isfinite(np.asarray(list(values), np.float64)).all():
            self.counts["nonfinite"] += 1

    def _on_pose(self, msg: PoseWithCovarianceStamped) -> None:
        p, o = msg.pose.pose.position, msg.pose.pose.orientation
        self._bad([p.x, p.y, p.z, o.x, o.y, o.z, o.w, *msg.pose.covariance])
        self.counts["pose"] += 1
        sent = self.sent_at.pop(round(stamp_to_sec(msg.header.stamp), 6), None)
        if sent is not None:
            self.latency_ms.append(1e3 * (time.monotonic() - sent))

    def _on_tf(self, msg: TransformStamped) -> None:
        t, r = msg.transform.translation, msg.transform.rotation
        self._bad([t.x, t.y, t.z, r.x, r.y, r.z, r.w])
        self.counts["map_to_odom"] += 1

    def _on_path(self, msg: PathMsg) -> None:
        self._bad(v for ps in msg.poses for v in (ps.pose.position.x, ps.pose.position.y, ps.pose.position.z))
        self.counts["path"] += 1

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name.startswith(f"{self.fqn}:"):
                with self._cv:
                    self.diag = {kv.key: kv.value for kv in st.values}
                    self._cv.notify_all()


def soak(minutes: float, rate_hz: float, hint_every_s: float, log: Path) -> dict:
    """Run the node and the drive; the report (module docstring)."""
    ns = f"soak_{uuid.uuid4().hex[:6]}"
    args = ["--params-file", str(REPO / "config" / "posegraph.yaml"), "--ros-args", "-r", f"__ns:=/{ns}"]
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "disam_ros.ros.posegraph_node", *args], stdout=f,
                                stderr=subprocess.STDOUT, env=env.child_env({"ROS_LOG_DIR": str(log.parent)}))
    peer = SoakPeer(ns)
    try:
        if not peer.wait(lambda: peer.pub_odom.get_subscription_count() > 0, 60.0):
            raise SystemExit(f"the node did not come up: see {log}")
        p, q, op, oq = drive(LAP_MESSAGES + 1, NODE_STEP_M)
        lap_shift = op[LAP_MESSAGES] - op[0]  # the odometry keeps drifting lap after lap: carry it on
        rng = np.random.default_rng(0)
        total, every = int(minutes * 60 * rate_hz), max(1, round(hint_every_s * rate_hz))
        sent, hints, start = 0, 0, time.monotonic()
        for i in range(total):
            lap, k = divmod(i, LAP_MESSAGES)
            t = T0 + i * NODE_DT_S
            deadline = start + i / rate_hz
            if (wait := deadline - time.monotonic()) > 0:
                time.sleep(wait)
            peer.sent_at[round(t, 6)] = time.monotonic()
            peer.pub_odom.publish(odometry_msg(t, op[k] + lap * lap_shift, oq[k]))
            sent += 1
            if i and i % every == 0:
                hints += 1
                peer.pub_hint.publish(String(data=hint_text(t, closure_args(k, p, q, False, rng, NODE_STEP_M))))
        behind_s = time.monotonic() - start - total / rate_hz
        d = peer.wait(lambda: peer.diag if int(peer.diag.get("odometry_received", -1)) >= sent else None, 60.0) \
            or peer.diag
    finally:
        proc.terminate()
        rc = proc.wait(30.0)
        peer.executor.shutdown(timeout_sec=1.0)
        peer.node.destroy_node()
        rclpy.shutdown(context=peer.context)
    num = lambda k: int(d.get(k, -1))  # noqa: E731
    lat = np.asarray(peer.latency_ms) if peer.latency_ms else np.array([math.nan])
    return {"minutes": minutes, "rate_hz": rate_hz, "sent": sent, "hints_sent": hints,
            "publisher_behind_s": round(behind_s, 3), "received": num("odometry_received"),
            "processed": num("odometry_processed"), "merged": num("odometry_merged"),
            "rejected": num("odometry_rejected"), "resets": num("odometry_resets"),
            "outputs_suppressed": num("outputs_suppressed"), "update_errors": num("update_errors"),
            "closures_added": num("closures_added"), "graph_nodes": num("nodes"),
            "unaccounted": sent - num("odometry_processed") - num("odometry_merged") - num("odometry_rejected"),
            "poses_received": peer.counts["pose"], "map_to_odom_received": peer.counts["map_to_odom"],
            "paths_received": peer.counts["path"], "nonfinite_outputs": peer.counts["nonfinite"],
            "pose_latency_ms_median": float(np.median(lat)), "pose_latency_ms_p95": float(np.percentile(lat, 95)),
            "pose_latency_ms_max": float(lat.max()), "node_exit_code": rc, "callback_errors": peer.callback_errors}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=100.0, help="odometry messages per second (default 100)")
    ap.add_argument("--hint-every-s", type=float, default=1.0, help="a verified hint every this many seconds")
    ap.add_argument("--log", default="/tmp/odometry_soak_node.log", help="the node's output")
    ap.add_argument("--json", default=None, help="also write the report here")
    a = ap.parse_args(argv)
    report = soak(a.minutes, a.rate, a.hint_every_s, Path(a.log))
    text = json.dumps(report, indent=1)
    print(text, flush=True)
    if a.json:
        Path(a.json).write_text(text + "\n")
    ok = report["unaccounted"] == 0 and report["nonfinite_outputs"] == 0 and report["outputs_suppressed"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
