"""Pose-graph node: odometry + the localizer's loop-closure hints in -> a drift-corrected trajectory and the
map->odom transform out.

A ROS 2 lifecycle node like the localizer (docs/posegraph.md: the node reference): configure validates the
parameters, builds the graph (disam_ros.posegraph.graph.PoseGraph, ROS-free) and creates the publishers;
activate subscribes; deactivate unsubscribes; cleanup drops the graph; shutdown works from any state.
`disam-posegraph` configures and activates itself unless `autostart` is false.

Threading: one executor thread runs the callbacks, and each callback does the graph work itself (add a node or
a closure, one incremental update): the work per message is milliseconds, not the localizer's seconds, so a
worker thread would only add hand-offs. What bounds memory whatever arrives: the subscription queue depths, the
graph's max_nodes, `pending_hints` hints waiting for their odometry, and the newest `max_path_poses` /
`max_marker_closures` in the published messages. A bad message is counted and logged (throttled), never fatal.

Usage::

    disam-posegraph --params-file config/posegraph.yaml --ros-args -r loop_closure:=/disam_localizer/loop_closure
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
from nav_msgs.msg import Odometry, Path
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from disam_ros.ros import env
from disam_ros.ros import messages as M
from disam_ros.ros import node_stats as S
from disam_ros.ros import posegraph_feed as F
from disam_ros.ros import posegraph_msgs as PM
from disam_ros.ros import posegraph_params as PP
from disam_ros.ros.node_main import NodeProcess, autostart, run_node
from disam_ros.ros.node_params import ConfigError, declare_all, one_line, refuse_unknown
from disam_ros.ros.posegraph_markers import DrawableClosures, oldest_held
from disam_ros.ros.posegraph_path import IncrementalPath

NODE_NAME = PP.NODE_NAME
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
FLUSH_PERIOD_S = 0.1  # how often a held-back ~/path or ~/markers is checked for its period having passed
ODOM_DEPTH = 1000  # odometry subscription queue: 10 s of 100 Hz odometry (DDS drops past it are not visible here)
PUBLISHERS = ("pub_pose", "pub_path", "pub_markers", "pub_map_to_odom", "pub_tf")


class PoseGraphNode(LifecycleNode):
    """Feeds odometry and loop-closure hints to a PoseGraph and publishes its corrected state."""

    def __init__(self, dds: env.DdsSettings | None = None, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.get_logger().info(self._dds_line(dds))
        declare_all(self, PP.PARAMETERS, PP.FLOAT_PARAMS)  # ConfigError for an override of the wrong type
        refuse_unknown(tuple(getattr(self, "_parameter_overrides", {}) or {}), PP.PARAMETER_NAMES, PP.NODE_NAME)
        # rclpy fixes a severity per calling line: each throttle emits from its own lambda.
        self._log_warn = S.LogThrottle(lambda text: self.get_logger().warning(text))
        self._log_error = S.LogThrottle(lambda text: self.get_logger().error(text))
        self.graph: Any = None
        self.feed: F.GraphFeed | None = None
        self.cfg: PP.PoseGraphNodeConfig | None = None
        self.last_update_ms = float("nan")
        self.map_to_odom_m = float("nan")
        self.config_error = ""
        self._due: dict[str, float] = {"path": -math.inf, "markers": -math.inf}  # next allowed publication
        self._dirty: set[str] = set()
        self.path_cache: IncrementalPath | None = None
        self.marker_closures: DrawableClosures | None = None
        self.clock = time.monotonic  # periods of ~/path and ~/markers (a benchmark replays time faster)
        self.autostart = bool(self.get_parameter("autostart").value)

    def _dds_line(self, dds: env.DdsSettings | None) -> str:
        try:
            dds = dds or env.dds_settings(os.environ)
        except env.EnvError as exc:
            return f"DDS: {exc}"
        return replace(dds, domain_id=self.context.get_domain_id()).describe()

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """configure + activate (what `autostart` does); raises ConfigError with the one-line reason."""
        if self.trigger_configure() != SUCCESS:
            raise ConfigError(self.config_error or "configure failed (see the log)")
        if self.trigger_activate() != SUCCESS:
            raise ConfigError(self.config_error or "activate failed (see the log)")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate parameters, build the graph, create publishers; FAILURE (stay unconfigured) on error."""
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001  (a manager gets FAILURE; the log gets one line)
            self.config_error = one_line(exc)
            self.get_logger().error(self.config_error)
            self._release()
            return FAILURE
        return SUCCESS

    def _configure(self) -> None:
        from disam_ros.posegraph.graph import PoseGraph, PoseGraphConfig  # GTSAM loads here, not at import

        self.config_error = ""
        cfg = self.cfg = PP.read_config(self)
        self._log_warn.period_s = self._log_error.period_s = cfg.log_throttle_s
        self.graph = PoseGraph(PoseGraphConfig(**cfg.graph_kwargs()))
        self.feed = F.GraphFeed(self.graph, cfg, self._log_warn, self._log_error)
        self.path_cache = IncrementalPath(cfg.map_frame, cfg.max_path_poses)
        self.marker_closures = DrawableClosures(cfg.max_marker_closures)
        self._due = dict.fromkeys(self._due, -math.inf)
        out = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pub = self.create_lifecycle_publisher  # silent unless active
        self.pub_pose = pub(PoseWithCovarianceStamped, "~/pose", out)
        self.pub_path = pub(Path, "~/path", QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
        self.pub_markers = pub(MarkerArray, "~/markers", QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
        self.pub_map_to_odom = pub(TransformStamped, "~/map_to_odom", out)
        self.pub_tf = None
        if cfg.publish_tf and PM.TFMessage is not None:
            self.pub_tf = pub(PM.TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        elif cfg.publish_tf:
            self.get_logger().warning("tf2_msgs is not installed: map->odom goes to ~/map_to_odom only, not /tf; "
                                      "run `make venv` (tools/build_tf2_msgs.py) or source a ROS install")
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", out)  # reports in every state
        self.diag_timer = self.create_timer(cfg.diagnostics_period_s, self.publish_diagnostics)
        self.flush_timer = self.create_timer(FLUSH_PERIOD_S, self._flush)
        self.get_logger().info(
            f"configured: frames {cfg.map_frame} -> {cfg.odom_frame}, camera_in_base {cfg.camera_in_base}, robust "
            f"{cfg.robust} k={cfg.robust_k}, unverified hints {'used' if cfg.use_unverified else 'ignored'}, "
            f"max_nodes {cfg.max_nodes}, /tf {'on' if self.pub_tf is not None else 'off'}")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        rel = ReliabilityPolicy.RELIABLE if self.cfg.odom_qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
        self.sub_odom = self.create_subscription(Odometry, "odom", self._on_odom,
                                                 QoSProfile(depth=ODOM_DEPTH, reliability=rel))
        self.sub_hint = self.create_subscription(String, "loop_closure", self._on_hint,
                                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.get_logger().info(f"active: odometry on {self.sub_odom.topic_name}, hints on "
                               f"{self.sub_hint.topic_name}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_listening()
        self.get_logger().info("inactive: not listening, publishing nothing (the graph is kept)")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("unconfigured: graph released")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_listening()
        super().on_deactivate(state)
        self._release()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_listening()
        self._release()
        return SUCCESS

    def _stop_listening(self) -> None:
        self._dirty.clear()  # an inactive node publishes nothing, held-back path and markers included
        for name in ("sub_odom", "sub_hint"):
            sub = getattr(self, name, None)
            if sub is not None:
                self.destroy_subscription(sub)
                setattr(self, name, None)

    def _release(self) -> None:
        """Destroy what configure made and drop the graph (the memory a cleanup is for)."""
        destroyers = {"pub_diag": self.destroy_publisher, "diag_timer": self.destroy_timer,
                      "flush_timer": self.destroy_timer, **dict.fromkeys(PUBLISHERS, self.destroy_lifecycle_publisher)}
        for name, destroy in destroyers.items():
            entity = getattr(self, name, None)
            if entity is not None:
                destroy(entity)
                setattr(self, name, None)
        self.graph = self.feed = self.path_cache = self.marker_closures = None

    def close(self) -> None:
        if self.state != "finalized":
            self.trigger_shutdown()

    @property
    def state(self) -> str:
        """unconfigured, inactive, active or finalized (the label a lifecycle manager sees)."""
        return str(self._state_machine.current_state[1])

    # ------------------------------------------------------------------------------------------ input

    def _on_odom(self, msg: Odometry) -> None:
        """One odometry pose T_odom_base -> maybe a node and waiting hints -> one update."""
        feed = self.feed
        if feed is None:
            return
        feed.counts["odometry_received"] += 1
        try:
            t, position, quat = PM.odometry_pose(msg)
        except ValueError as exc:
            feed.reject("odometry_rejected", str(exc))
            return
        if feed.odometry(msg.header.frame_id, t, position, quat):
            self._update_and_publish()

    def _on_hint(self, msg: String) -> None:
        """One loop-closure hint -> maybe a closure -> one update."""
        if self.feed is not None and self.feed.hint(msg.data):
            self._update_and_publish()

    # ------------------------------------------------------------------------------------------ output

    def _update_and_publish(self) -> None:
        """One incremental solve, then the corrected latest pose and map->odom (now), path and markers (when
        their period has passed). A pose, covariance or transform that is not finite is never published: it is
        counted (outputs_suppressed) instead."""
        try:
            self.last_update_ms = float(self.graph.update())
            t, position, quat, cov = self.graph.latest()
            mo_position, mo_quat = self.graph.map_to_odom()
        except Exception as exc:  # noqa: BLE001  (a solver failure must not end the node)
            self.feed.solver_error(exc)
            return
        bad = PM.non_finite_output(position, quat, cov, mo_position, mo_quat)
        if bad:
            self.feed.suppress(f"the solve gave a non-finite {bad} at {t:.3f} s: nothing published")
            return
        cfg = self.cfg
        self.pub_pose.publish(PM.pose_with_covariance(t, cfg.map_frame, position, quat, cov))
        tf = PM.transform(self.feed.last_odom_t or t, cfg.map_frame, cfg.odom_frame, mo_position, mo_quat)
        self.pub_map_to_odom.publish(tf)
        if self.pub_tf is not None:
            self.pub_tf.publish(PM.tf_message([tf]))
        self.map_to_odom_m = PM.translation_norm(mo_position)
        self._dirty |= {"path", "markers"}
        self._flush()

    def _flush(self) -> None:
        """Publish ~/path and ~/markers if they changed and their period has passed (timer and updates)."""
        if self.graph is None or not self._dirty:
            return
        now = self.clock()
        periods = {"path": self.cfg.path_period_s, "markers": self.cfg.markers_period_s}
        for what in sorted(self._dirty):
            if now >= self._due[what]:
                self._dirty.discard(what)
                self._due[what] = now + periods[what]
                self._publish(what)

    def _publish(self, what: str) -> None:
        """~/path from the kept poses (IncrementalPath: bounded by max_path_poses), ~/markers from the newest
        max_marker_closures closures' nodes (in the graph, else where the path last had them; DrawableClosures
        walks only those whose nodes are still held, not every closure of the drive)."""
        try:
            if what == "path":
                self.pub_path.publish(self.path_cache.refresh(self.graph))
                return
            closures = self.marker_closures.refresh(self.graph.closures, oldest_held(self.graph, self.path_cache))
            nodes = np.array([c.node for c in closures], np.int64)
            positions = self.graph.node_positions(nodes)
            gone = ~np.isfinite(positions).all(axis=1)
            positions[gone] = self.path_cache.positions_of(nodes[gone])
            t = float(self.feed.last_odom_t or 0.0)
            self.pub_markers.publish(PM.markers(t, self.cfg.map_frame, closures, positions,
                                                self.cfg.max_marker_closures))
        except Exception as exc:  # noqa: BLE001  (a reporting bug must not stop the graph)
            self.feed.last_error = f"publishing ~/{what} failed: {type(exc).__name__}: {one_line(exc)}"
            self._log_error(self.feed.last_error)

    def diagnostics_values(self) -> dict[str, Any]:
        graph, feed = self.graph, self.feed
        closures = list(graph.closures) if graph is not None else []
        rejected = sum(c.rejected for c in closures)
        return {"state": self.state, "nodes": len(graph) if graph is not None else 0,
                "closures_accepted": len(closures) - rejected, "closures_rejected": rejected,
                **(feed.counts if feed is not None else dict.fromkeys(F.COUNTERS, 0)),
                "hints_pending": len(feed.pending) if feed is not None else 0, "last_update_ms": self.last_update_ms,
                "map_to_odom_m": self.map_to_odom_m, "last_error": feed.last_error if feed is not None else ""}

    def publish_diagnostics(self) -> None:
        try:
            if self.pub_diag is None:
                return
            v = self.diagnostics_values()
            bad = v["odometry_rejected"] + v["hints_rejected"] + v["update_errors"] + v["outputs_suppressed"]
            level = DiagnosticStatus.WARN if bad else DiagnosticStatus.OK
            message = (f"{v['nodes']} nodes, {v['closures_accepted']} closures accepted, {v['closures_rejected']} "
                       f"rejected" + (f"; {bad} bad inputs or errors ({v['last_error']})" if bad else ""))
            name = f"{self.get_fully_qualified_name()}: pose graph"
            self.pub_diag.publish(M.diagnostic_array(self.get_clock().now().to_msg(), name, "disam_ros/posegraph",
                                                     level, message, v))
        except Exception as exc:  # noqa: BLE001
            self._log_error(f"diagnostics failed: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------------------- main


PROCESS = NodeProcess(PP.PROG, NODE_NAME, PP.ros_argv, lambda dds: PoseGraphNode(dds=dds), autostart)


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; 0 on a clean stop, 2 on a configuration error (one line)."""
    return run_node(PROCESS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
