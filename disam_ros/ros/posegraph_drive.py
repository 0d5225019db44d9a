"""A real PoseGraphNode fed a synthetic odometry drive and hints in-process: what `disam-bench posegraph` times per
message and what tools/odometry_soak.py sends over DDS. Here because only disam_ros/ros imports ROS; the drive
itself (poses, closures) comes from the caller."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import numpy as np

from disam_ros.geometry import quat_to_rot, rot_to_quat

NODE_STEP_M, NODE_DT_S, T0 = 0.1, 0.01, 1000.0  # 100 Hz odometry at 10 m/s
WINDOW = 1000  # p95 of the first and of the last this-many messages: the cost at the drive's start and end
ClosureFn = Callable[[int, bool], tuple]  # (message index, wrong?) -> closure_args of the bench


def hint_text(t: float, args: tuple) -> str:
    """A verified schema-2 hint as the localizer writes it (the keys hint_parse reads)."""
    from disam_ros.ros.messages import LOOP_CLOSURE_SCHEMA, sec_to_stamp

    k, kp, kq, rp, rq, rcov = args
    stamp = sec_to_stamp(t)
    nums = lambda a: [float(v) for v in np.reshape(a, -1)]  # noqa: E731
    pose_p = kp + quat_to_rot(kq) @ rp
    pose_q = rot_to_quat(quat_to_rot(kq) @ quat_to_rot(rq))
    return json.dumps({"schema": LOOP_CLOSURE_SCHEMA, "query_stamp": t,
                       "query_stamp_ns": stamp.sec * 10**9 + stamp.nanosec, "map_index": k,
                       "map_name": f"{k:06d}.png", "frame_id": "map", "verified": True, "position": nums(pose_p),
                       "orientation_xyzw": nums(pose_q), "keyframe_index": k, "keyframe_position": nums(kp),
                       "keyframe_orientation_xyzw": nums(kq), "relative_position": nums(rp),
                       "relative_orientation_xyzw": nums(rq), "relative_covariance": nums(rcov)})


def odometry_msg(t: float, position: np.ndarray, quat: np.ndarray) -> object:
    from nav_msgs.msg import Odometry
    from std_msgs.msg import Header

    from disam_ros.ros.messages import make_pose, sec_to_stamp

    msg = Odometry(header=Header(stamp=sec_to_stamp(t), frame_id="odom"), child_frame_id="base_link")
    msg.pose.pose = make_pose(position, quat)
    return msg


def run_node(odometry: tuple[np.ndarray, np.ndarray], closure: ClosureFn, hint_every: int, outlier_every: int,
             max_nodes: int | None = None) -> dict:
    """Per-message cost of a real PoseGraphNode fed the 100 Hz odometry (positions, quaternions) in-process, with a
    hint from `closure` every `hint_every` messages (every `outlier_every`-th one wrong)."""
    from disam_ros.ros import env

    env.isolated_env()  # before rclpy starts: loopback discovery, a private domain
    import rclpy
    from std_msgs.msg import String

    from disam_ros.ros.posegraph_node import PoseGraphNode

    op, oq = odometry
    messages = len(op)
    ctx = rclpy.Context()
    rclpy.init(args=[], context=ctx)
    node, now = None, [0.0]
    try:
        cli = [] if max_nodes is None else ["--ros-args", "-p", f"max_nodes:={int(max_nodes)}"]
        node = PoseGraphNode(context=ctx, namespace=f"pg_bench_{uuid.uuid4().hex[:6]}", cli_args=cli)
        node.clock = lambda: now[0]  # ~/path and ~/markers periods on the drive's clock, not the bench's
        node.start()
        odom_ms, hint_ms, hints, wrong, peak = [], [], 0, 0, 0
        for i in range(messages):
            t = T0 + i * NODE_DT_S
            now[0] = i * NODE_DT_S
            msg = odometry_msg(t, op[i], oq[i])
            t0 = time.perf_counter()
            node._on_odom(msg)
            odom_ms.append(1e3 * (time.perf_counter() - t0))
            peak = max(peak, len(node.graph))
            if hint_every and i and i % hint_every == 0:
                hints += 1
                bad = bool(outlier_every) and hints % outlier_every == 0
                wrong += bad
                text = String(data=hint_text(t, closure(i, bad)))
                t0 = time.perf_counter()
                node._on_hint(text)
                hint_ms.append(1e3 * (time.perf_counter() - t0))
        v = node.diagnostics_values()
        _, position, _, _ = node.graph.latest()
        used_max_nodes = node.cfg.max_nodes
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.shutdown(context=ctx)
    a = np.asarray(odom_ms)
    return {"messages": messages, "max_nodes": used_max_nodes, "hints": hints, "wrong_hints": wrong,
            "median_ms": float(np.median(a)),
            "p95_ms": float(np.percentile(a, 95)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()),
            "p95_first_ms": float(np.percentile(a[:WINDOW], 95)), "p95_last_ms": float(np.percentile(a[-WINDOW:], 95)),
            "mean_ms": float(a.mean()), "hint_median_ms": float(np.median(hint_ms)) if hint_ms else None,
            "hint_p95_ms": float(np.percentile(hint_ms, 95)) if hint_ms else None,
            "odometry_received": v["odometry_received"], "odometry_processed": v["odometry_processed"],
            "odometry_merged": v["odometry_merged"], "odometry_rejected": v["odometry_rejected"],
            "outputs_suppressed": v["outputs_suppressed"], "graph_nodes": v["nodes"],
            "graph_nodes_peak": peak,
            "closures_accepted": v["closures_accepted"], "closures_rejected": v["closures_rejected"],
            "final_position": [float(v) for v in position]}


