"""The localizer node's per-frame pipeline, on its own thread: newest frame -> decode -> ONE ROS-free
`Relocalizer.localize` call -> publish.

Kept apart from the lifecycle plumbing (localizer_node.py) so what happens to one frame reads in one place.
Each activation gets a fresh worker with its own stop event: a worker left behind in a long decode when the
node deactivates or shuts down sees its event on return and publishes nothing, and is never waited for longer
than a short join (it is a daemon thread).
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped

from disam_ros import conditions
from disam_ros.ros import messages as M

if TYPE_CHECKING:  # the node imports this module; only annotations point back
    from disam_ros.ros.localizer_node import LocalizerNode


class FrameWorker:
    """One worker thread per activation of the node (see the module docstring)."""

    def __init__(self, node: LocalizerNode) -> None:
        self.node = node
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="disam_localizer_worker", daemon=True)

    def start(self) -> FrameWorker:
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
            if item is None or self.stop.is_set():
                continue
            last_start = time.monotonic()
            try:
                self.process(*item)
            except Exception as exc:  # noqa: BLE001  (one bad frame must never kill the node)
                node.stats.add("errors")
                node.error(f"frame failed: {type(exc).__name__}: {exc}")

    def process(self, msg: Any, decode: Any, t_recv: float) -> None:
        """Decode, localize, publish one frame; every outcome is counted in the node's stats."""
        node, reloc, t0 = self.node, self.node.reloc, time.monotonic()
        if reloc is None:
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
            sel, res = reloc.localize(rgb, stamp_sec, node.current_prior())  # the one ROS-free call per frame
        except ValueError as exc:  # the codec's and the relocalizer's one-line verdicts on a bad image
            stats.add("bad_input")
            node.error(f"dropping frame {stamp_sec:.3f}: {exc}")
            return
        t2 = time.monotonic()
        node.note_selection(sel, stamp_sec)
        stats.time("decode", 1e3 * (t1 - t0))
        stats.time("localize", 1e3 * (t2 - t1))
        for stage, ms in (getattr(res, "timings_ms", None) or {}).items():
            stats.time(f"retrieval_{stage}", ms)
        if not res.ok:  # no pose; the relocalizer says why (junk frames are counted apart: a covered lens)
            stats.add("junk_frames" if str(res.reason).startswith("junk frame") else "not_localized")
            stats.note(reason=str(res.reason))
            return
        if not M.pose_is_finite(res.position, res.quat):
            stats.add("errors")
            node.error(f"retrieval returned a non-finite pose for map index {res.index}: not publishing; "
                       "rebuild the map (its poses hold NaN)")
            return
        if not self.stop.is_set():
            self._publish(msg, rgb, res, sel, t_recv, t2)

    def _publish(self, msg: Any, rgb: np.ndarray, res: Any, sel: conditions.Selection, t_recv: float,
                 t_done: float) -> None:
        node = self.node
        header = M.make_header(msg.header.stamp, node.frame_id)
        node.pub_pose.publish(M.pose_stamped(res, header))
        node.pub_pose_cov.publish(M.pose_with_covariance(res, header))
        node.pub_candidates.publish(M.candidates(res, node.map.positions, node.map.quats, header))
        node.pub_loop.publish(M.loop_closure(res, msg.header.stamp, sel.domain, node.frame_id))
        t4 = time.monotonic()
        node.stats.add("localized")
        node.stats.time("publish", 1e3 * (t4 - t_done))
        node.stats.time("total", 1e3 * (t4 - t_recv))
        node.stats.note(reason=str(res.reason or "ok"))
        if node.dyn["publish_debug_image"] and t4 - node.last_debug >= 1.0 / node.dyn["debug_rate_hz"]:
            node.last_debug = t4
            self._publish_debug(rgb, res, header, sel.domain)

    def _publish_debug(self, rgb: np.ndarray, res: Any, header: Any, domain: str) -> None:
        """Grad-SAM maps of the query and the matched map image, each against the other (paper Fig. 1)."""
        node = self.node
        if node.pub_debug.get_subscription_count() == 0:
            return
        q_heat, m_heat = node.reloc.activation_maps(res)
        map_rgb = node.reloc.map_image(res.index)
        caption = f"{domain} -> #{res.index} {res.name} conf {float(res.confidence):.2f}"
        node.pub_debug.publish(M.debug_image_msg(M.render_debug(rgb, q_heat, map_rgb, m_heat, caption), header))


def spatial_prior(msg: PoseWithCovarianceStamped, radius_m: float) -> Any:
    """The retrieval gate of a `prior` message: a fixed radius when radius_m > 0, else 3 sigma of its position
    covariance. ValueError (one line) for an unusable covariance."""
    from disam_ros.retrieval import SpatialPrior

    p = msg.pose.pose.position
    pos = np.array([p.x, p.y, p.z], np.float64)
    if radius_m > 0.0:
        return SpatialPrior(pos, radius=radius_m)
    cov = np.asarray(msg.pose.covariance, np.float64).reshape(6, 6)[:3, :3]
    return SpatialPrior(pos, covariance=0.5 * (cov + cov.T))
