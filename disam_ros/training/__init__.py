"""DISAM training: recipes, unpaired multi-domain data, the GAN/FCL/SAM/triplet loop, export, evaluation.

Imports only `disam_ros.model` and `disam_ros.data` (never rclpy or retrieval/ros): training runs on a
GPU box without ROS. Entry points: `disam-train` (disam_ros.training.cli), `python -m disam_ros.training.export`,
`python -m disam_ros.training.evaluate`, `python -m disam_ros.training.bench`.
"""
