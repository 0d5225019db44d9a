"""`disam-bench node`: end-to-end latency of the localizer node, image published -> pose received.

For each model preset and map mode: render a small synthetic world, make random-init coarse and fine models
(latency does not depend on training), build a map of the reference drive, start the node in a subprocess
(as the launcher does) and send query frames of the repeat drive one at a time over DDS on loopback, timing
publish -> PoseStamped receipt in this process. The node's own stage timings come from /diagnostics.
Maps larger than the rendered drive (`--rendered`) are built by the real builder from the rendered frames'
real encodings, tiled with noise (`disam_ros.bench.tiled`), so a 10k-image map needs 200 rendered frames.
Prints a table and a JSON document (also written to --json). With `--rate HZ`: the camera-rate mode
(disam_ros/bench/node_rate.py: frames published at a fixed rate, answers not awaited, drops and accuracy).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.cliutil import OneLineParser, check_output_files
from disam_ros.fsutil import atomic_write_text

PRESET_DEFAULTS = {"micro": (100, 40), "tiny": (100, 40), "small": (50, 25), "paper": (20, 15)}  # map size, queries


def render_world(root: Path, frames: int, image_size: tuple[int, int]) -> Path:
    """The reference drive and its repeat. Runs first: make_world forks render workers, which must happen
    before this process starts torch or DDS threads (a fork after them can deadlock the children)."""
    from disam_ros.data.synthetic import WorldConfig, make_world

    if not (root / "world.yaml").is_file():
        make_world(WorldConfig(seed=7, image_size=image_size, frames=frames, conditions=("sunny", "sunny_repeat"),
                               workers=min(2, os.cpu_count() or 1)), root, progress=False, force=True)
    return root


def prepare(work: Path, root: Path, preset: str, map_size: int, device: str, mode: str = "exact",
            rendered: int | None = None) -> tuple[Path, list]:
    """Random-init models + a map of `map_size` images in `mode` (the first reference frames, or the `rendered`
    frames tiled with noise when the map is larger); returns the map directory and (rgb, stamp) queries from
    the repeat drive."""
    import itertools

    import torch

    from disam_ros.bench.tiled import TiledEncoder, encode_all, tiled_frames
    from disam_ros.data.folders import iter_frames, load_condition
    from disam_ros.maps import build_map, settings_for_mode
    from disam_ros.maps.map_plan import resolve_mode
    from disam_ros.model import DisamNet, Encoder, save_checkpoint
    from disam_ros.model import preset as make_preset

    domains = ("sunny", "overcast", "snow", "dusk")
    ckpts = []
    for role, seed in (("coarse", 0), ("fine", 1)):
        torch.manual_seed(seed)
        cfg = make_preset(preset, domains)
        path = work / f"{preset}_{role}.pt"
        save_checkpoint(path, DisamNet(cfg), cfg)
        ckpts.append(path)
    coarse, fine = (Encoder.from_checkpoint(p, device=device) for p in ckpts)
    map_dir = work / f"map_{preset}_{map_size}_{mode}"
    ref = load_condition(root, "sunny", require_poses=True)
    mode = resolve_mode(mode, map_size, coarse, fine, work)
    settings = settings_for_mode(mode)
    source = f"{root.absolute()} condition sunny"
    if map_size <= len(ref) and (rendered is None or map_size <= rendered):
        frames = itertools.islice(iter_frames(ref), map_size)
    else:  # the rendered drive's real encodings, tiled with noise (bench/tiled.py)
        images = [f.image for f in itertools.islice(iter_frames(ref), rendered or len(ref))]
        coarse = TiledEncoder(coarse, encode_all(coarse, images, "sunny"), seed=0)
        fine = TiledEncoder(fine, encode_all(fine, images, "sunny"), seed=1)
        frames = tiled_frames(map_size, ref.trajectory.positions[:len(images)], ref.trajectory.quats[:len(images)])
        source += f", {len(images)} frames tiled with noise to {map_size}"
    build_map(frames, coarse, fine, map_dir, domain="sunny", settings=settings, progress=False,
              checkpoint_paths=tuple(ckpts), source=source, overwrite=True, total=map_size)
    del coarse, fine
    repeat = itertools.islice(iter_frames(load_condition(root, "sunny_repeat", True)), min(map_size, rendered or
                                                                                             map_size))
    return map_dir, [(f.image, float(f.stamp)) for f in repeat]


def measure(map_dir: Path, queries: list, n: int, device: str, compressed: bool, warmup: int = 3,
            log: Path | None = None) -> dict[str, Any]:
    """Start the node, send `warmup` + `n` queries sequentially, return latencies (ms) and node diagnostics, the
    seconds from spawning the node until it served its topics and the first query's latency (what a respawned
    node costs before it answers at its usual pace)."""
    from disam_ros.ros import launcher
    from disam_ros.ros.client import LocalizerClient
    from disam_ros.ros.eval_nodes import stop_nodes

    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115  (closed below)
    spawned = time.monotonic()
    proc = launcher.start(map=map_dir, compressed=compressed, device=device, namespace="bench",
                          parameters={"diagnostics_period_s": 0.5}, stdout=out, stderr=subprocess.STDOUT)
    client = LocalizerClient(namespace="bench")
    try:
        if not client.wait_for_node(compressed, timeout=180.0):
            raise RuntimeError(f"localizer node did not come up (log: {log})")
        up_s, first_ms = time.monotonic() - spawned, None
        lat, missed = [], 0
        for k in range(warmup + n):
            rgb, stamp = queries[k % len(queries)]
            stamp = float(int(stamp) + k * 1e-3)
            t0 = time.monotonic()
            key = client.publish_compressed(rgb, stamp) if compressed else client.publish_raw(rgb, stamp)
            if client.wait_pose(key, timeout=60.0) is None:
                missed += 1
                continue
            ms = 1e3 * (client.rx.pose[key][0] - t0)
            if k == 0:
                first_ms = ms
            if k >= warmup:
                lat.append(ms)
        time.sleep(0.6)
        diag = client.rx.diagnostics[-1][1] if client.rx.diagnostics else {}
    finally:
        stop_nodes([proc], timeout=30.0)  # SIGINT, then a kill if it hangs
        rc = proc.returncode
        client.close()
        if log:
            out.close()
    return {"latencies_ms": lat, "missed": missed, "diagnostics": diag, "exit_code": rc, "up_s": up_s,
            "first_ms": first_ms}


def summarize(preset: str, map_size: int, image_size: tuple[int, int], compressed: bool, r: dict,
              mode: str = "exact") -> dict[str, Any]:
    lat = sorted(r["latencies_ms"])
    d = r["diagnostics"]

    def stage(name: str) -> float | None:
        v = d.get(f"latency_{name}_ms_median")
        return None if v is None else float(v)

    return {
        "preset": preset, "map_size": map_size, "mode": mode, "image": f"{image_size[0]}x{image_size[1]}",
        "transport": "CompressedImage(jpeg)" if compressed else "Image(rgb8)", "queries": len(lat),
        "missed": r["missed"],
        "median_ms": statistics.median(lat) if lat else None,
        "p95_ms": float(np.percentile(lat, 95)) if lat else None,
        "mean_ms": statistics.fmean(lat) if lat else None,
        "max_ms": max(lat) if lat else None,
        "node_total_median_ms": stage("total"), "node_decode_median_ms": stage("decode"),
        "node_encode_coarse_median_ms": stage("retrieval_encode_coarse"),
        "node_encode_fine_median_ms": stage("retrieval_encode_fine"),
        "node_coarse_search_median_ms": stage("retrieval_coarse_search"),
        "node_fine_rerank_median_ms": stage("retrieval_fine_rerank"),
        "node_publish_median_ms": stage("publish"),
        "node_rss_mb": float(d["rss_mb"]) if "rss_mb" in d else None, "device": d.get("device"),
        "node_exit_code": r["exit_code"], "up_s": r.get("up_s"), "first_ms": r.get("first_ms"),
    }


def table(rows: list[dict[str, Any]]) -> str:
    cols = [("preset", "preset"), ("map_size", "map"), ("mode", "mode"), ("image", "image"), ("transport", "transport"),
            ("queries", "n"), ("median_ms", "median ms"), ("p95_ms", "p95 ms"), ("node_encode_coarse_median_ms",
            "enc coarse"), ("node_encode_fine_median_ms", "enc fine"), ("node_coarse_search_median_ms", "search"),
            ("node_fine_rerank_median_ms", "rerank"), ("node_decode_median_ms", "decode"), ("node_rss_mb", "RSS MB"),
            ("up_s", "up s"), ("first_ms", "1st ms")]

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)

    cells = [[h for _, h in cols]] + [[fmt(r.get(k)) for k, _ in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("--rate", "--from") or a.startswith(("--rate=", "--from=")) for a in argv):
        from disam_ros.bench import node_rate

        return node_rate.main(argv)
    parser = OneLineParser(prog="disam-bench node", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default=None, help="camera-rate mode: publish at this rate without waiting "
                        "(its own options: disam-bench node --rate 30 --help; --from RUN.json redraws a saved run)")
    parser.add_argument("--presets", default="tiny,paper", help="comma-separated model presets (default tiny,paper)")
    parser.add_argument("--map-size", type=int, default=None, help="map images (default per preset: tiny 100, "
                        "paper 20)")
    parser.add_argument("--queries", type=int, default=None, help="timed queries (default: tiny 40, paper 15)")
    parser.add_argument("--modes", default="exact", help="comma-separated map modes (default exact; auto picks "
                        "by size and RAM)")
    parser.add_argument("--rendered", type=int, default=None, help="frames to render per drive (default: the map "
                        "size); larger maps tile these frames' encodings with noise")
    parser.add_argument("--image-size", default="640x480", help="camera image WxH (default 640x480)")
    parser.add_argument("--device", default="cpu", help="node device (default cpu)")
    parser.add_argument("--compressed", action="store_true", help="send CompressedImage (jpeg) instead of rgb8")
    parser.add_argument("--workdir", type=Path, default=None, help="keep worlds/maps/logs here (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON result to this file")
    args = parser.parse_args(argv)
    check_output_files(parser, args, "--json")
    if args.rate is not None:  # an abbreviation (--ra 30) landed here
        parser.error("write --rate in full for the camera-rate mode")
    w, h = (int(v) for v in args.image_size.lower().split("x"))
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [p for p in presets if p not in PRESET_DEFAULTS]
    if unknown:
        parser.error(f"unknown presets {unknown}: use {list(PRESET_DEFAULTS)}")
    from disam_ros.maps.descriptors import MODES

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or (bad := [m for m in modes if m not in (*MODES, "auto")]):
        parser.error(f"--modes {args.modes!r}: unknown {bad or 'empty list'}; use auto or some of {', '.join(MODES)}")
    if args.rendered is not None and args.rendered < 2:
        parser.error(f"--rendered {args.rendered}: need at least 2 frames to tile a map from")

    from disam_ros.ros import env

    env.isolated_env()  # the benchmark's own DDS graph: loopback and a private random domain, before any rclpy

    rows = []
    with tempfile.TemporaryDirectory(prefix="disam_bench_node_") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        plan = [(p, mode, args.map_size or PRESET_DEFAULTS[p][0], args.queries or PRESET_DEFAULTS[p][1])
                for p in presets for mode in modes]
        frames = min(args.rendered or 1 << 30, max(m for _, _, m, _ in plan))
        t0 = time.monotonic()
        root = render_world(work / f"world_{w}x{h}_{frames}", frames, (w, h))
        print(f"world ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        maps = {}
        for preset, mode, map_size, _ in plan:  # all maps before any node: the DDS client must come last
            t0 = time.monotonic()
            maps[preset, mode] = prepare(work, root, preset, map_size, args.device, mode, frames)
            print(f"[{preset} {mode}] map of {map_size} images ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        for preset, mode, map_size, n in plan:
            map_dir, queries = maps[preset, mode]
            r = measure(map_dir, queries, n, args.device, args.compressed, log=work / f"node_{preset}_{mode}.log")
            rows.append(summarize(preset, map_size, (w, h), args.compressed, r, mode=json.loads(
                (map_dir / "manifest.json").read_text())["descriptors"]["settings"]["mode"]))
    doc = {"suite": "node", "host": {"cpus": os.cpu_count(), "machine": platform.machine(),
                                     "python": platform.python_version()}, "results": rows}
    print(table(rows))
    print(json.dumps(doc, indent=1))
    if args.json:
        atomic_write_text(args.json, json.dumps(doc, indent=1))
    return 0 if all(r["queries"] and r["node_exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
