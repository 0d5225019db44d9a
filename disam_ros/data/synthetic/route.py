"""The drive through the synthetic town: a closed loop of streets and the traversals along it.

The loop is the outline of a random polyomino of city blocks, so it has left and right turns, straight
runs of different lengths and never crosses itself. Each traversal drives it with its own lane offset,
heading wobble, camera height, frame spacing and start point, like separate real drives.

Motion profiles (a query drive named `<condition>_<motion>`, e.g. `overcast_2x`): `steady` (the default: one
frame every `spacing` metres), `2x` (twice the spacing at the same frame rate, so twice the speed: every
other map place is skipped; half the frames, so it covers the same stretch of road) and `stops` (the
steady drive, standing still for `STOP_FRAMES` frames after every `STOP_EVERY - STOP_FRAMES` frames of
driving). They test a sequence localizer whose motion model must not assume the map drive's speed.
`dense` is the steady drive filmed at `DENSE_RATE` times the frame rate (frames `spacing / DENSE_RATE` metres and
`period / DENSE_RATE` seconds apart, the same speed; the same number of frames, so a shorter stretch): what a
10-30 Hz camera gives, for what follows one frame from the next (optical-flow tracking, verify/flow.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from disam_ros.geometry import R_BODY_OPTICAL, quat_to_rot, rot_to_quat, yaw_pitch_roll_to_quat

STEPS = ((1, 0), (0, 1), (-1, 0), (0, -1))
MOTIONS = ("steady", "2x", "stops", "dense")
DENSE_RATE = 8  # "dense": 8x the frame rate (0.3-0.4 m between frames at the town's 3 m spacing)
STOP_EVERY, STOP_FRAMES = 25, 8  # "stops": a stop of 8 frames in every 25 frames (a third of the time still)


def random_polyomino(rng: np.random.Generator, cells: int, max_side: int = 3) -> list[tuple[int, int]]:
    """Cells of a hole-free, pinch-free polyomino whose outline is one simple loop (rejection sampling).

    The bounding box is limited to max_side blocks (grown if the cells would not fit) so that no street
    runs straight for long: turns make places distinct.
    """
    max_side = max(max_side, int(np.ceil(np.sqrt(cells + 1))))
    for _ in range(1000):
        shape = {(0, 0)}
        while len(shape) < cells:
            frontier = sorted({(x + dx, y + dy) for x, y in shape for dx, dy in STEPS} - shape)
            x, y = frontier[int(rng.integers(len(frontier)))]
            xs = [c[0] for c in shape] + [x]
            ys = [c[1] for c in shape] + [y]
            if max(xs) - min(xs) < max_side and max(ys) - min(ys) < max_side:
                shape.add((x, y))
        loop = outline(shape)
        full = (max(c[0] for c in shape) - min(c[0] for c in shape) + 1) * (
            max(c[1] for c in shape) - min(c[1] for c in shape) + 1)
        if loop is not None and (cells < 3 or full > cells):
            x0, y0 = min(c[0] for c in shape), min(c[1] for c in shape)
            return sorted((x - x0, y - y0) for x, y in shape)
    raise RuntimeError("could not draw a simple town outline; try another seed or block count")


def outline(shape: set[tuple[int, int]]) -> list[tuple[int, int]] | None:
    """Counter-clockwise corner vertices of the shape's boundary, or None if it is not one simple loop."""
    edges = {}
    for x, y in shape:
        for a, b in (((x, y), (x + 1, y)), ((x + 1, y), (x + 1, y + 1)),
                     ((x + 1, y + 1), (x, y + 1)), ((x, y + 1), (x, y))):
            edges[(a, b)] = True
    boundary = [e for e in edges if (e[1], e[0]) not in edges]
    nxt: dict[tuple[int, int], tuple[int, int]] = {}
    for a, b in boundary:
        if a in nxt:
            return None  # pinch: two boundary edges leave one vertex
        nxt[a] = b
    start = min(nxt)
    loop, v = [start], nxt[start]
    while v != start:
        loop.append(v)
        v = nxt[v]
    if len(loop) != len(boundary):
        return None  # a hole: more than one loop
    corners = [p for i, p in enumerate(loop)
               if (p[0] - loop[i - 1][0], p[1] - loop[i - 1][1])
               != (loop[(i + 1) % len(loop)][0] - p[0], loop[(i + 1) % len(loop)][1] - p[1])]
    return corners


@dataclass(frozen=True)
class Route:
    """Densely sampled closed centre line: arc length s (m), positions (N,2), unwrapped heading (N,) rad."""

    s: np.ndarray
    xy: np.ndarray
    heading: np.ndarray

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (K,2) and headings (K,) at arc lengths s (wrapping around the loop)."""
        s = np.mod(np.asarray(s, dtype=np.float64), self.length)
        x = np.interp(s, self.s, self.xy[:, 0])
        y = np.interp(s, self.s, self.xy[:, 1])
        return np.stack([x, y], -1), np.interp(s, self.s, self.heading)


def make_route(corners: np.ndarray, radius: float, step: float = 0.2) -> Route:
    """Corners (K,2) in metres of a closed rectilinear loop -> filleted, densely sampled centre line."""
    pts = []
    k = len(corners)
    for i in range(k):
        prev, cur, nxt = corners[i - 1], corners[i], corners[(i + 1) % k]
        a = (cur - prev) / np.linalg.norm(cur - prev)
        b = (nxt - cur) / np.linalg.norm(nxt - cur)
        centre = cur - a * radius + b * radius
        start = cur - a * radius - centre
        a0 = np.arctan2(start[1], start[0])
        turn = np.arctan2(a[0] * b[1] - a[1] * b[0], a @ b)
        ang = a0 + np.linspace(0.0, turn, max(int(abs(turn) * radius / step), 2))
        pts.append(centre + radius * np.stack([np.cos(ang), np.sin(ang)], -1))
        seg_end = nxt - b * radius
        seg_start = cur + b * radius
        n = max(int(np.linalg.norm(seg_end - seg_start) / step), 1)
        pts.append(seg_start + np.outer(np.arange(1, n) / n, seg_end - seg_start))
    xy = np.concatenate(pts + [pts[0][:1]])
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    d = np.diff(xy, axis=0)
    heading = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    heading = np.concatenate([heading, heading[-1:]])
    return Route(s, xy, heading)


@dataclass(frozen=True)
class TraversalSpec:
    """How one drive differs from the others; all lengths in metres, angles in degrees."""

    start_s: float
    spacing: float
    period: float
    lane_offset: float
    heading_amp: float
    camera_height: float
    wobble_phase: tuple[float, ...]


def traversal_spec(rng: np.random.Generator, reference: bool, spacing: float, lane: float,
                   height: float) -> TraversalSpec:
    """Random per-drive parameters; the reference drive keeps to the lane centre and the nominal spacing."""
    jitter = 0.0 if reference else 1.0
    sign = rng.choice([-1.0, 1.0])
    return TraversalSpec(
        start_s=float(rng.uniform(-4.0, 6.0) * jitter),
        spacing=float(spacing * (1.0 + jitter * rng.uniform(-0.15, 0.12))),
        period=float(rng.uniform(0.28, 0.36)),
        lane_offset=float(lane + jitter * sign * rng.uniform(0.3, 1.0)),
        heading_amp=float(rng.uniform(0.6, 1.0) if reference else rng.uniform(1.0, 3.0)),
        camera_height=float(height + jitter * rng.uniform(-0.1, 0.1)),
        wobble_phase=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, size=6)),
    )


def spacing_margin(spec: TraversalSpec) -> float:
    """Centre-line metres to sample per frame: the offset path can be up to ~40 % longer in turns."""
    return spec.spacing * 1.5


def split_motion(name: str, known: object) -> tuple[str, str]:
    """(base condition, motion) of a drive name: 'overcast_2x' -> ('overcast', '2x') when 'overcast' is in
    `known`; any other name is a steady drive of itself ('sunny_repeat' -> ('sunny_repeat', 'steady'))."""
    base, _, motion = name.rpartition("_")
    if base and motion in MOTIONS and motion != "steady" and base in known:
        return base, motion
    return name, "steady"


def motion_frames(motion: str, frames: int) -> int:
    """Frames of a drive with this motion: `2x` has half, so it covers the stretch the others cover."""
    return max(1, frames // 2) if motion == "2x" else frames


def frame_period(motion: str, period: float) -> float:
    """Seconds between frames of a drive with this motion (`dense`: DENSE_RATE times as many a second)."""
    return period / DENSE_RATE if motion == "dense" else period


def drive_distances(spacing: float, frames: int, motion: str = "steady") -> np.ndarray:
    """Distance travelled (m) along the driven path at each frame, for a motion profile (see module doc)."""
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}: use one of {list(MOTIONS)}")
    k = np.arange(frames, dtype=np.float64)
    if motion == "2x":
        return 2.0 * spacing * k
    if motion == "dense":
        return spacing * k / DENSE_RATE
    if motion == "stops":
        phase = np.mod(k, STOP_EVERY)
        moving = (phase < STOP_EVERY - STOP_FRAMES).astype(np.float64)  # frame k moves on from frame k-1 ...
        steps = np.r_[0.0, moving[:-1]]  # ... when frame k-1 was a moving frame
        return spacing * np.cumsum(steps)
    return spacing * k


def traversal_poses(route: Route, spec: TraversalSpec, frames: int,
                    motion: str = "steady") -> tuple[np.ndarray, np.ndarray]:
    """Camera optical-frame positions (N,3) and xyzw quaternions (N,4) in the map frame."""
    ph = spec.wobble_phase

    def ground_track(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xy, yaw = route.at(s)
        lateral = spec.lane_offset + 0.15 * np.sin(2 * np.pi * s / 90.0 + ph[0])
        return xy + np.stack([-np.sin(yaw), np.cos(yaw)], -1) * lateral[:, None], yaw

    # equal spacing along the driven (offset) path, not along the centre line: corners stretch it
    dist = drive_distances(spec.spacing, frames, motion)
    span = frames if motion == "steady" else dist[-1] / spec.spacing + 1  # steady: byte-identical to before
    s_dense = spec.start_s + np.arange(0.0, span * spacing_margin(spec) + 30.0, 0.1)
    track, _ = ground_track(s_dense)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(track, axis=0), axis=1))])
    s = np.interp(dist, arc, s_dense)
    xy, yaw = ground_track(s)
    pos = np.concatenate([xy, np.full((frames, 1), spec.camera_height)], 1)
    pos[:, 2] += 0.02 * np.sin(2 * np.pi * s / 7.0 + ph[1])
    wob = np.radians(spec.heading_amp) * (0.7 * np.sin(2 * np.pi * s / 53.0 + ph[2])
                                          + 0.3 * np.sin(2 * np.pi * s / 17.0 + ph[3]))
    pitch = np.radians(0.4) * np.sin(2 * np.pi * s / 31.0 + ph[4])
    roll = np.radians(0.3) * np.sin(2 * np.pi * s / 23.0 + ph[5])
    quats = []
    for y, p, r in zip(yaw + wob, pitch, roll):
        R_map_body = quat_to_rot(yaw_pitch_roll_to_quat(y, p, r))
        quats.append(rot_to_quat(R_map_body @ R_BODY_OPTICAL))
    return pos, np.asarray(quats)
