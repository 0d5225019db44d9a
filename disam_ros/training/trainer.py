"""The DISAM training loop: per-domain Adam (ComboGAN), generator step then discriminator step.

One step (Sec. III-V): pick a pair of domains, compute the generator objective of the recipe (GAN +
cycle [+ FCL + triplet-FCL [+ SAM + triplet-SAM]] [+ a pose-supervised term]) for both directions, step
the two domains' encoder/decoder optimisers, then the LSGAN discriminator loss on real images and pooled
fakes, and step the two discriminators. lr, ramped weights and the negative mode come from `Schedule`.

A run directory holds recipe.yaml, log.csv, checkpoints/last.pt (full state for --resume, written
atomically by rank 0) and model.pt (the final model, input of the next stage's --init and of export).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from disam_ros.fsutil import atomic_write_text
from disam_ros.model import CheckpointError, DisamNet, ModelConfig, load_checkpoint, preset, save_checkpoint
from disam_ros.model.objective import LOSS_KEYS

from .config import Recipe, diff_recipes, recipe_from_dict
from .datasets import DataBundle, PairBatchSampler, UnpairedDataset, build_data
from .distributed import DiscriminatorStep, DistInfo, GeneratorStep, all_gather, barrier, init_distributed, wrap
from .evaluate import Method, net_features, recall_table
from .schedule import Schedule, loss_weights
from .state import ImagePool, capture_rng, optimizer_from_plain, optimizer_to_plain, restore_rng
from .supervised import SupervisedLoss

log = logging.getLogger(__name__)
LOG_COLUMNS = ("step", "epoch", "lr", "ramp", "hard", "pair", *LOSS_KEYS, "sup", "total", "disc", "it_per_s",
               "val_r1")


@dataclass(frozen=True)
class RunPaths:
    out: Path

    @property
    def last(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    @property
    def model(self) -> Path:
        return self.out / "model.pt"

    @property
    def log(self) -> Path:
        return self.out / "log.csv"

    @property
    def recipe(self) -> Path:
        return self.out / "recipe.yaml"

    @property
    def val(self) -> Path:
        return self.out / "val.json"


def model_config(recipe: Recipe, domains: tuple[str, ...]) -> ModelConfig:
    base = preset(recipe.model.preset, domains)
    try:
        return dataclasses.replace(base, **recipe.model.overrides)
    except TypeError:
        known = [f.name for f in dataclasses.fields(ModelConfig) if f.name != "domains"]
        raise ValueError(f"model.overrides {recipe.model.overrides} has unknown keys: valid keys are {known}") from None


def share_initialisation(net: DisamNet) -> None:
    """Copy the first domain's encoder, decoder and discriminator weights into every other domain."""
    first = net.domains[0]
    for group in (net.encoders, net.decoders, net.discriminators):
        for d in net.domains[1:]:
            group[d].load_state_dict(group[first].state_dict())


def read_run(out: str | Path) -> tuple[Recipe, str]:
    """(recipe, data root) stored in a run's last checkpoint: what --resume continues."""
    path = RunPaths(Path(out)).last
    if not path.is_file():
        raise FileNotFoundError(f"{path}: nothing to resume (no checkpoint yet): start without --resume")
    _, _, meta = load_checkpoint(path, map_location="cpu")
    return recipe_from_dict(meta["extra"]["recipe"], source=str(path)), meta["extra"]["data_root"]


class Trainer:
    """Build everything from a recipe, optionally initialise from a model or resume a run; `fit()` trains."""

    def __init__(self, recipe: Recipe, data_root: str | Path, out: str | Path, init: str | Path | None = None,
                 resume: bool = False, dist_info: DistInfo | None = None) -> None:
        self.info = dist_info or init_distributed(recipe.train.device)
        self.recipe, self.data_root, self.paths = recipe, Path(data_root), RunPaths(Path(out))
        if recipe.train.threads:
            torch.set_num_threads(recipe.train.threads)
        self.data: DataBundle = build_data(recipe, data_root)
        self.cfg = model_config(recipe, self.data.names)
        self.device = self.info.device
        torch.manual_seed(recipe.seed)
        self.net = DisamNet(self.cfg).to(self.device).train()
        if recipe.model.shared_init:
            share_initialisation(self.net)
        self.schedule = Schedule.from_recipe(recipe)
        self.base_weights = loss_weights(recipe)
        self.sup = SupervisedLoss(recipe.supervised) if recipe.supervised.kind != "none" else None
        self.opt_g = {d: self._adam(list(self.net.encoders[d].parameters()) + list(self.net.decoders[d].parameters()))
                      for d in self.cfg.domains}
        self.opt_d = {d: self._adam(self.net.discriminators[d].parameters()) for d in self.cfg.domains}
        pool_seed = recipe.seed * 1000 + self.info.rank
        self.pools = {d: ImagePool(recipe.schedule.pool_size, pool_seed + k) for k, d in enumerate(self.cfg.domains)}
        self.step, self.last_val = 0, {}
        if resume:
            self._resume()
        elif init is not None:
            self._init_from(Path(init))
        self.g_step = wrap(GeneratorStep(self.net, self.sup), self.info)
        self.d_step = wrap(DiscriminatorStep(self.net), self.info)
        self.dataset = UnpairedDataset(self.data.train, self.cfg.image_size, recipe.data.load_ratio, recipe.data.flip,
                                       recipe.seed, recipe.schedule.num_negatives, recipe.supervised,
                                       recipe.data.cache_images)

    def _adam(self, params: Any) -> torch.optim.Adam:
        s = self.recipe.schedule
        return torch.optim.Adam(params, lr=s.lr, betas=(s.beta1, s.beta2))

    # ------------------------------------------------------------------------------------ loading

    def _load_weights(self, path: Path) -> dict[str, Any]:
        net, cfg, meta = load_checkpoint(path, map_location="cpu", expect_domains=self.cfg.domains)
        if dataclasses.replace(cfg, domains=self.cfg.domains) != self.cfg:
            raise CheckpointError(f"checkpoint {str(path)!r} has model shape {cfg.to_dict()} but the recipe builds "
                                  f"{self.cfg.to_dict()}: set model.preset/model.overrides to match it")
        self.net.load_state_dict(net.state_dict())
        return meta

    def _init_from(self, path: Path) -> None:
        """Weights only (e.g. translation pre-training -> coarse/fine fine-tuning); fresh optimisers and schedule."""
        self._load_weights(path)

    def _resume(self) -> None:
        meta = self._load_weights(self.paths.last)
        extra = meta["extra"]
        changed = diff_recipes(recipe_from_dict(extra["recipe"], str(self.paths.last)), self.recipe)
        if changed:
            raise ValueError(f"--resume with a different recipe ({', '.join(changed)}): drop those overrides, or "
                             "start a new --out with --init to fine-tune from this run")
        state = extra["trainer"]
        for d in self.cfg.domains:
            optimizer_from_plain(self.opt_g[d], state["opt_g"][d])
            optimizer_from_plain(self.opt_d[d], state["opt_d"][d])
        self.step, self.last_val = int(extra["step"]), dict(extra.get("val", {}))
        ranks = state["ranks"]
        if len(ranks) != self.info.world:
            log.warning("resuming a %d-rank run on %d rank(s): batches will differ from an uninterrupted run",
                        len(ranks), self.info.world)
        local = ranks[self.info.rank % len(ranks)]
        for d, pool in self.pools.items():
            pool.load_state_dict(local["pools"][d], self.device)
        restore_rng(local["rng"])

    # ----------------------------------------------------------------------------------- training

    def fit(self, until: int | None = None) -> dict[str, Any]:
        """Train from the current step to `until` (default: the recipe's steps); returns a summary."""
        total = self.schedule.steps
        end = total if until is None else min(until, total)
        r, main = self.recipe, self.info.is_main
        needs_negs = self.base_weights.triplet_fcl > 0 or self.base_weights.triplet_sam > 0
        hard_from = self.schedule.hard_start_step if needs_negs and self.schedule.num_negatives > 1 else total + 1
        sampler = PairBatchSampler(len(self.dataset), len(self.cfg.domains), r.train.batch_size, r.seed, self.step,
                                   end, hard_from, self.info.rank, self.info.world)
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=r.train.num_workers,
                            pin_memory=self.device.type == "cuda")
        logger = RunLogger(self.paths, self.step, enabled=main)
        if main:
            self.paths.out.mkdir(parents=True, exist_ok=True)
            r.dump(self.paths.recipe)
        bar = tqdm(total=end, initial=self.step, disable=not (main and r.train.progress), desc=r.name, unit="it")
        t0, start_step = time.perf_counter(), self.step
        for batch in loader:
            stats = self.train_step(batch)
            stats["epoch"] = sampler.epoch_of(self.step - 1)
            logger.add(stats)
            bar.update(1)
            bar.set_postfix(total=f"{stats['total']:.3f}", lr=f"{stats['lr']:.2e}")
            if r.train.log_every and self.step % r.train.log_every == 0:
                logger.flush(self.step)
            if r.train.val_every and self.step % r.train.val_every == 0:
                logger.val(self.step, self.validate())
            if r.train.ckpt_every and self.step % r.train.ckpt_every == 0 and self.step < end:
                self.save_state()
        bar.close()
        elapsed = time.perf_counter() - t0
        logger.flush(self.step)
        if self.step >= total and (not r.train.val_every or total % r.train.val_every):
            logger.val(self.step, self.validate())
        self.save_state()
        if self.step >= total:
            self.save_model()
        logger.close()
        done = self.step - start_step
        return {"step": self.step, "steps_this_run": done, "seconds": elapsed,
                "it_per_s": done / elapsed if elapsed > 0 else math.nan, "val": self.last_val}

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One generator + one discriminator update on the batch's domain pair."""
        step, names = self.step, self.cfg.domains
        di, dj = names[int(batch["dom_i"][0])], names[int(batch["dom_j"][0])]
        lr = self.schedule.lr_at(step)
        for opt in (*self.opt_g.values(), *self.opt_d.values()):
            for group in opt.param_groups:
                group["lr"] = lr
        weights = self.schedule.weights_at(self.base_weights, step)
        sup_w = self.schedule.sup_weight_at(self.recipe.supervised.weight, step)
        dev = self.device
        x_i, x_j = batch["x_i"].to(dev, non_blocking=True), batch["x_j"].to(dev, non_blocking=True)
        neg_i, neg_j = (batch[k].to(dev, non_blocking=True) if k in batch else None for k in ("neg_i", "neg_j"))
        sup = {k: v.to(dev, non_blocking=True) for k, v in batch.items() if k.startswith("sup_")} or None

        self.net.discriminators.requires_grad_(False)  # G step: gradients reach D's input, not its weights
        for d in (di, dj):
            self.opt_g[d].zero_grad(set_to_none=True)
        out = self.g_step(x_i, x_j, di, dj, weights, neg_i, neg_j, sup, sup_w)
        out["total"].backward()
        for d in (di, dj):
            self.opt_g[d].step()
        self.net.discriminators.requires_grad_(True)

        d_loss = torch.zeros(())
        if weights.gan > 0:
            for d in (di, dj):
                self.opt_d[d].zero_grad(set_to_none=True)
            fake_i, fake_j = self.pools[di].query(out["fake_i"]), self.pools[dj].query(out["fake_j"])
            d_loss = self.d_step(x_i, x_j, fake_i, fake_j, di, dj)
            d_loss.backward()
            for d in (di, dj):
                self.opt_d[d].step()
        self.step += 1
        stats = {k: out[k].item() for k in (*LOSS_KEYS, "sup", "total")}
        stats.update(step=self.step, lr=lr, ramp=self.schedule.ramp_at(step), hard=int(neg_j is not None),
                     pair=f"{di}>{dj}", disc=d_loss.item())
        return stats

    # ------------------------------------------------------------------------ validation, saving

    def validate(self) -> dict[str, float]:
        """R@1 of the held-out places: other conditions against the reference, mean-channel cosine (rank 0)."""
        if not self.info.is_main:
            return {}
        held = {d.name: d for d in self.data.held_out}
        ref = held[self.data.reference]
        queries = [d for n, d in held.items() if n != self.data.reference and len(d)]
        if ref.positions is None or not len(ref) or not queries:
            return {}
        method = {"val": Method(net_features(self.net, self.data.reference))}
        try:
            table = recall_table(method, ref, queries, self.cfg.image_size, self.data.reference,
                                 [self.recipe.train.val_tolerance], max_queries=self.recipe.train.val_queries)
        finally:
            self.net.train()
        key = f"R@1@{self.recipe.train.val_tolerance:g}"
        self.last_val = {cond: row[key] for cond, row in table["val"].items()}
        return self.last_val

    def _extra(self, kind: str) -> dict[str, Any]:
        return {"kind": kind, "recipe": self.recipe.to_dict(), "step": self.step, "val": self.last_val,
                "data_root": str(self.data_root), "reference": self.data.reference}

    def save_state(self) -> None:
        """Full state for exact resume: model, optimisers, step, and every rank's RNG states and pools."""
        local = {"rng": capture_rng(), "pools": {d: p.state_dict() for d, p in self.pools.items()}}
        ranks = all_gather(local, self.info)
        if self.info.is_main:
            extra = self._extra("training_state")
            extra["trainer"] = {"opt_g": {d: optimizer_to_plain(o) for d, o in self.opt_g.items()},
                                "opt_d": {d: optimizer_to_plain(o) for d, o in self.opt_d.items()},
                                "ranks": ranks}
            save_checkpoint(self.paths.last, self.net, self.cfg, extra)
        barrier(self.info)

    def save_model(self) -> None:
        if self.info.is_main:
            save_checkpoint(self.paths.model, self.net, self.cfg, self._extra("model"))
        barrier(self.info)


class RunLogger:
    """CSV log (interval means of the step stats), val.json history, TensorBoard when it is installed."""

    def __init__(self, paths: RunPaths, start_step: int, enabled: bool) -> None:
        self.paths, self.enabled, self.acc, self.t = paths, enabled, [], time.perf_counter()
        self.tb = None
        if not enabled:
            return
        paths.out.mkdir(parents=True, exist_ok=True)
        _truncate_log(paths.log, start_step)
        new = not paths.log.is_file()
        self.fh = paths.log.open("a", newline="")
        self.csv = csv.DictWriter(self.fh, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        if new:
            self.csv.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(paths.out / "tb"))
        except ImportError:  # tensorboard is optional
            self.tb = None

    def add(self, stats: dict[str, Any]) -> None:
        if self.enabled:
            self.acc.append(stats)

    def flush(self, step: int) -> None:
        if not self.enabled or not self.acc:
            return
        last, n = self.acc[-1], len(self.acc)
        row = {k: last[k] for k in ("step", "epoch", "lr", "ramp", "hard", "pair")}
        for k in (*LOSS_KEYS, "sup", "total", "disc"):
            row[k] = f"{sum(s[k] for s in self.acc) / n:.6g}"
        now = time.perf_counter()
        row["it_per_s"] = f"{n / (now - self.t):.3f}"
        self.csv.writerow(row)
        self.fh.flush()
        if self.tb is not None:
            for k in (*LOSS_KEYS, "sup", "total", "disc", "lr"):
                self.tb.add_scalar(f"train/{k}", float(row[k]), step)
        self.acc, self.t = [], now

    def val(self, step: int, result: dict[str, float]) -> None:
        if not self.enabled or not result:
            return
        history = json.loads(self.paths.val.read_text()) if self.paths.val.is_file() else []
        history = [h for h in history if h["step"] < step] + [{"step": step, **result}]
        atomic_write_text(self.paths.val, json.dumps(history, indent=1))
        self.csv.writerow({"step": step, "val_r1": f"{result.get('mean', math.nan):.4f}"})
        if self.tb is not None:
            for k, v in result.items():
                self.tb.add_scalar(f"val/R@1/{k}", v, step)

    def close(self) -> None:
        if self.enabled:
            self.fh.close()
            if self.tb is not None:
                self.tb.close()


def _truncate_log(path: Path, step: int) -> None:
    """On resume, drop log rows written after the checkpoint we resume from (they will be redone)."""
    if not path.is_file():
        return
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = [r for r in rows if r.get("step") and int(r["step"]) <= step]
    if len(keep) == len(rows):
        return
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(keep)
