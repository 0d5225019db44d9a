"""DISAM training: recipes, unpaired multi-domain data, the GAN/FCL/SAM/triplet loop, export, evaluation.

Imports only `disam_ros.model` and `disam_ros.data` (never rclpy or retrieval/ros): training runs on a
GPU box without ROS. Entry points: `disam-train` (disam_ros.training.cli), `python -m disam_ros.training.export`,
`python -m disam_ros.training.evaluate`; the training-speed benchmark is `disam-bench training`
(disam_ros/bench/training.py, which imports training, never the reverse).
"""
from pathlib import Path

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"  # the shipped recipes: here, so `disam-train --help` lists
#                                                          them without loading torch (training/cli.py)
