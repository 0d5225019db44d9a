"""Camera intrinsics for geometry: one validated value type shared by features, triangulation and the pose solver.

Why a second type beside `disam_ros.data.folders.CameraIntrinsics`: that one is the on-disk camera.yaml
record (pinhole + optional plumb_bob distortion, unvalidated); the solvers need a validated camera, as a
pycolmap camera and as OpenCV's K + dist. `from_camera` adapts the stored record, so camera.yaml stays read in
one place (data/folders.py).

Pixel convention: OpenCV's, the repository's (data/synthetic/render.py, data/depth.py): the centre of the
top-left pixel is (0, 0), so a 64 px wide ideal camera has cx = 31.5. SIFT keypoints use the same convention,
and pycolmap's projection is the same formula (x / z * fx + cx), so keypoints go to pycolmap unchanged.

Distortion is OpenCV's plumb_bob order (k1, k2, p1, p2, k3); it acts on normalised coordinates, so resizing
an image keeps it. pycolmap models: PINHOLE without distortion, OPENCV with k1 k2 p1 p2, FULL_OPENCV when
k3 is set (same forward model as cv2.projectPoints).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from disam_ros.data.camera_limits import intrinsics_problem
from disam_ros.data.folders import CameraIntrinsics

FIX = "fix camera.yaml or the CameraInfo K"


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole (+ optional plumb_bob distortion) camera in pixels; validated on construction by the package's one
    intrinsics rule (disam_ros.data.camera_limits), so a CameraInfo, a camera.yaml and a map's stored camera
    pass or fail alike."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    k1: float = 0.0
    k2: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    k3: float = 0.0

    def __post_init__(self) -> None:
        problem = intrinsics_problem(self.width, self.height, self.fx, self.fy, self.cx, self.cy,
                                     (self.k1, self.k2, self.p1, self.p2, self.k3))
        if problem is not None:
            raise ValueError(f"{problem}: {FIX}")

    @classmethod
    def from_K(cls, K: np.ndarray, width: int, height: int, dist: np.ndarray | None = None) -> Intrinsics:  # noqa: N802
        """From a 3x3 K (CameraInfo.k reshaped, or OpenCV's) and optional plumb_bob D (k1 k2 p1 p2 [k3])."""
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"camera matrix K must be 3x3, got shape {K.shape}: {FIX}")
        fixed = K[[0, 1, 2, 2, 2], [1, 0, 0, 1, 2]]  # skew, K[1,0] and the last row; fx..cy are checked by name
        if not np.allclose(fixed, [0.0, 0.0, 0.0, 0.0, 1.0], rtol=0.0, atol=1e-9):
            raise ValueError(f"camera matrix K={K.tolist()} must be [[fx,0,cx],[0,fy,cy],[0,0,1]] (no skew): {FIX}")
        d = np.zeros(5) if dist is None else np.asarray(dist, dtype=np.float64).reshape(-1)
        if len(d) > 5 and np.any(d[5:] != 0):
            raise ValueError(f"distortion {d.tolist()} has rational terms (k4..k6): only plumb_bob "
                             "k1 k2 p1 p2 k3 is supported; recalibrate with the plumb_bob model")
        d = np.concatenate([d[:5], np.zeros(max(0, 5 - len(d)))])
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width), int(height),
                   *(float(v) for v in d))

    @classmethod
    def from_camera(cls, cam: CameraIntrinsics) -> Intrinsics:
        """Adapter from the dataset's camera.yaml record (its distortion included)."""
        return cls(float(cam.fx), float(cam.fy), float(cam.cx), float(cam.cy), int(cam.width), int(cam.height),
                   *(float(v) for v in cam.dist()))

    @classmethod
    def load(cls, path: str | Path) -> Intrinsics:
        """Read a camera.yaml through data/folders.py (its one reader), then validate for geometry."""
        cam = CameraIntrinsics.load(path)
        try:
            return cls.from_camera(cam)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    @property
    def has_distortion(self) -> bool:
        return any(v != 0.0 for v in self.dist())

    def matrix(self) -> np.ndarray:
        """OpenCV's 3x3 K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def dist(self) -> np.ndarray:
        """OpenCV's distortion vector (k1, k2, p1, p2, k3)."""
        return np.array([self.k1, self.k2, self.p1, self.p2, self.k3])

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera for an image resized to width x height (cv2.resize geometry).

        fx, fy scale by the width and height ratios; the principal point scales about the image corner
        (-0.5, -0.5), not about pixel 0's centre: cx' = (cx + 0.5) * sx - 0.5, which is what cv2.resize does
        to pixel centres (a plain cx * sx is off by (sx - 1) / 2 px). Distortion is unchanged.
        """
        if not (int(width) == width > 0 and int(height) == height > 0):
            raise ValueError(f"Intrinsics.scaled needs the resized image's size in whole pixels > 0, got "
                             f"{width!r} x {height!r}")
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                          int(width), int(height), self.k1, self.k2, self.p1, self.p2, self.k3)

    def colmap_model(self) -> tuple[str, list[float]]:
        """pycolmap model name and parameter list (fx fy cx cy, then the distortion of that model)."""
        base = [self.fx, self.fy, self.cx, self.cy]
        if not self.has_distortion:
            return "PINHOLE", base
        if self.k3 == 0.0:
            return "OPENCV", base + [self.k1, self.k2, self.p1, self.p2]
        return "FULL_OPENCV", base + [self.k1, self.k2, self.p1, self.p2, self.k3, 0.0, 0.0, 0.0]

    def to_pycolmap(self):
        """A pycolmap.Camera (imported here so that importing this module does not load pycolmap)."""
        import pycolmap

        model, params = self.colmap_model()
        return pycolmap.Camera(model=model, width=int(self.width), height=int(self.height), params=params)


def intrinsics_for(width: int, height: int, camera: Intrinsics | None, camera_source: str, map_camera: Intrinsics
                   ) -> tuple[Intrinsics | None, str]:
    """Intrinsics for a query image of this size, and where they came from: the query camera's, else the map
    camera's (assumed: the same camera drove the map), scaled to the image when only the resolution differs;
    (None, why) when the aspect ratio differs too (another camera: its intrinsics are needed)."""
    for cam, source in ((camera, camera_source), (map_camera, "map camera (assumed)")):
        if cam is None:
            continue
        if (cam.width, cam.height) == (width, height):
            return cam, source
        if abs(cam.width / cam.height - width / height) < 0.01:
            return cam.scaled(width, height), f"{source}, scaled to {width}x{height}"
        if cam is camera:
            return None, f"{source} is {cam.width}x{cam.height}, the image {width}x{height}"
    return None, f"no camera intrinsics for {width}x{height} images (the map's are " \
                 f"{map_camera.width}x{map_camera.height}): publish CameraInfo or pass camera.yaml"
