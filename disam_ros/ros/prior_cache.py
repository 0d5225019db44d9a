"""The node's latest `prior` message (a relocalisation hint from SLAM or GNSS) and its retrieval gate, kept apart
from the frame worker: the subscription writes it, the worker reads it every frame."""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped


class PriorCache:
    """The latest `prior` message and its retrieval gate, converted once per message and radius, so every frame
    within `prior_timeout_s` gets the SAME SpatialPrior object (a tracker re-initialises its belief on a new
    prior, not once per frame it is passed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: tuple[int, float, PoseWithCovarianceStamped] | None = None  # (serial, received, message)
        self._serial = 0
        self._gate: tuple[int, float, Any] | None = None  # (serial, radius, SpatialPrior)

    def put(self, msg: PoseWithCovarianceStamped) -> None:
        with self._lock:
            self._serial += 1
            self._item = (self._serial, time.monotonic(), msg)

    def get(self, timeout_s: float, radius_m: float) -> Any:
        """The gate of a fresh prior, else None; ValueError (one line) for an unusable covariance."""
        with self._lock:
            item, gate = self._item, self._gate
        if item is None or time.monotonic() - item[1] > timeout_s:
            return None
        if gate is not None and gate[:2] == (item[0], radius_m):
            return gate[2]
        prior = spatial_prior(item[2], radius_m)
        with self._lock:
            self._gate = (item[0], radius_m, prior)
        return prior


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
