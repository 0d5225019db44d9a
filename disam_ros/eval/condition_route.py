"""Condition selection on a route without poses (Nordland: the same file name in two seasons is the same place).

Two measurements on the held-out part of the route (frames [round(f * n), n), which the recogniser and the
models never trained on when they were trained with the same train fraction and a gap):

* recognition: the recogniser's per-frame domain accuracy, and the accuracy of what the node would choose
  (`AutoCondition`: the same fusion with the solar prior and the same hysteresis, frames in drive order, the
  hysteresis started afresh per condition);
* selection: single-frame R@1 within +-k frames of the reference condition's part, for every way of choosing
  the query's encoder: `oracle` (the condition's true domain), `clock` (the stamp + `weather` rule; these
  frames have no stamps, so it is the weather parameter alone, left at its default), `auto` (the node's
  choice above), `brute` (the most distinctive retrieval, `condition_eval.brute_force_domain`).

Frames too dark to score (99th-percentile pixel under `min_brightness`, the retrieval evaluation's rule) are
left out of every score, as the R@1 tables do. The auto source still sees them (the node's junk-frame gate
passes Nordland's tunnels), so hysteresis runs over the same frame sequence a vehicle would give it.

    python -m disam_ros.eval.condition_route --data ../shared/data/nordland_trimmed_dev --reference summer \\
        --coarse runs/rail_sup/model.pt --train-fraction 0.5 --min-brightness 20
"""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from disam_ros import conditions
from disam_ros.cliutil import OneLineParser
from disam_ros.conditions.fusion import Hysteresis
from disam_ros.data.folders import IMAGE_SUFFIXES, read_image
from disam_ros.eval.condition_eval import SOURCES, brute_force_domain
from disam_ros.fsutil import atomic_write_text
from disam_ros.model import Encoder
from disam_ros.model.condition_head import (
    ConditionHead,
    bright_enough,
    image_features,
    load_condition_head,
    sidecar_path,
)
from disam_ros.model.related_losses import coarse_descriptor
from disam_ros.relocalizer import AutoCondition


@dataclass(frozen=True)
class RouteFrames:
    """One condition's held-out frames in drive order, their place (name rank) and whether they are scored."""

    condition: str
    images: list[np.ndarray]
    places: np.ndarray
    scored: np.ndarray  # bool per frame


@dataclass(frozen=True)
class RouteRecognition:
    condition: str
    frames: int
    frame_accuracy: float
    node_accuracy: float
    confused_with: str


def route_paths(root: str | Path, condition: str) -> list[Path]:
    """ROOT/<condition>/images/* (the product's layout) or ROOT/<condition>/* (flat, e.g. Nordland), sorted."""
    folder = Path(root) / condition
    folder = folder / "images" if (folder / "images").is_dir() else folder
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: condition {condition!r} not found under {root}: fix --data or --reference")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def held_out_range(n: int, train_fraction: float) -> range:
    """The held-out part [round(f * n), n) of a route of n frames (all of it for f = 0)."""
    if not 0.0 <= train_fraction < 1.0:
        raise ValueError(f"train fraction {train_fraction} must be in [0, 1): e.g. 0.5 scores the second half")
    return range(round(n * train_fraction), n)


def load_route(root: str | Path, names: Sequence[str], train_fraction: float, min_brightness: float
               ) -> dict[str, RouteFrames]:
    """Held-out frames of each condition; place = rank of the file name among all conditions' names."""
    paths = {c: route_paths(root, c) for c in names}
    rank = {n: i for i, n in enumerate(sorted({p.name for ps in paths.values() for p in ps}))}
    out = {}
    for c, ps in paths.items():
        sel = [ps[i] for i in held_out_range(len(ps), train_fraction)]
        images = [read_image(p) for p in sel]
        out[c] = RouteFrames(c, images, np.array([rank[p.name] for p in sel]),
                             np.array([bright_enough(im, min_brightness) for im in images], dtype=bool))
    return out


def node_choices(auto: AutoCondition, selector: conditions.ConditionSelector, images: Sequence[np.ndarray]
                 ) -> list[str]:
    """The domain the auto source holds after each frame, fed in order from a fresh hysteresis; no stamps."""
    auto.reset()
    sel = selector.select(None)
    return [auto.select(im, sel, selector).domain for im in images]


def recognise_route(head: ConditionHead, auto: AutoCondition, selector: conditions.ConditionSelector,
                    frames: RouteFrames, want: str) -> RouteRecognition:
    """Per-frame and node accuracy on the scored frames of one condition (`want` = its true domain)."""
    probs = head.predict_features(np.stack([image_features(im) for im in frames.images]))
    per_frame = np.array([max(p["domain"], key=p["domain"].get) for p in probs])[frames.scored]
    node = np.array(node_choices(auto, selector, frames.images))[frames.scored]
    wrong = [str(p) for p in per_frame if p != want]
    confused = max(set(wrong), key=wrong.count) if wrong else ""
    n = max(len(per_frame), 1)
    return RouteRecognition(frames.condition, len(per_frame), float((per_frame == want).sum() / n),
                            float((node == want).sum() / n), confused)


def descriptors(encoder: Encoder, images: Sequence[np.ndarray], domain: str, batch: int = 128) -> torch.Tensor:
    """Eq. 16 coarse vectors (their dot product is the mean-channel cosine) of images under one encoder."""
    out = [coarse_descriptor(encoder.encode(list(images[s:s + batch]), domain).float().cpu())
           for s in range(0, len(images), batch)]
    return torch.cat(out)


def selection_route(encoder: Encoder, db: RouteFrames, reference: str, query: RouteFrames, want: str,
                    choices: dict[str, list[str] | str], tolerance: int) -> dict[str, float]:
    """Single-frame R@1 of the query condition's scored frames for each source. `choices` maps a source to
    one domain for every frame (oracle, clock) or a per-frame list (auto); `brute` is computed here."""
    keep = np.flatnonzero(db.scored)
    dbv = descriptors(encoder, [db.images[i] for i in keep], reference)
    db_places = db.places[keep]
    q_idx = np.flatnonzero(query.scored)
    q_images = [query.images[i] for i in q_idx]
    sims = {d: (descriptors(encoder, q_images, d) @ dbv.T).numpy() for d in encoder.domains}
    hit = {d: np.abs(db_places[s.argmax(1)] - query.places[q_idx]) <= tolerance for d, s in sims.items()}
    picks: dict[str, list[str]] = {}
    for src, choice in choices.items():
        picks[src] = [choice] * len(q_idx) if isinstance(choice, str) else [choice[i] for i in q_idx]
    domains = (reference, *[d for d in encoder.domains if d != reference])
    picks["brute"] = [brute_force_domain(lambda d, j=j: sims[d][j], domains)[0] for j in range(len(q_idx))]
    out = {src: float(np.mean([hit[d][j] for j, d in enumerate(ds)])) for src, ds in picks.items()}
    out["frames"] = len(q_idx)
    out["auto_true_domain"] = float(np.mean([d == want for d in picks.get("auto", [])])) if "auto" in picks else 0.0
    return out


def run(args) -> dict:
    encoder = Encoder.from_checkpoint(args.coarse, device="cpu")
    head_path = Path(args.head) if args.head else sidecar_path(args.coarse)
    if not head_path.is_file():
        raise FileNotFoundError(f"{head_path}: no condition recogniser; train one with disam-train-condition "
                                f"--checkpoint {args.coarse}")
    head = load_condition_head(head_path)
    names = list(encoder.domains)
    if args.reference not in names:
        raise ValueError(f"reference {args.reference!r} is not a model domain: use one of {names}")
    selector = conditions.ConditionSelector(tuple(names), conditions.load_config(None), reference=args.reference,
                                            weather=args.weather)
    auto = AutoCondition(head, Hysteresis())
    frames = load_route(args.data, names, args.train_fraction, args.min_brightness)
    recog = [recognise_route(head, auto, selector, frames[c], c) for c in names]
    rows = {}
    clock = selector.select(None).domain
    for c in names:
        if c == args.reference:
            continue
        auto_picks = node_choices(auto, selector, frames[c].images)
        rows[c] = selection_route(encoder, frames[args.reference], args.reference, frames[c], c,
                                  {"oracle": c, "clock": clock, "auto": auto_picks}, args.tolerance)
    return {"recognition": [asdict(r) for r in recog], "selection": rows, "clock_domain": clock,
            "weather": args.weather, "tolerance_frames": args.tolerance, "train_fraction": args.train_fraction,
            "min_brightness": args.min_brightness, "head": str(head_path)}


def format_report(result: dict) -> str:
    lines = [f"{'condition':<12}{'frames':>8}{'per frame':>11}{'node':>8}  confused with"]
    lines += [f"{r['condition']:<12}{r['frames']:>8}{100 * r['frame_accuracy']:>10.1f}%"
              f"{100 * r['node_accuracy']:>7.1f}%  {r['confused_with'] or '-'}" for r in result["recognition"]]
    lines.append(f"\nR@1 (%) within +-{result['tolerance_frames']} frames; clock = {result['clock_domain']} "
                 f"(weather {result['weather']}, no stamps)")
    for cond, row in result["selection"].items():
        cells = "  ".join(f"{s} {100 * row[s]:.1f}" for s in SOURCES if s in row)
        lines.append(f"{cond} ({row['frames']} queries): {cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m disam_ros.eval.condition_route", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset root: ROOT/<condition>/images/* or ROOT/<condition>/*")
    p.add_argument("--coarse", required=True, help="coarse checkpoint with one encoder per condition folder")
    p.add_argument("--head", default="", help="condition recogniser (default: beside --coarse)")
    p.add_argument("--reference", required=True, help="the map's condition, e.g. summer")
    p.add_argument("--train-fraction", type=float, default=0.5, help="score frames from round(f * n) on")
    p.add_argument("--min-brightness", type=float, default=20.0, help="99th-percentile pixel below this: unscored")
    p.add_argument("--tolerance", type=int, default=2, help="frames between query and retrieved place (default 2)")
    p.add_argument("--weather", default="sunny", help="the clock rule's weather parameter (default: the node's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", help="write the result here as JSON")
    args = p.parse_args(argv)
    if args.tolerance < 0 or args.threads < 1:
        p.error("--tolerance must be >= 0 and --threads >= 1, e.g. --tolerance 2 --threads 1")
    torch.set_num_threads(args.threads)
    try:
        result = run(args)
    except (FileNotFoundError, ValueError) as exc:
        p.exit(2, f"error: {exc}\n")
    print(format_report(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
