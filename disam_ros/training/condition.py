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

import numpy as np
import torch
from torch import nn

from disam_ros.cliutil import OneLineParser
from disam_ros.data.folders import list_conditions, load_condition, read_image
from disam_ros.data.world_yaml import world_yaml_if_present
from disam_ros.model.condition_head import ConditionHead, batch_features, save_condition_head, sidecar_path

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


def select_indices(n: int, span: tuple[float, float]) -> range:
    """Frames [start, stop) of a folder as fractions of its length: (0, 0.5) = first half (held-out splits)."""
    lo, hi = span
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"frame span {span} must satisfy 0 <= start < stop <= 1")
    return range(int(round(lo * n)), int(round(hi * n)))


def load_labelled(root: str | Path, conditions: Sequence[str] | None = None, span: tuple[float, float] = (0.0, 1.0),
                  attributes: Mapping[str, Mapping[str, str]] | None = None,
                  keep: Callable[[np.ndarray], bool] | None = None) -> LabelledFeatures:
    """Features and labels of ROOT/<condition>/images/* (condition = domain). Attributes come from
    `attributes` (condition -> {weather: .., ...}) or else the root's world.yaml; `keep(image)` may drop
    frames (e.g. Nordland's black tunnel frames)."""
    names = list(conditions) if conditions else list_conditions(root)
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
    feats, doms = [], []
    for di, name in enumerate(names):
        folder = load_condition(root, name)
        images = [read_image(folder.image_paths[i]) for i in select_indices(len(folder), span)]
        images = [im for im in images if keep is None or keep(im)]
        feats.append(batch_features(images))
        doms += [di] * len(images)
    doms_arr = np.asarray(doms, dtype=np.int64)
    labels = {"domain": doms_arr}
    for a, vals in tasks.items():
        if a == "domain":
            continue
        per_dom = np.array([vals.index(attributes[n][a]) if a in attributes.get(n, {}) else -1 for n in names])
        labels[a] = per_dom[doms_arr]
    return LabelledFeatures(np.concatenate(feats), labels, tasks, doms_arr)


def train_head(data: LabelledFeatures, config: ConditionTrainConfig = ConditionTrainConfig()) -> ConditionHead:
    """Full-batch Adam on the sum of per-task cross-entropies (unlabelled entries ignored)."""
    if len(data.features) == 0:
        raise ValueError("no training frames for the condition recogniser: check the data root and span")
    torch.manual_seed(config.seed)
    head = ConditionHead(data.tasks, config.hidden)
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
            LOG.info("condition recogniser: final training loss %.4f over %d frames", float(loss.detach()), len(x))
    return head.eval()


def _subset(data: LabelledFeatures, mask: np.ndarray) -> LabelledFeatures:
    return LabelledFeatures(data.features[mask], {k: v[mask] for k, v in data.labels.items()}, data.tasks,
                            data.domains_of[mask])


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
        LOG.info("condition recogniser: weight decay %g -> CV domain accuracy %.3f", wd, scores[-1][0])
    best = max(scores, key=lambda s: (round(s[0], 6), s[1]))[1]
    return train_head(data, replace(config, weight_decay=best))


def accuracy(head: ConditionHead, data: LabelledFeatures) -> dict[str, dict[str, float]]:
    """task -> {"all": acc, <domain name>: acc on that domain's frames} on labelled frames (held-out data)."""
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


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="disam-train-condition",
                      description="Train the condition recogniser beside a model checkpoint.")
    p.add_argument("--data", required=True, type=Path, help="dataset root: ROOT/<condition>/images/*")
    p.add_argument("--checkpoint", type=Path, help="model checkpoint; the recogniser is written beside it")
    p.add_argument("--out", type=Path, help="explicit output file (default: beside --checkpoint)")
    p.add_argument("--conditions", default="", help="comma-separated condition folders (default: all)")
    p.add_argument("--span", default="0:1", help="fraction of each folder to train on, e.g. 0:0.5")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.out and not args.checkpoint:
        p.error("give --checkpoint (write beside it) or --out")
    out = args.out or sidecar_path(args.checkpoint)
    lo, hi = (float(v) for v in args.span.split(":"))
    conds = [c for c in args.conditions.split(",") if c] or None
    if args.checkpoint and conds is None:
        from disam_ros.model.checkpoint import read_checkpoint
        conds = list(read_checkpoint(args.checkpoint, map_location="cpu")[1].domains)
    try:
        data = load_labelled(args.data, conds, (lo, hi))
    except (FileNotFoundError, ValueError) as exc:
        p.exit(2, f"error: {exc}\n")
    head = fit_with_cv(data)
    save_condition_head(out, head)
    LOG.info("condition recogniser %s -> %s", {k: len(v) for k, v in head.tasks.items()}, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
