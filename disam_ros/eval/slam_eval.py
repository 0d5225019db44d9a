"""`disam-slam-eval`: does feeding the localizer's hints to a pose-graph back end remove odometry drift, and does a
wrong hint wreck the trajectory?

Per query drive of a `disam-eval` run (modes.jsonl): a drifting odometry is simulated from the drive's ground
truth (noise and bias stated in the report), the poses go into disam_ros.posegraph (GTSAM iSAM2) with the
localizer's verified hints as between-factors to their map keyframes, and evo scores the trajectories against
the ground truth: ATE (absolute trajectory error, translation RMSE, NO alignment: the map frame is the frame the
robot must know its pose in) and RPE (relative pose error over 10 m). Four runs per drive: the clean hints with
the robust kernel, then with a share of the hints (default 5 %) re-pointed at random wrong keyframes, with the
kernel and without, and a control: the same drive with those hints left out instead of made wrong. Why the
control: a re-pointed hint is a right hint lost, so the wrong run has less information than the clean one; the
robust run against the control is what the wrong hints themselves cost. `--wrong-mode add` gives the wrong hints
on top of all the right ones instead (each at a frame without a hint): the wrong run then differs from the clean
one by the wrong hints alone, and its control is the clean run. `online` scores the pose the back end
had at each frame (what a robot steering by it sees); `final` the smoothed trajectory after the whole drive.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from disam_ros import logs
from disam_ros.cliutil import OneLineParser, non_negative_float, output_dir_error
from disam_ros.data.tum import make_trajectory, write_tum
from disam_ros.eval.slam_inputs import Drive, choose_wrong, corrupt, keyframe_pool, read_drives
from disam_ros.fsutil import atomic_write_text
from disam_ros.posegraph.graph import PoseGraph, PoseGraphConfig
from disam_ros.posegraph.odometry import OdometryNoise, drift_fraction, drifting_odometry

log = logging.getLogger(__name__)

RUNS = ("clean", "wrong_robust", "wrong_plain", "wrong_dropped")  # the back-end runs per drive (module docstring)


@dataclass
class SlamEvalConfig:
    results: Path
    out: Path
    mode: str = "sequence"
    odometry: OdometryNoise = field(default_factory=lambda: OdometryNoise(
        sigma_m_per_m=0.01, sigma_deg_per_m=0.05, yaw_bias_deg_per_m=0.05, scale_bias=0.02, seed=0))
    graph: PoseGraphConfig = field(default_factory=PoseGraphConfig)
    wrong_share: float = 0.05
    wrong_mode: str = "replace"  # "replace": right hints re-pointed; "add": wrong hints given besides them
    use_unverified: bool = False
    rpe_delta_m: float = 10.0


@dataclass
class Scores:
    """evo's figures for one trajectory against the truth (metres)."""

    ate_rmse: float
    ate_max: float
    rpe_rmse: float


@dataclass
class DriveResult:
    condition: str
    frames: int
    length_m: float
    drift_pct: float  # final odometry position error over path length
    closures: int  # between-closures (verified hints) given to the back end
    absolutes: int  # absolute priors (unverified hints, --use-unverified)
    wrong: int  # closures re-pointed at a wrong keyframe in the wrong_* runs
    odometry: Scores
    runs: dict[str, dict[str, Scores]]  # run -> {"online", "final"} -> Scores
    rejected: dict[str, tuple[int, int]]  # run -> (wrong closures with weight < 0.1, right ones with weight < 0.1)
    update_ms_median: float

    def reduction(self, run: str = "clean", which: str = "final") -> float:
        s = self.runs[run][which].ate_rmse
        return float("inf") if s <= 0 else self.odometry.ate_rmse / s


def scores(stamps: np.ndarray, gt_p: np.ndarray, gt_q: np.ndarray, p: np.ndarray, q: np.ndarray,
           rpe_delta_m: float) -> Scores:
    """ATE and RPE (translation) by evo; trajectories are already in one frame, so no alignment."""
    from evo.core import metrics
    from evo.core.trajectory import PoseTrajectory3D
    from evo.core.units import Unit

    def traj(pos: np.ndarray, quat: np.ndarray) -> PoseTrajectory3D:
        return PoseTrajectory3D(positions_xyz=np.asarray(pos, float), timestamps=np.asarray(stamps, float),
                                orientations_quat_wxyz=np.roll(np.asarray(quat, float), 1, axis=1))

    ref, est = traj(gt_p, gt_q), traj(p, q)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    rpe_value = float("nan")
    if ref.path_length > rpe_delta_m:
        rpe = metrics.RPE(metrics.PoseRelation.translation_part, delta=rpe_delta_m, delta_unit=Unit.meters,
                          all_pairs=False)
        rpe.process_data((ref, est))
        rpe_value = float(rpe.get_statistic(metrics.StatisticsType.rmse))
    return Scores(float(ape.get_statistic(metrics.StatisticsType.rmse)),
                  float(ape.get_statistic(metrics.StatisticsType.max)), rpe_value)


@dataclass
class GraphRun:
    """What one back-end run over a drive produced."""

    online_p: np.ndarray
    online_q: np.ndarray
    final_p: np.ndarray
    final_q: np.ndarray
    weights: list[tuple[bool, float]]  # (closure was wrong, robust weight at the end)
    update_ms: list[float]


def run_graph(drive: Drive, odom_p: np.ndarray, odom_q: np.ndarray, config: PoseGraphConfig) -> GraphRun:
    """Feed the drive frame by frame as the node would: odometry, then the hints that reach the back end at that
    frame (a late hint at the frame it arrived with, stamped at its own earlier frame; one that came after the
    drive's last frame, before the final smoothing), then one iSAM2 update; the pose after each update is the
    online estimate."""
    g = PoseGraph(config)
    by_t: dict[float, list] = {}
    for c in drive.closures:
        by_t.setdefault(float(c.t if math.isnan(c.arrives) else c.arrives), []).append(c)
    added, online_p, online_q, ms = [], [], [], []

    def give(closures: list) -> None:
        for c in closures:
            got = g.add_closure(c.t, c.keyframe_id, c.keyframe_position, c.keyframe_quat, c.rel_position, c.rel_quat,
                                c.covariance) if c.kind == "between" else \
                g.add_absolute(c.t, c.position, c.quat, c.covariance)
            if got is not None:
                added.append((c, got))

    for t, p, q in zip(drive.stamps, odom_p, odom_q):
        g.add_odometry(float(t), p, q)
        give(by_t.get(float(t), []))
        ms.append(g.update())
        _, lp, lq, _ = g.latest()
        online_p.append(lp)
        online_q.append(lq)
    if after := by_t.get(math.inf):
        give(after)
        g.update()
    _, final_p, final_q = g.trajectory()
    g.refresh_weights()  # update() refreshes only recent closures' weights; the report needs all of them
    weights = [(c.wrong, float(got.weight)) for c, got in added if c.kind == "between"]
    return GraphRun(np.array(online_p), np.array(online_q), np.asarray(final_p), np.asarray(final_q), weights, ms)


def evaluate_drive(drive: Drive, wrong_drive: Drive, cfg: SlamEvalConfig, seed: int,
                   out: Path | None = None) -> tuple[DriveResult, dict[str, GraphRun], tuple[np.ndarray, np.ndarray]]:
    odom_p, odom_q = drifting_odometry(drive.gt_positions, drive.gt_quats, replace(cfg.odometry, seed=seed))
    plain = replace(cfg.graph, robust="none")
    runs = {"clean": run_graph(drive, odom_p, odom_q, cfg.graph),
            "wrong_robust": run_graph(wrong_drive, odom_p, odom_q, cfg.graph),
            "wrong_plain": run_graph(wrong_drive, odom_p, odom_q, plain)}
    dropped = without_wrong(wrong_drive)  # with wrong hints added (not re-pointed) this is the clean drive again
    same = len(dropped.closures) == len(drive.closures) and all(a is b for a, b in zip(dropped.closures,
                                                                                      drive.closures))
    runs["wrong_dropped"] = runs["clean"] if same else run_graph(dropped, odom_p, odom_q, cfg.graph)
    sc = lambda p, q: scores(drive.stamps, drive.gt_positions, drive.gt_quats, p, q, cfg.rpe_delta_m)  # noqa: E731
    result = DriveResult(
        drive.condition, len(drive.stamps), drive.length_m, 100.0 * drift_fraction(drive.gt_positions, odom_p),
        sum(c.kind == "between" for c in drive.closures), sum(c.kind == "absolute" for c in drive.closures),
        sum(c.wrong for c in wrong_drive.closures), sc(odom_p, odom_q),
        {k: {"online": sc(r.online_p, r.online_q), "final": sc(r.final_p, r.final_q)} for k, r in runs.items()},
        {k: (sum(w and x < 0.1 for w, x in r.weights), sum((not w) and x < 0.1 for w, x in r.weights))
         for k, r in runs.items()},
        float(np.median(runs["clean"].update_ms)))
    if out is not None:
        _write_tum(out, drive, odom_p, odom_q, runs)
    return result, runs, (odom_p, odom_q)


def without_wrong(drive: Drive) -> Drive:
    """The drive with its deliberately wrong closures removed: the control for what they cost beyond the right
    closures they replaced."""
    return replace(drive, closures=tuple(c for c in drive.closures if not c.wrong))


def _write_tum(out: Path, drive: Drive, odom_p: np.ndarray, odom_q: np.ndarray, runs: dict[str, GraphRun]) -> None:
    """TUM files per drive, so anyone can check with evo's own CLI: `evo_ape tum gt.tum corrected.tum`."""
    d = out / "trajectories" / drive.condition
    d.mkdir(parents=True, exist_ok=True)
    write_tum(d / "gt.tum", make_trajectory(drive.stamps, drive.gt_positions, drive.gt_quats))
    write_tum(d / "odometry.tum", make_trajectory(drive.stamps, odom_p, odom_q))
    for k, r in runs.items():
        name = "corrected" if k == "clean" else f"corrected_{k}"
        write_tum(d / f"{name}.tum", make_trajectory(drive.stamps, r.final_p, r.final_q))


def evaluate(cfg: SlamEvalConfig, progress: bool = True) -> list[DriveResult]:
    """Every drive of the chosen mode; writes report.md / report.json / trajectories.png and TUM files."""
    from disam_ros.eval.slam_report import plot_trajectories, report_dict, report_markdown, report_text

    drives = read_drives(cfg.results, cfg.mode, cfg.use_unverified)
    pool = keyframe_pool(drives)
    rng = np.random.default_rng(cfg.odometry.seed + 1000)
    cfg.out.mkdir(parents=True, exist_ok=True)
    results, panels = [], []
    chosen = choose_wrong(drives, cfg.wrong_share, rng)
    for k, d in enumerate(drives):
        t0 = time.perf_counter()
        wrong = corrupt(d, chosen[k], pool, rng, add=cfg.wrong_mode == "add")
        res, runs, odom = evaluate_drive(d, wrong, cfg, cfg.odometry.seed + k, cfg.out)
        results.append(res)
        panels.append((d, wrong, odom, runs))
        if progress:
            print(f"  {d.condition}: ATE {res.odometry.ate_rmse:.2f} m -> {res.runs['clean']['final'].ate_rmse:.2f} m "
                  f"({len(d.stamps)} frames, {res.closures} closures, {time.perf_counter() - t0:.1f} s)",
                  file=sys.stderr)
    plot_trajectories(panels, cfg.out / "trajectories.png")
    atomic_write_text(cfg.out / "report.json", json.dumps(report_dict(results, config_dict(cfg)), indent=1))
    atomic_write_text(cfg.out / "report.md", "\n".join(report_markdown(results, cfg)) + "\n")
    print("\n".join(report_text(results, cfg)))
    return results


def config_dict(cfg: SlamEvalConfig) -> dict:
    return {"results": str(cfg.results), "mode": cfg.mode, "odometry": asdict(cfg.odometry),
            "graph": asdict(cfg.graph), "wrong_share": cfg.wrong_share, "wrong_mode": cfg.wrong_mode,
            "use_unverified": cfg.use_unverified,
            "rpe_delta_m": cfg.rpe_delta_m}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    d = SlamEvalConfig(Path(), Path())
    p = OneLineParser(prog="disam-slam-eval", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, required=True, help="modes.jsonl written by disam-eval --out DIR")
    p.add_argument("--out", type=Path, required=True, help="report folder (report.md, report.json, plots, TUM files)")
    p.add_argument("--mode", default=d.mode, help="tracker mode whose hints to use (default %(default)s)")
    p.add_argument("--wrong-share", type=non_negative_float, default=d.wrong_share,
                   help="share of all closures (pooled over the drives) re-pointed at a random wrong keyframe in "
                        "the wrong_* runs (default %(default)s)")
    p.add_argument("--wrong-mode", choices=("replace", "add"), default=d.wrong_mode,
                   help="replace: those hints re-pointed (a right hint lost, the harsher test); add: wrong hints "
                        "given besides all the right ones (default %(default)s)")
    p.add_argument("--use-unverified", action="store_true",
                   help="also add unverified answers as absolute priors with their retrieval covariance")
    p.add_argument("--robust", choices=("cauchy", "huber", "none"), default=d.graph.robust,
                   help="kernel on closures in the clean and wrong_robust runs (default %(default)s)")
    o = d.odometry
    p.add_argument("--yaw-bias-deg-per-m", type=float, default=o.yaw_bias_deg_per_m,
                   help="simulated odometry heading bias (default %(default)s)")
    p.add_argument("--scale-bias", type=float, default=o.scale_bias,
                   help="simulated odometry scale error, 0.02 = 2 %% long (default %(default)s)")
    p.add_argument("--sigma-m-per-m", type=non_negative_float, default=o.sigma_m_per_m,
                   help="simulated odometry translation noise per metre (default %(default)s)")
    p.add_argument("--sigma-deg-per-m", type=non_negative_float, default=o.sigma_deg_per_m,
                   help="simulated odometry rotation noise per metre (default %(default)s)")
    p.add_argument("--seed", type=int, default=o.seed, help="odometry noise and wrong-closure draw (default 0)")
    p.add_argument("--quiet", action="store_true", help="no per-drive progress lines")
    args = p.parse_args(argv)
    if args.wrong_share > 1:
        p.error(f"--wrong-share {args.wrong_share} is above 1: give a share between 0 and 1, e.g. 0.05")
    problem = output_dir_error(args.out, "--out")
    if problem:
        p.error(problem)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logs.setup(-1 if args.quiet else 0)
    d = SlamEvalConfig(Path(), Path())
    cfg = SlamEvalConfig(args.results, args.out, args.mode,
                         replace(d.odometry, yaw_bias_deg_per_m=args.yaw_bias_deg_per_m, scale_bias=args.scale_bias,
                                 sigma_m_per_m=args.sigma_m_per_m, sigma_deg_per_m=args.sigma_deg_per_m,
                                 seed=args.seed),
                         replace(d.graph, robust=args.robust), args.wrong_share, args.wrong_mode,
                         args.use_unverified)
    try:
        evaluate(cfg, progress=not args.quiet)
    except (FileNotFoundError, ValueError) as exc:
        print(f"disam-slam-eval: error: {exc}", file=sys.stderr)
        return 2
    log.info("wrote %s", cfg.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
