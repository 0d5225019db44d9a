"""Evaluate a model with the seed 002 depth branch: R@1 of appearance, depth and fused vectors, and depth error.

    python -m disam_ros.training.depth_eval --data WORLD --model RUN/model.pt --reference sunny [--json out.json]

Protocol as `disam_ros.training.evaluate` (database = the reference condition with the reference encoder, each
query condition with its own encoder; a query counts only when its place has a database image within the
tolerance). Rows: appearance only (eq. 16, what the map holds without the branch), the hallucinated depth's
descriptor alone, the *true* depth's descriptor (an upper bound, not a method: it needs a depth sensor), and
the fused descriptor at the checkpoint's fusion weight (chosen on the training world's validation part, never
here); a branch with per-condition query weights (version 2) is scored with each query condition's weight
(row `fused`) and also with the map's single weight (row `fused_map`, what version 1 would score). Depth error:
mean abs. rel. of the hallucinated depth per condition. Nothing is selected on this data.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from disam_ros.cliutil import OneLineParser
from disam_ros.fsutil import atomic_write_text
from disam_ros.model import CheckpointError, Encoder
from disam_ros.model.depth_branch import DepthBranch

from .depth_scores import condition_recalls, encode_condition, mean_abs_rel
from .evaluate import PRESET_DEFAULTS, _held_out, encoder_features

ROWS = ("appearance", "depth", "true_depth", "fused", "fused_map")
ROW_NAMES = {"appearance": "appearance only (eq. 16)", "depth": "hallucinated depth only",
             "true_depth": "true depth only (upper bound, needs a sensor)", "fused": "fused",
             "fused_map": "fused, the map's single weight"}


def load_branch_model(path: str | Path) -> tuple[Encoder, DepthBranch]:
    """The encoders and the depth branch of a checkpoint; a one-line error when it has no branch."""
    enc = Encoder.from_checkpoint(path, device="cpu")
    if enc.depth_branch is None:
        raise ValueError(f"{path}: the checkpoint has no depth branch: train one with "
                         "`disam-train --recipe depth_demo --init MODEL.pt` and pass its model.pt")
    return enc, enc.depth_branch


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """{reference, fusion_weight, domain_weights, tolerances, r1: {tol: {cond: {row: R@1}}}, abs_rel: {cond: v}}."""
    domains, reference = _held_out(args)
    enc, branch = load_branch_model(args.model)
    codes = encoder_features(enc, reference)
    size = enc.config.image_size
    encoded = {d.name: encode_condition(codes, branch, d, size, d.name) for d in domains}
    db = encoded[reference]
    w = branch.fusion_weight
    r1: dict[str, dict[str, dict[str, float]]] = {}
    for tol in args.tolerances:
        rows = {}
        for name, q in encoded.items():
            if name == reference:
                continue
            wq = branch.query_weight(name)
            rec = condition_recalls(q, db, [w, wq], tol)
            if rec.get("queries"):
                rows[name] = {k: rec[k] for k in ("appearance", "depth", "true_depth")} | {
                    "fused": rec[f"fused@{wq:g}"], "fused_map": rec[f"fused@{w:g}"], "queries": rec["queries"]}
        rows["mean"] = {k: float(np.mean([r[k] for r in rows.values()])) for k in ROWS} if rows else {}
        r1[f"{tol:g}"] = rows
    return {"reference": reference, "fusion_weight": w, "domain_weights": dict(branch.domain_weights),
            "data": str(args.data), "model": str(args.model),
            "tolerances": list(args.tolerances), "r1": r1,
            "abs_rel": {name: mean_abs_rel(c) for name, c in encoded.items()}}


def format_tables(result: dict[str, Any]) -> str:
    """Markdown: one R@1 table per tolerance (methods x conditions, %), then abs. rel. per condition."""
    out = []
    for tol, rows in result["r1"].items():
        conds = [c for c in rows if c != "mean"] + ["mean"]
        out += [f"R@1 within {tol} m (%), fusion weight {result['fusion_weight']:g}",
                "| method | " + " | ".join(conds) + " |", "|---" * (len(conds) + 1) + "|"]
        per = result.get("domain_weights") or {}
        for key in ROWS if per else ROWS[:-1]:
            name = ROW_NAMES[key] + (f" (w = {result['fusion_weight']:g})" if key != "fused" or not per else
                                     " (per condition: " + ", ".join(f"{c} {v:g}" for c, v in per.items()) + ")")
            name = name if key.startswith("fused") else ROW_NAMES[key]
            out.append(f"| {name} | " + " | ".join(f"{100 * rows[c][key]:.1f}" for c in conds) + " |")
        out.append("")
    conds = list(result["abs_rel"])
    out += ["hallucinated depth, abs. rel. error (mean over images of mean |d - d*| / d* over valid pixels)",
            "| | " + " | ".join(conds) + " |", "|---" * (len(conds) + 1) + "|",
            "| abs. rel. | " + " | ".join(f"{result['abs_rel'][c]:.3f}" for c in conds) + " |"]
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m disam_ros.training.depth_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset root with ROOT/<condition>/images and depth/ folders")
    p.add_argument("--model", required=True, help="checkpoint with a depth branch (a depth run's model.pt)")
    p.add_argument("--reference", help="database condition (default: first condition)")
    p.add_argument("--conditions", nargs="*", help="query conditions (default: all others)")
    p.add_argument("--layout", default="auto")
    p.add_argument("--train-fraction", type=float, default=1.0,
                   help="score the route after this fraction (1.0 = all of it: an unseen world)")
    p.add_argument("--tolerances", type=float, nargs="+", default=[2.0, 5.0], help="place tolerances (metres)")
    p.add_argument("--min-brightness", type=int, default=PRESET_DEFAULTS["synthetic"]["min_brightness"])
    p.add_argument("--json", help="write the full result here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = evaluate(args)
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        print(f"depth_eval: error: {exc}", file=sys.stderr)
        return 2
    print(format_tables(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
