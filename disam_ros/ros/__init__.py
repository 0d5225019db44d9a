"""Everything that imports rclpy: the localizer node, its messages, launcher, replay and record.

Importing this package changes nothing in the environment: each entry point calls
`disam_ros.ros.env.apply_ros_defaults()` (user-facing: honours ROS_DOMAIN_ID like any ROS 2 node) or
`disam_ros.ros.env.isolated_env()` (the package's own demo, tests and benchmarks) before rclpy starts.
"""
