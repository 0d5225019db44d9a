"""Everything that imports rclpy: the localizer node, its messages, launcher and benchmark.

`disam_ros.ros.env` is imported first so the loopback DDS environment is in place before rclpy starts.
"""
from disam_ros.ros import env as _env  # noqa: F401  (side effect: loopback DDS environment)
