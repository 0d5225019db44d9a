"""Test-session environment: DDS stays on loopback with a private domain, before anything imports rclpy."""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

# Must happen at import time: rclpy reads these when its context is created.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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
    from disam_ros.model import DisamNet, preset, save_checkpoint
    from disam_ros.retrieval.build_map import main as build_map_main

    tmp = tmp_path_factory.mktemp("eval_world")
    world = make_world(WorldConfig(seed=1, image_size=64, frames=10, blocks=3, workers=1,
                                   conditions=("sunny", "sunny_repeat", "night", "snow")),
                       tmp / "world", progress=False)
    ckpts = {}
    for role, seed in (("coarse", 0), ("fine", 1)):
        torch.manual_seed(seed)
        cfg = preset("micro", ("sunny", "night", "snow"))
        ckpts[role] = save_checkpoint(tmp / f"{role}.pt", DisamNet(cfg), cfg)
    rc = build_map_main(["--dataset", str(world), "--condition", "sunny", "--coarse", str(ckpts["coarse"]),
                         "--fine", str(ckpts["fine"]), "--out", str(tmp / "map"), "--quiet"])
    assert rc == 0
    return {"world": world, "map": tmp / "map", **ckpts, "tmp": tmp}
