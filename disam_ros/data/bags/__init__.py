"""Dataset folders <-> rosbags, and images with ground-truth poses out of any bag (no ROS install needed).

Everything goes through the `rosbags` library, so bags are read and written on machines without
rosbag2_py or the ros2 CLI: ROS 2 bags in sqlite3 or mcap storage, ROS 1 `.bag` files for reading.

Writing (`write_folder_bag`): one condition folder becomes a bag with the images (sensor_msgs/Image rgb8,
or CompressedImage jpeg/png), sensor_msgs/CameraInfo from camera.yaml, and the ground truth as
geometry_msgs/PoseStamped (camera optical frame in the map frame, the TUM convention). Every message of a
frame carries the TUM stamp in its header and as the bag's log time.

Reading (`BagReader`): images are paired with the ground truth by header stamp. A pose is linearly
interpolated (slerp for the rotation) between the two pose messages around the image stamp, never
extrapolated, and never across a hole in the pose stream longer than `max_gap` seconds: such images are
skipped and counted. One bad message never stops a read: it is skipped, counted per topic, and reported in
one warning summary when the read ends.

Decisions (documented in docs/evaluation.md):
* pose stamps that go backwards are sorted, with a warning (`strict=True` raises instead); duplicate pose
  stamps keep the first message. Images may come in any order: each one is paired on its own.
* the default `max_gap` is 0.2 s (ground truth at >= 5 Hz); an image stamp equal to a pose stamp always
  takes that pose exactly.

Parts: `common` (types, topics, errors), `tracks` (pose interpolation), `write` (folder -> bag), `read`
(bag -> frames), `to_folder` (bag -> folder), `cli` (`disam-bag`).
"""
from __future__ import annotations

from disam_ros.data.bags.common import (  # noqa: F401
    CAMERA_INFO,
    COMPRESSED,
    DEFAULT_IMAGE_TOPIC,
    DEFAULT_INFO_TOPIC,
    DEFAULT_MAX_GAP_S,
    DEFAULT_POSE_TOPIC,
    GAP,
    IMAGE,
    OK,
    OUTSIDE,
    POSE_STAMPED,
    POSE_TYPES,
    STORAGES,
    TYPESTORE,
    BagError,
    BagWarning,
)
from disam_ros.data.bags.read import (  # noqa: F401
    BagFrame,
    BagInfo,
    BagReader,
    ReadStats,
    TopicSummary,
    _pose_of,
    _stamp_ns,
    _storage_of,
    _topic_table,
    bag_info,
    cdr_converter,
    open_bag,
    resolve_bag_path,
)
from disam_ros.data.bags.to_folder import (  # noqa: F401
    FolderWriteSummary,
    _write_frames,
    bag_to_folder,
)
from disam_ros.data.bags.tracks import (  # noqa: F401
    PoseTrack,
    interpolate_pose,
    slerp,
    sort_track,
)
from disam_ros.data.bags.write import (  # noqa: F401
    BagWriteOptions,
    BagWriteSummary,
    _header,
    camera_info_message,
    image_message,
    pose_message,
    publish_dir,
    staging_dir,
    write_folder_bag,
)
from disam_ros.data.stamps import stamp_to_ns  # noqa: F401  (bags speak ns; the one stamp helper)
