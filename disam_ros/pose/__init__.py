"""Pose: where exactly the camera is, once retrieval has said which place. Local features of the query and
the map images, their matching (classical or dense DISAM correspondences), the map's 3D points (from depth
or triangulated from other map images that see the same scene), and the absolute pose solved with a
maintained RANSAC + minimal solver + non-linear refinement (pycolmap / poselib / OpenCV), with the inliers
that verify a retrieval geometrically. Pure geometry on arrays: it sits on `model` and `data` only, so map
building (`maps`) stores 3D points with it and the relocalizer verifies retrievals with it. No ROS imports.

Public API (import from the modules; this package imports nothing eagerly so `pycolmap` loads only when used):
- `camera.Intrinsics` (from_K, from_camera, load, scaled, to_pycolmap)
- `frames.cam_from_map`, `frames.map_from_cam`, `frames.project`, `frames.normalized`
- `features.SiftConfig`, `features.detect_sift`, `features.match_descriptors`
- `triangulate.View`, `triangulate.TriangulationLimits`, `triangulate.triangulate`, `triangulate_two_view`,
  `triangulate_track`, `triangulate.Reject`
- `solver.SolverConfig`, `solver.solve_absolute_pose` -> `solver.PoseSolution` (covariance order:
  `covariance.COVARIANCE_ORDER`)
- `backproject.backproject` (map keypoints + z-depth -> map-frame points; invalid depth and edges refused)
- `dense.dense_matches` (mutual nearest neighbours between DISAM feature maps, refined to pixels)
- `match_eval` (`disam-match-eval`): the matcher comparison on the synthetic world (docs/pose.md)
"""
