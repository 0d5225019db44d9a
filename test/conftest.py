"""Test-session environment: DDS stays on loopback with a private domain, before anything creates an rclpy context."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from disam_ros.ros import env as dds_env

# Must happen before any test creates an rclpy context (rclpy reads these then); node processes the tests start
# inherit them. Explicit, because importing disam_ros.ros changes nothing: the package's own tests export
# loopback discovery and a private random ROS_DOMAIN_ID (never the user's domain, never the network).
if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: each worker its own domain, apart from the others'
    _worker = int(os.environ["PYTEST_XDIST_WORKER"].lstrip("gw") or 0)
    _low, _high = dds_env.PRIVATE_DOMAINS
    _base = int(os.environ.get(dds_env.PRIVATE_MARKER) or _low)
    os.environ[dds_env.DOMAIN_VAR] = os.environ[dds_env.PRIVATE_MARKER] = str(
        _low + (_base - _low + 1 + _worker) % (_high - _low + 1))
    # ... and its own share of the cores (processes it starts inherit it): torch and faiss then size their thread
    # pools to that share (disam_ros.threads), where two workers of two threads each on two cores stalled each other
    _count, _cpus = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1), sorted(os.sched_getaffinity(0))
    if 1 < _count <= len(_cpus):
        os.sched_setaffinity(0, _cpus[_worker::_count])
dds_env.isolated_env()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config):
    """With xdist workers (each pinned to its core above): one OpenBLAS thread each. Why: numpy is loaded before this
    file (pytest-randomly imports it), so its OpenBLAS pool was sized to both cores before the pinning and its
    threads ran outside it, spinning on the other worker's core: `make test` 7 min 56 s -> 7 min 14 s with the tests'
    own CPU 532 -> 400 s (2026-11-29). The variable must be in the workers' environment when they start, so the
    controller sets it here, before it starts them."""
    if getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OPENBLAS_NUM_THREADS"] = "1"


def pytest_collection_modifyitems(config, items):
    """Tests marked `long` first. Why: pytest-randomly shuffles the order (before this hook, which keeps it among the
    long tests and among the rest), and on two workers a 60-70 s test drawn late ran alone at the end: `make test`
    took 5 min 37 s to 6 min 47 s over runs of one tree. Started first, the short tests fill in around them: `make
    test` deals the list's halves to the two workers (`--dist worksteal`), so one starts on the long tests, and
    whichever runs out takes half of the other's queue."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(autouse=True)
def restore_package_logger():
    """Leave the `disam_ros` logger as each test found it: a CLI's main() run in-process (disam-train,
    disam-slam-eval) installs a stderr handler, and its lines would reach the stderr later tests read."""
    import logging

    log = logging.getLogger("disam_ros")
    handlers, level = list(log.handlers), log.level
    yield
    log.handlers[:] = handlers
    log.setLevel(level)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real images beside the checkout; tests that need them skip where they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real image data not found at {SHARED_DATA} (it lives beside the repository)")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """Run torch single-threaded for the test: micro models are thousands of tiny ops, and with two
    threads on a busy shared CPU they stall on OpenMP barriers (seen 10x slower under load)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_eval_world(tmp_path_factory):
    """A 64-px synthetic world (reference + 3 query drives x 10 frames), random-init micro coarse/fine
    models for domains sunny/night/snow, and a map of the reference drive built with `disam-build-map`."""
    import torch

    from disam_ros.data.synthetic import WorldConfig, make_world
    from disam_ros.maps import MapBuildConfig, build_map_from_folder
    from disam_ros.model import DisamNet, preset, save_checkpoint

    tmp = tmp_path_factory.mktemp("eval_world")
    world = make_world(WorldConfig(seed=1, image_size=64, frames=10, blocks=3, workers=1,
                                   conditions=("sunny", "sunny_repeat", "night", "snow")),
                       tmp / "world", progress=False)
    ckpts = {}
    for role, seed in (("coarse", 0), ("fine", 1)):
        torch.manual_seed(seed)
        cfg = preset("micro", ("sunny", "night", "snow"))
        ckpts[role] = save_checkpoint(tmp / f"{role}.pt", DisamNet(cfg), cfg)
    build_map_from_folder(MapBuildConfig(out=tmp / "map", dataset=world, condition="sunny", coarse=ckpts["coarse"],
                                         fine=ckpts["fine"], progress=False))
    return {"world": world, "map": tmp / "map", **ckpts, "tmp": tmp}


@pytest.fixture(scope="session")
def geometry_world(tmp_path_factory):
    """A 320x240 town (seed 2, 14 frames: a `sunny` reference drive with depth and a `sunny_repeat` query drive)
    and a map of the reference with depth geometry and the shipped demo weights: what verification, the node's
    metric outputs and the refined evaluation rows are tested on (rendered once per session)."""
    from disam_ros.data.synthetic import WorldConfig, make_world
    from disam_ros.maps import MapBuildConfig, build_map_from_folder

    assets = Path(__file__).resolve().parents[1] / "disam_ros" / "assets"
    tmp = tmp_path_factory.mktemp("geometry_world")
    world = make_world(WorldConfig(seed=2, image_size=(320, 240), frames=14, workers=1,
                                   conditions=("sunny", "sunny_repeat")), tmp / "world", progress=False)
    build_map_from_folder(MapBuildConfig(out=tmp / "map", dataset=world, condition="sunny",
                                         coarse=assets / "demo_coarse.pt", fine=assets / "demo_fine.pt",
                                         progress=False, geometry="depth"))
    return {"world": world, "map": tmp / "map", "tmp": tmp}


@pytest.fixture(scope="session")
def flow_drive(geometry_world):
    """A camera-rate drive for optical-flow tests: map image 10's view 0.8 m to its right, then 0.3 m a frame
    onward (5 frames, sunny); returns the map, 10 and the frames (rgb, position, xyzw)."""
    from disam_ros.data.synthetic import WorldConfig
    from disam_ros.data.synthetic.generate import load_world
    from disam_ros.data.synthetic.shade import render
    from disam_ros.geometry import quat_to_rot
    from disam_ros.maps import LocalizationMap

    world, info = load_world(geometry_world["world"])
    camera = WorldConfig(seed=info.seed, image_size=tuple(info.image_size), fov_deg=info.fov_deg).camera()
    m = LocalizationMap.load(geometry_world["map"])
    k = 10
    quat = np.asarray(m.quats[k], np.float64)
    frames = []
    for i in range(5):
        pos = np.asarray(m.positions[k], np.float64) + quat_to_rot(quat) @ np.array([0.8, 0.0, 0.3 * i])
        frames.append((render(world, (pos, quat), camera, "sunny", frame=i), pos, quat))
    return m, k, frames


N_QUERIES = 10  # query frames of node_world


@dataclass
class NodeWorld:
    map_dir: Path
    positions: np.ndarray  # map positions (N, 3)
    quats: np.ndarray
    frame_id: str
    queries: list[tuple[np.ndarray, float, int]]  # (rgb, stamp, index of the nearest map image)
    latitude: float
    longitude: float
    domains: tuple[str, ...]


@pytest.fixture(scope="session")
def node_world(tmp_path_factory) -> NodeWorld:
    """Small synthetic world -> micro coarse/fine models (random init) -> map of the reference condition."""
    try:
        import torch

        from disam_ros.data.folders import iter_frames, list_conditions, load_condition
        from disam_ros.data.synthetic import WorldConfig, make_world
        from disam_ros.maps import LocalizationMap, build_map
        from disam_ros.model import DisamNet, Encoder, preset, save_checkpoint
    except ImportError as exc:  # the model / retrieval / synthetic modules land separately
        pytest.skip(f"localizer dependencies not importable yet: {exc}")
    tmp = tmp_path_factory.mktemp("node_world")
    root = tmp / "world"
    # workers=1: no fork, because this pytest process may already run DDS and torch threads.
    make_world(WorldConfig(seed=3, image_size=(128, 96), frames=40, blocks=3, workers=1,
                           conditions=("sunny", "sunny_repeat", "snow", "overcast")), root, progress=False)
    site = (yaml.safe_load((root / "world.yaml").read_text()) or {}).get("site", {})
    lat, lon = float(site.get("latitude", "nan")), float(site.get("longitude", "nan"))
    domains = tuple(c for c in list_conditions(root) if c != "sunny_repeat")
    ckpts = []
    for role, seed in (("coarse", 0), ("fine", 1)):
        torch.manual_seed(seed)
        cfg = preset("micro", domains)
        path = tmp / f"{role}.pt"
        save_checkpoint(path, DisamNet(cfg), cfg)
        ckpts.append(path)
    coarse, fine = (Encoder.from_checkpoint(p, device="cpu") for p in ckpts)
    map_dir = tmp / "map"
    ref = load_condition(root, "sunny", require_poses=True)
    build_map(iter_frames(ref), coarse, fine, map_dir, domain="sunny", progress=False, checkpoint_paths=tuple(ckpts),
              source=f"{root.absolute()} condition sunny")
    m = LocalizationMap.load(map_dir)
    qfolder = load_condition(root, "sunny_repeat", require_poses=True)
    frames = list(iter_frames(qfolder))
    pick = np.linspace(0, len(frames) - 1, min(N_QUERIES, len(frames))).round().astype(int)
    queries = []
    for i in pick:
        f = frames[int(i)]
        gt = int(np.argmin(np.linalg.norm(np.asarray(m.positions) - f.position, axis=1)))
        queries.append((f.image, float(f.stamp), gt))
    return NodeWorld(map_dir, np.asarray(m.positions), np.asarray(m.quats), m.frame_id, queries, lat, lon, domains)
