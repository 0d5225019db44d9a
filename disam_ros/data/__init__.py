"""Datasets: condition folders, TUM poses, rosbags and the synthetic world (no ROS imports)."""
