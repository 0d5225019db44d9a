"""What the pose-graph node does with each input, without ROS: odometry poses and hint texts in, graph calls
out, and a count (plus a throttled log line) for everything refused.

Why apart from the node: the rules (frames, stamps, hints waiting for their odometry, camera -> base) are the
part worth testing on their own, and the node stays about topics, lifecycle and timing.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from disam_ros.logs import clip
from disam_ros.posegraph.odometry_guard import CONFIRM, OdometryGuard, OdometryLimits
from disam_ros.ros import hint_parse as H
from disam_ros.ros.node_params import one_line

COUNTERS = ("odometry_received", "odometry_processed", "odometry_merged", "odometry_rejected", "odometry_resets",
            "outputs_suppressed", "hints_received", "hints_rejected", "hints_unmatched",
            "hints_dropped", "hints_unverified_skipped", "closures_added", "update_errors")


class GraphFeed:
    """Routes odometry and hints into a PoseGraph (graph API of disam_ros.posegraph.graph), counting refusals.

    `cfg` is the node's PoseGraphNodeConfig (frames, camera_in_base, unverified handling, pending_hints);
    `warn` and `error` take one-line texts (the node passes throttled loggers). Both `odometry` and `hint`
    return True when the graph changed (a node or a closure was added), i.e. when an update is worth running.

    Every odometry message ends in exactly one of odometry_processed (a graph node), odometry_merged (folded into
    the next node by the keyframe rules) or odometry_rejected, so received = processed + merged + rejected.
    """

    def __init__(self, graph: Any, cfg: Any, warn: Callable[[str], Any], error: Callable[[str], Any]) -> None:
        self.graph, self.cfg = graph, cfg
        self._warn, self._error = warn, error
        self.base_camera = H.parse_camera_in_base(cfg.camera_in_base)
        self.unverified_cov = H.diagonal_covariance(cfg.unverified_sigma_m, cfg.unverified_sigma_deg)
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.pending: deque[H.Hint] = deque(maxlen=max(int(cfg.pending_hints), 1))
        self.guard = OdometryGuard(OdometryLimits(cfg.max_odom_position_m, cfg.max_odom_speed_mps, cfg.max_odom_gap_s))
        self.last_odom_t: float | None = None
        self.last_error = ""

    def reject(self, counter: str, text: str) -> None:
        """Count an input the graph cannot use and log it (throttled by the caller's logger)."""
        self.counts[counter] += 1
        self.last_error = text
        self._warn(text)

    def suppress(self, text: str) -> None:
        """An output that is not finite: not published, counted (outputs_suppressed) and logged."""
        self.counts["outputs_suppressed"] += 1
        self.last_error = text
        self._error(text)

    def solver_error(self, exc: Exception) -> None:
        """A GTSAM failure inside an add or update: counted and logged, the node goes on."""
        self.counts["update_errors"] += 1
        self.last_error = f"graph update failed: {one_line(exc)}"
        self._error(self.last_error)

    # ------------------------------------------------------------------------------------------ odometry

    def odometry(self, frame_id: str, t: float, position: np.ndarray, quat: np.ndarray) -> bool:
        """One odometry pose T_odom_base: checked by the odometry guard (disam_ros.posegraph.odometry_guard:
        absurd positions, jumps and stamps out of order are refused; a jump that CONFIRM messages in a row continue
        restarts the chain), a graph node when the keyframe rules say so, then the hints waiting for this stamp."""
        if frame_id and frame_id != self.cfg.odom_frame:
            self.reject("odometry_rejected", f"odometry in frame {clip(frame_id)}, not odom_frame "
                        f"'{self.cfg.odom_frame}': skipped; set parameter odom_frame")
            return False
        verdict = self.guard.offer(t, position)
        if not verdict.accept:
            self.reject("odometry_rejected", verdict.reason)
            return False
        if verdict.reset:
            self._reset_chain(verdict.reason)
        elif verdict.reason:
            self._warn(f"{verdict.reason}: {CONFIRM} messages in a row continue it, so the odometry goes on from there")
        try:
            node = self.graph.add_odometry(t, position, quat)
        except ValueError as exc:  # the graph's own checks (the guard applies the same rules first)
            self.reject("odometry_rejected", f"odometry rejected: {one_line(exc)}")
            return False
        except Exception as exc:  # noqa: BLE001  (a restart at max_nodes solves)
            self.counts["odometry_rejected"] += 1
            self.solver_error(exc)
            return False
        self.counts["odometry_processed" if node is not None else "odometry_merged"] += 1
        self.last_odom_t = float(t)
        return self._attach_pending(float(t)) or node is not None

    def _reset_chain(self, reason: str) -> None:
        """A clock or odometry restart: the graph starts a new chain; hints waiting for the old clock go."""
        self.graph.reset_chain()
        self.counts["odometry_resets"] += 1
        self.counts["hints_dropped"] += len(self.pending)
        self.pending.clear()
        self.last_odom_t = None
        self.last_error = (f"{reason}: {CONFIRM} messages in a row continue it: odometry chain reset (a clock or "
                           "odometry restart); the map frame re-anchors on the next agreeing hints")
        self._warn(self.last_error)

    def _attach_pending(self, t: float) -> bool:
        ready = [h for h in self.pending if h.stamp <= t]
        if not ready:
            return False
        self.pending = deque((h for h in self.pending if h.stamp > t), maxlen=self.pending.maxlen)
        return any([self._add(h) for h in ready])  # a list: every ready hint is added, not just up to the first

    # ------------------------------------------------------------------------------------------ hints

    def hint(self, text: str) -> bool:
        """One loop-closure hint text: checked, converted to the base frame, attached to the node at its stamp
        (or held until the odometry reaches that stamp)."""
        self.counts["hints_received"] += 1
        try:
            hint = H.parse_hint(text)
        except H.HintError as exc:
            self.reject("hints_rejected", str(exc))
            return False
        if hint.frame_id and hint.frame_id != self.cfg.map_frame:
            self.reject("hints_rejected", f"loop-closure hint in frame {clip(hint.frame_id)}, not map_frame "
                        f"'{self.cfg.map_frame}': skipped; set parameter map_frame")
            return False
        if not hint.verified and not self.cfg.use_unverified:
            self.counts["hints_unverified_skipped"] += 1
            return False
        if self.last_odom_t is None or hint.stamp > self.last_odom_t:  # its odometry has not arrived yet
            if self.cfg.pending_hints == 0:
                self.reject("hints_unmatched", f"hint at {hint.stamp:.3f} s is newer than the odometry: skipped "
                            "(pending_hints is 0)")
            else:
                if len(self.pending) == self.pending.maxlen:
                    self.counts["hints_dropped"] += 1
                self.pending.append(hint)
            return False
        return self._add(hint)

    def _add(self, hint: H.Hint) -> bool:
        """Verified: a between factor keyframe -> node; unverified: an absolute pose factor. True when added."""
        try:
            if hint.verified:
                rel, cov = H.to_base(hint.relative, hint.relative_cov, self.base_camera)
                closure = self.graph.add_closure(hint.stamp, hint.keyframe_index, hint.keyframe.position,
                                                 hint.keyframe.quat, rel.position, rel.quat, cov)
            else:
                pose, cov = H.to_base(hint.pose, self.unverified_cov, self.base_camera)
                closure = self.graph.add_absolute(hint.stamp, pose.position, pose.quat, cov)
        except ValueError as exc:
            self.reject("hints_rejected", f"loop-closure hint at {hint.stamp:.3f} s refused by the graph: "
                        f"{one_line(exc)}")
            return False
        except Exception as exc:  # noqa: BLE001  (the first closure re-anchors the graph: a solve)
            self.solver_error(exc)
            return False
        if closure is None:
            self.reject("hints_unmatched", f"no graph node within closure_max_dt_s ({self.cfg.closure_max_dt_s} s) "
                        f"of the hint at {hint.stamp:.3f} s: older than the odometry kept, or in an odometry gap; "
                        "skipped")
            return False
        self.counts["closures_added"] += 1
        return True
