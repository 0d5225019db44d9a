"""`disam-match-eval`: how well each way of matching a query to its map image yields a metric pose, per condition.

Why: with SIFT + PnP almost no night, fog or snow frame of the demo world gets within (0.25 m, 2 deg), so the
open question is cross-condition matching, not retrieval. This experiment isolates it: every query frame gets
its GROUND-TRUTH nearest reference image (no retrieval), is matched to it by each method, the map keypoints
are back-projected with the map image's depth (pose/backproject.py) and the pose is solved (pose/solver.py).

Methods (--methods, comma-separated): `sift` (RootSIFT, ratio 0.8, mutual); `MODEL@SIZE` dense DISAM matches
(pose/dense.py), MODEL coarse / fine (the shipped demo weights or --coarse / --fine) / untrained (one random
encoder of the same shape for every domain), run at input SIZE; `A+B` the union of two methods' 2D-3D matches
(solved with the looser threshold); `A|B` a cascade (B where A finds no pose); `A>sift` A's pose guides SIFT
matching to the keypoints near where it projects the map keypoints (A's pose is kept where that fails);
`prior>sift` the same guided by the map image's own pose (what retrieval alone knows; no pose where it fails).

Per method and condition: the share within (0.25 m, 2 deg), (0.5 m, 5 deg), (5 m, 10 deg), the share solved,
median matches, median matches with depth, median of those right under the ground truth (reprojection below
the inlier threshold), median inliers, and the median time of the query side (features or encoding, matching,
back-projection, solve; the map side, which a map would store, is computed once and not timed).

    disam-match-eval --world runs/match_world --size 320x240 --frames 40 --out runs/match_eval.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from disam_ros.cliutil import OneLineParser, image_size, name_list, positive_float, positive_int
from disam_ros.data.folders import ConditionFolder, load_condition, read_image
from disam_ros.geometry import quat_angle_deg
from disam_ros.pose.backproject import DepthLimits, backproject
from disam_ros.pose.camera import Intrinsics
from disam_ros.pose.features import SiftConfig, detect_sift, match_descriptors, to_grey
from disam_ros.pose.frames import cam_from_map, project
from disam_ros.pose.guided import guided_match
from disam_ros.pose.solver import PoseSolution, SolverConfig, solve_absolute_pose
from disam_ros.shipped import ASSETS

BUCKETS = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))
MODELS = ("coarse", "fine", "untrained")
DEFAULT_CONDITIONS = "sunny_repeat,overcast,dusk,night,fog,snow,rain"
DEFAULT_METHODS = ("sift,fine@64,untrained@64,fine@128,untrained@128,sift+fine@64,fine@128>sift,untrained@128>sift,"
                   "prior>sift,prior>sift|untrained@128>sift")


@dataclass
class Ctx:
    """What every query needs: the map drive, its camera, the settings, encoders and map-side features."""

    ref: ConditionFolder
    cam: Intrinsics
    args: argparse.Namespace
    encoders: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)

    def map_item(self, key: str, k: int, make):
        if (key, k) not in self.cache:
            self.cache[(key, k)] = make()
        return self.cache[(key, k)]

    def pose(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.ref.trajectory.positions[k], self.ref.trajectory.quats[k]

    def backproject(self, uv: np.ndarray, k: int):
        depth = self.map_item("depth", k, lambda: self.ref.depth(k))
        a = self.args
        limits = DepthLimits(radius=a.depth_radius, max_relative_step=a.max_step, planar=a.planar)
        return backproject(uv, depth, self.cam, *self.pose(k), limits)


@dataclass(frozen=True)
class Prior:
    """A guide pose that was not solved (the map image's own): camera-from-map and the stored form."""

    R: np.ndarray
    t: np.ndarray
    position: np.ndarray
    quat: np.ndarray


@dataclass
class Attempt:
    """One method's 2D-3D correspondences (with depth), the threshold it was solved with and the solution."""

    p2: np.ndarray
    p3: np.ndarray
    thr: float
    matches: int
    rejects: dict
    sol: PoseSolution | None


def method_list(text: str) -> tuple[str, ...]:
    """--methods: each a cascade `A|B` of stages `X`, `X>sift` or `prior>sift`; X a union `P+Q` of `sift` and
    `MODEL@SIZE`."""
    methods = name_list(text)
    for method in methods:
        for stage in method.split("|"):
            base, guided, second = stage.partition(">")
            known = all(p == "sift" or (p.partition("@")[0] in MODELS and p.partition("@")[2].isdigit()
                                        and int(p.partition("@")[2]) % 4 == 0) for p in base.split("+"))
            if stage != "prior>sift" and (not known or (guided and second != "sift")):
                raise argparse.ArgumentTypeError(
                    f"method {method!r} is not understood: use sift, MODEL@SIZE (MODEL one of {', '.join(MODELS)}, "
                    "SIZE a multiple of 4), A+B, A|B, A>sift or prior>sift, e.g. 'sift,fine@64>sift'")
    return methods


def make_or_load_world(args: argparse.Namespace) -> Path:
    """Render the world once (reused when its world.yaml is there: settings then come from the folder)."""
    if (args.world / "world.yaml").is_file():
        return args.world
    from disam_ros.data.synthetic import WorldConfig, make_world

    cfg = WorldConfig(seed=args.seed, image_size=args.size, frames=args.frames, workers=1, sheet_places=2,
                      conditions=("sunny", *args.conditions))
    t0 = time.perf_counter()
    make_world(cfg, args.world, progress=False)
    print(f"rendered {len(cfg.condition_names())} drives x {args.frames} frames at {args.size[0]}x{args.size[1]} "
          f"in {time.perf_counter() - t0:.0f} s -> {args.world}", flush=True)
    return args.world


def encoder_for(ctx: Ctx, model: str, size: int):
    from disam_ros.pose.dense import load_encoder, untrained_encoder  # torch: once a dense method runs

    if (model, size) not in ctx.encoders:
        ctx.encoders[model, size] = (untrained_encoder(encoder_for(ctx, "coarse", size).config, seed=0)
                                     if model == "untrained" else load_encoder(getattr(ctx.args, model), size))
    return ctx.encoders[model, size]


def domain_of(condition: str, domains: tuple[str, ...], reference: str) -> str:
    """The encoder domain of a drive: its own name, the base name of `<cond>_repeat`/`_2x`, else the reference."""
    return next((n for n in (condition, condition.split("_")[0]) if n in domains), reference)


def sift(ctx: Ctx, image: np.ndarray):
    cfg = SiftConfig(nfeatures=ctx.args.sift_features, root_sift=True, contrast_threshold=ctx.args.sift_contrast,
                     clahe=not ctx.args.no_clahe)
    grey = cv2.medianBlur(to_grey(image), ctx.args.median) if ctx.args.median > 1 else to_grey(image)
    return detect_sift(grey, cfg)


def map_sift(ctx: Ctx, k: int):
    return ctx.map_item("sift", k, lambda: sift(ctx, read_image(ctx.ref.image_paths[k])))


def sift_2d3d(ctx: Ctx, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Query pixels, map pixels of SIFT matches, and the (dense) pixel threshold: none for SIFT."""
    fm, fq = map_sift(ctx, k), sift(ctx, query)
    pairs = match_descriptors(fq.descriptors, fm.descriptors, ratio=0.8, mutual=True)
    return fq.keypoints[pairs[:, 0]].astype(np.float64), fm.keypoints[pairs[:, 1]].astype(np.float64), 0.0


def dense_2d3d(ctx: Ctx, query: np.ndarray, k: int, qcond: str, model: str, size: int):
    from disam_ros.pose.dense import DenseConfig, dense_matches

    enc = encoder_for(ctx, model, size)
    ref_domain = domain_of(ctx.ref.name, enc.domains, enc.domains[0])
    map_image = ctx.map_item("image", k, lambda: read_image(ctx.ref.image_paths[k]))
    code = ctx.map_item(f"code:{model}@{size}", k, lambda: enc.encode(map_image, ref_domain)[0])
    cfg = DenseConfig(gradsam_keep=ctx.args.gradsam_keep, max_offset=ctx.args.max_offset)
    m = dense_matches(enc, query, domain_of(qcond, enc.domains, ref_domain), map_image, ref_domain, cfg, code)
    return m.query_px, m.map_px, 0.5 * max(m.cell_px)


def solve(ctx: Ctx, p2: np.ndarray, p3: np.ndarray, thr: float, min_inliers: int = 0) -> PoseSolution | None:
    cfg = SolverConfig(max_error_px=thr, min_inliers=min_inliers or ctx.args.min_inliers)
    return solve_absolute_pose(p2, p3, ctx.cam, cfg)


def attempt(ctx: Ctx, method: str, query: np.ndarray, k: int, qcond: str) -> Attempt:
    """One stage: guided (`A>sift`, `prior>sift`) or plain (match, back-project with the map depth, solve)."""
    if method == "prior>sift":
        prior = Prior(*cam_from_map(*ctx.pose(k)), *ctx.pose(k))
        guided = guided_sift(ctx, query, k, prior, ctx.args.prior_radius * ctx.cam.width)
        return guided if consistent(ctx, guided.sol, prior, ctx.args.agree_m) else replace(guided, sol=None)
    if ">" in method:
        first = attempt(ctx, method.partition(">")[0], query, k, qcond)
        if first.sol is None:
            return first
        guided = guided_sift(ctx, query, k, first.sol, ctx.args.guide_radius * ctx.cam.width)
        return guided if consistent(ctx, guided.sol, first.sol, ctx.args.agree_m) else first
    parts = [sift_2d3d(ctx, query, k) if p == "sift" else
             dense_2d3d(ctx, query, k, qcond, p.split("@")[0], int(p.split("@")[1])) for p in method.split("+")]
    q_px, m_px = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    bp = ctx.backproject(m_px, k)
    thr = max(ctx.args.max_error_px, max(p[2] for p in parts) * ctx.args.dense_error_scale)
    p2, p3 = q_px[bp.ok], bp.points[bp.ok]
    return Attempt(p2, p3, thr, len(q_px), bp.counts(), solve(ctx, p2, p3, thr))


def consistent(ctx: Ctx, fine: PoseSolution | None, coarse: PoseSolution | Prior, agree_m: float) -> bool:
    """A guided pose with fewer than --min-inliers inliers replaces its guide only near it (agree_m, 10 deg):
    such a pose far from where the guide put its matches is a degenerate fit, not a correction."""
    if fine is None or fine.num_inliers >= ctx.args.min_inliers:
        return fine is not None
    angle = float(quat_angle_deg(fine.quat, coarse.quat))
    return float(np.linalg.norm(fine.position - coarse.position)) <= agree_m and angle <= 10.0


def guided_sift(ctx: Ctx, query: np.ndarray, k: int, coarse: PoseSolution | Prior, radius: float) -> Attempt:
    """SIFT matches where the coarse pose projects the map keypoints that have depth, then a solve."""
    fm = map_sift(ctx, k)
    bp = ctx.map_item("sift-depth", k, lambda: ctx.backproject(fm.keypoints, k))
    fq, ok = sift(ctx, query), np.nonzero(bp.ok)[0]
    uv, z = project(bp.points[ok], coarse.R, coarse.t, ctx.cam)
    pairs = guided_match(fq.keypoints, fq.descriptors, fm.descriptors[ok], np.where(z[:, None] > 0, uv, np.inf),
                         radius, ctx.args.guide_ratio)
    p2, p3 = fq.keypoints[pairs[:, 0]].astype(np.float64), bp.points[ok][pairs[:, 1]]
    thr = ctx.args.max_error_px
    return Attempt(p2, p3, thr, len(pairs), bp.counts(), solve(ctx, p2, p3, thr, ctx.args.guide_min_inliers))


def evaluate_query(ctx: Ctx, method: str, qf: ConditionFolder, i: int, k: int) -> dict:
    """Run a method (a cascade stage by stage, the time summed) on query i against map image k; errors
    against the ground truth."""
    query, spent = read_image(qf.image_paths[i]), 0.0
    for stage in method.split("|"):
        t0 = time.perf_counter()
        a = attempt(ctx, stage, query, k, qf.name)
        spent += 1000.0 * (time.perf_counter() - t0)
        if a.sol is not None:
            break
    pos, quat = qf.trajectory.positions[i], qf.trajectory.quats[i]
    uv, z = project(a.p3, *cam_from_map(pos, quat), ctx.cam)
    gt_err = np.where(z > 0, np.linalg.norm(uv - a.p2, axis=1), np.inf)
    rec = dict(query=i, map=k, stage=stage, matches=a.matches, with_depth=len(a.p2),
               gt_right=int(np.sum(gt_err < a.thr)), depth_rejects=a.rejects, threshold_px=round(a.thr, 2),
               ms=round(spent, 2), solved=a.sol is not None)
    if a.sol is not None:
        rec.update(inliers=a.sol.num_inliers, t_err_m=float(np.linalg.norm(a.sol.position - pos)),
                   r_err_deg=float(quat_angle_deg(a.sol.quat, quat)),
                   gt_right_inliers=int(np.sum(gt_err[a.sol.inlier_mask] < a.thr)))
    return rec


def nearest_map_image(ctx: Ctx, pos: np.ndarray, quat: np.ndarray) -> tuple[int, float]:
    """The ground-truth nearest reference frame by position among those looking the same way (< 30 deg)."""
    traj = ctx.ref.trajectory
    ang = quat_angle_deg(traj.quats, np.broadcast_to(quat, traj.quats.shape))
    dist = np.where(ang < 30.0, np.linalg.norm(traj.positions - pos, axis=1), np.inf)
    k = int(np.argmin(dist))
    return k, float(dist[k])


def summarise(records: list[dict]) -> dict:
    n = len(records)
    solved = [r for r in records if r["solved"]]
    out = {"queries": n, "solved": len(solved) / n if n else float("nan")}
    for tm, rd in BUCKETS:
        ok = sum(r["t_err_m"] <= tm and r["r_err_deg"] <= rd for r in solved)
        out[f"within_{tm}m_{rd:g}deg"] = ok / n if n else float("nan")
    med = lambda key, rs: float(np.median([r[key] for r in rs])) if rs else float("nan")  # noqa: E731
    out.update(median_matches=med("matches", records), median_with_depth=med("with_depth", records),
               median_gt_right=med("gt_right", records), median_inliers=med("inliers", solved),
               median_t_err_m=med("t_err_m", solved), median_r_err_deg=med("r_err_deg", solved),
               median_ms=med("ms", records))
    return out


def table(results: dict) -> str:
    head = ("| method | condition | n | solved % | 0.25m/2° % | 0.5m/5° % | 5m/10° % | matches | w/ depth | GT-right | "
            "inliers | med t err m | med ms |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for method, per in results.items():
        for cond, s in per.items():
            pct = [f"{100 * s[k]:.0f}" for k in ("solved", "within_0.25m_2deg", "within_0.5m_5deg",
                                                  "within_5.0m_10deg")]
            lines.append(f"| {method.replace('|', ' or ')} | {cond} | {s['queries']} | " + " | ".join(pct) +
                         f" | {s['median_matches']:.0f} | {s['median_with_depth']:.0f} | {s['median_gt_right']:.0f}"
                         f" | {s['median_inliers']:.0f} | {s['median_t_err_m']:.2f} | {s['median_ms']:.0f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="disam-match-eval", description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--world", type=Path, default=Path("runs/match_world"), help="synthetic world (rendered if absent)")
    add("--size", type=image_size, default=(320, 240), help="WIDTHxHEIGHT of a newly rendered world")
    add("--frames", type=positive_int, default=40, help="frames per drive of a newly rendered world")
    add("--seed", type=int, default=0, help="world seed of a newly rendered world")
    add("--conditions", type=name_list, default=tuple(DEFAULT_CONDITIONS.split(",")), help="query drives")
    add("--every", type=positive_int, default=1, help="use every N-th query frame")
    add("--methods", type=method_list, default=tuple(DEFAULT_METHODS.split(",")), help="see the module help")
    add("--coarse", type=Path, default=ASSETS / "demo_coarse.pt", help="coarse checkpoint")
    add("--fine", type=Path, default=ASSETS / "demo_fine.pt", help="fine checkpoint")
    add("--sift-features", type=positive_int, default=2000, help="SIFT keypoints per image")
    add("--sift-contrast", type=positive_float, default=0.01, help="SIFT contrast threshold (Lowe's: 0.04)")
    add("--median", type=int, choices=(0, 3, 5, 7), default=0, help="median filter before SIFT (flakes, streaks)")
    add("--no-clahe", action="store_true", help="no local contrast equalisation (CLAHE) before SIFT")
    add("--gradsam-keep", type=positive_float, default=1.0, help="dense: keep this top share by Grad-SAM")
    add("--max-offset", type=float, default=0.25, help="dense: largest shift, share of the grid (0: any)")
    add("--max-error-px", type=positive_float, default=4.0, help="RANSAC threshold (SIFT), pixels")
    add("--dense-error-scale", type=positive_float, default=1.0,
        help="dense threshold = this x half a feature cell in pixels (never below --max-error-px)")
    add("--min-inliers", type=positive_int, default=15, help="fewer inliers = not solved")
    add("--guide-radius", type=positive_float, default=0.1, help="A>sift: search radius, share of the width")
    add("--prior-radius", type=positive_float, default=0.2, help="prior>sift: search radius, share of the width")
    add("--guide-ratio", type=positive_float, default=0.9, help="guided: ratio test among the candidates")
    add("--guide-min-inliers", type=positive_int, default=10, help="guided: fewer = the guide's pose stands")
    add("--agree-m", type=positive_float, default=3.0, help="guided: below --min-inliers, must be this near")
    add("--depth-radius", type=int, default=1, help="depth edge test window half-size, pixels")
    add("--max-step", type=positive_float, default=0.3, help="depth edge test: max relative step")
    add("--planar", action="store_true", help="depth edge test on inverse depth minus its plane fit")
    add("--map-offset", type=int, default=0, help="use the map image this many frames after the nearest (a "
        "retrieval that is off by that much)")
    add("--max-gt-m", type=positive_float, default=4.0, help="skip queries farther from any map image")
    add("--out", type=Path, help="write the settings, summaries and per-query records as JSON")
    return p


def run(args: argparse.Namespace) -> dict:
    world = make_or_load_world(args)
    ref = load_condition(world, "sunny", require_poses=True)
    if ref.camera is None or not ref.has_depth:
        raise ValueError(f"{world}/sunny needs camera.yaml and depth/: render the world with depth")
    ctx = Ctx(ref, Intrinsics.from_camera(ref.camera), args)
    results: dict = {m: {} for m in args.methods}
    records: dict = {m: {} for m in args.methods}
    for cond in args.conditions:
        qf = load_condition(world, cond, require_poses=True)
        near = [(i, *nearest_map_image(ctx, qf.trajectory.positions[i], qf.trajectory.quats[i]))
                for i in range(0, len(qf), args.every)]
        for method in args.methods:
            records[method][cond] = [evaluate_query(ctx, method, qf, i, min(max(k + args.map_offset, 0), len(ref) - 1))
                                     for i, k, d in near if d <= args.max_gt_m]
            results[method][cond] = summarise(records[method][cond])
            print(f"{cond} {method}: {json.dumps(results[method][cond], default=float)}", flush=True)
    return {"results": results, "records": records}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    t0 = time.perf_counter()
    try:
        out = run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"disam-match-eval: error: {exc}", file=sys.stderr)
        return 2
    print(table(out["results"]))
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)
    if args.out:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"settings": settings, **out}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
