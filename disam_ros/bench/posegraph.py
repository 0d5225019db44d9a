"""`disam-bench posegraph`: the pose-graph back end's per-frame cost: one iSAM2 update per odometry node, one thread.

A vehicle laps a 60 x 40 m block (1 m between nodes, 90 deg turns) with biased, noisy odometry (drifting_odometry,
within what the graph's default sigmas expect); every `--closure-every` nodes the localizer closes a loop to the
nearest of 40 map keyframes (the first lap's true poses 5 m apart, 0.5 m to the side) with a relative pose drawn
from its covariance (5 cm, 0.5 deg), and every `--outlier-every`-th closure is wrong (a keyframe 50 m further on,
saying the body is right there). Timed: `PoseGraph.update()` after each node (what a node does per odometry
message at the keyframe rate), median and p90 over all frames and over the closure frames. Accuracy columns say
the work was real: final RMS position error of the graph and of the odometry, closures the kernel rejected.
Target: <= 5 ms median per frame.

Per message (`--messages`, default 1k / 10k / 100k): the same block lapped at 10 m/s by 100 Hz odometry (0.1 m
between messages, every message a node), fed to a real PoseGraphNode in this process (its callbacks called
directly, no DDS peer: what is timed is the node's own work per message, solve, checks, messages and
publications included; ~/path and ~/markers follow their 1 s periods on the drive's clock). A verified hint
every `--hint-every` messages, every `--outlier-every`-th wrong, the graph bounded by `--max-nodes` (default: the
node's 2000). Reported: median, p95, p99, max and mean ms per odometry message (must stay flat as the drive grows),
the p95 of the first and of the last 1,000 messages (a drive's start costs less: no closure is used before two
agree, and each hint's relinearization reaches back further in an older graph), the graph's peak size (a drive
shorter than max_nodes never fills it), ms per hint, and the node's own count of what it processed.

GTSAM's pip wheel is built without TBB, so iSAM2 runs on one thread whatever OMP/TBB variables say; the JSON
records whether a TBB library was loaded at all (`tbb_loaded`).
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np

from disam_ros.bench.output import emit
from disam_ros.cliutil import OneLineParser, check_output_files, int_list, non_negative_int, positive_int
from disam_ros.geometry import R_BODY_OPTICAL, quat_to_rot, rot_to_quat
from disam_ros.pose.relative import relative_covariance, relative_pose
from disam_ros.posegraph import PoseGraph, PoseGraphConfig
from disam_ros.posegraph.odometry import OdometryNoise, drifting_odometry, so3_exp

BLOCK = (60, 40)  # metres: one lap is 200 nodes
KEY_SPACING = 5  # metres between map keyframes along the lap
KEY_SIDE = np.array([0.5, 0.0, 0.0])  # keyframes 0.5 m to the right of the first lap (optical x)
CLOSURE_COV = np.diag([0.05**2] * 3 + [math.radians(0.5) ** 2] * 3)  # map frame, ROS order
ODOMETRY = OdometryNoise(sigma_m_per_m=0.01, sigma_deg_per_m=0.1, yaw_bias_deg_per_m=0.2, scale_bias=0.01, seed=0)


def lap_pose(s: float) -> tuple[np.ndarray, np.ndarray]:
    """True (position, optical rotation) at arc length s along the block (counter-clockwise, z up)."""
    w, h = BLOCK
    s = s % (2 * (w + h))
    for side, (length, heading) in enumerate(((w, 0.0), (h, 90.0), (w, 180.0), (h, 270.0))):
        if s < length or side == 3:
            corner = [np.zeros(3), np.array([w, 0, 0.0]), np.array([w, h, 0.0]), np.array([0, h, 0.0])][side]
            yaw = math.radians(heading)
            p = corner + s * np.array([math.cos(yaw), math.sin(yaw), 0.0])
            return p, so3_exp(np.array([0.0, 0.0, yaw])) @ R_BODY_OPTICAL
        s -= length
    raise AssertionError("unreachable")


def drive(nodes: int, step_m: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """True positions, quats and the odometry's, for `nodes` steps of step_m metres."""
    poses = [lap_pose(i * step_m) for i in range(nodes)]
    p, q = np.array([x for x, _ in poses]), rot_to_quat(np.array([R for _, R in poses]))
    return (p, q, *drifting_odometry(p, q, ODOMETRY))


def keyframe(k: int) -> tuple[np.ndarray, np.ndarray]:
    p, R = lap_pose(float(k * KEY_SPACING))
    return p + R @ KEY_SIDE, rot_to_quat(R)


def closure_args(i: int, p: np.ndarray, q: np.ndarray, wrong: bool, rng: np.random.Generator,
                 step_m: float = 1.0) -> tuple:
    """(keyframe id, its pose, relative pose, relative covariance) for node i (step_m metres apart): the nearest
    keyframe seeing a pose drawn from CLOSURE_COV around the truth, or a keyframe 50 m on when wrong."""
    keys = 2 * sum(BLOCK) // KEY_SPACING
    k = (round(((i * step_m) % (2 * sum(BLOCK))) / KEY_SPACING) + (10 if wrong else 0)) % keys
    kp, kq = keyframe(k)
    if wrong:
        return k, kp, kq, np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]), relative_covariance(CLOSURE_COV, kq)
    d = rng.multivariate_normal(np.zeros(6), CLOSURE_COV)
    seen_q = rot_to_quat(so3_exp(d[3:]) @ quat_to_rot(q[i]))
    rp, rq = relative_pose(kp, kq, p[i] + d[:3], seen_q)
    return k, kp, kq, rp, rq, relative_covariance(CLOSURE_COV, kq)


def run(nodes: int, closure_every: int, outlier_every: int, robust: str) -> dict:
    p, q, op, oq = drive(nodes)
    rng = np.random.default_rng(1)
    g = PoseGraph(PoseGraphConfig(robust=robust))
    g.set_initial(p[0], q[0], np.diag([0.01**2] * 3 + [math.radians(0.1) ** 2] * 3))  # starts on the map
    all_ms, closure_ms, wrong_ids, n_closures = [], [], set(), 0
    for i in range(nodes):
        g.add_odometry(float(i), op[i], oq[i])
        is_closure = closure_every and i > 0 and i % closure_every == 0
        if is_closure:
            n_closures += 1
            wrong = bool(outlier_every) and n_closures % outlier_every == 0
            c = g.add_closure(float(i), *closure_args(i, p, q, wrong, rng))
            if wrong:
                wrong_ids.add(id(c))
        ms = g.update()
        all_ms.append(ms)
        if is_closure:
            closure_ms.append(ms)
    _, P, _ = g.trajectory()
    g.refresh_weights()
    rejected = [c for c in g.closures if c.rejected]
    return {"nodes": nodes, "closures": n_closures, "outliers": len(wrong_ids), "robust": robust,
            "update_ms": statistics.median(all_ms), "update_p90_ms": float(np.percentile(all_ms, 90)),
            "update_max_ms": max(all_ms),
            "closure_frame_ms": statistics.median(closure_ms) if closure_ms else None,
            "rejected_outliers": sum(id(c) in wrong_ids for c in rejected),
            "rejected_inliers": sum(id(c) not in wrong_ids for c in rejected),
            "rms_error_m": float(np.sqrt(np.mean(np.sum((P - p) ** 2, axis=1)))),
            "odometry_rms_error_m": float(np.sqrt(np.mean(np.sum((op - p) ** 2, axis=1))))}




def run_node(messages: int, hint_every: int, outlier_every: int, max_nodes: int | None = None) -> dict:
    """Per-message cost of a real PoseGraphNode fed a 100 Hz drive in-process (module docstring)."""
    from disam_ros.ros.posegraph_drive import NODE_STEP_M
    from disam_ros.ros.posegraph_drive import run_node as drive_node

    p, q, op, oq = drive(messages, NODE_STEP_M)
    rng = np.random.default_rng(1)
    row = drive_node((op, oq), lambda i, bad: closure_args(i, p, q, bad, rng, NODE_STEP_M), hint_every,
                     outlier_every, max_nodes)
    final = np.asarray(row.pop("final_position"))
    return {**row, "final_error_m": float(np.linalg.norm(final - p[-1])),
            "odometry_final_error_m": float(np.linalg.norm(op[-1] - p[-1]))}


def format_node_table(rows: list[dict]) -> str:
    head = ("| messages (100 Hz) | hints (wrong) | **median ms / message** | **p95 ms** | p95 first / last 1k | "
            "p99 ms | max ms | mean ms | hint median / p95 ms | processed / received | graph peak / max_nodes | "
            "final error m | odometry final error m |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        h = "-" if r["hint_median_ms"] is None else f"{r['hint_median_ms']:.2f} / {r['hint_p95_ms']:.2f}"
        lines.append(f"| {r['messages']} | {r['hints']} ({r['wrong_hints']}) | {r['median_ms']:.2f} | "
                     f"{r['p95_ms']:.2f} | {r['p95_first_ms']:.2f} / {r['p95_last_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['max_ms']:.1f} | {r['mean_ms']:.2f} | {h} | {r['odometry_processed']} / "
                     f"{r['odometry_received']} | {r['graph_nodes_peak']} / {r['max_nodes']} | "
                     f"{r['final_error_m']:.3f} | {r['odometry_final_error_m']:.2f} |")
    return "\n".join(lines)


def sizes(text: str) -> list[int]:
    """'1000,10000' -> [1000, 10000]; '0' -> [] (no rows of that kind)."""
    return [] if text.strip() == "0" else int_list(text)


def tbb_loaded() -> bool | None:
    """Whether any TBB library is mapped into this process (Linux); None where that cannot be read."""
    try:
        return "libtbb" in Path("/proc/self/maps").read_text()
    except OSError:
        return None


def format_table(rows: list[dict]) -> str:
    head = ("| nodes | closures (wrong) | kernel | update ms (median) | p90 ms | max ms | closure frame ms | "
            "rejected wrong / right | RMS error m | odometry RMS m |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        cf = "-" if r["closure_frame_ms"] is None else f"{r['closure_frame_ms']:.2f}"
        lines.append(f"| {r['nodes']} | {r['closures']} ({r['outliers']}) | {r['robust']} | {r['update_ms']:.2f} | "
                     f"{r['update_p90_ms']:.2f} | {r['update_max_ms']:.1f} | {cf} | {r['rejected_outliers']} / "
                     f"{r['rejected_inliers']} | {r['rms_error_m']:.3f} | {r['odometry_rms_error_m']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="disam-bench posegraph", description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=sizes, default=[2000],
                   help="drive lengths in nodes, 1 m apart (default 2000; 0 for none)")
    p.add_argument("--closure-every", type=non_negative_int, default=10,
                   help="a loop closure every N nodes, 0 for none (default 10)")
    p.add_argument("--outlier-every", type=non_negative_int, default=20,
                   help="every N-th closure is wrong, 0 for none (default 20)")
    p.add_argument("--robust", choices=["cauchy", "huber", "none"], default="cauchy", help="kernel (default cauchy)")
    p.add_argument("--repeat", type=positive_int, default=1, help="runs per size; the fastest median is kept")
    p.add_argument("--messages", type=sizes, default=[1000, 10000, 100000],
                   help="per-message rows: drive lengths in 100 Hz odometry messages through the node, each a "
                        "node (default 1000,10000,100000; 0 for none)")
    p.add_argument("--hint-every", type=non_negative_int, default=100,
                   help="per-message rows: a verified hint every N messages, 0 for none (default 100: 1 Hz)")
    p.add_argument("--max-nodes", type=positive_int, default=None,
                   help="per-message rows: the node's max_nodes (default: the node's own, 2000)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON here")
    args = p.parse_args(argv)
    check_output_files(p, args, "--json")
    rows = []
    for n in args.nodes:
        runs = [run(n, args.closure_every, args.outlier_every, args.robust) for _ in range(args.repeat)]
        rows.append({**min(runs, key=lambda r: r["update_ms"]), "threads": 1, "device": "cpu"})
    node_rows = [{**run_node(n, args.hint_every, args.outlier_every, args.max_nodes), "device": "cpu"}
                 for n in args.messages]
    table = format_table(rows) + ("\n\nPer odometry message, through the node:\n" + format_node_table(node_rows)
                                  if node_rows else "")
    emit("posegraph", rows, table, args.json, tbb_loaded=tbb_loaded(), per_message=node_rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
