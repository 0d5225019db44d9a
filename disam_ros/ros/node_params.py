"""The localizer node's parameters: one table (name, default, description, dynamic?) and their validation
(the command line that feeds them to rcl: node_cli).

Kept apart from the node so the launch file, config/localizer.yaml, the launcher and docs/localizer.md can be checked
against one list (test/test_launch_params.py), and so every way a user can get a parameter wrong — a bad value,
a wrong type, a misspelt name, an unparsable params file — ends in one line naming the fix.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rclpy.node import Node

from disam_ros import conditions
from disam_ros.ros.node_cli import ConfigError, check_params_file, ros_argv  # noqa: F401  (re-exported: P.ros_argv)
from disam_ros.ros.node_signals import NODE_NAME, StopSignals, fail  # noqa: F401  (re-exported: P.StopSignals, P.fail)
from disam_ros.ros.param_decl import declare_all, one_line, refuse_unknown  # noqa: F401  (re-exported)
from disam_ros.verify.config import FEATURE_CHOICES

DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
ALLOWED_WEATHER = (*conditions.WEATHERS, conditions.UNKNOWN)
IMAGE_QOS = ("reliable", "best_effort")
MODES = ("sequence", "single", "window")
CONDITION_SOURCES = ("clock", "auto", "fixed")  # = disam_ros.relocalizer.CONDITION_SOURCES (tested)
UNVERIFIED_POLICIES = ("publish", "withhold")
MIN_VERIFY_INLIERS = 6  # a 6-DoF pose needs at least this many (disam_ros.verify.verifier.VerifyConfig)
OFF_AT_ZERO = {"verify_track_frames": "no map-point tracking", "verify_unguided_candidates": "guided matching only",
               "verify_dense_candidates": "no dense search", "verify_belief_sigma_m": "off, metres",
               "verify_polish_images": "no polish", "verify_flow_frames": "no optical-flow tracking",
               "verify_prior_min_inliers": "no search around the flow pose",
               "verify_motion_speed_factor": "no motion check"}  # parameters >= 0 that 0 turns off
TOPIC_RE = re.compile(r"(?:~/|/)?[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*")
NAN = float("nan")


@dataclass(frozen=True)
class Param:
    """One node parameter: default, description (shown by `ros2 param describe`), run-time changeable?"""

    name: str
    default: Any
    description: str
    dynamic: bool = False
    constraints: str = ""


PARAMETERS: tuple[Param, ...] = (
    Param("map", "", "Map directory written by disam-build-map (required).", constraints="existing directory"),
    Param("coarse_checkpoint", "", "Coarse model checkpoint; empty = the one recorded in the map."),
    Param("fine_checkpoint", "", "Fine (re-ranking) model checkpoint; empty = the one recorded in the map."),
    Param("device", "auto", "Torch device for the encoders.", constraints="auto, cpu, cuda, cuda:N, mps"),
    Param("threads", 0, "CPU threads for the encoders and the map search; 0 = min(2, cores): more threads made "
          "the per-frame work slower (docs/benchmarks.md, CPU threads).", constraints=">= 0"),
    Param("top_n", 3, "Coarse candidates re-ranked by the fine model (paper: 3).", constraints=">= 1"),
    Param("top_k", 5, "Scored candidates published on ~/candidates.", constraints=">= 1"),
    Param("mode", "sequence", "How frames are combined: sequence (Bayes filter over map places along the "
          "vehicle's stream), window (SeqSLAM best path over the last frames), single (each frame alone).",
          constraints=", ".join(MODES)),
    Param("min_speed_mps", 0.0, "Slowest vehicle speed between frames when no odometry arrives (0 = stops "
          "allowed).", constraints=">= 0 and <= max_speed_mps"),
    Param("max_speed_mps", 15.0, "Fastest vehicle speed between frames when no odometry arrives.",
          constraints="> 0 and >= min_speed_mps"),
    Param("speed_change_prob", 0.1, "Per frame, share of the belief moving to each neighbouring speed bin (how "
          "readily the vehicle changes speed without odometry).", constraints="0 <= p < 0.5"),
    Param("standstill_ratio", 0.1, "Hold the belief on frames that differ from the previous one by less than "
          "this share of a typical moving step (a stopped vehicle); 0 = off.", constraints="0 <= r < 1"),
    Param("odom_topic", "", "nav_msgs/Odometry topic: the distance travelled between frames moves the belief; "
          "empty = none (the speed band).", constraints="empty or a topic name"),
    Param("loop_closure_min_consecutive", 3, "A loop-closure hint on ~/loop_closure only after this many "
          "consecutive consistent frames.", constraints=">= 1"),
    Param("min_confidence", NAN, "With a map calibrated for the mode: no pose below this calibrated probability "
          "of being within the tolerance; NaN = the threshold the calibration chose (its precision target, 99 %).",
          dynamic=True, constraints="0..1 or NaN"),
    Param("min_heuristic_confidence", 0.0, "With a map not calibrated for the mode: no pose below this "
          "heuristic confidence (0 = publish every answer, the behaviour before calibration).", dynamic=True,
          constraints="0..1"),
    Param("verify", True, "On a map with geometry: match the answer's map keyframes with local features and "
          "solve the metric 6-DoF pose (published when verified); false = retrieval-only."),
    Param("verify_candidates", 5, "Map places tried per frame, best first (the answer, then its runners-up).",
          constraints=">= 1"),
    Param("verify_min_inliers", 15, "RANSAC inliers a pose needs to count as verified.",
          constraints=f">= {MIN_VERIFY_INLIERS}"),
    Param("verify_track_frames", 5, "Sequence/window modes: a frame whose places do not verify is solved against "
          "the last verified frame's map points (within 1 s), up to this many in a row; 0 = off.", constraints=">= 0"),
    Param("verify_turn_search_deg", 25.0, "When no map place verifies guided by its own pose, the best one guides "
          "again turned this many degrees left and right about the camera's vertical (a camera looking elsewhere "
          "than the map images); 0 = off.", constraints="0 <= x < 90"),
    Param("verify_first_scale", 0.5, "The map places are first looked at with the image's SIFT features at this "
          "share of the map's detection scale (a quarter of SIFT's cost at 0.5); the first sure verified look is "
          "the frame's pose, otherwise the full-scale features run every step; 1 = off.", constraints="0.1 <= x <= 1"),
    Param("verify_unguided_candidates", 0, "When no map place verifies guided, nor turned, this many of them are "
          "matched unguided; a solve from >= 12 matches guides a second, tight match, judged by the usual gate: for "
          "cameras 1-2 m and 10-30 deg off every map image; 0 = off (held out it verified a look-alike 64 m away).",
          constraints=">= 0"),
    Param("verify_dense_candidates", 2, "When still no map place verifies (tracking included), this many of them are "
          "searched densely: their map keypoints looked for in the image by gradient descriptors, without the "
          "image's own keypoints (rain, snow, fog); needs a map built with them; 0 = off.", constraints=">= 0"),
    Param("verify_dense_with_prior", False, "Single mode: the dense search also runs on frames whose candidates a "
          "`prior` gated (off: held out it verified two frames 6.6-7.7 m off at one look-alike block)."),
    Param("verify_dense_max_tilt_deg", 4.0, "A dense-search pose whose camera is tilted (pitch, roll) from the map "
          "image's by more than this is refused (a vehicle camera keeps its pitch and roll; wrong dense poses "
          "tilt); 0 = off, for a camera mounted differently from the map's.", constraints="0 <= x <= 180"),
    Param("verify_belief_sigma_m", 2.0, "Sequence mode: a verified pose re-weights the belief towards the map places "
          "within about this distance of it (floored, so one wrong pose is outvoted later); 0 = off.",
          constraints=">= 0"),
    Param("verify_motion_speed_factor", 1.5, "Sequence/window modes: a verified pose farther from the last verified "
          "one (at most 1 s old) than this x max_speed_mps x the time between them, plus 2 m, is refused as "
          "'jumped' (a look-alike place; 0 = off).", constraints=">= 0"),
    Param("verify_flow_frames", 5, "Sequence/window modes: frames in a row tracked by optical flow from the last "
          "verified one when the camera moved under 1 m since (a 10-30 Hz camera), a full verification in "
          "between; 0 = off (docs/pose.md).", constraints=">= 0"),
    Param("verify_polish_images", 3, "A verified pose (SIFT) is matched again from itself against this many map "
          "images around it, within 3 % of the width of where it puts their points, and solved from the pooled "
          "matches; kept when as well supported and within 0.5 m / 2 deg (a more exact pose; docs/pose.md); "
          "0 = off.", constraints=">= 0"),
    Param("verify_prior_min_inliers", 40, "A frame optical flow posed but does not answer (its chain is spent; a "
          "renewal keyframe) is first matched around its flow pose against the 3 map images nearest it and "
          "answered by that solve when it holds this many inliers (docs/pose.md); 0 = off.", constraints=">= 0"),
    Param("verify_regate_far_poses", True, "A pose (SIFT) refused only for lying over 10 m / 20 deg from the map "
          "image that guided it is judged again at itself: up to 2 map images near it matched and solved, verified "
          "when one passes the gate and agrees within 0.5 m / 2 deg (held out: precision unchanged; docs/pose.md)."),
    Param("verify_features", "map", "Local features a pose is verified with: map = what the map was built for "
          "(disam-build-map --verify-features), sift, learned (the map's learned keypoints instead of SIFT) or both "
          "(learned when SIFT verifies nothing); learned/both need a map built with them (docs/keypoints.md).",
          constraints=", ".join(FEATURE_CHOICES)),
    Param("verify_keyframes", False, "Verify beside the frame loop: frames follow the last verified pose by optical "
          "flow, and a frame goes to a lower-priority thread as a keyframe when flow fails and the thread is free; "
          "its answer is that frame's only within verify_wait_ms, later it renews the flow chain and, verified, "
          "goes out as a late loop-closure hint (a camera-rate node that keeps up; docs/localizer.md). false = "
          "every frame verified inline."),
    Param("verify_wait_ms", 50.0, "verify_keyframes: how long a frame waits for its own keyframe's answer before it "
          "is answered without it (verification pending).", constraints=">= 0"),
    Param("verify_flow_skips_retrieval", True, "verify_keyframes, mode sequence: a frame optical flow verifies right "
          "after a verified frame is answered without retrieval (no encoder, no search; the belief moves by the "
          "two poses' distance or odometry); false = every frame retrieved."),
    Param("verify_budget_ms", 0.0, "Time box of one frame's verification: no further step or candidate starts "
          "after this many ms (the first always runs; diagnostics verify_timed_out); 0 = none.", constraints=">= 0"),
    Param("unverified_policy", "publish", "While verification is active: publish = a frame that passes the "
          "confidence gate is published even when not verified (the retrieval's pose; verified frames always are); "
          "withhold = only verified frames are published.", dynamic=True, constraints=", ".join(UNVERIFIED_POLICIES)),
    Param("camera_info_topic", "camera_info", "sensor_msgs/CameraInfo of the camera (intrinsics for "
          "verification); a relative name sits beside the image topic as with image_transport (image remapped to "
          "/cam/image_raw -> /cam/camera_info); empty = none (the map camera is assumed).",
          constraints="empty or a topic name"),
    Param("compressed", False, "Subscribe to sensor_msgs/CompressedImage on image/compressed instead of "
          "sensor_msgs/Image on image."),
    Param("image_qos", "reliable", "Image subscription reliability: reliable, or best_effort for sensor-data "
          "publishers.", constraints="reliable, best_effort"),
    Param("max_rate_hz", 0.0, "Process at most this many frames per second (0 = as fast as possible); "
          "frames in between are dropped and counted.", dynamic=True, constraints=">= 0"),
    Param("condition_source", "clock", "How the encoder's condition is found: clock (stamp + weather), auto "
          "(recogniser beside the coarse checkpoint, fused with the solar prior; none -> clock with a warning), "
          "fixed (parameter domain).", constraints=", ".join(CONDITION_SOURCES)),
    Param("condition_hysteresis_margin", 0.2, "auto: a new condition must lead the current one by this smoothed "
          "probability ...", constraints="0..1"),
    Param("condition_hysteresis_hold", 3, "... for this many consecutive frames before the encoder switches.",
          constraints=">= 1"),
    Param("condition_prior_weight", 1.0, "auto: weight of the solar-elevation prior against the image (0 = the "
          "image alone).", constraints=">= 0"),
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
    Param("log_throttle_s", 5.0, "Warnings and errors of one kind (bad frames, refused CameraInfo, ...) are logged "
          "at most once per this many seconds; the next line says how many were held back (all are counted in "
          "/diagnostics).", constraints="> 0"),
    Param("frame_id", "", "frame_id of published poses; empty = the map's frame."),
    Param("allow_unverified_model", False, "Accept a map or checkpoint without a recorded sha256 (logged); "
          "default: refuse, so a map is never served with a model it was not built with."),
    Param("autostart", True, "disam-localizer configures and activates itself at start; false = stay "
          "unconfigured until a lifecycle manager (e.g. nav2_lifecycle_manager) drives it."),
)
PARAMETER_NAMES = tuple(p.name for p in PARAMETERS)
FLOAT_PARAMS = frozenset(p.name for p in PARAMETERS if isinstance(p.default, float))


@dataclass(frozen=True)
class LocalizerConfig:
    """Validated parameter values."""

    map: Path
    coarse_checkpoint: str
    fine_checkpoint: str
    device: str
    threads: int
    top_n: int
    top_k: int
    mode: str
    min_speed_mps: float
    max_speed_mps: float
    speed_change_prob: float
    standstill_ratio: float
    odom_topic: str
    loop_closure_min_consecutive: int
    min_confidence: float
    min_heuristic_confidence: float
    verify: bool
    verify_candidates: int
    verify_min_inliers: int
    verify_track_frames: int
    verify_turn_search_deg: float
    verify_unguided_candidates: int
    verify_dense_candidates: int
    verify_dense_with_prior: bool
    verify_first_scale: float
    verify_belief_sigma_m: float
    verify_motion_speed_factor: float
    verify_flow_frames: int
    verify_polish_images: int
    verify_prior_min_inliers: int
    verify_dense_max_tilt_deg: float
    verify_regate_far_poses: bool
    verify_features: str
    verify_keyframes: bool
    verify_wait_ms: float
    verify_flow_skips_retrieval: bool
    verify_budget_ms: float
    unverified_policy: str
    camera_info_topic: str
    compressed: bool
    image_qos: str
    max_rate_hz: float
    condition_source: str
    condition_hysteresis_margin: float
    condition_hysteresis_hold: int
    condition_prior_weight: float
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
    log_throttle_s: float
    frame_id: str
    allow_unverified_model: bool
    autostart: bool


def declare_parameters(node: Node) -> None:
    """Declare every localizer parameter with its description; float ones accept integers too (-p x:=2)."""
    declare_all(node, PARAMETERS, FLOAT_PARAMS)


def check_unknown(names: list[str] | tuple[str, ...]) -> None:
    """Refuse parameters the localizer does not declare (rclpy silently ignores them)."""
    refuse_unknown(names, PARAMETER_NAMES, NODE_NAME)


def check_overrides(node: Node) -> None:
    """Unknown names among the overrides rcl gave this node (-p, --params-file entries matching it)."""
    check_unknown(tuple(getattr(node, "_parameter_overrides", {}) or {}))


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"parameter '{name}' must be a number, got {value!r}")
    return float(value)


def check_value(name: str, value: Any) -> Any:
    """Validate one parameter value (also used for run-time changes); returns the normalised value."""
    if name in FLOAT_PARAMS:
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
    elif name == "threads" and value < 0:
        raise ValueError(f"parameter 'threads' must be >= 0 (0 = min(2, cores)), got {value}")
    elif name in ("top_n", "top_k", "verify_candidates") and value < 1:
        raise ValueError(f"parameter '{name}' must be >= 1, got {value}")
    elif name == "min_confidence" and not (math.isnan(value) or 0.0 <= value <= 1.0):
        raise ValueError(f"min_confidence must be in [0, 1] or NaN (= the map calibration's threshold), got {value}")
    elif name == "min_heuristic_confidence" and not 0.0 <= value <= 1.0:
        raise ValueError(f"min_heuristic_confidence must be in [0, 1], got {value}")
    elif name == "mode" and value not in MODES:
        raise ValueError(f"mode {value!r} is not valid: use one of {', '.join(MODES)}")
    elif name in ("min_speed_mps", "max_speed_mps") and not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"parameter '{name}' must be a speed >= 0 in m/s, got {value}")
    elif name == "speed_change_prob" and not (math.isfinite(value) and 0.0 <= value < 0.5):
        raise ValueError(f"speed_change_prob must be in [0, 0.5), got {value}")
    elif name == "standstill_ratio" and not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"standstill_ratio must be in [0, 1) (0 = off), got {value}")
    elif name in ("odom_topic", "camera_info_topic") and value and not TOPIC_RE.fullmatch(value):
        raise ValueError(f"{name} {value!r} is not a ROS topic name: use letters, digits, _ and / "
                         "(e.g. /odom, /camera/camera_info), or leave it empty")
    elif name in OFF_AT_ZERO and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be >= 0 (0 = {OFF_AT_ZERO[name]}), got {value}")
    elif name == "verify_turn_search_deg" and not (math.isfinite(value) and 0.0 <= value < 90.0):
        raise ValueError(f"verify_turn_search_deg must be in [0, 90) degrees (0 = off), got {value}")
    elif name == "verify_first_scale" and not (math.isfinite(value) and 0.1 <= value <= 1.0):
        raise ValueError(f"verify_first_scale must be in [0.1, 1] (1 = off: full-scale features only), got {value}")
    elif name == "verify_dense_max_tilt_deg" and not (math.isfinite(value) and 0.0 <= value <= 180.0):
        raise ValueError(f"verify_dense_max_tilt_deg must be in [0, 180] degrees (0 = off), got {value}")
    elif name == "verify_min_inliers" and value < MIN_VERIFY_INLIERS:
        raise ValueError(f"verify_min_inliers must be >= {MIN_VERIFY_INLIERS} (a 6-DoF pose needs at least "
                         f"{MIN_VERIFY_INLIERS} points), got {value}")
    elif name in ("verify_wait_ms", "verify_budget_ms") and not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be >= 0 ms, got {value}")
    elif name == "verify_features" and value not in FEATURE_CHOICES:
        raise ValueError(f"verify_features {value!r} is not valid: use one of {', '.join(FEATURE_CHOICES)}")
    elif name == "unverified_policy" and value not in UNVERIFIED_POLICIES:
        raise ValueError(f"unverified_policy {value!r} is not valid: use one of {', '.join(UNVERIFIED_POLICIES)}")
    elif name == "loop_closure_min_consecutive" and value < 1:
        raise ValueError(f"loop_closure_min_consecutive must be >= 1, got {value}")
    elif name == "image_qos" and value not in IMAGE_QOS:
        raise ValueError(f"image_qos {value!r} is not valid: use one of {IMAGE_QOS}")
    elif name == "max_rate_hz" and not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"max_rate_hz must be >= 0 (0 = unlimited), got {value}")
    elif name in ("debug_rate_hz", "prior_timeout_s", "diagnostics_period_s", "log_throttle_s") and not (
            math.isfinite(value) and value > 0.0):
        raise ValueError(f"parameter '{name}' must be > 0, got {value}")
    elif name == "prior_radius_m" and not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"prior_radius_m must be >= 0 (0 = from the prior covariance), got {value}")
    elif name == "condition_source" and value not in CONDITION_SOURCES:
        raise ValueError(f"condition_source {value!r} is not valid: use one of {', '.join(CONDITION_SOURCES)}")
    elif name == "condition_hysteresis_margin" and not 0.0 <= value <= 1.0:
        raise ValueError(f"condition_hysteresis_margin must be in [0, 1], got {value}")
    elif name == "condition_hysteresis_hold" and value < 1:
        raise ValueError(f"condition_hysteresis_hold must be >= 1 frame, got {value}")
    elif name == "condition_prior_weight" and not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"condition_prior_weight must be >= 0 (0 = the image alone), got {value}")
    elif name == "weather" and value not in ALLOWED_WEATHER:
        raise ValueError(f"weather {value!r} is not valid: use one of {', '.join(ALLOWED_WEATHER)}")
    elif name == "latitude" and not (math.isnan(value) or -90.0 <= value <= 90.0):
        raise ValueError(f"latitude {value} is out of range: use degrees north in [-90, 90] or NaN")
    elif name == "longitude" and not (math.isnan(value) or -180.0 <= value <= 180.0):
        raise ValueError(f"longitude {value} is out of range: use degrees east in [-180, 180] or NaN")
    elif name == "conditions_file" and value and not Path(value).expanduser().is_file():
        raise ValueError(f"conditions_file '{value}' does not exist: give a YAML file or leave it empty")
    return value


def apply_changes(node: Any, params: list) -> None:
    """Run-time changes of a LocalizerNode: weather/domain switch the encoder; rates, prior settings and the
    confidence gates apply from the next frame. Everything is validated first (ValueError, one line), so a
    refused request changes nothing; before configure only the values are checked (configure reads them)."""
    for p in params:
        check_value(p.name, p.value)
        if p.name == "domain" and p.value and node.reloc is not None and p.value not in node.model_domains:
            raise ValueError(f"domain {p.value!r} is not a model domain: use one of {list(node.model_domains)} "
                             "or '' for automatic selection")
        if p.name == "domain" and not p.value and node.get_parameter("condition_source").value == "fixed":
            raise ValueError("condition_source is 'fixed': 'domain' cannot be empty (name a model domain)")
    if node.reloc is None:
        return
    selector = node.reloc.selector
    for p in params:
        if p.name == "weather":
            selector.set_weather(p.value)
        elif p.name == "domain":
            selector.set_override(p.value)
        elif p.name in node.dyn:
            node.dyn[p.name] = float(p.value) if p.name in FLOAT_PARAMS else p.value
    if any(p.name in ("weather", "domain") for p in params):
        node.note_selection(node.reloc.select(node.last_stamp), node.last_stamp)


def read_config(node: Node) -> LocalizerConfig:
    values = {p.name: check_value(p.name, node.get_parameter(p.name).value) for p in PARAMETERS}
    values["map"] = Path(values["map"]).expanduser()
    if values["max_speed_mps"] <= 0.0 or values["min_speed_mps"] > values["max_speed_mps"]:
        raise ValueError(f"speed band [{values['min_speed_mps']}, {values['max_speed_mps']}] m/s is empty: set "
                         "0 <= min_speed_mps <= max_speed_mps and max_speed_mps > 0")
    if values["condition_source"] == "fixed" and not values["domain"]:
        raise ValueError("condition_source 'fixed' needs the model domain to use: set parameter 'domain'")
    return LocalizerConfig(**values)
