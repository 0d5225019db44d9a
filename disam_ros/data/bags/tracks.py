"""A bag's pose stream sorted, or refused in strict mode; the track maths live in disam_ros.data.pose_track."""
from __future__ import annotations

import numpy as np

from disam_ros.data.bags.common import BagError
from disam_ros.data.pose_track import GAP, OK, OUTSIDE, PoseTrack, interpolate_pose, slerp, sorted_track  # noqa: F401


def sort_track(stamps_ns, positions, quats, strict: bool = False) -> tuple[PoseTrack, int, int]:
    """Sort poses by stamp and drop duplicate stamps (first kept): (track, n_backwards, n_duplicates); strict:
    stamps going backwards are a BagError instead."""
    s = np.asarray(stamps_ns, dtype=np.int64)
    backwards = int(np.sum(np.diff(s) < 0)) if len(s) > 1 else 0
    if backwards and strict:
        k = int(np.argmax(np.diff(s) < 0)) + 1
        raise BagError(f"pose stamps go backwards {backwards} time(s) (first at pose message {k}: "
                       f"{s[k] * 1e-9:.9f} s after {s[k - 1] * 1e-9:.9f} s); re-record the ground truth "
                       "or read with strict=False (--sort) to sort them")
    return sorted_track(s, positions, quats)
