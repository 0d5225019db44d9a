"""disam_ros: long-term visual relocalization with DISAM coarse-to-fine retrieval.

Import direction: ros -> retrieval/eval -> model/data; only `disam_ros.ros` imports rclpy.
"""

__version__ = "0.1.0"
