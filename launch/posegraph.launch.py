"""Launch the DISAM pose-graph node (a lifecycle node): odometry + the localizer's loop-closure hints in, the
corrected trajectory and map->odom out.

    ros2 launch disam_ros posegraph.launch.py odom_topic:=/odom

By default it listens to the hints of a localizer started by localizer.launch.py in the same namespace
(`disam_localizer/loop_closure`). The node configures and activates itself (parameter `autostart`); for a
lifecycle manager set `autostart: false` in the params file and list `disam_posegraph` in its `node_names`.

DDS: the node honours ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE from the environment you launch in.
test/test_launch_params.py keeps the arguments and parameters in step with the node's declared parameters.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue


def _node(context, *args, **kwargs):
    params_file = LaunchConfiguration("params_file").perform(context) or os.path.join(
        get_package_share_directory("disam_ros"), "config", "posegraph.yaml")
    return [
        LifecycleNode(
            package="disam_ros",
            executable="disam-posegraph",
            name="disam_posegraph",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            emulate_tty=True,
            parameters=[
                params_file,
                {
                    "map_frame": ParameterValue(LaunchConfiguration("map_frame"), value_type=str),
                    "odom_frame": ParameterValue(LaunchConfiguration("odom_frame"), value_type=str),
                },
            ],
            remappings=[
                ("odom", LaunchConfiguration("odom_topic").perform(context)),
                ("loop_closure", LaunchConfiguration("loop_closure_topic").perform(context)),
            ],
        )
    ]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value="",
                              description="Node parameters YAML; empty = the packaged config/posegraph.yaml."),
        DeclareLaunchArgument("odom_topic", default_value="odom",
                              description="nav_msgs/Odometry of the base (T_odom_base)."),
        DeclareLaunchArgument("loop_closure_topic", default_value="disam_localizer/loop_closure",
                              description="The localizer's loop-closure hints (std_msgs/String, JSON schema 2)."),
        DeclareLaunchArgument("map_frame", default_value="map", description="Map frame (parent of map->odom)."),
        DeclareLaunchArgument("odom_frame", default_value="odom", description="Odometry frame (child of map->odom)."),
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the node (topics become /<namespace>/disam_posegraph/...)."),
        OpaqueFunction(function=_node),
    ])
