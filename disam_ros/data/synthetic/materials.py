"""Surface appearance of the synthetic town: normals, albedo and emitted light per hit pixel.

Everything here is procedural in world coordinates (window grids on facades, lane markings on the
ground, leaves on crowns), so a place looks the same from every traversal and changes only with what
a condition really changes: snow cover, wetness, foliage, which lights are on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from disam_ros.data.synthetic.conditions import Look
from disam_ros.data.synthetic.render import shape_tables
from disam_ros.data.synthetic.scene import FRONTAGE, ROAD_HALF, VIVID, Cell, Kind, World, sample_texture

SNOW = np.array([0.92, 0.93, 0.96], np.float32)
WARM = np.array([1.0, 0.72, 0.42], np.float32)


def lin(c: np.ndarray) -> np.ndarray:
    """sRGB -> linear light (gamma 2.2 is close enough for albedos)."""
    return np.power(np.clip(c, 0, 1), 2.2).astype(np.float32)


def hash01(*keys: np.ndarray) -> np.ndarray:
    """Deterministic per-cell random numbers in [0, 1) from integer keys (no RNG state involved)."""
    h = np.uint32(2166136261)
    for k in keys:
        h = (h ^ np.asarray(k).astype(np.int64).astype(np.uint32)) * np.uint32(16777619)
        h ^= h >> np.uint32(13)
    return ((h * np.uint32(2654435761)) >> np.uint32(8)).astype(np.float32) / np.float32(1 << 24)


def noise_at(world: World, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Tileable noise sampled at texel coordinates (any shape), bilinear."""
    return sample_texture(world.noise, u, v)


@dataclass
class Surface:
    """Per hit pixel (flattened): normal, albedo (linear), emission (linear), glass reflectance."""

    normal: np.ndarray
    albedo: np.ndarray
    emit: np.ndarray
    gloss: np.ndarray


def object_normals(world: World, oid: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normals at object hits and, for boxes, the face axis (0..2 = x, y, z; -1 for curved shapes)."""
    shape, row, lo, hi = shape_tables(world)
    k = oid - 1
    n = np.zeros_like(p)
    axis = np.full(len(oid), -1, np.int64)
    box = shape[k] == 0
    if box.any():
        d = np.concatenate([np.abs(p[box] - lo[k[box]]), np.abs(p[box] - hi[k[box]])], 1)
        f = np.argmin(d, 1)
        axis[box] = f % 3
        nb = np.zeros((box.sum(), 3), np.float32)
        nb[np.arange(len(f)), f % 3] = np.where(f < 3, -1.0, 1.0)
        n[box] = nb
    cyl = shape[k] == 1
    if cyl.any():
        c = world.cyl[row[k[cyl]]]
        q = p[cyl, :2] - c[:, :2]
        nc = np.concatenate([q / np.maximum(c[:, 2:3], 1e-6), np.zeros((len(q), 1))], 1)
        nc[p[cyl, 2] >= c[:, 4] - 1e-3] = (0, 0, 1)
        n[cyl] = nc
    ell = shape[k] == 2
    if ell.any():
        e = world.ell[row[k[ell]]]
        q = (p[ell] - e[:, :3]) / np.stack([e[:, 3] ** 2, e[:, 3] ** 2, e[:, 4] ** 2], 1)
        n[ell] = q
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-6)
    return n.astype(np.float32), axis


def facade(world: World, oid, p, axis, n, look: Look, night_key: int) -> tuple:
    """Building walls: window grid, ground-floor storefront or door, floor bands; roofs are gravel."""
    _, _, lo, hi = shape_tables(world)
    st = world.style[oid]
    base = lin(world.color[oid])
    lo_, hi_ = lo[oid - 1], hi[oid - 1]
    along = np.where(axis == 0, 1, 0)
    u = p[np.arange(len(p)), along] - lo_[np.arange(len(p)), along]
    width = (hi_ - lo_)[np.arange(len(p)), along]
    z, height = p[:, 2], hi_[:, 2]
    floor_h, ground_h, win_dx, win_w, win_h, store, sign_i, seed = st.T
    ncol = np.maximum(np.round(width / win_dx), 1)
    fu = (u / width) * ncol
    col, fu = np.floor(fu), fu % 1.0
    zf = (z - ground_h) / floor_h
    row, fv = np.floor(zf), zf % 1.0
    upper = (z >= ground_h) & (z < height - 0.9)
    win = upper & (np.abs(fu - 0.5) < win_w / 2) & (fv > 0.22) & (fv < 0.22 + win_h)
    shop = (store > 0.5) & (z < ground_h)
    glass_shop = shop & (z > 0.45) & (z < ground_h - 1.1) & (np.abs(fu - 0.5) < 0.43)
    band = shop & (z >= ground_h - 0.95) & (z < ground_h - 0.25)
    door = (store < 0.5) & (np.abs(u - width / 2) < 0.7) & (z < 2.3)
    grain = 0.82 + 0.36 * noise_at(world, u * 3.0 + seed % 97, z * 3.0 + seed % 89)[:, None]
    alb = base * grain
    alb = np.where(((upper & (fv < 0.06)) | (z > height - 0.5))[:, None], alb * 0.78, alb)
    alb = np.where(band[:, None], lin(VIVID[sign_i.astype(int)]), alb)
    alb = np.where(door[:, None], lin(np.array([0.25, 0.16, 0.1])), alb)
    glass = win | glass_shop
    tint = 0.6 + 0.4 * hash01(seed, col, row)[:, None]
    alb = np.where(glass[:, None], np.array([0.02, 0.025, 0.03], np.float32) * tint * 2, alb)
    roof = n[:, 2] > 0.5
    alb = np.where(roof[:, None], lin(np.array([0.33, 0.32, 0.31])) * grain, alb)
    emit = np.zeros_like(alb)
    if look.lit_windows > 0:
        face = np.sign(n[np.arange(len(p)), np.maximum(axis, 0)]) + 3 * axis
        r = hash01(seed, face, col, row, night_key % 3)
        lit = (win & (r < look.lit_windows)) | (glass_shop & (r < 0.5 + look.lit_windows))
        emit = np.where(lit[:, None], WARM * (0.55 + 0.9 * hash01(seed, col, row, 7))[:, None], 0.0)
        emit = emit + np.where(band[:, None], alb * 0.6 * look.lamps, 0.0)
    return alb, emit.astype(np.float32), glass.astype(np.float32) * 0.35


def tower(world: World, oid, p, n, look: Look) -> tuple:
    st = world.style[oid]
    base = lin(world.color[oid])
    crown = lin(VIVID[st[:, 1].astype(int)])
    z = p[:, 2]
    top = world.cache["shapes"][3][oid - 1, 2]
    strip = (z % st[:, 0]) / st[:, 0] < 0.35
    is_crown = z > top - 4.0
    alb = np.where(strip[:, None], np.float32(0.03), base)
    alb = np.where(is_crown[:, None], crown, alb)
    alb = np.where((n[:, 2] > 0.5)[:, None], base * 0.6, alb)
    on = look.lamps > 0
    emit = np.where((is_crown & on)[:, None], crown * 1.5, 0.0)
    lit = strip & on & (hash01(np.floor(z / st[:, 0]), np.floor(p[:, 0] + p[:, 1])) < 0.5)
    emit = emit + np.where(lit[:, None], WARM * 0.6, 0.0)
    return alb, emit.astype(np.float32), strip.astype(np.float32) * 0.3


def billboard(world: World, oid, p, look: Look) -> tuple:
    st = world.style[oid]
    c1, c2 = lin(world.color[oid]), lin(VIVID[st[:, 1].astype(int)])
    _, _, lo, hi = shape_tables(world)
    lo_, hi_ = lo[oid - 1], hi[oid - 1]
    a = (p - lo_) / np.maximum(hi_ - lo_, 1e-6)
    s = np.where(hi_[:, 0] - lo_[:, 0] > hi_[:, 1] - lo_[:, 1], a[:, 0], a[:, 1])
    zz = a[:, 2]
    pattern = st[:, 0]
    m = np.where(pattern == 0, s < 0.45, np.where(pattern == 1, ((s * 3 + zz) % 1.0) < 0.5,
                                                  (s - 0.65) ** 2 * 4 + (zz - 0.5) ** 2 < 0.12))
    alb = np.where(m[:, None], c2, c1)
    edge = (zz < 0.06) | (zz > 0.94) | (s < 0.03) | (s > 0.97)
    alb = np.where(edge[:, None], np.float32(0.6), alb)
    return alb, (alb * 1.4 * (look.lamps > 0)).astype(np.float32), np.zeros(len(p), np.float32)


def vegetation(world: World, oid, p, n, foliage: str, look: Look) -> np.ndarray:
    """Crown colour: twigs when bare, autumn hues when mixed, greens when full; conifers stay green."""
    kind = world.kind[oid]
    seed = world.style[oid, 0]
    var = noise_at(world, p[:, 0] * 4 + p[:, 2] * 3, p[:, 1] * 4 + seed % 256)[:, None]
    tree_hue = world.style[oid, 1][:, None]
    if foliage == "none":
        leaf = np.array([0.30, 0.26, 0.22], np.float32) * (0.7 + 0.6 * var)
    elif foliage == "mixed":
        autumn = np.where(tree_hue < 0.33, [0.75, 0.25, 0.08], np.where(tree_hue < 0.7, [0.85, 0.6, 0.1],
                                                                          [0.45, 0.5, 0.15]))
        leaf = autumn * (0.6 + 0.7 * var)
    else:
        leaf = np.array([0.22, 0.42, 0.12], np.float32) * (0.55 + 0.8 * var) + tree_hue * [0.05, 0.05, 0.0]
    leaf = np.where((kind == Kind.CONIFER)[:, None], np.array([0.10, 0.24, 0.13]) * (0.6 + 0.7 * var), leaf)
    alb = lin(leaf)
    if look.snow > 0:
        alb = np.where((n[:, 2] > 0.1)[:, None], SNOW * 0.9, alb)
    return alb.astype(np.float32)


GRASS = {"none": (0.46, 0.42, 0.27), "mixed": (0.38, 0.44, 0.2), "full": (0.24, 0.46, 0.14)}


def object_surface(world: World, oid: np.ndarray, p: np.ndarray, foliage: str, look: Look, key: int) -> Surface:
    """Dispatch on object kind; snow settles on every upward-facing surface."""
    n, axis = object_normals(world, oid, p)
    kind = world.kind[oid]
    grain = 0.85 + 0.3 * noise_at(world, (p[:, 0] + p[:, 2]) * 5, (p[:, 1] - p[:, 2]) * 5)[:, None]
    alb = lin(world.color[oid]) * grain
    emit = np.zeros_like(alb)
    gloss = np.zeros(len(oid), np.float32)
    for k, fn in ((Kind.BUILDING, lambda m: facade(world, oid[m], p[m], axis[m], n[m], look, key)),
                  (Kind.TOWER, lambda m: tower(world, oid[m], p[m], n[m], look)),
                  (Kind.BILLBOARD, lambda m: billboard(world, oid[m], p[m], look))):
        m = kind == k
        if m.any():
            alb[m], emit[m], gloss[m] = fn(m)
    m = (kind == Kind.CANOPY) | (kind == Kind.CONIFER)
    if m.any():
        alb[m] = vegetation(world, oid[m], p[m], n[m], foliage, look)
    m = kind == Kind.SIGN
    if m.any():
        stripe = (world.style[oid[m], 0] > 0.5) & (np.abs(p[m, 2] - 2.575) < 0.09)
        alb[m] = np.where(stripe[:, None], np.float32(0.8), alb[m])
        emit[m] = alb[m] * look.headlights * 0.25  # retro-reflective in headlights
    m = kind == Kind.LAMP_HEAD
    if m.any() and look.lamps > 0:
        emit[m] = np.where((n[m, 2] < -0.5)[:, None], np.float32(6.0 * look.lamps), 0.0)
    if look.snow > 0:
        alb = np.where((n[:, 2] > 0.6)[:, None], SNOW, alb)
    return Surface(n, alb.astype(np.float32), emit.astype(np.float32), gloss)


def ground_surface(world: World, x: np.ndarray, y: np.ndarray, foliage: str, look: Look) -> Surface:
    """Streets with lane markings and crossings, sidewalks, kerbs, parks, plazas and the fields beyond."""
    B = world.block
    dx, dy = np.abs(x - np.round(x / B) * B), np.abs(y - np.round(y / B) * B)
    kx, ky = np.round(x / B), np.round(y / B)
    nx, ny = world.cells.shape
    inside = (x > -B - FRONTAGE) & (x < (nx - 1) * B + FRONTAGE) & (y > -B - FRONTAGE) & (y < (ny - 1) * B + FRONTAGE)
    d = np.minimum(dx, dy)
    road = inside & (d < ROAD_HALF)
    walk = inside & ~road & (d < FRONTAGE)
    tex = noise_at(world, x * 6.0, y * 6.0)
    big = noise_at(world, x * 0.4 + 50, y * 0.4 + 90)
    horiz = dy < dx  # on a street running along x
    seg = np.where(horiz, hash01(ky, np.floor(x / B), 1), hash01(kx, np.floor(y / B), 2))
    alb = np.empty(x.shape + (3,), np.float32)
    asphalt = (0.13 + 0.08 * seg + 0.05 * big + 0.05 * tex)[:, None] * np.array([1.0, 1.0, 1.02])
    alb[:] = asphalt
    across = np.where(horiz, dy, dx)  # distance from the centre line of the street we are on
    along = np.where(horiz, dx, dy)  # distance from the nearest crossing street's centre line
    line_style = np.where(horiz, hash01(ky, 3), hash01(kx, 4))
    mid = along > ROAD_HALF + 1.0
    dashed = (np.mod(np.where(horiz, x, y), 6.0) < 3.0) & (across < 0.08)
    double = (across > 0.07) & (across < 0.19)
    yellow = road & mid & (line_style < 0.5) & double
    white = road & mid & (((line_style >= 0.5) & dashed) | (np.abs(across - 4.3) < 0.07))
    zebra = road & (along > ROAD_HALF + 0.8) & (along < ROAD_HALF + 3.3) & (across < ROAD_HALF - 0.3)
    zebra &= (np.mod(np.where(horiz, y, x), 1.0) < 0.5) & (hash01(kx, ky, 5) < 0.6)
    alb[yellow] = (0.75, 0.55, 0.08)
    alb[white | zebra] = 0.75
    side_key = hash01(np.floor(x / B), np.floor(y / B), np.where(horiz, ky, kx), 6)
    paving = np.where((side_key < 0.3)[:, None], [0.52, 0.3, 0.24], [0.6, 0.58, 0.54])
    joints = (np.mod(x, 1.5) < 0.06) | (np.mod(y, 1.5) < 0.06)
    wk = paving * (0.85 + 0.25 * tex[:, None]) * np.where(joints, 0.8, 1.0)[:, None]
    wk = np.where((d < ROAD_HALF + 0.25)[:, None], np.float32(0.68), wk)
    alb[walk] = wk[walk]
    cell = world.cell_at(x, y)
    grass = np.array(GRASS[foliage], np.float32) * (0.7 + 0.5 * big[:, None] + 0.2 * tex[:, None])
    plaza = np.array([0.66, 0.62, 0.55]) * np.where(((np.mod(x, 3) < 0.1) | (np.mod(y, 3) < 0.1)), 0.8, 1.0)[:, None]
    yard = np.where((big > 0.55)[:, None], grass, np.array([0.45, 0.42, 0.38]) * (0.8 + 0.4 * tex[:, None]))
    interior = np.where((cell == Cell.PARK)[:, None], grass, np.where((cell == Cell.PLAZA)[:, None], plaza, yard))
    interior = np.where(inside[:, None], interior, grass)
    rest = ~(road | walk)
    alb[rest] = interior[rest]
    alb = lin(alb)
    gloss = np.zeros(len(x), np.float32)
    if look.snow > 0:
        wheel = np.abs(np.abs(across - 1.75) - 0.8) < 0.1 + 0.1 * tex
        tracks = road & mid & wheel & (big > 0.45)
        slush = np.array([0.56, 0.55, 0.54]) * (0.8 + 0.4 * tex[:, None])
        snow = SNOW * (0.82 + 0.18 * tex[:, None])
        snow = np.where((road & ~tracks)[:, None], snow * 0.78, snow)
        alb = np.where((road & tracks)[:, None], lin(slush), snow).astype(np.float32)
    if look.wet > 0:
        puddle = big > 0.6
        alb = np.where((road | walk)[:, None], alb * 0.55, alb * 0.8).astype(np.float32)
        gloss = np.where(road, np.where(puddle, 0.9, 0.45), np.where(walk, 0.3, 0.05)).astype(np.float32)
    n = np.zeros(x.shape + (3,), np.float32)
    n[:, 2] = 1.0
    return Surface(n, alb, np.zeros_like(alb), gloss)
