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
