"""The localizer node's per-frame pipeline, on its own thread: newest frame -> decode -> ONE ROS-free
`Tracker.step` call -> confidence gate -> publish (the sequence state around the tracker: node_tracking.py).

Kept apart from the lifecycle plumbing (localizer_node.py) so what happens to one frame reads in one place.
Each activation gets a fresh worker with its own stop event: a worker left behind in a long decode when the
node deactivates or shuts down sees its event on return and publishes nothing, and is never waited for longer
than a short join (it is a daemon thread).
"""
from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from disam_ros import conditions
from disam_ros.heap import freeze_startup_heap
from disam_ros.ros import messages as M
from disam_ros.ros import node_stats as S
from disam_ros.ros import node_verify as V
from disam_ros.ros.late_hints import LateHints
from disam_ros.ros.node_tracking import NodeTracking

if TYPE_CHECKING:
    from disam_ros.ros.node_params import LocalizerConfig


class WorkerHost(Protocol):
    """What the worker uses of its node (`LocalizerNode`); named here so this module needs nothing from the
    node's module, which imports this one."""

    mailbox: Any
    stats: Any
    dyn: dict[str, Any]
    tracking: NodeTracking | None
    reloc: Any
    map: Any
    frame_id: str
    last_debug: float
    pub_pose: Any
    pub_pose_cov: Any
    pub_candidates: Any
    pub_loop: Any
    pub_debug: Any

    def error(self, text: str) -> None: ...

    def current_prior(self, *args: Any) -> Any: ...

    def note_selection(self, *args: Any) -> Any: ...


class FrameWorker:
    """One worker thread per activation of the node (see the module docstring)."""

    def __init__(self, node: WorkerHost) -> None:
        self.node = node
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="disam_localizer_worker", daemon=True)
        self.late = LateHints()  # verify_keyframes: keyframes solved after their frames, sent as hints
        self._late_picture: Any = None  # ... the newest verified one, drawn at the next debug slot

    def start(self) -> FrameWorker:
        if self.node.tracking is not None:  # a late keyframe wakes the loop: its hint goes out without a frame
            self.node.tracking.tracker.on_late(self.node.mailbox.poke)
        self.thread.start()
        return self

    def stop_and_join(self, timeout: float) -> bool:
        """Ask the thread to stop, wait at most `timeout`; True when it has ended."""
        self.stop.set()
        self.thread.join(timeout=timeout)
        return not self.thread.is_alive()

    def _run(self) -> None:
        node, last_start = self.node, 0.0
        while not self.stop.is_set():
            rate = node.dyn["max_rate_hz"]
            if rate > 0.0:
                wait = last_start + 1.0 / rate - time.monotonic()
                if wait > 0.0 and self.stop.wait(wait):
                    break
            item = node.mailbox.take(timeout=0.2)
            if self.stop.is_set():
                continue
            if item is None:
                self._late_between_frames()
                continue
            last_start = time.monotonic()
            try:
                self.process(*item)
            except Exception as exc:  # noqa: BLE001  (one bad frame must never kill the node)
                node.stats.add("errors")
                node.error(f"frame failed: {type(exc).__name__}: {exc}")

    def _late_between_frames(self) -> None:
        """Late hints of keyframes solved while no frame came (the keyframe thread pokes the mailbox)."""
        tracking = self.node.tracking
        if tracking is None:
            return
        try:
            late = tracking.take_late()
            if late and not self.stop.is_set():
                self.late.publish(self.node, late)
                self._keep_late_picture(late)
            if not self.stop.is_set():  # a late picture whose slot came due while no frame came
                self._picture(None)
        except Exception as exc:  # noqa: BLE001  (the loop must go on)
            self.node.stats.add("errors")
            self.node.error(f"late hints failed: {type(exc).__name__}: {exc}")

    def process(self, msg: Any, decode: Any, t_recv: float) -> None:
        """Decode, localize, publish one frame; every outcome is counted in the node's stats."""
        node, tracking, t0 = self.node, self.node.tracking, time.monotonic()
        if tracking is None:
            return
        stats = node.stats
        stats.add("processed")
        stats.time("queue", 1e3 * (t0 - t_recv))
        stamp_sec = M.stamp_to_sec(msg.header.stamp)
        try:
            rgb = decode(msg)
            if self.stop.is_set():  # deactivated or shutting down while we decoded
                return
            t1 = time.monotonic()
            step = tracking.step(rgb, stamp_sec, node.current_prior())  # the one ROS-free call per frame
        except ValueError as exc:  # the codec's and the relocalizer's one-line verdicts on a bad image
            stats.add("bad_input")
            node.error(f"dropping frame {stamp_sec:.3f}: {exc}")
            return
        t2 = time.monotonic()
        sel, res = step.selection, step.result
        node.note_selection(sel, stamp_sec)
        self.late.remember(stamp_sec, msg.header.stamp, sel.domain)
        if step.late and not self.stop.is_set():
            self.late.publish(node, step.late)
            self._keep_late_picture(step.late)
        stats.time("decode", 1e3 * (t1 - t0))
        stats.time("localize", 1e3 * (t2 - t1))
        for stage, ms in (getattr(res, "timings_ms", None) or {}).items():
            stats.time(f"retrieval_{stage}", ms)
        if not res.ok:  # no pose; the relocalizer says why (junk frames are counted apart: a covered lens)
            stats.add("junk_frames" if str(res.reason).startswith("junk frame") else "not_localized")
            stats.note(reason=str(res.reason))
            return
        V.count(stats, res)
        threshold, gate = confidence_gate(node.dyn, step.calibrated, tracking.suggested_min_confidence)
        publish, why = V.publish_decision(res, float(res.confidence) >= threshold, gate,  # NaN never passes
                                          tracking.verifying, node.dyn["unverified_policy"])
        if not publish:
            stats.add("not_localized")
            stats.note(reason=why)
            return
        if not M.pose_is_finite(res.position, res.quat):
            stats.add("errors")
            node.error(f"retrieval returned a non-finite pose for map index {res.index}: not publishing; "
                       "rebuild the map (its poses hold NaN)")
            return
        if not self.stop.is_set():
            self._publish(msg, rgb, res, sel, step.loop_closure, (t_recv, t2))

    def _publish(self, msg: Any, rgb: np.ndarray, res: Any, sel: conditions.Selection, loop: bool,
                 times: tuple[float, float]) -> None:
        """The pose topics; the loop-closure hint only when the tracker has seen enough consistent frames."""
        node, (t_recv, t_done) = self.node, times
        header = M.make_header(msg.header.stamp, node.frame_id)
        node.pub_pose.publish(M.pose_stamped(res, header))
        node.pub_pose_cov.publish(M.pose_with_covariance(res, header))
        node.pub_candidates.publish(M.candidates(res, node.map.positions, node.map.quats, header))
        if loop:
            node.pub_loop.publish(M.loop_closure(res, msg.header.stamp, sel.domain, node.frame_id, node.map))
            node.stats.add("loop_closures")
        t4 = time.monotonic()
        node.stats.add("localized")
        node.stats.time("publish", 1e3 * (t4 - t_done))
        node.stats.time("total", 1e3 * (t4 - t_recv))
        node.stats.note(reason=str(res.reason or "ok"))
        self._picture((rgb, res, header, sel.domain))

    def _keep_late_picture(self, late: tuple) -> None:
        """The newest late keyframe waits (one at most) for the next debug slot, to be drawn on its own image at its
        frame's stamp. Why: with `verify_keyframes` most frames go out `pending`; their verifications went undrawn."""
        if self.node.dyn["publish_debug_image"]:
            self._late_picture = next((a for a in reversed(late) if a.image is not None), self._late_picture)

    def _picture(self, frame: tuple | None) -> None:
        """Take the debug slot if one is due (`publish_debug_image`, `debug_rate_hz`): a waiting late keyframe's
        picture before `frame`'s (rgb, result, header, encoder), so that at camera rate the frames do not starve it."""
        node, late = self.node, self._late_picture
        if not node.dyn["publish_debug_image"] or (late is None and frame is None):
            self._late_picture = None  # switched off, no image is held for a picture nobody asked for
            return
        now = time.monotonic()
        if now - node.last_debug < 1.0 / node.dyn["debug_rate_hz"]:
            return
        node.last_debug = now
        if late is None:
            return self._publish_debug(*frame)
        self._late_picture, (stamp, domain) = None, self.late.frame(late.stamp)
        if domain:  # a frame long forgotten (LATE_STAMPS back) has no encoder to draw its maps with
            self._publish_debug(late.image, late.result, M.make_header(stamp, node.frame_id), domain, late=True)

    def _publish_debug(self, rgb: np.ndarray, res: Any, header: Any, domain: str, late: bool = False) -> None:
        """Grad-SAM maps of the query and the matched map image, each against the other (paper Fig. 1), and the
        verification's inliers on the query with a line on what it found."""
        node = self.node
        if node.pub_debug.get_subscription_count() == 0:
            return
        q_heat, m_heat = node.reloc.activation_maps(res, rgb, domain)
        map_rgb = node.reloc.map_image(res.index)
        caption = f"{domain} -> #{res.index} {res.name} conf {float(res.confidence):.2f}"
        v = res.verification
        points = v.inlier_pixels if v is not None and v.verified else None
        picture = M.render_debug(rgb, q_heat, map_rgb, m_heat, caption, points=points,
                                 note=M.verification_caption(v, late) if node.tracking.verifying else "")
        node.pub_debug.publish(M.debug_image_msg(picture, header))


def diagnostics_values(node: Any) -> dict[str, Any]:
    """Every /diagnostics key of a configured node (docs/localizer.md, Diagnostics keys)."""
    tracking = node.tracking
    values: dict[str, Any] = {
        "state": node.state, **S.selection_values(node._selection, node.reloc.selector),
        "model_domains": ",".join(node.model_domains), "map_size": len(node.map), "map_frame": node.frame_id,
        "device": node.device, **S.process_values(), "map_verification": node.map.verification_state(),
        "map_problem": node.map.integrity_problem or "",
        "sequence_numbers": "yes" if node._gaps.available else "no",
        "odometry": node.cfg.odom_topic or "none (speed band)", **tracking.diagnostics(),
        **node.reloc.condition_diagnostics(), **V.diagnostics(tracking, node.cfg, node.dyn),
    }
    t, values["confidence_gate"] = confidence_gate(node.dyn, tracking.calibrated, tracking.suggested_min_confidence)
    values.update(confidence_threshold=t, confidence_calibrated=tracking.calibrated)
    values.update(node.stats.snapshot())
    return values


def ready_for_frames(reloc: Any, logger: Any) -> None:
    """One warm-up query (first-call costs: allocator, kernels, page-ins), then freeze the start-up heap so no
    200 ms full garbage collection of the model and map objects lands between two frames (disam_ros.heap)."""
    t0 = time.monotonic()
    reloc.warm_up()
    frozen = freeze_startup_heap()
    logger.debug(f"warm-up query took {1e3 * (time.monotonic() - t0):.0f} ms; {frozen} start-up objects frozen")


def relocalizer_config(cfg: LocalizerConfig) -> Any:
    """The RelocalizerConfig the node's parameters describe (models, search, condition source)."""
    from disam_ros.relocalizer import RelocalizerConfig
    from disam_ros.retrieval import SearchConfig

    return RelocalizerConfig(
        coarse_checkpoint=cfg.coarse_checkpoint, fine_checkpoint=cfg.fine_checkpoint,
        search=SearchConfig(top_n=cfg.top_n, top_k=cfg.top_k, min_confidence=0.0, device=cfg.device),
        weather=cfg.weather, domain=cfg.domain, latitude=cfg.latitude, longitude=cfg.longitude,
        conditions_file=cfg.conditions_file, condition_table=cfg.condition_table,
        allow_unverified_model=cfg.allow_unverified_model, condition_source=cfg.condition_source,
        hysteresis_margin=cfg.condition_hysteresis_margin, hysteresis_hold=cfg.condition_hysteresis_hold,
        prior_weight=cfg.condition_prior_weight)


def confidence_gate(dyn: dict[str, Any], calibrated: bool, suggested: float | None) -> tuple[float, str]:
    """(threshold, what it is) a published pose's confidence must reach: `tracking.publish_threshold`, the
    rule disam-eval applies too (calibrated: `min_confidence`, NaN = the map calibration's own threshold;
    heuristic: `min_heuristic_confidence`), with the words diagnostics and `last_reason` show."""
    from disam_ros.tracking.tracker import publish_threshold

    t = publish_threshold(calibrated, suggested, dyn["min_confidence"], dyn["min_heuristic_confidence"])
    if not calibrated:
        return t, f"min_heuristic_confidence {t:g} (heuristic: the map has no calibration for this mode)"
    if not math.isnan(dyn["min_confidence"]):
        return t, f"min_confidence {t:g} (calibrated)"
    if math.isinf(t):
        return t, ("the map calibration's threshold, which none reached for this mode: set min_confidence to "
                   "publish anyway")
    return t, f"min_confidence {t:g} (calibrated; the map calibration's threshold)"
