"""Train the condition recogniser (disam_ros.model.condition_head) from the condition folders a model trains on.

Labels come for free: the folder name is the domain, and a dataset's world.yaml (when present) gives each
folder's Table-I attributes (weather, daylight, foliage), which become extra tasks. Training is a full-batch
fit of a few thousand parameters on precomputed features: seconds on a CPU, so it runs after (or beside) the
GAN training and is written beside the model checkpoint.

    python -m disam_ros.training.condition --data ROOT --checkpoint runs/coarse.pt
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from disam_ros import logs
from disam_ros.cliutil import OneLineParser
from disam_ros.data.folders import read_image
from disam_ros.data.world_yaml import world_yaml_if_present

from .layouts import discover

if TYPE_CHECKING:  # torch is imported where a head is made: `--help` and argument errors do not wait for it
    from disam_ros.model.condition_head import ConditionHead

LOG = logging.getLogger(__name__)
ATTRIBUTES = ("weather", "daylight", "foliage")


@dataclass(frozen=True)
class ConditionTrainConfig:
    """Fit settings; defaults were set on the seed-0 synthetic world only (never on what is reported)."""

    hidden: int = 32
    steps: int = 400
    lr: float = 1e-2
    weight_decay: float = 1e-3
    seed: int = 0


@dataclass
class LabelledFeatures:
    """Features (N, F) and per-task integer labels (N,), -1 where a task has no label for a frame."""

    features: np.ndarray
    labels: dict[str, np.ndarray]
    tasks: dict[str, tuple[str, ...]]
    domains_of: np.ndarray  # (N,) domain index, kept for per-condition reports
    places: np.ndarray | None = None  # (N,) file name per frame: the same name in two folders is the same place


def select_indices(n: int, span: tuple[float, float]) -> range:
    """Frames [start, stop) of a folder as fractions of its length: (0, 0.5) = first half (held-out splits)."""
    lo, hi = span
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"frame span {span} must satisfy 0 <= start < stop <= 1")
    return range(int(round(lo * n)), int(round(hi * n)))


def train_range(n: int, train_fraction: float, gap: int) -> range:
    """The training part of a route of n frames cut at `train_fraction`: [0, round(f * n) - gap), i.e. split.py's
    cut with no validation part, so the test part [round(f * n), n) lies `gap` frames away (f >= 1: all)."""
    if train_fraction >= 1.0:
        return range(n)
    stop = round(n * train_fraction) - gap
    if train_fraction <= 0.0 or stop < 1:
        raise ValueError(f"--train-fraction {train_fraction} with --gap {gap} leaves no training frame of {n}: "
                         "raise the fraction or lower the gap")
    return range(stop)


def load_labelled(root: str | Path, conditions: Sequence[str] | None = None, span: tuple[float, float] = (0.0, 1.0),
                  attributes: Mapping[str, Mapping[str, str]] | None = None,
                  keep: Callable[[np.ndarray], bool] | None = None,
                  frames: Callable[[int], Sequence[int]] | None = None) -> LabelledFeatures:
    """Features and labels of ROOT/<condition>/images/* or ROOT/<condition>/*.png (training/layouts.py; condition
    = domain). Attributes come from `attributes` (condition -> {weather: .., ...}) or else the root's world.yaml;
    `frames(n)` (default: `span`) picks each folder's frames by index; `keep(image)` may drop frames (e.g.
    Nordland's black tunnel frames, `bright_enough`)."""
    found = {d.name: d for d in discover(root)}
    names = list(conditions) if conditions else sorted(found)
    missing = [n for n in names if n not in found]
    if missing:
        raise FileNotFoundError(f"{root}: conditions {missing} not found (have {sorted(found)}): fix --conditions")
    if attributes is None:
        world = world_yaml_if_present(root)
        attributes = {}
        if world is not None:
            for n, info in world.conditions.items():
                attributes[n] = {a: getattr(info, a) for a in ATTRIBUTES if getattr(info, a)}
    tasks: dict[str, tuple[str, ...]] = {"domain": tuple(names)}
    for a in ATTRIBUTES:
        vals = sorted({attributes.get(n, {}).get(a) for n in names} - {None})
        if vals:
            tasks[a] = tuple(vals)
    from disam_ros.model.condition_head import batch_features

    feats, doms, places = [], [], []
    for di, name in enumerate(names):
        paths = found[name].paths
        idx = frames(len(paths)) if frames is not None else select_indices(len(paths), span)
        pairs = [(paths[i].name, read_image(paths[i])) for i in idx]
        pairs = [(p, im) for p, im in pairs if keep is None or keep(im)]
        feats.append(batch_features([im for _, im in pairs]))
        doms += [di] * len(pairs)
        places += [p for p, _ in pairs]
    doms_arr = np.asarray(doms, dtype=np.int64)
    labels = {"domain": doms_arr}
    for a, vals in tasks.items():
        if a == "domain":
            continue
        per_dom = np.array([vals.index(attributes[n][a]) if a in attributes.get(n, {}) else -1 for n in names])
        labels[a] = per_dom[doms_arr]
    return LabelledFeatures(np.concatenate(feats), labels, tasks, doms_arr, np.asarray(places))


def train_head(data: LabelledFeatures, config: ConditionTrainConfig = ConditionTrainConfig()) -> ConditionHead:
    """Full-batch Adam on the sum of per-task cross-entropies (unlabelled entries ignored)."""
    if len(data.features) == 0:
        raise ValueError("no training frames for the condition recogniser: check the data root and span")
    import torch
    from torch import nn

    from disam_ros.model.condition_head import ConditionHead

    torch.manual_seed(config.seed)
    head = ConditionHead(data.tasks, config.hidden, n_features=data.features.shape[1])
    head.set_normalisation(data.features)
    x = torch.as_tensor(data.features)
    ys = {k: torch.as_tensor(v) for k, v in data.labels.items()}
    opt = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-1)
    head.train()
    for step in range(config.steps):
        logits = head(x)
        loss = sum(loss_fn(logits[k], ys[k]) for k in head.tasks if (ys[k] >= 0).any())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == config.steps - 1:
            LOG.debug("condition recogniser: final training loss %.4f over %d frames", float(loss.detach()), len(x))
    return head.eval()


def _subset(data: LabelledFeatures, mask: np.ndarray) -> LabelledFeatures:
    return LabelledFeatures(data.features[mask], {k: v[mask] for k, v in data.labels.items()}, data.tasks,
                            data.domains_of[mask], None if data.places is None else data.places[mask])


def block_folds(domains_of: np.ndarray, k: int) -> np.ndarray:
    """Fold id per frame: each domain's frames cut into k contiguous blocks (neighbouring frames of a drive
    look alike, so random folds would leak and flatter every setting equally)."""
    fold = np.zeros(len(domains_of), dtype=np.int64)
    for d in np.unique(domains_of):
        idx = np.flatnonzero(domains_of == d)
        fold[idx] = (np.arange(len(idx)) * k) // max(len(idx), 1)
    return fold


def fit_with_cv(data: LabelledFeatures, config: ConditionTrainConfig = ConditionTrainConfig(),
                weight_decays: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0), k: int = 5) -> ConditionHead:
    """Pick weight decay by k-fold block cross-validation on the TRAINING data (domain accuracy, ties to the
    stronger decay), then refit on all of it. Why: the same head trains on 10 frames (a walk) or 10,000 (a
    season of drives); the regularisation that suits one overfits or underfits the other."""
    k = min(k, int(np.bincount(data.domains_of).min()))
    if k < 2:
        return train_head(data, config)
    folds = block_folds(data.domains_of, k)
    scores = []
    for wd in weight_decays:
        cfg = replace(config, weight_decay=wd)
        accs = [accuracy(train_head(_subset(data, folds != f), cfg), _subset(data, folds == f))["domain"]["all"]
                for f in range(k)]
        scores.append((float(np.mean(accs)), wd))
        LOG.debug("condition recogniser: weight decay %g -> CV domain accuracy %.3f", wd, scores[-1][0])
    best = max(scores, key=lambda s: (round(s[0], 6), s[1]))[1]
    LOG.info("condition recogniser: weight decay %g chosen by %d-fold block CV (domain accuracy %s)", best, k,
             ", ".join(f"{wd:g}: {acc:.3f}" for acc, wd in scores))
    return train_head(data, replace(config, weight_decay=best))


def accuracy(head: ConditionHead, data: LabelledFeatures) -> dict[str, dict[str, float]]:
    """task -> {"all": acc, <domain name>: acc on that domain's frames} on labelled frames (held-out data)."""
    import torch

    with torch.inference_mode():
        logits = head(torch.as_tensor(data.features))
    out: dict[str, dict[str, float]] = {}
    for task, y in data.labels.items():
        if task not in logits:
            continue
        names = head.tasks[task]
        want = data.tasks[task]
        # map the data's class indices onto the head's (a held-out set may lack some classes)
        remap = np.array([names.index(c) if c in names else -2 for c in want])
        ok = y >= 0
        yy = np.where(ok, remap[np.clip(y, 0, None)], -1)
        pred = logits[task].argmax(1).numpy()
        row = {"all": float((pred[ok] == yy[ok]).mean()) if ok.any() else float("nan")}
        for di, dname in enumerate(data.tasks["domain"]):
            m = ok & (data.domains_of == di)
            if m.any():
                row[dname] = float((pred[m] == yy[m]).mean())
        out[task] = row
    return out


def leave_one_place_out(data: LabelledFeatures, config: ConditionTrainConfig = ConditionTrainConfig()
                        ) -> np.ndarray:
    """Predicted domain index per frame, each from a recogniser fitted (with `fit_with_cv`) on every OTHER
    place: all conditions' images of a place are held out together, so no view of the scored place was seen.
    Why: a walk of ten places is too small to cut into a training and a test segment."""
    if data.places is None:
        raise ValueError("leave-one-place-out needs the frames' place names (load them with load_labelled)")
    import torch

    pred = np.empty(len(data.features), dtype=np.int64)
    for place in np.unique(data.places):
        out = data.places == place
        head = fit_with_cv(_subset(data, ~out), config)
        with torch.inference_mode():
            pred[out] = head(torch.as_tensor(data.features[out]))["domain"].argmax(1).numpy()
    return pred


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="disam-train-condition",
                      description="Train the condition recogniser beside a model checkpoint.")
    p.add_argument("--data", required=True, type=Path,
                   help="dataset root: ROOT/<condition>/images/* or ROOT/<condition>/*.png (flat, e.g. Nordland)")
    p.add_argument("--checkpoint", type=Path, help="model checkpoint; the recogniser is written beside it")
    p.add_argument("--out", type=Path, help="explicit output file (default: beside --checkpoint)")
    p.add_argument("--conditions", default="", help="comma-separated condition folders (default: all)")
    p.add_argument("--span", default="0:1", help="fraction of each folder to train on, e.g. 0:0.5")
    p.add_argument("--train-fraction", type=float, default=None,
                   help="train on [0, round(f*n) - gap) of each folder (held-out test part [round(f*n), n))")
    p.add_argument("--gap", type=int, default=5, help="frames between training and test parts (default 5)")
    p.add_argument("--min-brightness", type=float, default=0.0,
                   help="drop frames whose 99th-percentile pixel is below this (Nordland: 20)")
    p.add_argument("--quiet", action="store_true", help="log warnings only (default: info on stderr)")
    p.add_argument("--leave-one-place-out", action="store_true",
                   help="only report held-out accuracy, one fit per place (small sets); writes nothing")
    args = p.parse_args(argv)
    logs.setup(-1 if args.quiet else 0)
    if not (args.out or args.checkpoint or args.leave_one_place_out):
        p.error("give --checkpoint (write beside it) or --out")
    try:
        lo, hi = (float(v) for v in args.span.split(":"))
    except ValueError:
        p.error(f"--span {args.span!r} is not START:STOP fractions, e.g. --span 0:0.5")
    conds = [c for c in args.conditions.split(",") if c] or None
    if args.checkpoint and conds is None:
        from disam_ros.model.checkpoint import read_checkpoint
        conds = list(read_checkpoint(args.checkpoint, map_location="cpu")[1].domains)
    from disam_ros.model.condition_head import bright_enough, save_condition_head, sidecar_path

    frames = None if args.train_fraction is None else (lambda n: train_range(n, args.train_fraction, args.gap))
    keep = (lambda im: bright_enough(im, args.min_brightness)) if args.min_brightness > 0 else None
    try:
        data = load_labelled(args.data, conds, (lo, hi), keep=keep, frames=frames)
    except (FileNotFoundError, ValueError) as exc:
        p.exit(2, f"error: {exc}\n")
    if args.leave_one_place_out:
        pred = leave_one_place_out(data)
        y = data.labels["domain"]
        for di, name in enumerate(data.tasks["domain"]):
            m = y == di
            LOG.info("leave-one-place-out %s: %d/%d recognised", name, int((pred[m] == di).sum()), int(m.sum()))
        print(f"leave-one-place-out domain accuracy: {100 * float((pred == y).mean()):.1f} % of {len(y)} frames")
        return 0
    head = fit_with_cv(data)
    out = args.out or sidecar_path(args.checkpoint)
    save_condition_head(out, head, checkpoint=args.checkpoint)
    LOG.info("condition recogniser %s from %d frames -> %s", {k: len(v) for k, v in head.tasks.items()},
             len(data.features), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
