"""The DISAM training loop: per-domain Adam (ComboGAN), generator step then discriminator step.

One step (Sec. III-V): pick a pair of domains, compute the generator objective of the recipe (GAN +
cycle [+ FCL + triplet-FCL [+ SAM + triplet-SAM]] [+ a pose-supervised term]) for both directions, step
the two domains' encoder/decoder optimisers, then the LSGAN discriminator loss on real images and pooled
fakes, and step the two discriminators. lr, ramped weights and the negative mode come from `Schedule`.

Never ship worse than the start (best.py): the start (step 0: untrained or --init weights) is validated on the
held-out validation segment like every later point; checkpoints/best.pt holds the best point so far (the start
wins ties), and model.pt, the input of export and of the next stage's --init, is that best point. A run whose
best is not above its start says so in one WARNING line and in summary.json.

A run directory holds recipe.yaml, log.csv, val.json, summary.json, checkpoints/last.pt (full state for
--resume, written atomically by rank 0), checkpoints/best.pt and model.pt.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from disam_ros.fsutil import atomic_write_bytes, atomic_write_text
from disam_ros.model import CheckpointError, DisamNet, load_checkpoint, save_checkpoint
from disam_ros.model.objective import LOSS_KEYS

from .best import improves, summarize
from .config import diff_recipes, recipe_from_dict
from .datasets import DataBundle, PairBatchSampler, UnpairedDataset, build_data
from .distributed import DiscriminatorStep, DistInfo, GeneratorStep, all_gather, barrier, init_distributed, wrap
from .evaluate import validation_recall
from .keep_structure import StructureKeeper
from .mining import Miner, table_from_plain, table_to_plain
from .mixing import mixed_dataset
from .pseudo_places import PseudoPlaces, describe, relabel_split
from .pseudo_places import to_plain as pseudo_to_plain
from .recipe import Recipe
from .runlog import RunLogger, RunPaths
from .schedule import Schedule
from .start import best_start, freeze_encoders, model_config, pick_start, share_initialisation, tie_encoders
from .state import ImagePool, capture_rng, optimizer_from_plain, optimizer_to_plain, restore_rng
from .supervised import SupervisedLoss

log = logging.getLogger(__name__)


class Trainer:
    """Build everything from a recipe, optionally initialise from a model or resume a run; `fit()` trains."""

    def __init__(self, recipe: Recipe, data_root: str | Path, out: str | Path, init: str | Path | None = None,
                 resume: bool = False, dist_info: DistInfo | None = None) -> None:
        self.info = dist_info or init_distributed(recipe.train.device)
        self.recipe, self.data_root, self.paths = recipe, Path(data_root), RunPaths(Path(out))
        if recipe.train.threads:
            torch.set_num_threads(recipe.train.threads)
        self.data: DataBundle = build_data(recipe, data_root)
        if self.info.is_main:
            for line in self.data.describe():
                log.info("%s", line)
        self.cfg = model_config(recipe, self.data.names)
        self.device = self.info.device
        torch.manual_seed(recipe.seed)
        self.net = DisamNet(self.cfg).to(self.device).train()
        if recipe.model.shared_init:
            share_initialisation(self.net)
        self.schedule = Schedule.from_recipe(recipe)
        self.base_weights = recipe.loss
        self.sup = SupervisedLoss(recipe.supervised) if recipe.supervised.kind != "none" else None
        self._make_optimisers()
        pool_seed = recipe.seed * 1000 + self.info.rank
        self.pools = {d: ImagePool(recipe.schedule.pool_size, pool_seed + k) for k, d in enumerate(self.cfg.domains)}
        self.step, self.last_val = 0, {}
        self.history: list[dict[str, Any]] = []  # validation points, the start first (best.py)
        self.miner = None
        self._mined_plain: dict | None = None  # a resumed run's mining table, handed to the dataset below
        self._keep_plain: dict | None = None  # a resumed run's frozen start encoders (keep.weight > 0)
        self._pseudo_plain: dict = {"train": None, "val": None}  # a resumed run's pseudo places, per split
        self.start_scores: list[float] = []
        if resume:
            self._resume()
        elif init is not None:
            self._load_weights(Path(init))  # weights only (e.g. translation -> coarse): fresh optimisers
        elif recipe.model.start_candidates > 1:
            self._pick_start(recipe.model.start_candidates)
        self.pseudo: dict[str, PseudoPlaces] = {}
        self.pseudo_val: dict[str, PseudoPlaces] = {}
        if self.sup is not None and recipe.supervised.pseudo:
            self._apply_pseudo_places()
        if self.sup is not None and recipe.supervised.mine_every:
            self.miner = Miner(self.data.train, self.cfg.image_size, recipe.supervised.descriptor,
                               recipe.supervised.pos_radius, recipe.supervised.mined, recipe.data.cache_images)
        self.keeper = StructureKeeper(self.net, recipe.keep.descriptor) if recipe.keep.weight > 0 else None
        if self.keeper is not None and self._keep_plain is not None:
            self.keeper.load_state_dict(self._keep_plain)  # a resumed run anchors to its own start
        self.g_step = wrap(GeneratorStep(self.net, self.sup, self.keeper, recipe.keep.weight), self.info)
        self.d_step = wrap(DiscriminatorStep(self.net), self.info)
        real = UnpairedDataset.from_recipe(recipe, self.data.train, self.cfg.image_size)
        self.dataset = mixed_dataset(recipe, real, self.data.names, self.cfg.image_size)  # real alone: mix 0
        if self._mined_plain is not None:
            self.dataset.hard = table_from_plain(self._mined_plain)

    def _pick_start(self, n: int) -> None:
        """Validate n random starts (start.py), keep the best (rank 0's choice) and rebuild the optimisers on it."""
        def score(net: DisamNet) -> float:
            self.net = net
            return self.validate().get("mean", math.nan)

        seeds = [self.recipe.seed + k for k in range(n)]
        nets, self.start_scores = pick_start(self.cfg, self.recipe, self.device, n, score)
        best = all_gather(best_start(self.start_scores), self.info)[0]
        self.net = nets[best]
        self._make_optimisers()
        self.data.report["start_candidates"] = {"seeds": seeds, "val": self.start_scores, "chosen_seed": seeds[best]}
        if self.info.is_main:
            for k, v in enumerate(self.start_scores):
                log.info("start candidate %d/%d (seed %d): validation R@1 %.3f", k + 1, n, seeds[k], v)
            log.info("starting from candidate %d (seed %d)", best + 1, seeds[best])

    def _apply_pseudo_places(self) -> None:
        """Pseudo places from the start encoders for the non-reference conditions' training (and with
        `supervised.pseudo_val` validation) images; a resumed run reuses the ones it saved."""
        s, ref, rep = self.recipe.supervised, self.data.names.index(self.data.reference), self.data.report
        args = (self.net, ref, self.cfg.image_size, s, self.device)
        self.pseudo, train, rep["pseudo"] = relabel_split(self.data.train, self._pseudo_plain["train"], *args)
        lines = describe(rep["pseudo"], s.pos_radius)
        if s.pseudo_val:
            self.pseudo_val, val, rep["pseudo_val"] = relabel_split(self.data.val, self._pseudo_plain["val"], *args,
                                                                    validation=True)
            self.data = dataclasses.replace(self.data, val=val)
            lines += describe(rep["pseudo_val"], s.pos_radius, "validation")
        for line in lines if self.info.is_main else ():
            log.info("%s", line)
        self.data = dataclasses.replace(self.data, train=train)

    def _make_optimisers(self) -> None:
        """One Adam per domain (encoder unless frozen, decoder), one per discriminator (ComboGAN)."""
        freeze_encoders(self.net, self.recipe.model.frozen_domains)
        self.opt_g = {d: self._adam([p for m in (self.net.encoders[d], self.net.decoders[d]) for p in m.parameters()
                                     if p.requires_grad]) for d in self.cfg.domains}
        self.opt_d = {d: self._adam(self.net.discriminators[d].parameters()) for d in self.cfg.domains}

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
        self.history = [dict(h) for h in extra.get("val_history", []) if h["step"] <= self.step]
        self._mined_plain = state.get("mined")
        self._keep_plain = state.get("keep")
        self._pseudo_plain = {"train": state.get("pseudo"), "val": state.get("pseudo_val")}
        if self.info.is_main and self.history:
            self._repair_best()
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
        """Train from the current step to `until` (default: the recipe's steps); returns a summary.

        The start is validated before the first step; validation every `train.val_every` steps and at the end;
        with mining, the loader is rebuilt after each mining so that loader workers see the new table.
        """
        total = self.schedule.steps
        end = total if until is None else min(until, total)
        r, main = self.recipe, self.info.is_main
        needs_negs = self.base_weights.triplet_fcl > 0 or self.base_weights.triplet_sam > 0
        hard_from = self.schedule.hard_start_step if needs_negs and self.schedule.num_negatives > 1 else total + 1
        logger = RunLogger(self.paths, self.step, enabled=main)
        if main:
            self.paths.out.mkdir(parents=True, exist_ok=True)
            r.dump(self.paths.recipe)
        if self.step == 0 and not self.history:
            self._record(logger, self.validate())  # the start: what every later point must beat
        bar = tqdm(total=end, initial=self.step, disable=not (main and r.train.progress), desc=r.name, unit="it")
        t0, start_step = time.perf_counter(), self.step
        while self.step < end:
            segment_end = self._mine_if_due(end)
            sampler = PairBatchSampler(len(self.dataset), len(self.cfg.domains), r.train.batch_size, r.seed,
                                       self.step, segment_end, hard_from, self.info.rank, self.info.world)
            loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=r.train.num_workers,
                                pin_memory=self.device.type == "cuda")
            for batch in loader:
                stats = self.train_step(batch)
                stats["epoch"] = sampler.epoch_of(self.step - 1)
                logger.add(stats)
                bar.update(1)
                bar.set_postfix(total=f"{stats['total']:.3f}", lr=f"{stats['lr']:.2e}")
                if r.train.log_every and self.step % r.train.log_every == 0:
                    logger.flush(self.step)
                if r.train.val_every and self.step % r.train.val_every == 0:
                    self._record(logger, self.validate())
                if r.train.ckpt_every and self.step % r.train.ckpt_every == 0 and self.step < end:
                    self.save_state()
        bar.close()
        elapsed = time.perf_counter() - t0
        logger.flush(self.step)
        if self.step >= total and not any(h["step"] == self.step for h in self.history):
            self._record(logger, self.validate())
        self.save_state()
        summary = summarize(self.history)
        if total == 0:
            summary.update(improved=None, warning=None)  # the `init` recipe: nothing was trained, nothing to beat
        if self.step >= total:
            self.save_model()
            if main and summary["warning"]:
                log.warning("%s", summary["warning"])
        logger.close()
        done = self.step - start_step
        out = {"step": self.step, "steps_this_run": done, "seconds": elapsed,
               "it_per_s": done / elapsed if elapsed > 0 else math.nan, "val": self.last_val, **summary,
               "data": self.data.report}
        if main:
            atomic_write_text(self.paths.summary, json.dumps(out, indent=1))
        return out

    def _mine_if_due(self, end: int) -> int:
        """Mine hard negatives when a mining step is reached (or a resumed run lacks its table); returns the
        step at which the next mining is due (or `end`), the end of the next loader segment."""
        every = self.recipe.supervised.mine_every
        if self.miner is None:
            return end
        if self.step % every == 0 or not self.dataset.hard:
            t0 = time.perf_counter()
            self.dataset.hard = self.miner.mine(self.net, self.device)
            if self.info.is_main:
                log.info("step %d: mined the %d hardest other-place images per anchor over %d training images "
                         "(%.1f s)", self.step, self.recipe.supervised.mined,
                         sum(len(d) for d in self.data.train), time.perf_counter() - t0)
        return min(end, (self.step // every + 1) * every)

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
        if out["total"].requires_grad:  # all terms 0 (supervised weight ramping from 0, no unpaired term): no step
            out["total"].backward()
        for d in (di, dj):
            self.opt_g[d].step()
        if self.recipe.model.tie_encoders:
            tie_encoders(self.net, (di, dj))
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
        stats = {k: out[k].item() for k in (*LOSS_KEYS, "sup", "keep", "total")}
        stats.update(step=self.step, lr=lr, ramp=self.schedule.ramp_at(step), hard=int(neg_j is not None),
                     pair=f"{di}>{dj}", disc=d_loss.item())
        return stats

    # ------------------------------------------------------------------------ validation, saving

    def validate(self) -> dict[str, float]:
        """R@1 per condition on the validation segment (never the test part), rank 0 only (evaluate.py)."""
        if not self.info.is_main:
            return {}
        t = self.recipe.train
        try:
            got = validation_recall(self.net, self.data.val, self.data.reference, self.cfg.image_size, t.val_metric,
                                    t.val_tolerance, t.val_queries)
        finally:
            self.net.train()
        if got:
            self.last_val = got
        return got

    def _extra(self, kind: str) -> dict[str, Any]:
        return {"kind": kind, "recipe": self.recipe.to_dict(), "step": self.step, "val": self.last_val,
                "data_root": str(self.data_root), "reference": self.data.reference,
                "val_history": [dict(h) for h in self.history]}

    def _record(self, logger: RunLogger, val: dict[str, float]) -> None:
        """Append a validation point; when it is the best so far, save the full state and then best.pt (in that
        order, so a resumed run's history always knows the step best.pt holds: see `_repair_best`)."""
        better = False
        if val:
            self.last_val = dict(val)
            entry = {"step": self.step, **val}
            better = improves(self.history, entry)
            self.history.append(entry)
            logger.val(self.step, val)
            if self.info.is_main:
                log.info("step %d: validation R@1 %.3f%s", self.step, val.get("mean", math.nan),
                         " (best so far)" if better else "")
        if all_gather(better, self.info)[0]:  # rank 0 validates; every rank joins the collective saves
            self.save_state()
            if self.info.is_main:
                save_checkpoint(self.paths.best, self.net, self.cfg, self._model_extra())
            barrier(self.info)

    def _model_extra(self) -> dict[str, Any]:
        """What model.pt / best.pt say about themselves: the selected step, its validation, the start's."""
        extra = self._extra("model")
        extra.update(selected="best", val=self.last_val, val_start=self.history[0] if self.history else {})
        return extra

    def save_state(self) -> None:
        """Full state for exact resume: model, optimisers, step, and every rank's RNG states and pools."""
        local = {"rng": capture_rng(), "pools": {d: p.state_dict() for d, p in self.pools.items()}}
        ranks = all_gather(local, self.info)
        if self.info.is_main:
            extra = self._extra("training_state")
            extra["trainer"] = {"opt_g": {d: optimizer_to_plain(o) for d, o in self.opt_g.items()},
                                "opt_d": {d: optimizer_to_plain(o) for d, o in self.opt_d.items()},
                                "ranks": ranks}
            if self.dataset.hard:
                extra["trainer"]["mined"] = table_to_plain(self.dataset.hard)
            if self.keeper is not None:
                extra["trainer"]["keep"] = self.keeper.state_dict()
            for key, labels in (("pseudo", self.pseudo), ("pseudo_val", self.pseudo_val)):
                if labels:
                    extra["trainer"][key] = pseudo_to_plain(labels)
            save_checkpoint(self.paths.last, self.net, self.cfg, extra)
        barrier(self.info)

    def save_model(self) -> None:
        """model.pt = best.pt (the best validation point, never below the start); the last weights when the run
        has no validation points (no places: nothing to select with, and summary.json says so)."""
        if self.info.is_main:
            if self.history and self._repair_best():
                atomic_write_bytes(self.paths.model, self.paths.best.read_bytes(), mode=0o644)
            else:
                extra = self._extra("model")
                extra["selected"] = "last"
                save_checkpoint(self.paths.model, self.net, self.cfg, extra)
        barrier(self.info)

    def _repair_best(self) -> bool:
        """True when best.pt holds the history's best step. A run stopped between writing last.pt and best.pt
        resumes at exactly that step, so the current weights are the best ones: best.pt is rewritten from them."""
        best = summarize(self.history)["val_best"]
        if best is None:
            return False
        if self.paths.best.is_file():
            _, _, meta = load_checkpoint(self.paths.best, map_location="cpu")
            if meta["extra"].get("step") == best["step"]:
                return True
        if best["step"] != self.step:
            log.warning("checkpoints/best.pt does not hold the best validation step %d: shipping the last weights",
                        best["step"])
            return False
        save_checkpoint(self.paths.best, self.net, self.cfg, self._model_extra())
        return True
