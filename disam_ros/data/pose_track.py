"""Ground-truth poses at the stamps of images: a pose track, slerp, and interpolation that never bridges a hole.

Pure maths shared by the bag reader (images and poses from two topics) and the folder loader (stamp-named images
with a ground-truth file sampled at its own rate, as TUM RGB-D's groundtruth.txt): neither may extrapolate past
the track or invent a pose across a gap in it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from disam_ros.geometry import normalize_quat

# association status codes, per image
OK, OUTSIDE, GAP = 0, 1, 2


def slerp(q0: np.ndarray, q1: np.ndarray, u: float) -> np.ndarray:
    """Spherical interpolation of xyzw quaternions along the shorter arc (u=0 -> q0, u=1 -> q1)."""
    q0, q1 = normalize_quat(q0), normalize_quat(q1)
    d = float(np.dot(q0, q1))
    if d < 0.0:
        q1, d = -q1, -d
    if d > 0.9999995:  # nearly equal: the slerp formula divides by ~0, lerp is exact to 1e-13 here
        return normalize_quat(q0 + u * (q1 - q0))
    theta = np.arccos(min(d, 1.0))
    return normalize_quat((np.sin((1 - u) * theta) * q0 + np.sin(u * theta) * q1) / np.sin(theta))


@dataclass(frozen=True)
class PoseTrack:
    """Ground-truth poses sorted by stamp: stamps_ns (N,) int64, positions (N,3), quats (N,4) xyzw."""

    stamps_ns: np.ndarray
    positions: np.ndarray
    quats: np.ndarray

    def __len__(self) -> int:
        return len(self.stamps_ns)


def sorted_track(stamps_ns, positions, quats) -> tuple[PoseTrack, int, int]:
    """Poses sorted by stamp with duplicate stamps dropped (the first kept): (track, n_backwards, n_duplicates),
    the counts for the caller's warning or refusal."""
    s = np.asarray(stamps_ns, dtype=np.int64)
    backwards = int(np.sum(np.diff(s) < 0)) if len(s) > 1 else 0
    order = np.argsort(s, kind="stable")
    s = s[order]
    keep = np.r_[True, np.diff(s) != 0] if len(s) else np.zeros(0, bool)
    track = PoseTrack(s[keep], np.asarray(positions, float).reshape(-1, 3)[order][keep],
                      np.asarray(quats, float).reshape(-1, 4)[order][keep])
    return track, backwards, int(np.sum(~keep))


def interpolate_pose(track: PoseTrack, t_ns: int, max_gap_s: float) -> tuple[int, np.ndarray | None, np.ndarray | None]:
    """(status, position, quat) of the track at t_ns: OK, OUTSIDE (before/after the track) or GAP.

    The two bracketing poses must be at most `max_gap_s` apart; a stamp equal to a pose stamp takes it.
    """
    n = len(track)
    i = int(np.searchsorted(track.stamps_ns, t_ns, side="right")) - 1
    if i >= 0 and track.stamps_ns[i] == t_ns:
        return OK, track.positions[i].copy(), track.quats[i].copy()
    if i < 0 or i + 1 >= n:
        return OUTSIDE, None, None
    t0, t1 = int(track.stamps_ns[i]), int(track.stamps_ns[i + 1])
    if (t1 - t0) > max_gap_s * 1e9:
        return GAP, None, None
    u = (t_ns - t0) / (t1 - t0)
    p = (1.0 - u) * track.positions[i] + u * track.positions[i + 1]
    return OK, p, slerp(track.quats[i], track.quats[i + 1], u)
