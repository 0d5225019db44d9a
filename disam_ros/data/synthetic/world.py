"""Populate the town grid: buildings along every block side, furniture on the sidewalks, parks, landmarks.

A block side is described by its street corner `origin`, the along-street unit vector `t` and the
inward unit vector `n`; a point `u` metres along and `d` metres in from the street centre line is
origin + t*u + n*d. That one parametrisation serves all four sides of every block.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from disam_ros.data.synthetic.route import make_route, outline, random_polyomino
from disam_ros.data.synthetic.scene import FACADES, FRONTAGE, VIVID, Builder, Cell, Kind, World, tileable_noise

DEPTH_MAX = 16.0
STONE = (0.62, 0.60, 0.56)
BARK = (0.30, 0.24, 0.19)
METAL = (0.28, 0.29, 0.30)


@dataclass(frozen=True)
class Side:
    cell: tuple[int, int]
    name: str
    origin: np.ndarray
    t: np.ndarray
    n: np.ndarray

    def at(self, u: float, d: float) -> np.ndarray:
        return self.origin + self.t * u + self.n * d


def block_sides(i: int, j: int, B: float) -> list[Side]:
    x0, y0, x1, y1 = i * B, j * B, (i + 1) * B, (j + 1) * B
    a = np.array
    return [
        Side((i, j), "S", a([x0, y0]), a([1.0, 0.0]), a([0.0, 1.0])),
        Side((i, j), "E", a([x1, y0]), a([0.0, 1.0]), a([-1.0, 0.0])),
        Side((i, j), "N", a([x1, y1]), a([-1.0, 0.0]), a([0.0, -1.0])),
        Side((i, j), "W", a([x0, y1]), a([0.0, -1.0]), a([1.0, 0.0])),
    ]


def footprint(side: Side, u0: float, u1: float, d0: float, d1: float, z0: float, z1: float):
    p, q = side.at(u0, d0), side.at(u1, d1)
    return np.r_[np.minimum(p, q), z0], np.r_[np.maximum(p, q), z1]


@dataclass(frozen=True)
class District:
    """What makes one block look like itself: a few facade colours and a typical height."""

    palette: tuple[int, ...]
    extra_floors: int


def district(rng: np.random.Generator) -> District:
    return District(tuple(int(i) for i in rng.choice(len(FACADES), 3, replace=False)), int(rng.choice([-1, 0, 1, 3])))


def building(b: Builder, rng: np.random.Generator, side: Side, u0: float, w: float, floors: int | None = None,
             look: District | None = None) -> tuple:
    """One facade block with window grid, door or storefront; returns (id, height, depth)."""
    look = look or District(tuple(range(len(FACADES))), 0)
    depth = float(rng.uniform(10.0, DEPTH_MAX))
    floors = floors or max(2, int(rng.choice([2, 3, 3, 4, 4, 5, 6, 7])) + look.extra_floors)
    floor_h, ground_h = float(rng.uniform(3.0, 3.5)), float(rng.uniform(3.6, 4.3))
    height = ground_h + (floors - 1) * floor_h + float(rng.uniform(0.3, 1.2))
    inset = float(rng.choice([0.0, 0.0, 0.5, 1.5]))
    lo, hi = footprint(side, u0, u0 + w, FRONTAGE + inset, FRONTAGE + inset + depth, 0.0, height)
    color = np.clip(FACADES[look.palette[rng.integers(len(look.palette))]] * rng.uniform(0.88, 1.1), 0, 1)
    style = (floor_h, ground_h, rng.uniform(2.3, 3.6), rng.uniform(0.4, 0.7), rng.uniform(0.45, 0.7),
             float(rng.random() < 0.55), float(rng.integers(len(VIVID))), float(rng.integers(1 << 20)))
    return b.box(lo, hi, Kind.BUILDING, color, style), height, depth + inset


def built_side(b: Builder, rng: np.random.Generator, side: Side, B: float, landmark: str | None,
               look: District) -> list[dict]:
    """Buildings along one block side; a landmark side gets a tower or a rooftop billboard mid-way."""
    margin = FRONTAGE + (DEPTH_MAX + 1.5 if side.name in "EW" else 0.0)
    u, end, placed, marks = margin, B - margin, [], []
    mid = 0.5 * (margin + end)
    while end - u > 6.0:
        w = float(min(rng.uniform(8.0, 18.0), end - u))
        if landmark == "tower" and u <= mid < u + w + 12:
            marks.append(tower(b, rng, side, u + 1.0))
            landmark = None
            u += 13.0
            continue
        oid, height, _ = building(b, rng, side, u, w, look=look)
        placed.append((oid, u, w, height))
        u += w + (0.0 if rng.random() < 0.6 else float(rng.uniform(1.5, 4.0)))
    if landmark == "billboard" and placed:
        oid, u0, w, height = min(placed, key=lambda p: abs(p[1] + p[2] / 2 - mid))
        marks.append(billboard(b, rng, side, u0 + w / 2, height))
    return marks


def tower(b: Builder, rng: np.random.Generator, side: Side, u0: float) -> dict:
    height = float(rng.uniform(42.0, 60.0))
    lo, hi = footprint(side, u0, u0 + 11.0, FRONTAGE + 1.0, FRONTAGE + 12.0, 0.0, height)
    color = VIVID[rng.integers(len(VIVID) - 1)] * 0.55 + 0.25
    band = float(rng.uniform(3.0, 6.0))
    ids = [b.box(lo, hi, Kind.TOWER, color, (band, float(rng.integers(len(VIVID))), float(rng.integers(1 << 20))))]
    c = 0.5 * (lo + hi)
    ids.append(b.box(np.r_[c[:2] - 2.0, height], np.r_[c[:2] + 2.0, height + 9.0], Kind.TOWER, color * 0.7,
                     (100.0, 7.0, 0.0)))
    return {"name": "tower", "kind": "tower", "ids": ids, "lo": lo, "hi": np.r_[hi[:2], height + 9.0]}


def billboard(b: Builder, rng: np.random.Generator, side: Side, u: float, roof: float) -> dict:
    """A panel on a roof, facing along the street so that approaching drivers see it from afar."""
    ids = []
    for d in (FRONTAGE + 1.5, FRONTAGE + 6.5):
        p = side.at(u, d)
        ids.append(b.cylinder(p[0], p[1], 0.15, roof, roof + 2.0, Kind.POST, METAL))
    lo, hi = footprint(side, u - 0.2, u + 0.2, FRONTAGE + 0.5, FRONTAGE + 7.5, roof + 2.0, roof + 5.5)
    c1, c2 = rng.choice(len(VIVID), size=2, replace=False)
    ids.append(b.box(lo, hi, Kind.BILLBOARD, VIVID[c1], (float(rng.integers(3)), float(c2),
                                                        float(rng.integers(1 << 20)))))
    return {"name": "billboard", "kind": "billboard", "ids": ids, "lo": lo, "hi": hi}


def tree(b: Builder, rng: np.random.Generator, p: np.ndarray, conifer: bool = False) -> None:
    if conifer:
        b.cylinder(p[0], p[1], 0.15, 0.0, 1.4, Kind.TRUNK, BARK)
        r = float(rng.uniform(1.1, 1.5))
        b.ellipsoid(p[0], p[1], 1.2 + 2.6 * r, r, 2.6 * r, Kind.CONIFER, (0.13, 0.27, 0.16), (rng.integers(1 << 20),))
        return
    trunk_h = float(rng.uniform(2.6, 3.4))
    r = float(rng.uniform(1.7, 2.4))
    rz = r * float(rng.uniform(1.1, 1.35))
    b.cylinder(p[0], p[1], float(rng.uniform(0.14, 0.22)), 0.0, trunk_h + rz * 0.6, Kind.TRUNK, BARK)
    b.ellipsoid(p[0], p[1], trunk_h + rz * 0.6, r, rz, Kind.CANOPY, (0.24, 0.40, 0.14),
                (float(rng.integers(1 << 20)), float(rng.uniform(0.0, 1.0))))


def lamp(b: Builder, side: Side, u: float, rgb: np.ndarray) -> None:
    p = side.at(u, 5.6)
    b.cylinder(p[0], p[1], 0.11, 0.0, 6.6, Kind.LAMP_POLE, METAL)
    lo, hi = footprint(side, u - 0.25, u + 0.25, 4.2, 5.7, 6.45, 6.7)
    b.box(lo, hi, Kind.LAMP_HEAD, (0.85, 0.85, 0.8))
    b.lamps.append((*side.at(u, 4.5), 6.35, *rgb))


def sign(b: Builder, rng: np.random.Generator, side: Side, u: float) -> None:
    """A sign at the block corner facing the traffic that drives towards that corner."""
    p = side.at(u, 5.5)
    b.cylinder(p[0], p[1], 0.05, 0.0, 2.95, Kind.POST, METAL)
    lo, hi = footprint(side, u + 0.06, u + 0.1, 5.1, 5.9, 2.2, 2.95)
    b.box(lo, hi, Kind.SIGN, VIVID[rng.choice([0, 0, 1, 3, 2])], (float(rng.integers(2)),))


def furnish_side(b: Builder, rng: np.random.Generator, side: Side, B: float, lamp_rgb: np.ndarray) -> None:
    lo, hi = FRONTAGE + 1.0, B - FRONTAGE - 1.0
    lamps_u = [lo + (hi - lo) * f + rng.uniform(-2, 2) for f in (0.2, 0.72)]
    for u in lamps_u:
        lamp(b, side, u, lamp_rgb)
    if rng.random() < 0.55:
        u = lo + rng.uniform(0.5, 3.0)
        conifers = rng.random() < 0.15
        while u < hi:
            if min(abs(u - lu) for lu in lamps_u) > 2.5:
                tree(b, rng, side.at(u, 7.0), conifers)
            u += rng.uniform(7.0, 10.5)
    if rng.random() < 0.45:
        sign(b, rng, side, lo - 0.5)


def park(b: Builder, rng: np.random.Generator, i: int, j: int, B: float, statue_side: Side | None) -> list[dict]:
    """Grass with scattered trees; a statue near the street if this is the statue's block (trees keep clear)."""
    keep_out: list[tuple[np.ndarray, float]] = []
    marks = []
    if statue_side is not None:
        p = statue_side.at(B * 0.5 + rng.uniform(-6, 6), FRONTAGE + 3.0)
        marks.append(statue(b, p))
        keep_out.append((p, 10.0))
    lo, hi = FRONTAGE + 2.0, B - FRONTAGE - 2.0
    for _ in range(int(rng.integers(8, 15))):
        p = np.array([i * B, j * B]) + rng.uniform(lo, hi, size=2)
        if all(np.linalg.norm(p - k) > r for k, r in keep_out):
            tree(b, rng, p, conifer=rng.random() < 0.3)
            keep_out.append((p, 5.0))
    return marks


def statue(b: Builder, p: np.ndarray) -> dict:
    """A bronze figure on a stone pedestal, about 6 m tall so that it shows from down the street."""
    bronze = (0.30, 0.42, 0.34)
    ids = [b.box(np.r_[p - 1.6, 0.0], np.r_[p + 1.6, 2.2], Kind.PEDESTAL, STONE),
           b.cylinder(p[0], p[1], 0.7, 2.2, 4.8, Kind.STATUE, bronze),
           b.cylinder(p[0] + 0.85, p[1], 0.16, 3.8, 6.2, Kind.STATUE, bronze),
           b.ellipsoid(p[0], p[1], 5.3, 0.5, 0.58, Kind.STATUE, bronze)]
    return {"name": "statue", "kind": "statue", "ids": ids, "lo": np.r_[p - 1.6, 0.0], "hi": np.r_[p + 1.6, 6.2]}


def plaza(b: Builder, rng: np.random.Generator, i: int, j: int, B: float) -> None:
    c = np.array([i * B, j * B]) + B / 2 + rng.uniform(-6, 6, size=2)
    b.cylinder(c[0], c[1], 3.2, 0.0, 0.6, Kind.PEDESTAL, STONE)
    b.cylinder(c[0], c[1], 0.4, 0.6, 2.2, Kind.PEDESTAL, STONE)
    b.ellipsoid(c[0], c[1], 2.4, 0.8, 0.35, Kind.PEDESTAL, STONE)
    for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        tree(b, rng, c + np.array([dx, dy]) * (B / 2 - FRONTAGE - 4.0), conifer=True)
    if rng.random() < 0.7:  # a kiosk or pavilion on one side
        building(b, rng, block_sides(i, j, B)[int(rng.integers(4))], B * 0.5 - 5.0, 10.0, floors=1)


def route_sides(corners: np.ndarray, B: float) -> list[tuple[tuple[int, int], str]]:
    """(cell, side) pairs that face the route, in driving order (the route runs counter-clockwise)."""
    out = []
    for a, c in zip(corners, np.roll(corners, -1, axis=0)):
        step = np.sign(c - a).astype(int)
        for m in range(int(np.abs(c - a).sum())):
            x, y = (int(v) for v in a + step * m)
            # counter-clockwise outline: the polyomino is on the left, outside cells on the right
            inner = {(1, 0): ((x, y), "S"), (0, 1): ((x - 1, y), "E"),
                     (-1, 0): ((x - 1, y - 1), "N"), (0, -1): ((x, y - 1), "W")}[tuple(step)]
            outer = {(1, 0): ((x, y - 1), "N"), (0, 1): ((x, y), "W"),
                     (-1, 0): ((x - 1, y), "S"), (0, -1): ((x - 1, y - 1), "E")}[tuple(step)]
            out.append(outer)
            out.append(inner)
    return out


def landmark_sides(cells: np.ndarray, sides: list[tuple[tuple[int, int], str]]) -> dict:
    """Spread the landmarks along the route; the statue's block becomes a park on the first street, so
    even a short drive passes a landmark. Towers and billboards need a built block (billboards a long side)."""
    n, picks, used = len(sides), {}, set()
    for m, what in enumerate(("statue", "billboard", "tower", "billboard")):
        for j in range(n):
            cell, name = key = sides[(1 + m * n // 4 + j) % n]
            built = cells[cell[0] + 1, cell[1] + 1] == Cell.BUILT
            if cell in used or (what != "statue" and not built) or (what == "billboard" and name in "EW"):
                continue
            picks[key] = what
            used.add(cell)
            if what == "statue":
                cells[cell[0] + 1, cell[1] + 1] = Cell.PARK
            break
    return picks


def populate(b: Builder, rng: np.random.Generator, cells: np.ndarray, corners: np.ndarray, B: float) -> list[dict]:
    """Fill every block; cells is indexed (i+1, j+1). Returns landmark descriptions."""
    picks = landmark_sides(cells, route_sides(corners, B))
    statue_cells = {k[0]: k for k, v in picks.items() if v == "statue"}
    marks: list[dict] = []
    lamp_colors = (np.array([1.0, 0.62, 0.28]), np.array([0.85, 0.9, 1.0]))
    for i in range(-1, cells.shape[0] - 1):
        for j in range(-1, cells.shape[1] - 1):
            kind = cells[i + 1, j + 1]
            sides = block_sides(i, j, B)
            looks = district(rng)
            if kind == Cell.PARK:
                st = statue_cells.get((i, j))
                st_side = next((s for s in sides if st and s.name == st[1]), None)
                marks += park(b, rng, i, j, B, st_side)
            elif kind == Cell.PLAZA:
                plaza(b, rng, i, j, B)
            for s in sides:
                if kind == Cell.BUILT:
                    marks += built_side(b, rng, s, B, picks.get(((i, j), s.name)), looks)
                furnish_side(b, rng, s, B, lamp_colors[int(rng.random() < 0.3)])
    return marks


def town_cells(rng: np.random.Generator, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Polyomino route outline (corners in block units) and the cell-type grid with a one-block margin."""
    shape = random_polyomino(rng, blocks)
    corners = np.array(outline(set(shape)), dtype=float)
    nx, ny = int(corners[:, 0].max()) + 2, int(corners[:, 1].max()) + 2
    cells = rng.choice([Cell.BUILT, Cell.PARK, Cell.PLAZA], size=(nx, ny), p=[0.82, 0.11, 0.07]).astype(np.int8)
    return corners, cells


def build_world(seed: int, blocks: int = 6, block_m: float = 64.0) -> World:
    """The whole town for one seed: same seed and sizes give the same world, object for object."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7043]))
    corners, cells = town_cells(rng, blocks)
    b = Builder()
    landmarks = populate(b, rng, cells, corners, block_m)
    route = make_route(corners * block_m, radius=7.0)
    lamps = np.array(b.lamps, dtype=np.float64).reshape(-1, 6)
    world = World(
        seed=seed, block=block_m, cells=cells, route=route,
        route_cells=[tuple(c) for c in corners.astype(int).tolist()],
        box_lo=np.array([x[0] for x in b.boxes]), box_hi=np.array([x[1] for x in b.boxes]),
        box_id=np.array([x[2] for x in b.boxes], dtype=np.int32),
        cyl=np.array([x[0] for x in b.cyls], dtype=np.float64).reshape(-1, 5),
        cyl_id=np.array([x[1] for x in b.cyls], dtype=np.int32),
        ell=np.array([x[0] for x in b.ells], dtype=np.float64).reshape(-1, 5),
        ell_id=np.array([x[1] for x in b.ells], dtype=np.int32),
        kind=np.array(b.kind, dtype=np.int8), color=np.stack(b.color), style=np.stack(b.style),
        lamps=lamps[:, :3], lamp_rgb=lamps[:, 3:].astype(np.float32),
        landmarks=landmarks, noise=tileable_noise(rng),
    )
    lo, hi = world.bounds()
    for k, mark in enumerate(landmarks):
        same = [m for m in landmarks[:k] if m["kind"] == mark["kind"]]
        mark["name"] = f"{mark['kind']}_{len(same)}"
        idx = np.asarray(mark["ids"]) - 1  # bounds of all parts (a billboard's posts hang below its panel)
        mark["lo"], mark["hi"] = lo[idx].min(0), hi[idx].max(0)
    return world
