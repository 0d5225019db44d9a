"""TUM trajectory files: one pose per line, `stamp tx ty tz qx qy qz qw`, `#` comments."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from disam_ros.fsutil import atomic_write_text
from disam_ros.geometry import normalize_quat


@dataclass(frozen=True)
class Trajectory:
    """Stamps (N,) seconds, positions (N,3) metres, quaternions (N,4) xyzw unit, w >= 0."""

    stamps: np.ndarray
    positions: np.ndarray
    quats: np.ndarray

    def __len__(self) -> int:
        return len(self.stamps)

    def __getitem__(self, idx) -> Trajectory:
        return Trajectory(self.stamps[idx], self.positions[idx], self.quats[idx])


def make_trajectory(stamps, positions, quats) -> Trajectory:
    stamps = np.asarray(stamps, dtype=np.float64).reshape(-1)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    quats = normalize_quat(np.asarray(quats, dtype=np.float64).reshape(-1, 4))
    if not (len(stamps) == len(positions) == len(quats)):
        raise ValueError("stamps, positions and quaternions differ in length")
    if not np.all(np.isfinite(positions)) or not np.all(np.isfinite(stamps)):
        raise ValueError("trajectory holds NaN/inf positions or stamps: fix the pose source")
    return Trajectory(stamps, positions, quats)


def read_tum(path: str | Path) -> Trajectory:
    """Every pose line of a TUM file, in file order; a ValueError naming the file (and line) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: TUM pose file not found (expected `stamp tx ty tz qx qy qz qw`)")
    rows = []
    for lineno, line in enumerate(_text_lines(path), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 8:
            raise ValueError(f"{path}:{lineno}: expected 8 numbers (stamp tx ty tz qx qy qz qw), got {len(parts)}")
        try:
            rows.append([float(p) for p in parts])
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: not a number ({exc})") from None
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 8)
    try:
        return make_trajectory(arr[:, 0], arr[:, 1:4], arr[:, 4:8])
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _text_lines(path: Path) -> list[str]:
    """The file's lines; ValueError naming it when it is not text (a binary file's decode error named no file)."""
    data = path.read_bytes()
    try:
        if b"\0" in data:
            raise UnicodeDecodeError("utf-8", data, data.index(b"\0"), data.index(b"\0") + 1, "NUL byte")
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text file (byte {exc.start} is {data[exc.start:exc.start + 1]!r}): a TUM pose "
                         "file holds lines `stamp tx ty tz qx qy qz qw`; check that this is the poses file") from None


def write_tum(path: str | Path, traj: Trajectory) -> None:
    """Write atomically (disam_ros.fsutil: temp file + rename) so a crash never leaves half a trajectory."""
    lines = ["# stamp tx ty tz qx qy qz qw"]
    for s, p, q in zip(traj.stamps, traj.positions, traj.quats):
        lines.append(f"{s:.9f} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f} {q[0]:.9f} {q[1]:.9f} {q[2]:.9f} {q[3]:.9f}")
    atomic_write_text(path, "\n".join(lines) + "\n")
