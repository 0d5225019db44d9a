"""Sorting a bag's pose stream; slerp and gap-aware interpolation live in disam_ros.data.pose_track."""
from __future__ import annotations

import numpy as np

from disam_ros.data.bags.common import BagError
from disam_ros.data.pose_track import GAP, OK, OUTSIDE, PoseTrack, interpolate_pose, slerp  # noqa: F401


def sort_track(stamps_ns, positions, quats, strict: bool = False) -> tuple[PoseTrack, int, int]:
    """Sort poses by stamp and drop duplicate stamps (first kept): (track, n_backwards, n_duplicates)."""
    s = np.asarray(stamps_ns, dtype=np.int64)
    backwards = int(np.sum(np.diff(s) < 0)) if len(s) > 1 else 0
    if backwards and strict:
        k = int(np.argmax(np.diff(s) < 0)) + 1
        raise BagError(f"pose stamps go backwards {backwards} time(s) (first at pose message {k}: "
                       f"{s[k] * 1e-9:.9f} s after {s[k - 1] * 1e-9:.9f} s); re-record the ground truth "
                       "or read with strict=False (--sort) to sort them")
    order = np.argsort(s, kind="stable")
    s = s[order]
    keep = np.r_[True, np.diff(s) != 0] if len(s) else np.zeros(0, bool)
    track = PoseTrack(s[keep], np.asarray(positions, float).reshape(-1, 3)[order][keep],
                      np.asarray(quats, float).reshape(-1, 4)[order][keep])
    return track, backwards, int(np.sum(~keep))


