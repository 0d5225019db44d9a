"""`disam-bench condition`: what `condition_source: auto` adds to every frame, on the CPU.

The added work per frame is the recogniser (thumbnail statistics + a small MLP), the fusion with the solar
prior and the hysteresis update: exactly `AutoCondition.select`, which the relocalizer calls between the frame
gate and the encoder. It is timed on camera-sized frames (the recogniser reads the raw frame, so the resize is
part of the cost) and on the tiny preset's input size, and set beside the tiny encoder's own batch-1 latency so
the table shows the overhead as a share of the frame. The head is untrained (its cost does not depend on its
weights) and has the demo world's nine domains plus weather/daylight/foliage heads, as a shipped one would.
Medians over `--reps` timed calls after warm-up, one torch thread unless `--threads` says otherwise.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from disam_ros import conditions
from disam_ros.bench.output import emit
from disam_ros.cliutil import OneLineParser, check_output_files
from disam_ros.conditions.fusion import Hysteresis, fuse_domain
from disam_ros.relocalizer import AutoCondition

DOMAINS = ("sunny", "overcast", "dusk", "night", "snow", "fog", "rain", "summer", "autumn")
TASKS = {"domain": DOMAINS, "weather": ("cloudy", "fog", "overcast", "rain", "snow", "sunny"),
         "daylight": ("day", "low_sun", "night"), "foliage": ("full", "mixed", "none")}
STAMP = 1_718_870_400.0  # 2024-06-20 08:00 UTC: a real sun elevation, so the prior is not the uniform shortcut
SITE = (47.37, 8.54)
SIZES = ((480, 640), (64, 64))  # (height, width): a VGA camera frame, the tiny preset's input


def median_ms(fn: Callable[[], object], reps: int, warmup: int = 5) -> float:
    """Median wall time of `fn` in milliseconds over `reps` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _selector() -> conditions.ConditionSelector:
    cfg = conditions.load_config(None)
    return conditions.ConditionSelector(DOMAINS, cfg, table_name="synthetic", reference="sunny",
                                        latitude=SITE[0], longitude=SITE[1])


def frames(size: tuple[int, int], n: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Random RGB frames (the statistics' cost does not depend on content), cycled so caches do not flatter."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def time_parts(size: tuple[int, int], reps: int) -> dict[str, float]:
    """Median ms of each part of the auto source and of the whole per-frame call, for one frame size."""
    # torch and the head are imported here, not at import: a typo or --help answers without loading torch
    import torch

    from disam_ros.model.condition_head import ConditionHead, image_features

    torch.manual_seed(0)
    head = ConditionHead(TASKS).eval()
    selector = _selector()
    sel = selector.select(STAMP)
    auto = AutoCondition(head, Hysteresis())
    imgs = frames(size)
    feats = image_features(imgs[0])
    probs = head.predict(imgs[0])["domain"]
    cfg = selector.config
    hyst = Hysteresis()
    k = iter(range(10**9))

    def nxt() -> np.ndarray:
        return imgs[next(k) % len(imgs)]

    return {
        "features_ms": median_ms(lambda: image_features(nxt()), reps),
        "head_ms": median_ms(lambda: head.predict_features(feats), reps),
        "fusion_ms": median_ms(lambda: hyst.update(fuse_domain(probs, sel.query.elevation_deg, selector.table,
                                                               cfg.rule, cfg.thresholds_deg)), reps),
        "added_ms": median_ms(lambda: auto.select(nxt(), sel, selector), reps),
    }


def encoder_ms(reps: int) -> float:
    """Median batch-1 latency of one tiny-preset encoder on the CPU (the frame's main cost, for scale)."""
    import torch

    from disam_ros.bench.model import encoder_latency

    return encoder_latency("tiny", torch.device("cpu"), reps)["b1_ms_per_image"]


def run(reps: int, with_encoder: bool = True) -> list[dict]:
    import torch

    enc = encoder_ms(max(reps // 10, 10)) if with_encoder else float("nan")
    rows = []
    for size in SIZES:
        row = {"frame": f"{size[1]}x{size[0]}", "device": "cpu", "threads": torch.get_num_threads(),
               "reps": reps, **time_parts(size, reps), "tiny_encoder_b1_ms": enc}
        row["added_share"] = row["added_ms"] / enc if with_encoder else float("nan")
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    cols = [("frame", "frame"), ("features_ms", "features ms"), ("head_ms", "MLP ms"), ("fusion_ms", "fusion+hyst ms"),
            ("added_ms", "added ms/frame"), ("tiny_encoder_b1_ms", "tiny encoder ms"), ("added_share", "share")]

    def cell(v: object, key: str) -> str:
        if key == "added_share":
            return f"{100 * float(v):.0f} %"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    cells = [[h for _, h in cols]] + [[cell(r[k], k) for k, _ in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="disam-bench condition", description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=300, help="timed calls per point (default 300)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the node's CPU budget)")
    p.add_argument("--no-encoder", action="store_true", help="skip the tiny encoder reference column")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON here")
    args = p.parse_args(argv)
    check_output_files(p, args, "--json")
    if args.reps < 1:
        p.error("--reps must be >= 1, e.g. --reps 300")
    if args.threads < 1:
        p.error("--threads must be >= 1, e.g. --threads 1")
    import torch

    torch.set_num_threads(args.threads)
    rows = run(args.reps, not args.no_encoder)
    emit("condition", rows, format_table(rows), args.json, torch=torch.__version__)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
