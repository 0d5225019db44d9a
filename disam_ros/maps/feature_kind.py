"""The kinds of local feature a map's geometry stores, so that one builder (maps/geometry_build.py), one writer and
one reader (maps/geometry_store.py) serve SIFT and the learned keypoints (pose/learned.py) alike.

Why two blocks side by side rather than one kind replacing the other: the SIFT block always stays (optical flow,
polish, map-point tracking and the dense search read SIFT keypoints and their gradient descriptors); the learned
block is what the verifier matches where SIFT finds little (night, rain, snow). Each kind has its own files,
descriptor size and storage type, and its own matching ratio when triangulated:

- sift: (K, 128) uint8 (OpenCV's float values are 0..255), ratio test 0.8 (the plan's `ratio`);
- learned: (K, 64) float16 unit vectors (float16 keeps cosine similarities to ~1e-3, half of float32's bytes),
  mutual nearest neighbour only (`LEARNED_RATIO`), and the network file copied into the map
  (geometry_learned_net.pt): the query side loads that copy, so a map's keypoints and a query's come from the same
  weights whatever the package ships later.

`LearnedPlan` is `disam-build-map --verify-features learned|both [--keypoint-net PATH]`. `FeatureSpill` is
triangulation's pass 1 on disk, for either kind.
"""
from __future__ import annotations

import functools
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.maps.map_format import GEOM_LEARNED_FILES, GEOM_LEARNED_NET, GEOMETRY_FILES
from disam_ros.maps.npy_stream import NpyAppender
from disam_ros.pose.features import Features
from disam_ros.pose.learned import LEARNED_DIM, LEARNED_RATIO, LearnedConfig, detect_learned, file_sha256, load_net
from disam_ros.shipped import KEYPOINTS

VERIFY_FEATURES = ("sift", "learned", "both")  # what the verifier matches; the map stores SIFT in every case
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureKind:
    """One kind of stored local feature. `detect` (image -> Features) is None for SIFT, whose recipe is the plan's
    (GeometryPlan.sift); `ratio` None: the plan's ratio; `record`: what the manifest says about how the keypoints
    were found (None for SIFT: the plan's SiftConfig.to_record())."""

    name: str
    files: tuple[str, ...]  # keypoints, descriptors, points3d, offsets
    dim: int
    dtype: str  # the descriptors' dtype on disk
    ratio: float | None = None
    detect: Callable[[np.ndarray], Features] | None = field(default=None, compare=False, repr=False)
    record: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def is_sift(self) -> bool:
        return self.name == "sift"

    def stored(self, descriptors: np.ndarray) -> np.ndarray:
        """(N, dim) descriptors as the map keeps them: SIFT rounded to uint8, learned ones as float16."""
        d = np.asarray(descriptors, np.float32).reshape(-1, self.dim)
        if self.dtype == "uint8":
            return np.clip(np.rint(d), 0, 255).astype(np.uint8)
        return d.astype(self.dtype)


SIFT_KIND = FeatureKind("sift", GEOMETRY_FILES, 128, "uint8")
LEARNED_KIND = FeatureKind("learned", GEOM_LEARNED_FILES, LEARNED_DIM, "float16", LEARNED_RATIO)


@dataclass(frozen=True)
class LearnedPlan:
    """Store learned keypoints beside SIFT's: found by the network in `net` with `config`; `verify_features`
    ("learned" or "both") is recorded so that the node can default to what the map was built for."""

    net: Path = KEYPOINTS
    config: LearnedConfig = field(default_factory=LearnedConfig)
    verify_features: str = "both"

    def __post_init__(self) -> None:
        if self.verify_features not in VERIFY_FEATURES[1:]:
            raise ValueError(f"--verify-features {self.verify_features!r}: a learned block is stored for "
                             f"{' or '.join(VERIFY_FEATURES[1:])}")

    def check(self) -> None:
        """A ValueError in one line when `net` is not a keypoint network (asked before any image is read)."""
        try:
            load_net(self.net)
        except OSError as exc:
            raise ValueError(f"--keypoint-net {self.net}: {exc.strerror or type(exc).__name__}; pass a network "
                             "written by disam-train-keypoints, or leave the option out for the shipped one") from None
        except ValueError as exc:  # names the file and the fix already
            raise ValueError(f"--keypoint-net {exc}".replace("\n", " ")) from None

    def kind_in(self, directory: Path) -> FeatureKind:
        """The learned kind for a map built in `directory` (its staging folder): the network copied there first, the
        detector loaded from the copy, so the recorded sha256 is the file the keypoints were made with."""
        copy = Path(directory) / GEOM_LEARNED_NET
        shutil.copyfile(self.net, copy)
        digest = file_sha256(copy)
        detect = functools.partial(detect_learned, net=load_net(copy), config=self.config)
        return replace(LEARNED_KIND, detect=detect,
                       record={**self.config.to_record(digest), "verify_features": self.verify_features})


FEATURES_DIR = ".geometry_features"  # in the staging directory; hidden and a folder, so never listed in the map


class FeatureSpill:
    """Triangulation's pass 1 on disk: every map image's keypoints (float32) and descriptors (as the store keeps
    them) streamed into .npy files with row offsets in RAM; pass 2 reads them memory-mapped, so the page cache, not
    the builder, holds what a few partners need. `gradient_dim`: SIFT's gradient descriptors too (uint8)."""

    def __init__(self, directory: Path, kind: FeatureKind = SIFT_KIND, gradient_dim: int | None = None) -> None:
        self.directory, self.kind = Path(directory), kind
        self.directory.mkdir(exist_ok=True)
        self._files = [NpyAppender(self.directory / "keypoints.npy", (2,), "float32"),
                       NpyAppender(self.directory / "descriptors.npy", (kind.dim,), kind.dtype)]
        if gradient_dim is not None:
            self._files.append(NpyAppender(self.directory / "gradients.npy", (gradient_dim,), "uint8"))
        self.offsets = [0]
        self._read: list[np.ndarray] | None = None

    def add(self, keypoints: np.ndarray, descriptors: np.ndarray, gradients: np.ndarray | None = None) -> None:
        rows = [np.asarray(keypoints, np.float32).reshape(-1, 2), self.kind.stored(descriptors)]
        if len(self._files) == 3:
            rows.append(np.asarray(gradients, np.uint8).reshape(-1, *self._files[2].row_shape))
        for f, r in zip(self._files, rows):
            f.append(r)
        self.offsets.append(self.offsets[-1] + len(keypoints))

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(keypoints, descriptors, gradient descriptors or None) of map image i; the first call ends pass 1."""
        if self._read is None:
            for f in self._files:
                f.close()
            if self.offsets[-1] == 0:  # nothing to map
                self._read = [np.zeros((0,) + f.row_shape, f.dtype) for f in self._files]
            else:
                self._read = [np.load(f.path, mmap_mode="r") for f in self._files]
        lo, hi = self.offsets[i], self.offsets[i + 1]
        kp, desc, *grads = (np.asarray(a[lo:hi]) for a in self._read)
        return kp, desc, grads[0] if grads else None

    def remove(self) -> None:
        for f in self._files:
            f.close()
        self._read = None
        shutil.rmtree(self.directory, ignore_errors=True)  # never hide the build's own exception behind this one
        if self.directory.exists():
            log.warning("could not remove the temporary map features %s: delete it by hand", self.directory)
