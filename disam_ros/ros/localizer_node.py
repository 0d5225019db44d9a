"""DISAM localizer node: camera image in -> matched map pose out (relocalization prior, loop-closure hint).

Threading: subscription callbacks only stash the latest frame in a one-slot mailbox (a newer frame
replaces an unprocessed one, which is counted as dropped); one worker thread decodes, picks the encoder of
the current condition, retrieves and publishes. So a slow model never backs up the executor or the DDS
queues, memory stays bounded at any input rate, and parameter services stay responsive.

Usage::

    disam-localizer --params-file config/localizer.yaml --ros-args -p map:=/maps/town -r image:=/camera/image
"""
from __future__ import annotations

import argparse
import math
import re
import signal
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseArray, PoseStamped, PoseWithCovarianceStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from disam_ros import conditions
from disam_ros.data.image_codec import compressed_to_rgb, image_to_rgb
from disam_ros.ros import env  # noqa: F401  (package __init__ already applied it before rclpy loaded)
from disam_ros.ros import messages as M

NODE_NAME = "disam_localizer"
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
ALLOWED_WEATHER = (*conditions.WEATHERS, conditions.UNKNOWN)
IMAGE_QOS = ("reliable", "best_effort")


@dataclass(frozen=True)
class Param:
    """One node parameter: default, description (shown by `ros2 param describe`), run-time changeable?"""

    name: str
    default: Any
    description: str
    dynamic: bool = False
    constraints: str = ""


NAN = float("nan")
PARAMETERS: tuple[Param, ...] = (
    Param("map", "", "Map directory written by disam-build-map (required).", constraints="existing directory"),
    Param("coarse_checkpoint", "", "Coarse model checkpoint; empty = the one recorded in the map."),
    Param("fine_checkpoint", "", "Fine (re-ranking) model checkpoint; empty = the one recorded in the map."),
    Param("device", "auto", "Torch device for the encoders.", constraints="auto, cpu, cuda, cuda:N, mps"),
    Param("top_n", 3, "Coarse candidates re-ranked by the fine model (paper: 3).", constraints=">= 1"),
    Param("top_k", 5, "Scored candidates published on ~/candidates.", constraints=">= 1"),
    Param("min_confidence", 0.0, "Below this retrieval confidence no pose is published.", dynamic=True,
          constraints="0..1"),
    Param("compressed", False, "Subscribe to sensor_msgs/CompressedImage on image/compressed instead of "
          "sensor_msgs/Image on image."),
    Param("image_qos", "reliable", "Image subscription reliability: reliable, or best_effort for sensor-data "
          "publishers.", constraints="reliable, best_effort"),
    Param("max_rate_hz", 0.0, "Process at most this many frames per second (0 = as fast as possible); "
          "frames in between are dropped and counted.", dynamic=True, constraints=">= 0"),
    Param("weather", "sunny", "Current weather, for encoder selection.", dynamic=True,
          constraints=", ".join(ALLOWED_WEATHER)),
    Param("domain", "", "Force this model domain's encoder (empty = select from the condition).", dynamic=True,
          constraints="empty or a model domain"),
    Param("latitude", NAN, "Map latitude (deg N) for daylight/season; NaN = from the map metadata.",
          constraints="-90..90 or NaN"),
    Param("longitude", NAN, "Map longitude (deg E) for daylight; NaN = from the map metadata.",
          constraints="-180..180 or NaN"),
    Param("conditions_file", "", "Condition -> domain table (YAML); empty = the packaged config/conditions.yaml."),
    Param("condition_table", "", "Table name in conditions_file; empty = the one covering most model domains."),
    Param("prior_timeout_s", 2.0, "A spatial prior on `prior` older than this is ignored.", dynamic=True,
          constraints="> 0"),
    Param("prior_radius_m", 0.0, "Search radius around the prior; 0 = 3 sigma of the prior's covariance.",
          dynamic=True, constraints=">= 0"),
    Param("publish_debug_image", False, "Publish the Grad-SAM debug image on ~/debug_image.", dynamic=True),
    Param("debug_rate_hz", 1.0, "Maximum rate of ~/debug_image.", dynamic=True, constraints="> 0"),
    Param("diagnostics_period_s", 1.0, "Period of the /diagnostics status.", constraints="> 0"),
    Param("frame_id", "", "frame_id of published poses; empty = the map's frame."),
)
PARAMETER_NAMES = tuple(p.name for p in PARAMETERS)
_FLOAT_PARAMS = {p.name for p in PARAMETERS if isinstance(p.default, float)}


def declare_parameters(node: Node) -> None:
    """Declare every localizer parameter with its description; float ones accept integers too (-p x:=2)."""
    for p in PARAMETERS:
        desc = ParameterDescriptor(description=p.description, read_only=not p.dynamic,
                                   additional_constraints=p.constraints,
                                   dynamic_typing=p.name in _FLOAT_PARAMS)
        node.declare_parameter(p.name, p.default, desc)


@dataclass(frozen=True)
class LocalizerConfig:
    """Validated parameter values."""

    map: Path
    coarse_checkpoint: str
    fine_checkpoint: str
    device: str
    top_n: int
    top_k: int
    min_confidence: float
    compressed: bool
    image_qos: str
    max_rate_hz: float
    weather: str
    domain: str
    latitude: float
    longitude: float
    conditions_file: str
    condition_table: str
    prior_timeout_s: float
    prior_radius_m: float
    publish_debug_image: bool
    debug_rate_hz: float
    diagnostics_period_s: float
    frame_id: str


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"parameter '{name}' must be a number, got {value!r}")
    return float(value)


def check_value(name: str, value: Any) -> Any:
    """Validate one parameter value (also used for run-time changes); returns the normalised value."""
    if name in _FLOAT_PARAMS:
        value = _number(name, value)
    if name == "map":
        if not value:
            raise ValueError("parameter 'map' is empty: pass -p map:=/path/to/map_dir (from disam-build-map)")
        if not Path(value).expanduser().is_dir():
            raise ValueError(f"map directory '{value}' does not exist: check parameter 'map'")
    elif name in ("coarse_checkpoint", "fine_checkpoint") and value and not Path(value).expanduser().is_file():
        raise ValueError(f"{name} '{value}' does not exist: give a checkpoint file or leave it empty")
    elif name == "device" and not DEVICE_RE.match(value):
        raise ValueError(f"device {value!r} is not valid: use auto, cpu, cuda, cuda:N or mps")
    elif name in ("top_n", "top_k") and value < 1:
        raise ValueError(f"parameter '{name}' must be >= 1, got {value}")
    elif name == "min_confidence" and not 0.0 <= value <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], got {value}")
    elif name == "image_qos" and value not in IMAGE_QOS:
        raise ValueError(f"image_qos {value!r} is not valid: use one of {IMAGE_QOS}")
    elif name == "max_rate_hz" and not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"max_rate_hz must be >= 0 (0 = unlimited), got {value}")
    elif name in ("debug_rate_hz", "prior_timeout_s", "diagnostics_period_s") and not (
            math.isfinite(value) and value > 0.0):
        raise ValueError(f"parameter '{name}' must be > 0, got {value}")
    elif name == "prior_radius_m" and not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"prior_radius_m must be >= 0 (0 = from the prior covariance), got {value}")
    elif name == "weather" and value not in ALLOWED_WEATHER:
        raise ValueError(f"weather {value!r} is not valid: use one of {', '.join(ALLOWED_WEATHER)}")
    elif name == "latitude" and not (math.isnan(value) or -90.0 <= value <= 90.0):
        raise ValueError(f"latitude {value} is out of range: use degrees north in [-90, 90] or NaN")
    elif name == "longitude" and not (math.isnan(value) or -180.0 <= value <= 180.0):
        raise ValueError(f"longitude {value} is out of range: use degrees east in [-180, 180] or NaN")
    elif name == "conditions_file" and value and not Path(value).expanduser().is_file():
        raise ValueError(f"conditions_file '{value}' does not exist: give a YAML file or leave it empty")
    return value


def read_config(node: Node) -> LocalizerConfig:
    values = {p.name: check_value(p.name, node.get_parameter(p.name).value) for p in PARAMETERS}
    values["map"] = Path(values["map"]).expanduser()
    return LocalizerConfig(**values)


class LatestFrame:
    """One-slot mailbox: `put` replaces an unprocessed frame (returns True when it dropped one)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False

    def put(self, item: Any) -> bool:
        with self._cond:
            dropped = self._item is not None
            self._item = item
            self._cond.notify()
            return dropped

    def take(self, timeout: float) -> Any:
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Stats:
    """Counters and rolling latency windows for /diagnostics (thread-safe)."""

    WINDOW = 200

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = dict(received=0, dropped=0, processed=0, localized=0, not_localized=0, bad_input=0,
                           errors=0, encoder_switches=0)
        self.latency: dict[str, deque] = {}
        self.last_reason = ""
        self.last_error = ""

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def time(self, stage: str, ms: float) -> None:
        with self.lock:
            self.latency.setdefault(stage, deque(maxlen=self.WINDOW)).append(float(ms))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = dict(self.counts)
            for stage, win in sorted(self.latency.items()):
                vals = sorted(win)
                out[f"latency_{stage}_ms_median"] = statistics.median(vals)
                out[f"latency_{stage}_ms_p95"] = vals[min(len(vals) - 1, int(0.95 * len(vals)))]
            out["last_reason"], out["last_error"] = self.last_reason, self.last_error
        out["drop_rate"] = out["dropped"] / out["received"] if out["received"] else 0.0
        return out


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20
    except OSError:
        return float("nan")


class LocalizerNode(Node):
    """Subscribes to a camera, publishes the pose of the matching map image (see docs/localizer.md)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self)
        self.stats = Stats()
        self._mailbox = LatestFrame()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._sel_lock = threading.Lock()
        self._prior_lock = threading.Lock()
        self._prior: tuple[float, Any] | None = None
        self._warned: set[str] = set()
        self._last_log: tuple[str, float] = ("", 0.0)
        self._last_debug = 0.0
        self._domain_in_use = ""
        self._last_stamp: float | None = None

    # ------------------------------------------------------------------------------------------ setup

    def start(self) -> None:
        """Validate parameters, load map and models, then open topics (so no frame arrives before we can
        serve it). Raises ValueError (and the map/model errors) with one-line messages."""
        from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
        from disam_ros.retrieval import SearchConfig

        cfg = self.cfg = read_config(self)
        check_value("domain", cfg.domain)
        self.reloc = Relocalizer.from_map(cfg.map, RelocalizerConfig(
            coarse_checkpoint=cfg.coarse_checkpoint, fine_checkpoint=cfg.fine_checkpoint,
            search=SearchConfig(top_n=cfg.top_n, top_k=cfg.top_k, min_confidence=cfg.min_confidence,
                                device=cfg.device),
            weather=cfg.weather, domain=cfg.domain, latitude=cfg.latitude, longitude=cfg.longitude,
            conditions_file=cfg.conditions_file, condition_table=cfg.condition_table))
        self.localizer, self.selector, self.map = self.reloc.localizer, self.reloc.selector, self.reloc.map
        self.model_domains = tuple(self.localizer.coarse.domains)
        self.frame_id = cfg.frame_id or self.map.frame_id
        self.device = str(self.localizer.coarse.device)
        if not self.reloc.has_site:
            self.get_logger().warning("map has no latitude/longitude and none were given: daylight cannot be "
                                      "derived from stamps; set parameters latitude and longitude")
        for w in self.selector.warnings:
            self.get_logger().warning(w)
        self._selection = self.selector.select(None)
        self._dyn = dict(max_rate_hz=cfg.max_rate_hz, publish_debug_image=cfg.publish_debug_image,
                         debug_rate_hz=cfg.debug_rate_hz, prior_timeout_s=cfg.prior_timeout_s,
                         prior_radius_m=cfg.prior_radius_m)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        out = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_pose = self.create_publisher(PoseStamped, "~/pose", out)
        self.pub_pose_cov = self.create_publisher(PoseWithCovarianceStamped, "~/pose_with_covariance", out)
        self.pub_candidates = self.create_publisher(PoseArray, "~/candidates", out)
        self.pub_loop = self.create_publisher(String, "~/loop_closure", out)
        self.pub_debug = self.create_publisher(Image, "~/debug_image", QoSProfile(depth=2))
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", out)

        self._warm_up()  # before subscribing: a matched subscription means the node is ready
        rel = ReliabilityPolicy.RELIABLE if cfg.image_qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
        img_qos = QoSProfile(depth=2, history=HistoryPolicy.KEEP_LAST, reliability=rel)
        if cfg.compressed:
            self.sub_image = self.create_subscription(CompressedImage, "image/compressed",
                                                      lambda m: self._on_image(m, compressed_to_rgb), img_qos)
        else:
            self.sub_image = self.create_subscription(Image, "image", lambda m: self._on_image(m, image_to_rgb),
                                                      img_qos)
        self.sub_prior = self.create_subscription(PoseWithCovarianceStamped, "prior", self._on_prior, 5)
        self.diag_timer = self.create_timer(cfg.diagnostics_period_s, self.publish_diagnostics)
        self._worker = threading.Thread(target=self._run, name="disam_localizer_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"serving map '{cfg.map}' ({len(self.map)} images, frame '{self.frame_id}') on {self.device}; "
            f"domains {list(self.model_domains)} (table '{self.selector.table.name}', fallback "
            f"'{self.selector.fallback}'); listening on {self.sub_image.topic_name} "
            f"({'CompressedImage' if cfg.compressed else 'Image'})")

    def _warm_up(self) -> None:
        t0 = time.monotonic()
        self.reloc.warm_up()
        self.get_logger().debug(f"warm-up query took {1e3 * (time.monotonic() - t0):.0f} ms")

    def close(self) -> None:
        """Stop and join the worker (a frame in flight finishes first)."""
        self._stop.set()
        self._mailbox.close()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None

    # ------------------------------------------------------------------------------------------ callbacks

    def _on_image(self, msg: Any, decode: Callable[[Any], np.ndarray]) -> None:
        """Executor thread: stash and return at once (never decode or infer here)."""
        self.stats.add("received")
        if self._mailbox.put((msg, decode, time.monotonic())):
            self.stats.add("dropped")

    def _on_prior(self, msg: PoseWithCovarianceStamped) -> None:
        if msg.header.frame_id and msg.header.frame_id != self.frame_id:
            self._warn_once(f"prior frame '{msg.header.frame_id}' differs from the map frame '{self.frame_id}': "
                            "ignoring priors; publish them in the map frame")
            return
        with self._prior_lock:
            self._prior = (time.monotonic(), msg)

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        """Run-time changes: weather/domain switch the encoder; rates and prior settings apply next frame."""
        try:
            for p in params:  # validate everything first: a refused request changes nothing
                check_value(p.name, p.value)
                if p.name == "domain" and p.value and p.value not in self.model_domains:
                    raise ValueError(f"domain {p.value!r} is not a model domain: use one of "
                                     f"{list(self.model_domains)} or '' for automatic selection")
            with self._sel_lock:
                for p in params:
                    if p.name == "weather":
                        self.selector.set_weather(p.value)
                    elif p.name == "domain":
                        self.selector.set_override(p.value)
                    elif p.name == "min_confidence":  # the localizer reads its config on every query
                        self.localizer.config = replace(self.localizer.config, min_confidence=float(p.value))
                    elif p.name in self._dyn:
                        self._dyn[p.name] = float(p.value) if p.name in _FLOAT_PARAMS else p.value
                if any(p.name in ("weather", "domain") for p in params):
                    self._selection = self.selector.select(self._last_stamp)
                    self._note_domain(self._selection)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------------------------------ worker

    def _run(self) -> None:
        last_start = 0.0
        while not self._stop.is_set():
            rate = self._dyn["max_rate_hz"]
            if rate > 0.0:
                wait = last_start + 1.0 / rate - time.monotonic()
                if wait > 0.0 and self._stop.wait(wait):
                    break
            item = self._mailbox.take(timeout=0.2)
            if item is None:
                continue
            last_start = time.monotonic()
            try:
                self._process(*item)
            except Exception as exc:  # noqa: BLE001  (one bad frame must never kill the node)
                self.stats.add("errors")
                self._error(f"frame failed: {type(exc).__name__}: {exc}")

    def _process(self, msg: Any, decode: Callable[[Any], np.ndarray], t_recv: float) -> None:
        t0 = time.monotonic()
        self.stats.add("processed")
        self.stats.time("queue", 1e3 * (t0 - t_recv))
        try:
            rgb = decode(msg)
        except ValueError as exc:
            self.stats.add("bad_input")
            self._error(f"dropping frame {M.stamp_to_sec(msg.header.stamp):.3f}: {exc}")
            return
        t1 = time.monotonic()
        stamp_sec = M.stamp_to_sec(msg.header.stamp)
        with self._sel_lock:
            # An unstamped frame (0) gets the wall clock, so daylight still follows the real sun.
            self._last_stamp = stamp_sec if stamp_sec > 0 else time.time()
            sel = self._selection = self.selector.select(self._last_stamp)
            self._note_domain(sel)
        prior = self._current_prior()
        t2 = time.monotonic()
        res = self.localizer.localize(rgb, sel.domain, prior)
        t3 = time.monotonic()
        self.stats.time("decode", 1e3 * (t1 - t0))
        self.stats.time("select", 1e3 * (t2 - t1))
        self.stats.time("localize", 1e3 * (t3 - t2))
        for stage, ms in (getattr(res, "timings_ms", None) or {}).items():
            self.stats.time(f"retrieval_{stage}", ms)
        if not res.ok:
            self.stats.add("not_localized")
            with self.stats.lock:
                self.stats.last_reason = str(res.reason)
            return
        if not M.pose_is_finite(res.position, res.quat):
            self.stats.add("errors")
            self._error(f"retrieval returned a non-finite pose for map index {res.index}: not publishing; "
                        "rebuild the map (its poses hold NaN)")
            return
        header = M.make_header(msg.header.stamp, self.frame_id)
        self.pub_pose.publish(M.pose_stamped(res, header))
        self.pub_pose_cov.publish(M.pose_with_covariance(res, header))
        self.pub_candidates.publish(M.candidates(res, self.map.positions, self.map.quats, header))
        self.pub_loop.publish(M.loop_closure(res, msg.header.stamp, sel.domain, self.frame_id))
        t4 = time.monotonic()
        self.stats.add("localized")
        self.stats.time("publish", 1e3 * (t4 - t3))
        self.stats.time("total", 1e3 * (t4 - t_recv))
        with self.stats.lock:
            self.stats.last_reason = str(res.reason or "ok")
        if self._dyn["publish_debug_image"] and t4 - self._last_debug >= 1.0 / self._dyn["debug_rate_hz"]:
            self._last_debug = t4
            self._publish_debug(rgb, res, header, sel.domain)

    def _current_prior(self) -> Any:
        with self._prior_lock:
            prior = self._prior
        if prior is None or time.monotonic() - prior[0] > self._dyn["prior_timeout_s"]:
            return None
        from disam_ros.retrieval import SpatialPrior

        msg = prior[1]
        p = msg.pose.pose.position
        pos = np.array([p.x, p.y, p.z], np.float64)
        radius = self._dyn["prior_radius_m"]
        cov = np.asarray(msg.pose.covariance, np.float64).reshape(6, 6)[:3, :3]
        try:
            if radius > 0.0:
                return SpatialPrior(pos, radius=radius)
            return SpatialPrior(pos, covariance=0.5 * (cov + cov.T))
        except ValueError as exc:  # unusable prior: search globally rather than fail the frame
            self._warn_once(f"ignoring spatial prior: {exc} (or set prior_radius_m)")
            return None

    def _publish_debug(self, rgb: np.ndarray, res: Any, header: Any, domain: str) -> None:
        """Grad-SAM maps of the query and the matched map image, each against the other (paper Fig. 1)."""
        if self.pub_debug.get_subscription_count() == 0:
            return
        q_heat, m_heat = self.reloc.activation_maps(res)
        map_rgb = self.reloc.map_image(res.index)
        caption = f"{domain} -> #{res.index} {res.name} conf {float(res.confidence):.2f}"
        self.pub_debug.publish(M.debug_image_msg(M.render_debug(rgb, q_heat, map_rgb, m_heat, caption), header))

    # ------------------------------------------------------------------------------------------ reporting

    def _note_domain(self, sel: conditions.Selection) -> None:
        if sel.domain != self._domain_in_use:
            if self._domain_in_use:
                self.stats.add("encoder_switches")
            self.get_logger().info(f"encoder '{self._domain_in_use or '-'}' -> '{sel.domain}': {sel.reason} "
                                   f"[weather {sel.query.weather}, daylight {sel.query.daylight}, "
                                   f"foliage {sel.query.foliage}]")
            self._domain_in_use = sel.domain

    def _error(self, text: str) -> None:
        """One log line per bad frame; identical lines within 5 s are suppressed (still counted)."""
        now = time.monotonic()
        with self.stats.lock:
            self.stats.last_error = text
        if text == self._last_log[0] and now - self._last_log[1] < 5.0:
            return
        self._last_log = (text, now)
        self.get_logger().error(text)

    def _warn_once(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            self.get_logger().warning(text)

    def diagnostics_values(self) -> dict[str, Any]:
        snap = self.stats.snapshot()
        sel = self._selection
        values: dict[str, Any] = {
            "domain": sel.domain, "domain_reason": sel.reason, "weather": sel.query.weather,
            "daylight": sel.query.daylight, "foliage": sel.query.foliage, "season": sel.query.season,
            "solar_elevation_deg": sel.query.elevation_deg if sel.query.elevation_deg is not None else NAN,
            "domain_override": self.selector.override, "condition_table": self.selector.table.name,
            "model_domains": ",".join(self.model_domains), "map_size": len(self.map), "map_frame": self.frame_id,
            "device": self.device, "rss_mb": _rss_mb(),
        }
        values.update(snap)
        return values

    def publish_diagnostics(self) -> None:
        try:
            self._publish_diagnostics()
        except Exception as exc:  # noqa: BLE001  (a reporting bug must not stop localization)
            self._error(f"diagnostics failed: {type(exc).__name__}: {exc}")

    def _publish_diagnostics(self) -> None:
        v = self.diagnostics_values()
        level, message = DiagnosticStatus.OK, f"localizing with encoder '{v['domain']}'"
        if v["errors"] or v["bad_input"]:
            level, message = DiagnosticStatus.WARN, f"{v['bad_input']} bad frames, {v['errors']} errors"
        if v["processed"] and not v["localized"]:
            level, message = DiagnosticStatus.WARN, f"no frame localized yet ({v['last_reason']})"
        name = f"{self.get_fully_qualified_name()}: relocalization"
        self.pub_diag.publish(M.diagnostic_array(self.get_clock().now().to_msg(), name, f"disam_ros/{self.device}",
                                                 level, message, v))


# ---------------------------------------------------------------------------------------------- main


def ros_argv(argv: list[str]) -> list[str]:
    """`--params-file F` (our flag, before --ros-args) -> rcl's `--ros-args --params-file F`."""
    if "--ros-args" in argv:
        cut = argv.index("--ros-args")
        own, ros = argv[:cut], argv[cut:]
    else:
        own, ros = argv, []
    parser = argparse.ArgumentParser(prog="disam-localizer", description=__doc__.splitlines()[0])
    parser.add_argument("--params-file", help="ROS 2 parameters YAML (e.g. config/localizer.yaml)")
    args = parser.parse_args(own)
    if args.params_file:
        if not Path(args.params_file).is_file():
            parser.error(f"params file '{args.params_file}' not found")
        ros = ["--ros-args", "--params-file", args.params_file, *ros]
    return ros


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; exit 0 on a clean stop, 2 on a configuration error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ros = ros_argv(argv)
    rclpy.init(args=["disam-localizer", *ros], signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    node = LocalizerNode()
    executor = SingleThreadedExecutor()
    rc = 0
    try:
        node.start()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        node.get_logger().info("shutting down")
    except Exception as exc:  # noqa: BLE001  (configuration errors: one line, no traceback)
        node.get_logger().error(f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc))
        rc = 2
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        for s, h in previous.items():
            signal.signal(s, h)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
