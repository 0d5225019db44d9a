"""Dataset folders: `ROOT/<condition>/images/*` with optional `poses.txt` (TUM), `camera.yaml` and `depth/`.

Images are paired with poses by sorted file name: the k-th image has the k-th pose line. That keeps
the format readable by hand and by hloc-style tools, at the cost of requiring equal counts. One exception: when
the counts differ and every image is named by its stamp (`<sec>.<frac>.png`, `<ns>.png`), poses.txt is read as a
ground-truth track at its own rate (TUM RGB-D's groundtruth.txt, a motion-capture log) and each image takes the
pose interpolated at its stamp, never across a hole longer than POSE_MAX_GAP_S; images outside the track or in
a hole are left out, and the log says how many.
Depth, where a dataset has it, pairs by stem instead (`depth/<image stem>.png`, 16-bit millimetres; see
disam_ros.data.depth), so a drive may carry depth for some frames only (a sensor dropout, a far-only scene).
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from disam_ros.data.camera_limits import intrinsics_problem
from disam_ros.data.depth import DEPTH_DIR, depth_path, read_depth
from disam_ros.data.pose_track import OK, interpolate_pose, sorted_track
from disam_ros.data.stamps import stamp_from_name, stamp_to_ns
from disam_ros.data.tum import Trajectory, make_trajectory, read_tum
from disam_ros.fsutil import atomic_write_text
from disam_ros.logs import logger

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff")
DISTORTION_KEYS = ("k1", "k2", "p1", "p2", "k3")  # camera.yaml: OpenCV plumb_bob, absent = 0
POSE_MAX_GAP_S = 0.2  # stamp-paired poses: the two bracketing ground-truth poses at most this far apart
CONDITION_DIRS, CONDITION_FILES = ("images", DEPTH_DIR), ("poses.txt", "camera.yaml")  # what a condition holds


def condition_entry(entry: Path) -> bool:
    """Is `entry` one that our tools write into ROOT/<condition> (folders layout)? What decides whether
    `--overwrite`/`--force` may replace a condition folder or a dataset (disam_ros.fsutil.OutputKind)."""
    return entry.is_dir() if entry.name in CONDITION_DIRS else entry.name in CONDITION_FILES and entry.is_file()


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in pixels and OpenCV plumb_bob distortion (k1 k2 p1 p2 k3; all 0 for the synthetic
    world's ideal pinholes). camera.yaml holds width height fx fy cx cy and, for a real lens, k1 k2 p1 p2 k3
    (absent = 0): the images stay as recorded and the geometry undistorts keypoints, as the node does with
    CameraInfo's D."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    k1: float = 0.0
    k2: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    k3: float = 0.0

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def dist(self) -> np.ndarray:
        """OpenCV's distortion vector (k1, k2, p1, p2, k3)."""
        return np.array([self.k1, self.k2, self.p1, self.p2, self.k3], np.float64)

    def save(self, path: str | Path) -> None:
        """camera.yaml; the distortion keys only for a lens that has distortion (ideal pinholes stay six keys)."""
        d = {k: float(v) if isinstance(v, float) else v for k, v in asdict(self).items()}
        if not self.dist().any():
            d = {k: v for k, v in d.items() if k not in DISTORTION_KEYS}
        atomic_write_text(path, yaml.safe_dump(d, sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> CameraIntrinsics:
        """camera.yaml in this package's six keys (+ distortion), or as ROS's camera_calibration writes it
        (image_width, image_height, camera_matrix.data, distortion_model plumb_bob, distortion_coefficients.data):
        a calibrated camera's file works unchanged. Values no camera has (disam_ros.data.camera_limits: fx 1e300,
        cx -1e9, k1 1e6) are a ValueError naming the file, not a map without 3D points later."""
        try:
            d = yaml.safe_load(Path(path).read_text())
            if isinstance(d, dict) and "camera_matrix" in d:
                cam = cls._from_ros_calibration(d)
            else:
                cam = cls(int(d["width"]), int(d["height"]), float(d["fx"]), float(d["fy"]),
                          float(d["cx"]), float(d["cy"]), *(float(d.get(k, 0.0)) for k in DISTORTION_KEYS))
        except (OSError, KeyError, TypeError, ValueError, AttributeError, IndexError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: unreadable camera intrinsics ({exc}); expected keys width height fx fy cx "
                             "cy, optionally k1 k2 p1 p2 k3, or a ROS camera_calibration file") from None
        if (problem := cam.problem()) is not None:
            raise ValueError(f"{path}: {problem}: fix the file (recalibrate the camera, or write its pixel "
                             "intrinsics: fx fy = focal length / pixel size, cx cy = near the image centre)")
        return cam

    def problem(self) -> str | None:
        """Why these are no camera's intrinsics (disam_ros.data.camera_limits, the one rule), None when fine."""
        return intrinsics_problem(self.width, self.height, self.fx, self.fy, self.cx, self.cy, tuple(self.dist()))

    @classmethod
    def _from_ros_calibration(cls, d: dict) -> CameraIntrinsics:
        """ROS's calibration YAML (camera_info_manager's format); only plumb_bob distortion (or none) is taken:
        another model (equidistant, rational_polynomial) asks for rectified images instead."""
        k = [float(v) for v in d["camera_matrix"]["data"]]
        model = str(d.get("distortion_model", "plumb_bob") or "plumb_bob")
        dist = [float(v) for v in (d.get("distortion_coefficients") or {}).get("data", [])]
        if model != "plumb_bob" and any(dist):
            raise ValueError(f"distortion_model {model!r} is not supported (only plumb_bob): rectify the images "
                             "and give the rectified camera's matrix with zero distortion")
        if len(k) != 9 or len(dist) > 5 and any(dist[5:]):
            raise ValueError(f"camera_matrix needs 9 values (got {len(k)}) and plumb_bob at most k1 k2 p1 p2 k3")
        dist = (dist + [0.0] * 5)[:5]
        return cls(int(d["image_width"]), int(d["image_height"]), k[0], k[4], k[2], k[5], *dist)


@dataclass(frozen=True)
class ConditionFolder:
    root: Path
    name: str
    image_paths: tuple[Path, ...]
    trajectory: Trajectory | None
    camera: CameraIntrinsics | None
    # per image, its depth file or None; empty when the condition has no depth/ folder
    depth_paths: tuple[Path | None, ...] = ()

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def has_depth(self) -> bool:
        return any(p is not None for p in self.depth_paths)

    def depth(self, index: int) -> np.ndarray | None:
        """(H, W) float32 metres (0 = invalid) of image `index`, or None where the dataset has no depth for it."""
        path = self.depth_paths[index] if self.depth_paths else None
        return None if path is None else read_depth(path)


@dataclass(frozen=True)
class Frame:
    index: int
    path: Path
    image: np.ndarray  # HxWx3 uint8 RGB
    stamp: float | None
    position: np.ndarray | None
    quat: np.ndarray | None


def list_conditions(root: str | Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root not found (expected ROOT/<condition>/images/*)")
    names = sorted(p.name for p in root.iterdir() if (p / "images").is_dir())
    if not names:
        raise FileNotFoundError(f"{root}: no condition folders (expected ROOT/<condition>/images/*)")
    return names


def load_condition(root: str | Path, name: str, require_poses: bool = False) -> ConditionFolder:
    cdir = Path(root) / name
    idir = cdir / "images"
    if not idir.is_dir():
        raise FileNotFoundError(f"{idir}: condition '{name}' has no images/ folder")
    images = tuple(sorted(p for p in idir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
    if not images:
        raise FileNotFoundError(f"{idir}: no images ({', '.join(IMAGE_SUFFIXES)}) in condition '{name}'")
    traj = None
    if (cdir / "poses.txt").is_file():
        traj = read_tum(cdir / "poses.txt")
        if len(traj) != len(images):
            images, traj = pair_by_stamp(images, traj, cdir / "poses.txt")
        else:
            check_name_order(images, traj, cdir / "poses.txt")
    elif require_poses:
        raise FileNotFoundError(f"{cdir / 'poses.txt'}: poses required for condition '{name}' (TUM format)")
    cam = CameraIntrinsics.load(cdir / "camera.yaml") if (cdir / "camera.yaml").is_file() else None
    depths: tuple[Path | None, ...] = ()
    if (cdir / DEPTH_DIR).is_dir():
        depths = tuple(d if d.is_file() else None for d in map(depth_path, images))
    return ConditionFolder(Path(root), name, images, traj, cam, depths)


def check_name_order(images: Sequence[Path], traj: Trajectory, source: Path) -> None:
    """ValueError (one line) when poses paired with images by order go back in time: the k-th pose line belongs
    to the k-th image in sorted file-name order, so a file in another order (reversed, sorted by something else)
    gives every image another image's pose without a sign. Stamps that stay equal are fine (photographs without
    capture times may all carry 0); sorting the lines would not help, since the names decide the pairing."""
    back = np.flatnonzero(np.diff(np.asarray(traj.stamps, np.float64)) < 0)
    if back.size:
        k = int(back[0]) + 1
        raise ValueError(f"{source}: pose {k + 1} (stamp {traj.stamps[k]:.9g}) is earlier than pose {k} "
                         f"({traj.stamps[k - 1]:.9g}) although it goes with image {images[k].name}, after "
                         f"{images[k - 1].name}: poses pair with images in sorted file-name order, so stamps must "
                         "not decrease; write the lines in the images' name order (photographs without capture "
                         "times: stamps 0 1 2 ...), or name the images by their stamps to pair them by time")


def pair_by_stamp(images: tuple[Path, ...], track: Trajectory, source: Path) -> tuple[tuple[Path, ...], Trajectory]:
    """The images that have a ground-truth pose at their file-name stamp, and those poses (module docstring).
    A ValueError names the problem when the images carry no stamps or none falls on the track."""
    stamps = [stamp_from_name(p.name) for p in images]
    if any(t is None for t in stamps):
        raise ValueError(f"{source}: {len(track)} poses for {len(images)} images; one pose line per image, in sorted "
                         "file-name order (or name every image by its stamp, <sec>.<frac>.png, to pair them by time)")
    gt, _, _ = sorted_track([stamp_to_ns(float(t)) for t in track.stamps], track.positions, track.quats)
    kept, pos, quat = [], [], []
    for i, t in enumerate(stamps):
        status, p, q = interpolate_pose(gt, stamp_to_ns(t), POSE_MAX_GAP_S)
        if status == OK:
            kept.append(i)
            pos.append(p)
            quat.append(q)
    if not kept:
        raise ValueError(f"{source}: no image stamp ({min(stamps):.3f}..{max(stamps):.3f} s) falls inside the pose "
                         f"track ({track.stamps.min():.3f}..{track.stamps.max():.3f} s) with poses at most "
                         f"{POSE_MAX_GAP_S} s apart around it: are the images and poses.txt on the same clock?")
    if len(kept) < len(images):
        logger.warning("%s: %d of %d images have no ground-truth pose within the track (outside it, or in a gap "
                       "over %.1f s); left out", source.parent.name, len(images) - len(kept), len(images),
                       POSE_MAX_GAP_S)
    return tuple(images[i] for i in kept), make_trajectory([stamps[i] for i in kept], pos, quat)


def read_image(path: str | Path) -> np.ndarray:
    """HxWx3 uint8 RGB; grey images are expanded, alpha dropped."""
    img = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ValueError(f"{path}: unreadable or empty image file; re-export it as PNG/JPEG")
    if img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img[:, :, ::-1])


def iter_frames(folder: ConditionFolder) -> Iterator[Frame]:
    """Frames in file-name order. Without poses.txt the stamp comes from a stamp-named file
    (`<ns>.png`, `<sec>.<frac>.png`; see disam_ros.data.stamps), so a recording exported without ground
    truth still tells the localizer its time of day; other names give stamp None."""
    traj = folder.trajectory
    for i, path in enumerate(folder.image_paths):
        yield Frame(
            index=i,
            path=path,
            image=read_image(path),
            stamp=stamp_from_name(path.name) if traj is None else float(traj.stamps[i]),
            position=None if traj is None else traj.positions[i],
            quat=None if traj is None else traj.quats[i],
        )
