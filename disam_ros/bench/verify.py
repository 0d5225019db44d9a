"""`disam-bench verify`: what geometric verification and the metric pose add to every frame, on one CPU thread.

The added work per frame is exactly `Verifier.verify`: the query's SIFT features (the map's recipe), then per
candidate place guided matching, the solver's RANSAC + refinement (PoseLib by default) and the covariance, and
on a frame that nothing verifies the best candidate's turned guides; before all that, the first look: the
candidates tried with half-scale SIFT, the first sure verified one ending the call. It is timed on a rendered town at
camera resolution (default 640x480) whose map stores depth geometry, each query frame given its ground-truth
nearest map image and the next two as candidates (as a retrieval's top 3), once with the shipped recipe and
once per `--scales` value of the SIFT detection scale (each its own map, since the map must be built with the
query's recipe), once more without the turned guides (turn 0 row), once without the first look (first
scale 1 row) and once without the dense search (dense 0 row: the last resort on frames nothing else verifies,
two candidates searched by gradient descriptors, ~60-70 ms each) and once with it always last (dense first after
0 row; by default it runs first after two frames in a row that only it verified) and once with learned features instead
of SIFT (features learned row: the map also stores learned keypoints, verify/learned_step.py), once with them after
SIFT's steps (features both row), once without optical-flow
tracking (flow frames 0 row: it acts only where frames are under 1 m apart, so on the default drives, 3 m apart,
that row repeats the first; `--conditions overcast_dense,night_dense,fog_dense --frames 40` renders drives at 8x
the frame rate, where it does). Each drive's frames run in order, with their stamps, the verifier reset between
drives, as in the node. Rows: median ms of the full-scale features,
of the whole verify call (and per drive: the look makes daylight frames cheaper and hard ones dearer, so the
overall median depends on the mix), the share verified and the share within (0.25 m, 2 deg). Target: <= 30 ms
median added per frame.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from disam_ros.bench.output import emit
from disam_ros.cliutil import OneLineParser, check_output_files, name_list, positive_int
from disam_ros.geometry import quat_angle_deg
from disam_ros.pose.features import MAP_SIFT

if TYPE_CHECKING:
    from disam_ros.verify.config import VerifyConfig


def make_town(root: Path, size: tuple[int, int], frames: int, conditions: tuple[str, ...]) -> Path:
    from disam_ros.data.synthetic import WorldConfig, make_world

    if (root / "world.yaml").is_file():
        return root
    cfg = WorldConfig(seed=5, image_size=size, frames=frames, workers=1, conditions=("sunny", *conditions))
    return make_world(cfg, root, progress=False)


def build(world: Path, out: Path, scale: float, features: str = "sift") -> Path:
    """A depth-geometry map whose SIFT recipe detects at `scale`, with learned keypoints too when `features` is
    both (an untrained micro encoder for retrieval: retrieval is not timed here)."""
    import torch

    from disam_ros.maps import MapBuildConfig, build_map_from_folder
    from disam_ros.model import DisamNet, preset, save_checkpoint

    if (out / "manifest.json").is_file():
        return out
    torch.manual_seed(0)
    cfg = preset("micro", ("sunny",))
    ckpt = save_checkpoint(out.parent / "micro.pt", DisamNet(cfg), cfg)
    return build_map_from_folder(MapBuildConfig(out=out, dataset=world, condition="sunny", coarse=ckpt,
                                                progress=False, geometry="depth", sift_scale=scale,
                                                verify_features=features))


def time_verify(world: Path, map_dir: Path, conditions: tuple[str, ...], config: VerifyConfig | None = None) -> dict:
    from disam_ros.data.folders import load_condition, read_image
    from disam_ros.maps import LocalizationMap
    from disam_ros.verify.verifier import Verifier, VerifyConfig

    m = LocalizationMap.load(map_dir)
    verifier = Verifier(m, config or VerifyConfig())
    positions = np.asarray(m.positions)
    feats, total, verified, fine, by_drive = [], [], 0, 0, {}
    for cond in conditions:
        qf = load_condition(world, cond, require_poses=True)
        verifier.reset()  # each drive starts afresh, as the node's does (Tracker.reset)
        for i in range(len(qf)):
            rgb, pos, quat = read_image(qf.image_paths[i]), qf.trajectory.positions[i], qf.trajectory.quats[i]
            k = int(np.argmin(np.linalg.norm(positions - pos, axis=1)))
            t0 = time.perf_counter()
            verifier.learned.features(rgb) if verifier.features == "learned" else verifier.query_features(rgb)
            feats.append(1e3 * (time.perf_counter() - t0))
            v = verifier.verify(rgb, [k, min(k + 1, len(positions) - 1), max(k - 1, 0)],
                                stamp=float(qf.trajectory.stamps[i]))  # stamps: optical flow where frames are near
            total.append(v.ms)
            by_drive.setdefault(cond, []).append(v.ms)
            verified += v.verified
            fine += v.verified and np.linalg.norm(v.position - pos) <= 0.25 and quat_angle_deg(v.quat, quat) <= 2.0
    n = len(total)
    return {"frames": n, "features_ms": statistics.median(feats), "verify_ms": statistics.median(total),
            "verify_p90_ms": float(np.percentile(total, 90)), "verified": verified / n, "within_0.25m_2deg": fine / n,
            "verify_ms_by_drive": {c: statistics.median(ms) for c, ms in by_drive.items()}}


def format_table(rows: list[dict]) -> str:
    head = ("| frame | features | SIFT scale | turn deg | first look scale | dense | dense first after | dense polish "
            "| flow frames | SIFT polish | frames | features ms | verify ms (median) | p90 ms | verified % "
            "| 0.25 m/2 deg % | median ms by drive |")
    lines = [head, "|" + "---|" * 17]
    for r in rows:
        lines.append(f"| {r['frame']} | {r['features']} | {r['scale']:g} | {r['turn_deg']:g} | {r['first_scale']:g}"
                     f" | {r['dense']}"
                     f" | {r['dense_first_after']} | {r['polish']} | {r['flow']} | {r['sift_polish']} | {r['frames']}"
                     f" | {r['features_ms']:.1f}"
                     f" | {r['verify_ms']:.1f}"
                     f" | {r['verify_p90_ms']:.1f} | {100 * r['verified']:.0f} | {100 * r['within_0.25m_2deg']:.0f}"
                     f" | {', '.join(f'{c} {ms:.0f}' for c, ms in r['verify_ms_by_drive'].items())} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="disam-bench verify", description=__doc__.splitlines()[0])
    p.add_argument("--world", type=Path, default=None, help="rendered town to reuse (default: a temporary one)")
    p.add_argument("--frames", type=positive_int, default=12, help="frames per drive of a new town (default 12)")
    p.add_argument("--conditions", type=name_list, default=("sunny_repeat", "night", "fog"),
                   help="query drives (default sunny_repeat,night,fog)")
    p.add_argument("--scales", type=lambda s: tuple(float(v) for v in name_list(s)), default=(MAP_SIFT.scale, 0.5),
                   help="SIFT detection scales to compare (default 1,0.5)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON here")
    args = p.parse_args(argv)
    check_output_files(p, args, "--json")
    import torch  # here, not at import: a typo or --help answers without loading torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    size = (640, 480)
    with tempfile.TemporaryDirectory(prefix="disam-bench-verify-") as tmp:
        world = make_town(args.world or Path(tmp) / "world", size, args.frames, args.conditions)
        from disam_ros.verify.verifier import VerifyConfig

        rows, runs = [], [(scale, VerifyConfig()) for scale in args.scales]
        runs += [(args.scales[0], VerifyConfig(turn_search_deg=0.0)), (args.scales[0], VerifyConfig(first_scale=1.0)),
                 (args.scales[0], VerifyConfig(gradient_candidates=0)),
                 (args.scales[0], VerifyConfig(gradient_first_after=0)),
                 (args.scales[0], VerifyConfig(gradient_polish_points=0)),
                 (args.scales[0], VerifyConfig(flow_frames=0)), (args.scales[0], VerifyConfig(polish_images=0)),
                 (args.scales[0], VerifyConfig(verify_features="learned")),
                 (args.scales[0], VerifyConfig(verify_features="both"))]
        for scale, config in runs:
            kind = "sift" if config.verify_features in ("map", "sift") else "both"
            map_dir = build(world, Path(tmp) / f"map_{scale:g}_{kind}", scale, kind)
            rows.append({"frame": f"{size[0]}x{size[1]}", "features": config.verify_features, "scale": scale,
                         "device": "cpu", "threads": 1,
                         "turn_deg": config.turn_search_deg, "first_scale": config.first_scale,
                         "dense": config.gradient_candidates, "dense_first_after": config.gradient_first_after,
                         "polish": config.gradient_polish_points, "flow": config.flow_frames,
                         "sift_polish": config.polish_images,
                         **time_verify(world, map_dir, args.conditions, config)})
    emit("verify", rows, format_table(rows), args.json, torch=torch.__version__)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
