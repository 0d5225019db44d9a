"""Retrieval evaluation: R@k tables by brute force (mean-channel cosine / cosine), and its CLI.

Protocol (Sec. IV-C): the database is the reference condition encoded with the reference encoder; each
query condition is encoded with its own encoder (or the reference one when the model has no encoder for
it, the paper's fallback). Coarse = mean-channel cosine of the coarse model; fine = cosine of the fine
model's flattened codes; coarse-to-fine = the fine score re-ranks the coarse top-N (N = 3 in the paper).
A query is correct at tolerance t when the retrieved place lies within t of the query's place (metres for
poses, frames for index places). Baselines: raw pixels (per-image standardised, cosine) and an untrained
encoder of the same shape (random init: how much of the score is architecture alone).

    python -m disam_ros.training.evaluate synthetic --coarse C.pt --fine F.pt --data ROOT [--json out.json]
    python -m disam_ros.training.evaluate nordland --coarse C.pt --data .../nordland_trimmed_dev --train-fraction 0.5

`--train-fraction f` scores the test part of training's split (split.py): the reference route's frames from
f * N on, counted over all frames before the dark-frame filter, so a model trained with the same f never saw them.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from disam_ros.cliutil import OneLineParser
from disam_ros.data.folders import read_image
from disam_ros.fsutil import atomic_write_text
from disam_ros.model import DisamNet, Encoder, ModelConfig
from disam_ros.model.networks import module_device
from disam_ros.model.preprocess import to_model_input

from .layouts import DomainImages, check_domains, discover, drop_dark
from .split import split_route

EPS = 1e-8
FeatureFn = Callable[[Tensor, str], Tensor]  # (B,3,S,S) in [-1, 1], domain -> (B, ...) features


def load_images(paths: Sequence[Path], size: int) -> Tensor:
    """(N,3,S,S) in [-1, 1], preprocessed exactly as the inference `Encoder` does (square resize)."""
    return to_model_input([read_image(p) for p in paths], size)


# Images per forward pass. Small, because on a CPU a batch of the small preset's feature maps (64 x 128 x 32 x 32 floats
# per layer) sits above glibc's mmap threshold: each batch then mapped and page-faulted its buffers in anew (865
# Nordland frames: 27-30 s at 64, 16 s at 8, the same features). On a GPU validation sets are small enough not to care.
ENCODE_BATCH = 8


def encode_all(fn: FeatureFn, x: Tensor, domain: str, batch: int = ENCODE_BATCH) -> Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[s:s + batch], domain).float().cpu() for s in range(0, x.shape[0], batch)])


def mean_channel_similarity(q: Tensor, db: Tensor) -> Tensor:
    """Eq. 16 for all pairs: mean over channels of the cosine of spatial maps -> (Nq, Nd), one matmul."""
    qn, dn = _channel_normalise(q), _channel_normalise(db)
    return qn.flatten(1) @ dn.flatten(1).T / q.shape[1]


def _channel_normalise(z: Tensor) -> Tensor:
    z = z.flatten(2).float()
    return z / (z.pow(2).sum(-1, keepdim=True) + EPS).sqrt()


def cosine_similarity(q: Tensor, db: Tensor) -> Tensor:
    return F.normalize(q.flatten(1).float(), dim=1) @ F.normalize(db.flatten(1).float(), dim=1).T


SIMILARITIES = {"mean_channel": mean_channel_similarity, "cosine": cosine_similarity}


def rerank(coarse: Tensor, fine: Tensor, top_n: int) -> Tensor:
    """(Nq,) database index: the best fine score among the coarse top-N."""
    top = coarse.topk(min(top_n, coarse.shape[1]), dim=1).indices
    best = fine.gather(1, top).argmax(1)
    return top.gather(1, best[:, None])[:, 0]


def correct(ranked: Tensor, q_pos: np.ndarray, db_pos: np.ndarray, tol: float) -> np.ndarray:
    """(Nq,) bool: any of the ranked database entries (Nq, k) within `tol` of the query's place."""
    idx = ranked.reshape(ranked.shape[0], -1).numpy()
    d = np.linalg.norm(db_pos[idx] - q_pos[:, None, :], axis=-1)
    return (d <= tol + 1e-9).any(1)


def raw_pixels(x: Tensor, domain: str) -> Tensor:
    """Baseline feature: the image itself, standardised per image (robust to global brightness)."""
    f = x.flatten(1)
    return (f - f.mean(1, keepdim=True)) / (f.std(1, keepdim=True) + EPS)


def _fallback(domains: tuple[str, ...], reference: str) -> str:
    """Encoder for conditions the model has none for: the reference's, else the model's first domain."""
    return reference if reference in domains else domains[0]


def net_features(net: DisamNet, reference: str) -> FeatureFn:
    """Features of a training network: images are loaded on the CPU and follow the network to its device (a run
    on CUDA validates the weights where they are, without a copy)."""
    net.eval()
    fb = _fallback(net.domains, reference)
    return lambda x, d: net.encode(x.to(module_device(net), non_blocking=True), d if d in net.domains else fb)


def encoder_features(enc: Encoder, reference: str) -> FeatureFn:
    fb = _fallback(enc.domains, reference)
    return lambda x, d: enc.encode(x, d if d in enc.domains else fb)


@dataclass(frozen=True)
class Method:
    """A row of the table: features + similarity, optionally re-ranked by a fine model's top-N scores."""

    features: FeatureFn
    metric: str = "mean_channel"
    fine: FeatureFn | None = None
    fine_metric: str = "cosine"
    top_n: int = 3


def evenly(n: int, k: int) -> np.ndarray:
    return np.arange(n) if k <= 0 or k >= n else np.unique(np.linspace(0, n - 1, k).round().astype(int))


class _Features:
    """Database features once per feature function; query features per condition."""

    def __init__(self, x_db: Tensor, reference: str) -> None:
        self.x_db, self.reference, self.db = x_db, reference, {}

    def similarity(self, fn: FeatureFn, metric: str, x_q: Tensor, domain: str) -> Tensor:
        if id(fn) not in self.db:
            self.db[id(fn)] = encode_all(fn, self.x_db, self.reference)
        return SIMILARITIES[metric](encode_all(fn, x_q, domain), self.db[id(fn)])


def validation_recall(net: DisamNet, val: Sequence[DomainImages], reference: str, image_size: int, metric: str,
                      tolerance: float, max_queries: int) -> dict[str, float]:
    """R@1 within `tolerance` of every other condition of `val` against the reference, each condition with its own
    encoder, under `metric` (eq. 16 mean-channel cosine by default); {} when there is nothing to score."""
    held = {d.name: d for d in val}
    ref = held[reference]
    queries = [d for n, d in held.items() if n != reference and len(d) and d.positions is not None]
    if ref.positions is None or not len(ref) or not queries:
        return {}
    method = {"val": Method(net_features(net, reference), metric)}
    table = recall_table(method, ref, queries, image_size, reference, [tolerance], max_queries=max_queries)
    key = f"R@1@{tolerance:g}"
    got = {cond: row[key] for cond, row in table["val"].items() if key in row}
    if not got:  # e.g. metric poses (other lanes) with the default tolerance 0: no query has a map image that close
        logging.getLogger(__name__).warning(
            "validation: no query has a reference image within val_tolerance %g (frames or metres), so nothing is "
            "scored; set train.val_tolerance, e.g. train.val_tolerance=5 for a dataset with metric poses", tolerance)
    return got


def recall_table(methods: dict[str, Method], db: DomainImages, queries: list[DomainImages], size: int,
                 reference: str, tolerances: Sequence[float], ks: Sequence[int] = (1,),
                 max_queries: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {query condition | "mean": {"R@k@tol": value}}}; re-ranked methods report R@1 only."""
    feats = _Features(load_images(db.paths, size), reference)
    out: dict[str, dict[str, dict[str, float]]] = {m: {} for m in methods}
    for qd in queries:
        sel = scorable(qd, db, min(tolerances))
        sel = sel[evenly(len(sel), max_queries)]
        if not len(sel):
            continue
        x_q, q_pos = load_images([qd.paths[i] for i in sel], size), qd.positions[sel]
        for name, m in methods.items():
            sim = feats.similarity(m.features, m.metric, x_q, qd.name)
            if m.fine is not None:
                ranked = {1: rerank(sim, feats.similarity(m.fine, m.fine_metric, x_q, qd.name), m.top_n)[:, None]}
            else:
                ranked = {k: sim.topk(min(k, sim.shape[1]), dim=1).indices for k in ks}
            out[name][qd.name] = {f"R@{k}@{tol:g}": float(correct(r, q_pos, db.positions, tol).mean())
                                  for tol in tolerances for k, r in ranked.items()}
            out[name][qd.name]["queries"] = len(sel)
    for rows in out.values():
        keys = list(next(iter(rows.values())).keys()) if rows else []
        rows["mean"] = {k: float(np.mean([r[k] for r in rows.values()])) for k in keys}
        rows["mean"]["queries"] = int(sum(r["queries"] for c, r in rows.items() if c != "mean"))
    return out


def scorable(queries: DomainImages, db: DomainImages, tol: float) -> np.ndarray:
    """Indices of queries whose place has a database image within `tol`: a query whose reference frame was
    dropped (dark) or lies outside the held-out stretch is not a localisation failure, so it is not scored."""
    d = np.linalg.norm(queries.positions[:, None] - db.positions[None], axis=-1).min(1)
    return np.flatnonzero(d <= tol + 1e-9)


def format_table(table: dict[str, dict[str, dict[str, float]]], column: str) -> str:
    """Markdown table for one metric column: methods as rows, query conditions (and the mean) as columns."""
    rows = {m: r for m, r in table.items() if column in r["mean"]}
    conds = [c for c in next(iter(rows.values())) if c != "mean"] + ["mean"]
    lines = ["| method | " + " | ".join(conds) + " |", "|---" * (len(conds) + 1) + "|"]
    for m, r in rows.items():
        lines.append(f"| {m} | " + " | ".join(f"{100 * r[c][column]:.1f}" for c in conds) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- CLI


def _untrained(cfg: ModelConfig, seed: int) -> FeatureFn:
    """Baseline: one randomly initialised encoder of the same shape for every condition (a random CNN)."""
    torch.manual_seed(seed)
    enc = DisamNet(cfg).encoders[cfg.domains[0]].eval()
    return lambda x, d: enc(x)


def _methods(args: argparse.Namespace, reference: str) -> tuple[dict[str, Method], int]:
    coarse = Encoder.from_checkpoint(args.coarse, device="cpu")
    size = coarse.config.image_size
    methods = {"raw pixels": Method(raw_pixels, "cosine"),
               "untrained encoder": Method(_untrained(coarse.config, 0)),
               "coarse only": Method(encoder_features(coarse, reference))}
    for spec in args.also or []:
        name, _, path = spec.partition("=")
        if not path:
            raise ValueError(f"--also {spec!r} is not NAME=CHECKPOINT: e.g. --also 'translation only=run/model.pt'")
        methods[name] = Method(encoder_features(Encoder.from_checkpoint(path, device="cpu"), reference))
    if args.fine:
        fine = Encoder.from_checkpoint(args.fine, device="cpu")
        methods["fine only"] = Method(encoder_features(fine, reference), args.fine_metric)
        methods[f"coarse-to-fine (top-{args.top_n})"] = Method(
            encoder_features(coarse, reference), "mean_channel", encoder_features(fine, reference),
            args.fine_metric, args.top_n)
    return methods, size


def _held_out(args: argparse.Namespace) -> tuple[list[DomainImages], str]:
    domains = discover(Path(args.data), args.layout)
    names = [d.name for d in domains]
    reference = args.reference or names[0]
    if reference not in names:
        raise ValueError(f"reference condition {reference!r} not under {args.data} (have {names}): fix --reference")
    if args.conditions:
        domains = [d for d in domains if d.name in set(args.conditions) | {reference}]
    check_domains(domains)
    if args.train_fraction >= 1:
        return drop_dark(domains, args.min_brightness), reference
    # the test part of training's honest split: the reference route's frames from train_fraction * N on (all
    # frames, before the dark filter), other conditions by their nearest reference frame; dark frames dropped after
    _, parts = split_route(domains, reference, args.train_fraction, 0.0, 0)
    return drop_dark([p.test for p in parts], args.min_brightness), reference


def run(args: argparse.Namespace) -> dict:
    domains, reference = _held_out(args)
    unplaced = [d.name for d in domains if d.positions is None]
    if unplaced:
        raise ValueError(f"{args.data}: conditions {unplaced} have no places to score against: give them poses.txt "
                         "(folders layout) or use the flat layout")
    db = next(d for d in domains if d.name == reference)
    queries = [d for d in domains if d.name != reference]
    methods, size = _methods(args, reference)
    table = recall_table(methods, db, queries, size, reference, args.tolerances, args.ks, args.max_queries)
    return {"reference": reference, "database": len(db), "queries": {q.name: len(q) for q in queries},
            "train_fraction": args.train_fraction, "tolerances": list(args.tolerances), "table": table}


# Per-dataset defaults; Nordland follows its README (R@1 and R@5 at 0/1/2/5 frames, drop near-black frames).
PRESET_DEFAULTS = {
    "synthetic": dict(train_fraction=0.8, tolerances=[2.0, 5.0], ks=[1], min_brightness=0),
    "nordland": dict(train_fraction=0.5, tolerances=[0.0, 1.0, 2.0, 5.0], ks=[1, 5], min_brightness=20),
    "custom": dict(train_fraction=1.0, tolerances=[0.0], ks=[1], min_brightness=0),
}


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m disam_ros.training.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("preset", choices=list(PRESET_DEFAULTS), help="defaults for split, tolerances and R@k")
    p.add_argument("--data", required=True, help="dataset root (any layout of disam_ros/training/layouts.py)")
    p.add_argument("--coarse", required=True, help="coarse checkpoint (a run's model.pt or an export)")
    p.add_argument("--fine", help="fine checkpoint: adds fine-only and coarse-to-fine rows")
    p.add_argument("--also", action="append", help="NAME=CHECKPOINT: another single-model row (mean-channel cosine)")
    p.add_argument("--reference", help="database condition (default: first condition)")
    p.add_argument("--conditions", nargs="*", help="query conditions (default: all others)")
    p.add_argument("--layout", default="auto")
    p.add_argument("--train-fraction", type=float, help="score the part of each route after this fraction")
    p.add_argument("--tolerances", type=float, nargs="+", help="place tolerances (metres or frames)")
    p.add_argument("--ks", type=int, nargs="+", help="R@k values for single-model rows")
    p.add_argument("--top-n", type=int, default=3, help="coarse candidates re-ranked by the fine model")
    p.add_argument("--fine-metric", choices=list(SIMILARITIES), default="cosine")
    p.add_argument("--min-brightness", type=int, help="drop frames whose 99th-percentile pixel is below this")
    p.add_argument("--max-queries", type=int, default=0, help="evenly spaced queries per condition (0 = all)")
    p.add_argument("--json", help="write the full result here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for key, value in PRESET_DEFAULTS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        result = run(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"reference {result['reference']} ({result['database']} images); queries {result['queries']}")
    columns = dict.fromkeys(k for rows in result["table"].values() for k in rows["mean"] if k.startswith("R@"))
    scored = {c: r["queries"] for c, r in next(iter(result["table"].values())).items()}
    print(f"scored queries (place in the database within the smallest tolerance): {scored}")
    for col in columns:
        print(f"\n{col} (%)\n" + format_table(result["table"], col))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
