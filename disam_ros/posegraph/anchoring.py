"""When may an unanchored pose graph trust the map frame? When measurements from different map keyframes agree.

Each map-frame measurement of a node (a closure: T_map_node) together with that node's odometry pose T_odom_node
implies a map->odom transform, T_map_odom = T_map_node T_odom_node^-1. Right measurements imply nearly the same
one (apart from the odometry's drift between them); a wrong one (a similar-looking place elsewhere) implies a
transform metres or degrees away. Anchoring on the first measurement alone lets one wrong hint move the whole
map frame, after which the robust kernel rejects every right hint instead (graph.py module docstring).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import gtsam
import numpy as np


def agrees_with_newest(views: Sequence[tuple[int | None, gtsam.Pose3, gtsam.Pose3]], needed: int, tol_m: float,
                       tol_deg: float, drift_m_per_m: float, drift_deg_per_m: float) -> bool:
    """Whether the newest of `views` (keyframe id or None, T_odom_node, measured T_map_node) and at least
    needed - 1 earlier ones from other keyframes imply the same map->odom transform, within tol_m / tol_deg plus
    3 odometry sigmas (drift_*_per_m) of the straight distance between the two nodes."""
    if not views:
        return False
    key_new, odom_new, meas_new = views[-1]
    implied = meas_new.compose(odom_new.inverse())
    agree = 1
    for key, odom, meas in views[:-1]:
        if key is not None and key == key_new:
            continue  # the same keyframe twice is one piece of evidence (a stuck wrong place repeats itself)
        d = float(np.linalg.norm(odom_new.translation() - odom.translation()))
        diff = implied.between(meas.compose(odom.inverse()))
        turn = math.degrees(float(np.linalg.norm(gtsam.Rot3.Logmap(diff.rotation()))))
        if (np.linalg.norm(diff.translation()) <= tol_m + 3 * drift_m_per_m * d
                and turn <= tol_deg + 3 * drift_deg_per_m * d):
            agree += 1
    return agree >= needed
