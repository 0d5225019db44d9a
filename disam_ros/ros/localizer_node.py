"""DISAM localizer node: camera image in -> matched map pose out (relocalization prior, loop-closure hint).

A ROS 2 lifecycle node (rclpy.lifecycle), so a nav2 lifecycle manager can drive it: configure validates the
parameters, loads map and models and creates the publishers; activate subscribes and starts the worker;
deactivate unsubscribes (nothing is published); cleanup releases map and models; shutdown works from any
state. `disam-localizer` configures and activates itself unless `autostart` is false.

Threading: subscription callbacks only stash the latest frame in a one-slot mailbox (a newer frame replaces an
unprocessed one, counted as dropped_by_node); one worker thread decodes and makes ONE ROS-free call per frame,
`Tracker.step` (encoder choice, retrieval and the sequence filter over the vehicle's stream), then publishes.
So a slow model never backs up the executor or the DDS queues, memory stays bounded at any input rate, and
parameter, lifecycle and `~/reset` services stay responsive (they wait at most for the frame in flight).

Usage::

    disam-localizer --params-file config/localizer.yaml --ros-args -p map:=/maps/town -r image:=/camera/image
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseArray, PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from disam_ros import conditions, logs
from disam_ros.data.image_codec import compressed_to_rgb, image_to_rgb
from disam_ros.ros import env
from disam_ros.ros import messages as M
from disam_ros.ros import node_params as P
from disam_ros.ros import node_stats as S
from disam_ros.ros import node_verify as V
from disam_ros.ros import node_worker as W
from disam_ros.ros.node_main import NodeProcess, autostart, run_node
from disam_ros.ros.prior_cache import PriorCache

NODE_NAME = P.NODE_NAME

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
WORKER_JOIN_S = 0.5  # a worker stuck in a long decode is a daemon: never wait for it longer than this
DYNAMIC = ("max_rate_hz", "publish_debug_image", "debug_rate_hz", "prior_timeout_s", "prior_radius_m",
           "min_confidence", "min_heuristic_confidence", "unverified_policy")


class LocalizerNode(LifecycleNode):
    """Subscribes to a camera, publishes the pose of the matching map image (docs/localizer.md: the node reference)."""

    def __init__(self, dds: env.DdsSettings | None = None, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.get_logger().info(self._dds_line(dds))  # first line: which DDS graph this node is on, and how to change
        P.declare_parameters(self)  # ConfigError for an override of the wrong type
        P.check_overrides(self)  # ConfigError for a misspelt -p name
        self.stats = S.Stats()
        self.mailbox = S.LatestFrame()
        self._gaps = S.SequenceGaps()
        # rclpy fixes a severity per calling line: each throttle emits from its own lambda (its own line here).
        self._log_error = S.LogThrottle(lambda text: self.get_logger().error(text))
        self._log_warn = S.LogThrottle(lambda text: self.get_logger().warning(text))
        self._worker: W.FrameWorker | None = None
        self._active = threading.Event()
        self.priors = PriorCache()
        self.tracking: W.NodeTracking | None = None
        self.last_debug = 0.0
        self._domain_in_use = ""
        self.last_stamp: float | None = None
        self.reloc: Any = None
        self._left_behind = False
        self.config_error = ""
        self.autostart = bool(self.get_parameter("autostart").value)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _dds_line(self, dds: env.DdsSettings | None) -> str:
        try:
            dds = dds or env.dds_settings(os.environ)
        except env.EnvError as exc:
            return f"DDS: {exc}"
        return replace(dds, domain_id=self.context.get_domain_id()).describe()  # the domain rcl really joined

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """configure + activate (what `autostart` does); raises ConfigError with the one-line reason."""
        if self.trigger_configure() != SUCCESS:
            raise P.ConfigError(self.config_error or "configure failed (see the log)")
        if self.trigger_activate() != SUCCESS:
            raise P.ConfigError(self.config_error or "activate failed (see the log)")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate parameters, load map and models, create publishers; FAILURE (stay unconfigured) on error."""
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001  (a manager gets FAILURE; the log gets one line)
            self.config_error = P.one_line(exc)
            self.get_logger().error(self.config_error)
            self._release()
            return FAILURE
        return SUCCESS

    def _configure(self) -> None:
        from disam_ros.relocalizer import Relocalizer
        from disam_ros.threads import apply_threads

        self.config_error = ""
        cfg = self.cfg = P.read_config(self)
        self.threads = apply_threads(cfg.threads)  # before the first encoder pass starts torch's pool
        self.reloc = Relocalizer.from_map(cfg.map, W.relocalizer_config(cfg))
        self.map, self.model_domains = self.reloc.map, tuple(self.reloc.localizer.coarse.domains)
        self.frame_id = cfg.frame_id or self.map.frame_id
        self.device = str(self.reloc.localizer.coarse.device)
        if not self.reloc.has_site:
            self.get_logger().warning("map has no latitude/longitude and none were given: daylight cannot be "
                                      "derived from stamps; set parameters latitude and longitude")
        for w in self.reloc.warnings:  # the selector's, and auto without a recogniser
            self.get_logger().warning(w)
        self._selection = self.reloc.select(None)
        self.note_domain(self._selection)  # the encoder it starts with: a later change counts as a switch
        self.dyn = {k: getattr(cfg, k) for k in DYNAMIC}
        self._log_error.period_s = self._log_warn.period_s = cfg.log_throttle_s
        self.tracking = W.NodeTracking(self.reloc, cfg)  # place graph and observation model from the map
        out = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pub = self.create_lifecycle_publisher  # silent unless active: a deactivated node publishes no pose
        self.pub_pose = pub(PoseStamped, "~/pose", out)
        self.pub_pose_cov = pub(PoseWithCovarianceStamped, "~/pose_with_covariance", out)
        self.pub_candidates = pub(PoseArray, "~/candidates", out)
        self.pub_loop = pub(String, "~/loop_closure", out)
        self.pub_debug = pub(Image, "~/debug_image", QoSProfile(depth=2))
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", out)  # reports in every state
        self.srv_reset = self.create_service(Trigger, "~/reset", self._on_reset)
        W.ready_for_frames(self.reloc, self.get_logger())  # before subscribing: an active subscription means ready
        self.diag_timer = self.create_timer(cfg.diagnostics_period_s, self.publish_diagnostics)
        self.get_logger().info(
            f"configured: {S.SOFTWARE}; map '{cfg.map}' ({len(self.map)} images, frame '{self.frame_id}') on "
            f"{self.device}; domains {list(self.model_domains)} (table '{self.reloc.selector.table.name}', fallback "
            f"'{self.reloc.selector.fallback}'); mode {cfg.mode}, confidence {self.tracking.calibration}")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to images and priors and start the worker (publishers enabled by the base class)."""
        cfg = self.cfg
        rel = ReliabilityPolicy.RELIABLE if cfg.image_qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
        img_qos = QoSProfile(depth=2, history=HistoryPolicy.KEEP_LAST, reliability=rel)
        self._gaps.reset()
        self.mailbox.reopen()
        self._worker = W.FrameWorker(self).start()
        self._active.set()
        if cfg.compressed:
            self.sub_image = self.create_subscription(CompressedImage, "image/compressed", self._on_compressed,
                                                      img_qos)
        else:
            self.sub_image = self.create_subscription(Image, "image", self._on_raw, img_qos)
        self.sub_camera_info = V.subscribe_camera_info(self, self.sub_image.topic_name)  # None: not verifying
        self.sub_prior = self.create_subscription(PoseWithCovarianceStamped, "prior", self._on_prior, 5)
        if cfg.odom_topic:
            self.tracking.reset_odometry()
            self.sub_odom = self.create_subscription(Odometry, cfg.odom_topic, self._on_odom, 50)
        self.get_logger().info(f"active: listening on {self.sub_image.topic_name} "
                               f"({'CompressedImage' if cfg.compressed else 'Image'}); verification "
                               f"{V.verify_state(self.tracking, cfg)}, CameraInfo on "
                               f"{self.tracking.camera_info_topic or 'none'}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_listening()
        if self.reloc is not None:
            self.reloc.reset_condition()  # the held recognised condition is stale when the node comes back
        self.get_logger().info("inactive: not listening, publishing no poses")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("unconfigured: map and models released")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any state: stop listening (a worker in a long frame is left behind, not waited for), release."""
        self._stop_listening()
        super().on_deactivate(state)
        self._release()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_listening()
        self._release()
        return SUCCESS  # back to unconfigured: a manager may configure again

    def _stop_listening(self) -> None:
        self._active.clear()
        if self._worker is not None:
            self._worker.stop.set()
        self.mailbox.close()
        if self.mailbox.clear():
            self.stats.add("dropped_by_node")
        for name in ("sub_image", "sub_camera_info", "sub_prior", "sub_odom"):
            sub = getattr(self, name, None)
            if sub is not None:
                self.destroy_subscription(sub)
                setattr(self, name, None)
        if self._worker is not None:
            self._left_behind = not self._worker.stop_and_join(WORKER_JOIN_S)
            self._worker = None

    def _release(self) -> None:
        """Destroy what configure made and drop map and models (the memory a cleanup is for)."""
        lifecycle = ("pub_pose", "pub_pose_cov", "pub_candidates", "pub_loop", "pub_debug")
        destroyers = {"pub_diag": self.destroy_publisher, "diag_timer": self.destroy_timer,
                      "srv_reset": self.destroy_service, **dict.fromkeys(lifecycle, self.destroy_lifecycle_publisher)}
        for name, destroy in destroyers.items():
            entity = getattr(self, name, None)
            if entity is not None:
                destroy(entity)
                setattr(self, name, None)
        if self.tracking is not None:
            self.tracking.close()
        if self.reloc is not None:
            self.reloc.map.close()  # stop the background integrity check with the map it checks
        self.reloc = self.tracking = None
        self._domain_in_use = ""  # a new configure starts with its own encoder

    def close(self) -> bool:
        """Shut down from whatever state the node is in, waiting at most WORKER_JOIN_S for a frame in flight;
        True when no worker thread was left running."""
        if self.state != "finalized":
            self.trigger_shutdown()
        return not self._left_behind

    @property
    def state(self) -> str:
        """unconfigured, inactive, active or finalized (the label a lifecycle manager sees)."""
        return str(self._state_machine.current_state[1])

    # ------------------------------------------------------------------------------------------ callbacks

    def _on_raw(self, msg: Image, info: Any) -> None:
        self._enqueue(msg, image_to_rgb, info)

    def _on_compressed(self, msg: CompressedImage, info: Any) -> None:
        self._enqueue(msg, compressed_to_rgb, info)

    def _enqueue(self, msg: Any, decode: Callable[[Any], np.ndarray], info: Any = None) -> None:
        """Executor thread: count, stash and return at once (never decode or infer here)."""
        self.stats.add("received")
        lost = self._gaps.gap(info)
        if lost:
            self.stats.add("dropped_in_queue", lost)
        if self.mailbox.put((msg, decode, time.monotonic())):
            self.stats.add("dropped_by_node")

    def _on_prior(self, msg: PoseWithCovarianceStamped) -> None:
        if msg.header.frame_id and msg.header.frame_id != self.frame_id:
            self.stats.add("priors_ignored")
            self._log_warn(f"prior frame {logs.clip(msg.header.frame_id)} differs from the map frame "
                           f"'{self.frame_id}': ignoring it; publish priors in the map frame", kind="prior_frame")
            return
        self.priors.put(msg)

    def _on_odom(self, msg: Odometry) -> None:
        """Executor thread: one position into the distance accumulator (the worker takes it per frame)."""
        tracking, p = self.tracking, msg.pose.pose.position
        if tracking is not None:
            stamp = M.stamp_to_sec(msg.header.stamp)
            ok = tracking.add_odometry(stamp if stamp > 0.0 else time.monotonic(), (p.x, p.y, p.z))
            self.stats.add("odometry_received" if ok else "odometry_ignored")

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """~/reset: belief back to uniform over the map (waits at most for the frame in flight)."""
        tracking = self.tracking
        response.success = tracking is not None
        response.message = tracking.reset("~/reset service") if tracking is not None else \
            "not configured: configure the node first (no map loaded)"
        if tracking is not None:
            self.stats.add("belief_resets")
            self.get_logger().info(response.message)
        return response

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        """Run-time changes (node_params.apply_changes); a refused request changes nothing."""
        try:
            P.apply_changes(self, params)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------------------------------ worker hooks

    def current_prior(self) -> Any:
        """The spatial prior for this frame, or None (none received, stale, or unusable: search globally)."""
        try:
            return self.priors.get(self.dyn["prior_timeout_s"], self.dyn["prior_radius_m"])
        except ValueError as exc:
            self.stats.add("priors_ignored")
            self._log_warn(f"ignoring spatial prior: {exc} (or set prior_radius_m)", kind="prior_invalid")
            return None

    def note_selection(self, sel: conditions.Selection, stamp: float | None) -> None:
        if stamp is not None:
            self.last_stamp = stamp
        self._selection = sel
        self.note_domain(sel)

    # ------------------------------------------------------------------------------------------ reporting

    def note_domain(self, sel: conditions.Selection) -> None:
        if sel.domain != self._domain_in_use:
            if self._domain_in_use:
                self.stats.add("encoder_switches")
            self.get_logger().info(f"encoder '{self._domain_in_use or '-'}' -> '{sel.domain}': {sel.reason} "
                                   f"[weather {sel.query.weather}, daylight {sel.query.daylight}, "
                                   f"foliage {sel.query.foliage}]")
            self._domain_in_use = sel.domain

    def error(self, text: str) -> None:
        """Throttled per kind of problem (at camera rate one line per bad frame floods the log); all counted."""
        self.stats.note(error=text)
        self._log_error(text)

    def diagnostics_values(self) -> dict[str, Any]:
        return W.diagnostics_values(self)

    def publish_diagnostics(self) -> None:
        try:
            self._publish_diagnostics()
        except Exception as exc:  # noqa: BLE001  (a reporting bug must not stop localization)
            self.error(f"diagnostics failed: {type(exc).__name__}: {exc}")

    def _publish_diagnostics(self) -> None:
        if self.reloc is None or self.pub_diag is None:
            return
        v = self.diagnostics_values()
        warn, message = S.status_summary(v, self._active.is_set())
        level = DiagnosticStatus.WARN if warn else DiagnosticStatus.OK
        name = f"{self.get_fully_qualified_name()}: relocalization"
        self.pub_diag.publish(M.diagnostic_array(self.get_clock().now().to_msg(), name, f"disam_ros/{self.device}",
                                                 level, message, v))


# ---------------------------------------------------------------------------------------------- main


def _start(node: LocalizerNode) -> None:
    import disam_ros.verify.verifier  # noqa: F401  (at start-up, not on the first frame)

    autostart(node)


PROCESS = NodeProcess("disam-localizer", NODE_NAME, P.ros_argv, lambda dds: LocalizerNode(dds=dds), _start)


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; 0 on a clean stop, 2 on a configuration error (one line, no
    traceback)."""
    return run_node(PROCESS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
