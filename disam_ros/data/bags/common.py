"""Topic names, message types, the type store and the errors shared by bag reading and writing."""
from __future__ import annotations

from rosbags.rosbag2 import StoragePlugin
from rosbags.typesys import Stores, get_typestore

from disam_ros.data.pose_track import GAP, OK, OUTSIDE  # noqa: F401  (association status codes, per image)

DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_INFO_TOPIC = "/camera/camera_info"
DEFAULT_POSE_TOPIC = "/ground_truth/pose"
DEFAULT_MAX_GAP_S = 0.2
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
POSE_TYPES = (POSE_STAMPED, "geometry_msgs/msg/PoseWithCovarianceStamped", "nav_msgs/msg/Odometry")
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
TYPESTORE = get_typestore(Stores.ROS2_KILTED)  # same definitions and hashes as the rclpy Kilted wheels


class BagError(ValueError):
    """A bag cannot serve the request (missing topic, unreadable file, unsorted stamps in strict mode)."""


class BagWarning(UserWarning):
    """Messages were skipped or reordered while reading a bag; the summary says how many and why."""


