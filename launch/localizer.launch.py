"""Launch the DISAM localizer node (a lifecycle node).

    ros2 launch disam_ros localizer.launch.py map:=/maps/town image_topic:=/camera/image_raw

The node configures and activates itself (parameter `autostart`, default true). To let a lifecycle manager
(nav2_lifecycle_manager) drive it instead, set `autostart: false` in the params file and list `disam_localizer`
in the manager's `node_names`.

DDS: the node honours ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE from the environment you launch in (an
unset range becomes LOCALHOST; export SUBNET for a multi-host system): nothing is forced here.

Arguments match disam_ros.ros.launcher (for machines without launch_ros); test/test_launch_params.py
keeps the two in step with the node's declared parameters.
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
        get_package_share_directory("disam_ros"), "config", "localizer.yaml")
    image_topic = LaunchConfiguration("image_topic").perform(context)
    return [
        LifecycleNode(
            package="disam_ros",
            executable="disam-localizer",
            name="disam_localizer",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            emulate_tty=True,
            parameters=[
                params_file,
                {
                    "map": ParameterValue(LaunchConfiguration("map"), value_type=str),
                    "compressed": ParameterValue(LaunchConfiguration("compressed"), value_type=bool),
                    "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                },
            ],
            remappings=[
                ("image", image_topic),
                ("image/compressed", image_topic.rstrip("/") + "/compressed"),
            ],
        )
    ]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("map", description="Map directory written by disam-build-map (required)."),
        DeclareLaunchArgument("params_file", default_value="",
                              description="Node parameters YAML; empty = the packaged config/localizer.yaml."),
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="Camera topic (sensor_msgs/Image); <image_topic>/compressed when "
                                          "compressed."),
        DeclareLaunchArgument("compressed", default_value="false",
                              description="Subscribe to sensor_msgs/CompressedImage on <image_topic>/compressed."),
        DeclareLaunchArgument("device", default_value="auto", description="Torch device: auto, cpu, cuda, cuda:N."),
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the node (topics become /<namespace>/disam_localizer/...)."),
        OpaqueFunction(function=_node),
    ])
