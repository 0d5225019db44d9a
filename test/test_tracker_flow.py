"""Optical-flow tracking through the Tracker, retrieval in the loop, as the node runs it (the node hands the
Tracker each image with its header stamp): in sequence mode, frames 0.3 m and 0.1 s apart are tracked by flow
after two verified ones and stay within (0.25 m, 2 deg) of where they were rendered, and the published pose is
the flow pose; in single mode flow never runs (a single frame stands alone)."""
from __future__ import annotations

import numpy as np

from disam_ros.geometry import quat_angle_deg


def _run(flow_drive, mode: str) -> list:
    from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
    from disam_ros.retrieval import SearchConfig
    from disam_ros.tracking.tracker import Tracker, TrackerConfig

    m, _, frames = flow_drive
    reloc = Relocalizer.from_map(m.root, RelocalizerConfig(search=SearchConfig(device="cpu"), weather="sunny"))
    try:
        tracker = Tracker(reloc, TrackerConfig(mode=mode))
        return [tracker.step(rgb, 1000.0 + 0.1 * i).result for i, (rgb, _, _) in enumerate(frames)]
    finally:
        reloc.map.close()


def test_sequence_mode_tracks_by_flow_and_publishes_its_pose(flow_drive):
    _, _, frames = flow_drive
    results = _run(flow_drive, "sequence")
    flowed = [i for i, r in enumerate(results) if r.verification is not None and r.verification.flow]
    assert flowed, [(r.verification.outcome if r.verification else None) for r in results]
    assert min(flowed) >= 2  # the speed is known only after two verified frames
    for i in flowed:
        r, (_, pos, quat) = results[i], frames[i]
        assert r.verification.verified and r.verification.order == "optical flow"
        np.testing.assert_array_equal(r.position, r.verification.position)  # the published pose is flow's
        assert float(np.linalg.norm(r.position - pos)) < 0.25 and float(quat_angle_deg(r.quat, quat)) < 2.0


def test_single_mode_never_uses_flow(flow_drive):
    results = _run(flow_drive, "single")
    assert sum(r.verification is not None and r.verification.verified for r in results) >= 3  # it verifies ...
    assert not any(r.verification is not None and r.verification.flow for r in results)  # ... but not by flow
