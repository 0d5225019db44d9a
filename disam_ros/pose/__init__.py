"""Pose: where exactly the camera is, once retrieval has said which place. Local features of the query and
the map images, their matching (classical or dense DISAM correspondences), the map's 3D points (from depth
or triangulated from the reference drive's own neighbouring frames), and the absolute pose solved with a
maintained RANSAC + minimal solver + non-linear refinement (pycolmap / poselib / OpenCV), with the inliers
that verify a retrieval geometrically. Sits above `maps` and `retrieval`, below the relocalizer. No ROS
imports.
"""
