"""Launch the DISAM hint relay: the localizer's loop-closure hints in, rtabmap's `global_pose` or slam_toolbox's
`initialpose` out (docs/posegraph.md, "Feeding other back ends").

    ros2 launch disam_ros hint_relay.launch.py camera_frame:=camera_color_optical_frame \
        global_pose_topic:=/rtabmap/global_pose
    ros2 launch disam_ros hint_relay.launch.py target:=slam_toolbox initialpose_topic:=/initialpose

By default it listens to the hints of a localizer started by localizer.launch.py in the same namespace
(`disam_localizer/loop_closure`). A plain node (no lifecycle): it checks its parameters at start and runs.

DDS: the node honours ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE from the environment you launch in.
test/test_hint_relay.py keeps the arguments and parameters in step with the node's declared parameters.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

FROM_FILE = ("target", "camera_frame", "map_frame")  # launch arguments that override the params file when given


def _node(context, *args, **kwargs):
    params_file = LaunchConfiguration("params_file").perform(context) or os.path.join(
        get_package_share_directory("disam_ros"), "config", "hint_relay.yaml")
    given = {name: LaunchConfiguration(name).perform(context) for name in FROM_FILE}
    overrides = {name: ParameterValue(value, value_type=str) for name, value in given.items() if value}
    return [
        Node(
            package="disam_ros",
            executable="disam-hint-relay",
            name="disam_hint_relay",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            emulate_tty=True,
            parameters=[params_file, overrides],
            remappings=[
                ("loop_closure", LaunchConfiguration("loop_closure_topic").perform(context)),
                ("global_pose", LaunchConfiguration("global_pose_topic").perform(context)),
                ("initialpose", LaunchConfiguration("initialpose_topic").perform(context)),
            ],
        )
    ]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value="",
                              description="Node parameters YAML; empty = the packaged config/hint_relay.yaml."),
        DeclareLaunchArgument("target", default_value="",
                              description="rtabmap or slam_toolbox; empty = the params file's (default rtabmap)."),
        DeclareLaunchArgument("camera_frame", default_value="",
                              description="rtabmap: the camera's optical frame in your TF tree; empty = the params "
                                          "file's (required for rtabmap)."),
        DeclareLaunchArgument("map_frame", default_value="",
                              description="The localizer's map frame; empty = the params file's (default map)."),
        DeclareLaunchArgument("loop_closure_topic", default_value="disam_localizer/loop_closure",
                              description="The localizer's loop-closure hints (std_msgs/String, JSON schema 2)."),
        DeclareLaunchArgument("global_pose_topic", default_value="global_pose",
                              description="target rtabmap: where the poses go (rtabmap's global_pose, e.g. "
                                          "/rtabmap/global_pose)."),
        DeclareLaunchArgument("initialpose_topic", default_value="initialpose",
                              description="target slam_toolbox: where the triggers go (slam_toolbox's initialpose, "
                                          "e.g. /initialpose)."),
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the node."),
        OpaqueFunction(function=_node),
    ])
