"""`disam-bench <suite>`: one entry point for every benchmark; each suite prints a table and JSON.

Suites live in this package, one module each with `main(argv)`; nothing in the runtime path (node,
retrieval, model) imports them, and the dispatcher stays a table that never imports a suite it does not run.
"""
from __future__ import annotations

import importlib
import sys

SUITES = {
    "model": ("disam_ros.bench.model", "encoder latency and parameter counts per preset"),
    "synth": ("disam_ros.bench.synth", "synthetic world rendering frames per second"),
    "retrieval": ("disam_ros.bench.retrieval", "map query latency and memory per mode and size"),
    "node": ("disam_ros.bench.node", "localizer node end-to-end latency, image in to pose out"),
    "training": ("disam_ros.bench.training", "training iterations per second per recipe and preset"),
    "sequence": ("disam_ros.bench.sequence", "sequence localizer update time per map size and mode"),
    "condition": ("disam_ros.bench.condition", "per-frame latency the condition recogniser (auto) adds, CPU"),
    "verify": ("disam_ros.bench.verify", "per-frame cost of geometric verification + metric pose, 640x480, CPU"),
    "real": ("disam_ros.bench.real", "a checkpoint on every real image set, beside raw pixels and untrained encoders"),
    "threads": ("disam_ros.bench.threads", "the runtime's CPU work at 1, 2, 4 and all threads (the default's table)"),
    "posegraph": ("disam_ros.bench.posegraph", "pose-graph (iSAM2) update time per odometry node, 1 thread, CPU"),
    "match": ("disam_ros.bench.match", "local feature matching across conditions (SIFT, ORB, ...): MMA, poses, ms"),
}


def main(argv: list[str] | None = None) -> int:
    from disam_ros.cliutil import OneLineParser  # here, not at import: suites import this package

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = OneLineParser(prog="disam-bench", description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=[*SUITES, "all"],
                        help="; ".join(f"{k}: {v[1]}" for k, v in SUITES.items()))
    if argv and argv[0] in SUITES:  # the suite's own options (and its --help) go to the suite untouched
        return int(importlib.import_module(SUITES[argv[0]][0]).main(argv[1:]) or 0)
    args, rest = parser.parse_known_args(argv)
    names = list(SUITES) if args.suite == "all" else [args.suite]
    rc = 0
    for name in names:
        module = importlib.import_module(SUITES[name][0])
        rc |= int(module.main(rest) or 0)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
