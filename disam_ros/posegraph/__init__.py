"""Pose-graph back end on GTSAM iSAM2 (no ROS): odometry + the localizer's loop closures -> corrected trajectory.

Layer: imports only the base modules (disam_ros.geometry) and gtsam / numpy; eval, ros and bench may import it.
"""
from disam_ros.posegraph.graph import REJECTED_WEIGHT, Closure, PoseGraph, PoseGraphConfig

__all__ = ["REJECTED_WEIGHT", "Closure", "PoseGraph", "PoseGraphConfig"]
