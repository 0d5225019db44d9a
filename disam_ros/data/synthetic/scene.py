"""Scene data of the synthetic town: primitive arrays, object kinds, palettes; no placement logic here.

Everything is axis-aligned boxes, vertical cylinders and vertical ellipsoids so the ray caster stays
simple and vectorised. Object ids start at 1 (0 is the ground, -1 the sky) and index the per-object
`kind`, `color` and `style` tables that the shader reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import cv2
import numpy as np

from disam_ros.data.synthetic.route import Route

ROAD_HALF = 5.0  # street centre line to kerb (two 3.5 m lanes + gutter)
FRONTAGE = 8.5  # street centre line to building fronts; the sidewalk lies between
LANE = -1.75  # right-hand traffic: drive 1.75 m right of the centre line


class Kind(IntEnum):
    GROUND = 0
    BUILDING = 1
    TOWER = 2
    BILLBOARD = 3
    POST = 4
    LAMP_POLE = 5
    LAMP_HEAD = 6
    SIGN = 7
    TRUNK = 8
    CANOPY = 9
    CONIFER = 10
    STATUE = 11
    PEDESTAL = 12


class Cell(IntEnum):
    BUILT = 0
    PARK = 1
    PLAZA = 2


FACADES = np.array([  # sRGB: brick, red brick, sandstone, beige, grey, white, pale blue, ochre, green, dark
    [0.55, 0.30, 0.22], [0.66, 0.27, 0.20], [0.78, 0.66, 0.48], [0.85, 0.78, 0.64], [0.58, 0.58, 0.58],
    [0.88, 0.87, 0.84], [0.60, 0.70, 0.78], [0.80, 0.62, 0.30], [0.48, 0.58, 0.46], [0.32, 0.30, 0.30],
], dtype=np.float32)
VIVID = np.array([  # shop signs, awnings, billboards
    [0.85, 0.10, 0.10], [0.10, 0.35, 0.80], [0.95, 0.75, 0.05], [0.10, 0.60, 0.25], [0.85, 0.35, 0.05],
    [0.60, 0.15, 0.60], [0.05, 0.65, 0.70], [0.95, 0.95, 0.95],
], dtype=np.float32)


@dataclass
class World:
    """Primitive arrays plus what the ground shader needs to draw streets, parks and markings."""

    seed: int
    block: float
    cells: np.ndarray  # (nx, ny) Cell codes; cell (i, j) covers [i, i+1) x [j, j+1) blocks, offset by -1
    route: Route
    route_cells: list[tuple[int, int]]
    box_lo: np.ndarray
    box_hi: np.ndarray
    box_id: np.ndarray
    cyl: np.ndarray  # (M, 5) x, y, r, z0, z1
    cyl_id: np.ndarray
    ell: np.ndarray  # (K, 5) x, y, z, r, rz
    ell_id: np.ndarray
    kind: np.ndarray  # (N+1,) Kind per object id
    color: np.ndarray  # (N+1, 3) sRGB base colour
    style: np.ndarray  # (N+1, 8) per-kind parameters, see Builder.building
    lamps: np.ndarray  # (L, 3) light positions
    lamp_rgb: np.ndarray  # (L, 3) linear colour
    landmarks: list[dict]
    noise: np.ndarray  # (256, 256) tileable noise in [0, 1]
    latitude: float = 40.4406  # Pittsburgh, like CMU-Seasons
    longitude: float = -79.9959
    timezone: str = "America/New_York"
    cache: dict = field(default_factory=dict)

    @property
    def n_objects(self) -> int:
        return len(self.kind) - 1

    def cell_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        i = np.clip(np.floor(x / self.block).astype(int) + 1, 0, self.cells.shape[0] - 1)
        j = np.clip(np.floor(y / self.block).astype(int) + 1, 0, self.cells.shape[1] - 1)
        return self.cells[i, j]

    def primitive(self, oid: int) -> dict:
        """Shape and parameters of one object, as written to world.yaml (metres, map frame)."""
        for shape, ids in (("box", self.box_id), ("cylinder", self.cyl_id), ("ellipsoid", self.ell_id)):
            hit = np.nonzero(ids == oid)[0]
            if len(hit):
                k = int(hit[0])
                if shape == "box":
                    return {"id": oid, "shape": shape, "lo": self.box_lo[k].tolist(), "hi": self.box_hi[k].tolist()}
                keys = ("x", "y", "r", "z0", "z1") if shape == "cylinder" else ("x", "y", "z", "r", "rz")
                row = self.cyl[k] if shape == "cylinder" else self.ell[k]
                return {"id": oid, "shape": shape, **{a: float(v) for a, v in zip(keys, row)}}
        raise KeyError(f"object id {oid} not in this world (1..{self.n_objects})")

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) axis-aligned bounds of every object, indexed by id - 1."""
        n = self.n_objects
        lo, hi = np.zeros((n, 3)), np.zeros((n, 3))
        lo[self.box_id - 1], hi[self.box_id - 1] = self.box_lo, self.box_hi
        c = self.cyl
        lo[self.cyl_id - 1] = np.stack([c[:, 0] - c[:, 2], c[:, 1] - c[:, 2], c[:, 3]], -1)
        hi[self.cyl_id - 1] = np.stack([c[:, 0] + c[:, 2], c[:, 1] + c[:, 2], c[:, 4]], -1)
        e = self.ell
        r = np.stack([e[:, 3], e[:, 3], e[:, 4]], -1)
        lo[self.ell_id - 1], hi[self.ell_id - 1] = e[:, :3] - r, e[:, :3] + r
        return lo, hi


def tileable_noise(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Band-limited noise that wraps at the edges (filtered in the Fourier domain), scaled to [0, 1]."""
    f = np.fft.fftfreq(size)
    rad = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2) + 1.0 / size
    spec = np.fft.fft2(rng.normal(size=(size, size))) / rad ** 1.1
    n = np.real(np.fft.ifft2(spec))
    return ((n - n.min()) / (n.max() - n.min())).astype(np.float32)


class Builder:
    """Accumulates primitives; each add_* returns the new object's id."""

    def __init__(self) -> None:
        self.boxes: list[tuple] = []
        self.cyls: list[tuple] = []
        self.ells: list[tuple] = []
        self.kind: list[int] = [Kind.GROUND]
        self.color: list[np.ndarray] = [np.zeros(3, np.float32)]
        self.style: list[np.ndarray] = [np.zeros(8, np.float32)]
        self.lamps: list[tuple] = []

    def _new(self, kind: Kind, color, style=None) -> int:
        self.kind.append(int(kind))
        self.color.append(np.asarray(color, np.float32))
        st = np.zeros(8, np.float32)
        if style is not None:
            st[: len(style)] = style
        self.style.append(st)
        return len(self.kind) - 1

    def box(self, lo, hi, kind: Kind, color, style=None) -> int:
        oid = self._new(kind, color, style)
        self.boxes.append((np.minimum(lo, hi), np.maximum(lo, hi), oid))
        return oid

    def cylinder(self, x, y, r, z0, z1, kind: Kind, color, style=None) -> int:
        oid = self._new(kind, color, style)
        self.cyls.append(((x, y, r, z0, z1), oid))
        return oid

    def ellipsoid(self, x, y, z, r, rz, kind: Kind, color, style=None) -> int:
        oid = self._new(kind, color, style)
        self.ells.append(((x, y, z, r, rz), oid))
        return oid


def sample_texture(tex: np.ndarray, u: np.ndarray, v: np.ndarray, wrap: bool = True,
                   border: float = 0.0) -> np.ndarray:
    """Bilinear lookup of `tex` at texel coordinates (u, v) of any shape, via cv2.remap.

    cv2.remap needs maps narrower than 32767, so the points are laid out in rows of 4096.
    """
    shape = np.shape(u)
    n = int(np.prod(shape))
    cols = min(max(n, 1), 4096)
    rows = -(-n // cols)
    mu = np.zeros(rows * cols, np.float32)
    mv = np.zeros(rows * cols, np.float32)
    mu[:n], mv[:n] = np.ravel(u), np.ravel(v)
    mode = cv2.BORDER_WRAP if wrap else cv2.BORDER_CONSTANT
    out = cv2.remap(tex, mu.reshape(rows, cols), mv.reshape(rows, cols), cv2.INTER_LINEAR, borderMode=mode,
                    borderValue=border)
    return out.reshape((rows * cols,) + tex.shape[2:])[:n].reshape(shape + tex.shape[2:])
