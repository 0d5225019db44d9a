"""`disam-synth`: the embedded multi-condition world used by the demo, the tests and the benchmarks.

Real long-term localisation datasets (CMU-Seasons, RobotCar) cannot be downloaded here, so this
module renders a small procedural town driven through under several conditions, in the dataset
folder layout of DESIGN.md: ROOT/<condition>/images/000000.png, poses.txt (TUM, optical frame in
the map frame), camera.yaml, plus ROOT/world.yaml and ROOT/contact_sheet.png. Unless turned off
(`--no-depth`), ROOT/<condition>/depth/000000.png holds the exact depth of each frame (16-bit millimetres,
0 = sky or beyond 65.5 m; disam_ros/data/depth.py): the ray caster computes it anyway, so it costs disk only.

A query drive may carry a motion profile in its name, `<condition>_2x` (twice the speed: double frame
spacing, half the frames) or `<condition>_stops` (standing still a third of the time): it looks like
`<condition>` and moves differently (data/synthetic/route.py), e.g. `--conditions overcast,overcast_2x`;
`<condition>_dense` is filmed at 8x the frame rate.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from disam_ros.cliutil import OneLineParser, image_size, os_error_line, output_dir_error
from disam_ros.data.depth import DEPTH_DIR, write_depth
from disam_ros.data.folders import CameraIntrinsics, condition_entry
from disam_ros.data.synthetic.conditions import CONDITIONS, REFERENCE, get_condition
from disam_ros.data.synthetic.route import (
    TraversalSpec,
    frame_period,
    motion_frames,
    split_motion,
    traversal_poses,
    traversal_spec,
)
from disam_ros.data.synthetic.scene import LANE, World
from disam_ros.data.synthetic.shade import look_for, render
from disam_ros.data.synthetic.sheet import contact_sheet, write_sheet
from disam_ros.data.synthetic.sun import iso_local, local_zone, sun_elevation_azimuth
from disam_ros.data.synthetic.world import build_world
from disam_ros.data.tum import Trajectory, make_trajectory, write_tum
from disam_ros.data.world_yaml import (
    WORLD_YAML,
    ConditionInfo,
    Site,
    Town,
    WorldInfo,
    read_world_yaml,
    write_world_yaml,
)
from disam_ros.fsutil import TMP_TAG, OutputKind, StagedDir, pid_alive, replace_refusal

GENERATOR = "disam_ros.data.synthetic"  # world.yaml `generator`: what load_world can rebuild
GENERATOR_VERSION = 1
__all__ = ["WorldConfig", "DEMO_CONFIG", "make_world", "load_world", "render", "main"]


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines a generated world; equal configs give byte-identical folders."""

    seed: int = 0
    image_size: int | tuple[int, int] = 256  # square side, or (width, height)
    fov_deg: float = 70.0  # horizontal field of view, ignored when `intrinsics` is given
    intrinsics: CameraIntrinsics | None = None
    frames: int = 100
    conditions: tuple[str, ...] = tuple(CONDITIONS)
    reference: str = REFERENCE
    spacing_m: float = 3.0  # reference frame spacing; query drives vary it by -15..+12 %
    camera_height_m: float = 1.5
    blocks: int = 6  # city blocks enclosed by the driven loop
    block_m: float = 64.0
    latitude: float = 40.4406
    longitude: float = -79.9959
    timezone: str = "America/New_York"
    workers: int = 0  # render processes; 0: one per core this process may run on, at most 2 (disam_ros.threads)
    sheet_places: int = 5
    depth: bool = True  # write ROOT/<condition>/depth/*.png (exact, free to compute; ~40-50 % of the images' disk)

    def camera(self) -> CameraIntrinsics:
        if self.intrinsics is not None:
            return self.intrinsics
        w, h = (self.image_size, self.image_size) if isinstance(self.image_size, int) else self.image_size
        f = w / 2.0 / np.tan(np.radians(self.fov_deg) / 2.0)
        return CameraIntrinsics(int(w), int(h), float(f), float(f), (w - 1) / 2.0, (h - 1) / 2.0)

    def condition_names(self) -> list[str]:
        """The reference first (a map needs it), then the others in the given order, no duplicates."""
        names = [self.reference] + [c for c in self.conditions if c != self.reference]
        return list(dict.fromkeys(names))

    def validate(self) -> None:
        for name in self.condition_names():
            get_condition(split_motion(name, CONDITIONS)[0])
        cam = self.camera()
        if not (16 <= cam.width <= 2048 and 16 <= cam.height <= 2048):
            raise ValueError(f"image size {cam.width}x{cam.height} out of range; use 16..2048 pixels")
        if not 10.0 <= self.fov_deg <= 150.0:
            raise ValueError(f"field of view {self.fov_deg} deg out of range; use 10..150")
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1 (got {self.frames})")
        if self.blocks < 3:
            raise ValueError(f"blocks must be >= 3 for a loop with turns (got {self.blocks})")


# The embedded demo world: every condition, 100 frames at 128 px (about 20 CPU-seconds on this machine).
DEMO_CONFIG = WorldConfig(image_size=128, frames=100)


def make_town(cfg: WorldConfig) -> World:
    world = build_world(cfg.seed, cfg.blocks, cfg.block_m)
    world.latitude, world.longitude, world.timezone = cfg.latitude, cfg.longitude, cfg.timezone
    return world


def plan_traversal(cfg: WorldConfig, world: World, name: str) -> tuple[Trajectory, TraversalSpec]:
    """Poses and UTC stamps of one condition's drive; its randomness depends on (seed, name) only."""
    base, motion = split_motion(name, CONDITIONS)
    cond = get_condition(base)
    rng = np.random.default_rng([cfg.seed, zlib.crc32(name.encode()), 1])
    spec = traversal_spec(rng, name == cfg.reference, cfg.spacing_m, LANE, cfg.camera_height_m)
    frames = motion_frames(motion, cfg.frames)
    pos, quats = traversal_poses(world.route, spec, frames, motion)
    start = cond.start_utc(cfg.latitude, cfg.longitude, local_zone(cfg.timezone, cfg.longitude))
    return make_trajectory(start + frame_period(motion, spec.period) * np.arange(frames), pos, quats), spec


_JOB: dict = {}


def _render_job(job: tuple[str, int]) -> None:
    name, k = job
    world, cams, trajs, looks, out = _JOB["world"], _JOB["cam"], _JOB["trajs"], _JOB["looks"], _JOB["out"]
    traj = trajs[name]
    img, _, depth = render(world, (traj.positions[k], traj.quats[k]), cams, split_motion(name, CONDITIONS)[0],
                           frame=k, look=looks[name], buffers=True)
    path = out / name / "images" / f"{k:06d}.png"
    if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not write image; check disk space and permissions")
    if _JOB.get("depth", True):
        write_depth(out / name / DEPTH_DIR / f"{k:06d}.png", depth)


def _worker_init(state: dict, parent_pid: int) -> None:
    _die_with(parent_pid)
    cv2.setNumThreads(1)
    _JOB.update(state)


def _die_with(parent_pid: int) -> None:
    """End this pool worker when disam-synth ends, even by kill -9: a worker left behind lives on as a stray
    process and keeps writing into a staging folder that the next run is entitled to delete.

    A thread polls disam-synth's PID. The kernel's parent-death signal (prctl PR_SET_PDEATHSIG) cannot do it:
    a worker's parent is the forkserver, and the forkserver lives as long as any worker does (each worker
    holds the pipe whose end-of-file tells the forkserver to exit), so nothing would ever end.
    """
    if not pid_alive(parent_pid):
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="die-with-parent").start()


def _watch_parent(parent_pid: int, period_s: float = 0.25) -> None:
    while pid_alive(parent_pid):
        time.sleep(period_s)
    os._exit(1)


def render_all(jobs: list[tuple[str, int]], state: dict, workers: int, progress: bool) -> None:
    """Render every (condition, frame) job; each writes its own file, so order and pool size don't matter.
    workers 0: one per core this process may run on (at most 2): on one core a pool of two rendered the demo's
    quick world in 7.4 s against 5.2 s in-process (2026-11-29)."""
    from tqdm import tqdm

    from disam_ros.threads import default_threads

    workers = workers or default_threads()

    bar = tqdm(total=len(jobs), unit="frame", disable=not progress, desc="disam-synth")
    if workers <= 1 or len(jobs) < 8:
        _JOB.update(state)
        try:
            for job in jobs:
                _render_job(job)
                bar.update()
        finally:
            _JOB.clear()
    else:
        # forkserver: workers fork from a clean server, never from a caller that may hold threads (torch, DDS)
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
        with ctx.Pool(workers, initializer=_worker_init, initargs=(state, os.getpid())) as pool:
            for _ in pool.imap_unordered(_render_job, jobs, chunksize=4):
                bar.update()
    bar.close()


def world_description(cfg: WorldConfig, world: World, specs: dict, trajs: dict) -> WorldInfo:
    """Contents of world.yaml: how to rebuild the world and what each condition is."""
    tz = local_zone(cfg.timezone, cfg.longitude)
    cam = cfg.camera()
    conds = {}
    for name, spec in specs.items():
        base, motion = split_motion(name, CONDITIONS)
        c, t0 = get_condition(base), float(trajs[name].stamps[0])
        elev, az = sun_elevation_azimuth(t0, cfg.latitude, cfg.longitude)
        conds[name] = ConditionInfo(c.weather, c.daylight, c.foliage, details={
            "local_start": iso_local(t0, tz), "start_utc": t0,
            "frame_period_s": round(frame_period(motion, spec.period), 6),
            "sun_elevation_deg": round(elev, 2), "sun_azimuth_deg": round(az, 2),
            "spacing_m": round(spec.spacing, 4), "lane_offset_m": round(spec.lane_offset, 4),
            "heading_jitter_deg": round(spec.heading_amp, 3), "camera_height_m": round(spec.camera_height, 4),
            "start_s_m": round(spec.start_s, 4),
            **({"motion": motion, "looks_like": base, "frames": len(trajs[name])} if motion != "steady" else {}),
        })
    return WorldInfo(
        generator=GENERATOR, version=GENERATOR_VERSION, seed=cfg.seed, image_size=(cam.width, cam.height),
        fov_deg=round(float(np.degrees(2 * np.arctan(cam.width / 2 / cam.fx))), 4),
        camera=cam, frames=cfg.frames, reference=cfg.reference, conditions=conds,
        site=Site(cfg.latitude, cfg.longitude, cfg.timezone),
        town=Town(blocks=cfg.blocks, block_m=cfg.block_m, route_length_m=round(world.route.length, 3),
                  objects=world.n_objects, spacing_m=cfg.spacing_m, camera_height_m=cfg.camera_height_m,
                  map_frame="x east, y north, z up (metres); poses are optical frames (z forward, x right, y down)"),
        landmarks=tuple({"name": m["name"], "kind": m["kind"], "ids": [int(i) for i in m["ids"]],
                         "lo": [round(float(v), 4) for v in m["lo"]], "hi": [round(float(v), 4) for v in m["hi"]],
                         "parts": [_rounded(world.primitive(int(i))) for i in m["ids"]]}
                        for m in world.landmarks),
    )


def _rounded(d: dict) -> dict:
    return {k: ([round(float(x), 4) for x in v] if isinstance(v, list) else
                (round(v, 4) if isinstance(v, float) else v)) for k, v in d.items()}


SHEET = "contact_sheet.png"


def world_entry(entry: Path) -> bool:
    """Is `entry` one disam-synth writes at a world's top level: world.yaml, the contact sheet, or a condition
    folder holding only what a condition holds (so a map or a thesis kept inside a world is never replaced)."""
    if entry.name in (WORLD_YAML, SHEET):
        return entry.is_file()
    return entry.is_dir() and all(condition_entry(e) or TMP_TAG in e.name for e in entry.iterdir())


WORLD_OUTPUT = OutputKind("disam-synth", world_entry)


def make_world(cfg: WorldConfig, root: str | Path, progress: bool = True, force: bool = False) -> Path:
    """Render the world into `root` atomically (staged folder beside it, then one rename); returns root.

    `force` replaces only a world disam-synth made (its marker file) holding nothing else, or an empty folder,
    never a user's folder (`WORLD_OUTPUT`, `disam_ros.fsutil.replace_refusal`: the rule of every tool).
    """
    cfg.validate()
    root = Path(root)
    if (problem := replace_refusal(root, replace=force, flag="--force", option="--out", kind=WORLD_OUTPUT)) is not None:
        raise FileExistsError(problem)
    with StagedDir(root, marker=WORLD_OUTPUT.tool) as stage:
        tmp = stage.path
        world = make_town(cfg)
        names = cfg.condition_names()
        plans = {n: plan_traversal(cfg, world, n) for n in names}
        trajs = {n: p[0] for n, p in plans.items()}
        cam = cfg.camera()
        for n in names:
            (tmp / n / "images").mkdir(parents=True)
            if cfg.depth:
                (tmp / n / DEPTH_DIR).mkdir()
            write_tum(tmp / n / "poses.txt", trajs[n])
            cam.save(tmp / n / "camera.yaml")
        looks = {n: look_for(world, get_condition(split_motion(n, CONDITIONS)[0]), float(trajs[n].stamps[0]))
                 for n in names}
        state = {"world": world, "cam": cam, "trajs": trajs, "looks": looks, "out": tmp, "depth": cfg.depth}
        render_all([(n, k) for n in names for k in range(len(trajs[n]))], state, cfg.workers, progress)
        desc = world_description(cfg, world, {n: p[1] for n, p in plans.items()}, trajs)
        write_world_yaml(tmp, desc)
        write_sheet(tmp / SHEET, contact_sheet(tmp, names, cfg.reference, cfg.sheet_places,
                                                             tile=min(cam.width, 128)))
    return root


def load_world(root: str | Path) -> tuple[World, WorldInfo]:
    """Rebuild the World object (for render/ids/depth) from a generated folder's world.yaml."""
    info = read_world_yaml(root)  # a missing or malformed file: one line naming the key
    path = Path(root) / WORLD_YAML
    if info.generator != GENERATOR or info.seed is None or info.site is None or info.town is None:
        raise ValueError(f"{path}: not a synthetic world description (needs generator: {GENERATOR}, seed, site "
                         "and town); regenerate it with disam-synth")
    cfg = WorldConfig(seed=info.seed, blocks=info.town.blocks, block_m=info.town.block_m,
                      latitude=info.site.latitude, longitude=info.site.longitude,
                      timezone=info.site.timezone or WorldConfig.timezone)
    world = make_town(cfg)
    if info.version != GENERATOR_VERSION or world.n_objects != info.town.objects:
        raise ValueError(f"{path}: made by another generator version; regenerate it with this disam-synth")
    return world, info


def _parse(argv: list[str]) -> argparse.Namespace:
    p = OneLineParser(prog="disam-synth", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="output folder (must be empty or absent unless --force)")
    p.add_argument("--seed", type=int, default=0, help="world seed (same seed and options -> same bytes)")
    p.add_argument("--size", type=image_size, default=(256, 256), help="image size WIDTHxHEIGHT, or one number for "
                   "a square (default 256)")
    p.add_argument("--fov", type=float, default=70.0, help="horizontal field of view in degrees")
    p.add_argument("--frames", type=int, default=100, help="frames per condition")
    p.add_argument("--conditions", default=",".join(CONDITIONS),
                   help=f"comma-separated subset of: {', '.join(CONDITIONS)} (the reference is always included); "
                   "append _2x, _stops or _dense for a drive that looks like the condition and moves at twice the "
                   "speed, with stops, or is filmed at 8x the frame rate, e.g. overcast_2x")
    p.add_argument("--reference", default=REFERENCE, help="condition of the reference (map) traversal")
    p.add_argument("--blocks", type=int, default=6, help="city blocks enclosed by the driven loop")
    p.add_argument("--workers", type=int, default=0, help="render processes (default 0: one per core this process "
                   "may run on, at most 2)")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty output folder")
    p.add_argument("--no-depth", action="store_true",
                   help="do not write ROOT/<condition>/depth/*.png (16-bit millimetre depth maps) to save disk")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(list(sys.argv[1:] if argv is None else argv))
    cfg = WorldConfig(seed=args.seed, image_size=args.size, fov_deg=args.fov, frames=args.frames,
                      conditions=tuple(c.strip() for c in args.conditions.split(",") if c.strip()),
                      reference=args.reference, blocks=args.blocks, workers=args.workers, depth=not args.no_depth)
    t0 = time.perf_counter()
    try:
        if problem := output_dir_error(args.out, "--out"):  # a parent that is a file: say so before any work
            raise ValueError(problem)
        root = make_world(cfg, args.out, progress=not args.quiet, force=args.force)
    except ValueError as exc:
        print(f"disam-synth: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # ours name their fix; the system's (disk full, permissions): path, reason, fix
        print(f"disam-synth: error: {os_error_line(exc, 'check the --out path, its permissions and free space')}",
              file=sys.stderr)
        return 2
    info = read_world_yaml(root)
    cam = cfg.camera()
    print(f"disam-synth: {len(info.conditions)} conditions x {cfg.frames} frames at {cam.width}x{cam.height} "
          f"(seed {cfg.seed}, route {info.town.route_length_m:.0f} m) -> {root} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
