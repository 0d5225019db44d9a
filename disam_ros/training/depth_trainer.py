"""Training the seed 002 depth branch: a depth decoder on frozen DISAM encoders, then the fusion weight.

Why frozen encoders: seed 002 notes that its decoder can be improved "without impacting the descriptor
networks"; here that is literal. The appearance descriptor of the `--init` model (e.g. the shipped supervised
demo weights) is unchanged bit for bit, so whatever the fused descriptor gains or loses is the depth branch's
doing, and the content codes of the training images are computed once (the loop trains the decoder alone,
on cached codes: minutes on one CPU thread).

The run (`depth.enabled: true`; `disam-train --recipe depth_demo --data ROOT --out RUN --init MODEL.pt`):
1. encode the training part of every condition with its own encoder (and its mirror image, with `data.flip`);
2. train the decoder on the masked depth loss (`depth.loss`), Adam, the recipe's lr schedule;
3. validate the start and every `train.val_every` steps: mean abs. rel. error on the validation part; the best
   (lowest) point is kept, the start included;
4. choose the fusion weight on the validation part: the best mean R@1 (within `train.val_tolerance`) over
   `depth.fusion_weights` and 1.0 (appearance only), ties to the larger weight; with `depth.per_domain` also
   each query condition's own weight (the same rule on its row alone; stored as the branch's domain_weights,
   version 2). With `depth.val_distractors` the validation database is the reference's validation part plus its
   training part, so a weak depth descriptor meets as many wrong places as in a real map;
5. write RUN/model.pt: the init's encoders (same parts and dtype) with the branch in `extra["depth_branch"]`,
   plus summary.json and log.csv. The test part and any other world are never read.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from disam_ros.fsutil import atomic_write_text
from disam_ros.model import CheckpointError, DisamNet, save_checkpoint
from disam_ros.model.checkpoint import PARTS, read_checkpoint
from disam_ros.model.depth import DepthDecoder, depth_descriptor, depth_loss, place_contrastive
from disam_ros.model.depth_branch import EXTRA_KEY, DepthBranch

from .datasets import build_data
from .depth_scores import (
    EncodedCondition,
    choose_weight,
    condition_recalls,
    domain_weights,
    encode_condition,
    load_depths,
    mean_abs_rel,
    merge_conditions,
)
from .distributed import init_distributed
from .evaluate import load_images
from .recipe import Recipe
from .runlog import RunPaths
from .schedule import Schedule
from .start import model_config, share_initialisation
from .trainer import Trainer

log = logging.getLogger(__name__)


class DepthTrainer:
    """Same interface as `Trainer` (`fit(until)`, `info`), for recipes with `depth.enabled`."""

    def __init__(self, recipe: Recipe, data_root: str | Path, out: str | Path, init: str | Path | None = None,
                 resume: bool = False) -> None:
        if resume:
            raise ValueError("--resume is not offered for depth recipes (the run takes minutes and keeps no "
                             "optimiser state): start it again with --init")
        self.info = init_distributed(recipe.train.device)
        if self.info.world > 1:
            raise ValueError("depth recipes train one small decoder: run them in one process, not under torchrun")
        self.recipe, self.data_root, self.paths = recipe, Path(data_root), RunPaths(Path(out))
        if recipe.train.threads:
            torch.set_num_threads(recipe.train.threads)
        self.data = build_data(recipe, data_root)
        self.cfg = model_config(recipe, self.data.names)
        torch.manual_seed(recipe.seed)
        self.net = DisamNet(self.cfg).eval()
        if recipe.model.shared_init:
            share_initialisation(self.net)
        self.parts, self.dtype, self.init_sha = PARTS, None, None
        if init is not None:
            self._load_init(Path(init))
        self.net.requires_grad_(False)
        d = recipe.depth
        self.decoder = DepthDecoder.for_model(self.cfg, d.width, d.max_depth_m, d.conditioned)
        self.schedule = Schedule.from_recipe(recipe)
        s = recipe.schedule
        self.opt = torch.optim.Adam(self.decoder.parameters(), lr=s.lr, betas=(s.beta1, s.beta2))
        self.history: list[dict[str, Any]] = []
        self.step = 0

    def _load_init(self, path: Path) -> None:
        """Encoders (and whatever else the file holds) of a training checkpoint or an inference export."""
        state, cfg, meta = read_checkpoint(path, map_location="cpu", expect_domains=self.cfg.domains)
        if cfg.to_dict() | {"domains": None} != self.cfg.to_dict() | {"domains": None}:
            raise CheckpointError(f"checkpoint {str(path)!r} has model shape {cfg.to_dict()} but the recipe builds "
                                  f"{self.cfg.to_dict()}: set model.preset/model.overrides to match it")
        own = self.net.state_dict()
        self.net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
        self.parts = tuple(meta["parts"])
        self.dtype = getattr(torch, meta["dtype"]) if meta["dtype"] in ("float16", "float32") else None
        self.init_sha = meta["sha256"]

    def _codes(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        with torch.no_grad():
            return self.net.encode(x, domain)

    def _training_set(self) -> DepthViews:
        """Every training image with depth (+ mirrors): codes (float16), depth, condition, position, mirrored."""
        size, codes, depths, doms, pos, flips = self.cfg.image_size, [], [], [], [], []
        for dom in self.data.train:
            for s in range(0, len(dom), 64):
                paths = dom.paths[s:s + 64]
                x, t = load_images(paths, size), load_depths(paths, size)
                keep = (t > 0).flatten(1).any(1)
                x, t = x[keep], t[keep]
                where = place_positions(dom.positions, s, len(paths))[keep]
                views = [(x, t, False), (x.flip(-1), t.flip(-1), True)] if self.recipe.data.flip else [(x, t, False)]
                for xv, tv, flipped in views:
                    codes.append(self._codes(xv, dom.name).half())
                    depths.append(tv)
                    doms.append(torch.full((len(xv),), self.cfg.domains.index(dom.name), dtype=torch.long))
                    pos.append(where)
                    flips.append(torch.full((len(xv),), flipped))
        if not codes or sum(len(c) for c in codes) == 0:
            raise ValueError(f"{self.data_root}: no training image has a depth map (ROOT/<condition>/depth/<stem>.png,"
                             " 16-bit millimetres): render the world with depth or add depth files")
        return DepthViews(torch.cat(codes), torch.cat(depths), torch.cat(doms), torch.cat(pos), torch.cat(flips))

    def _branch(self, weight: float = 1.0, per_domain: dict[str, float] | None = None) -> DepthBranch:
        d = self.recipe.depth
        return DepthBranch(self.decoder, d.grid, weight, d.loss, dict(per_domain or {}))

    def _encoded_val(self) -> dict[str, EncodedCondition]:
        branch = self._branch()
        return {dom.name: encode_condition(self._codes, branch, dom, self.cfg.image_size, dom.name)
                for dom in self.data.val if len(dom)}

    def validate(self) -> dict[str, Any]:
        """Mean abs. rel. error of the hallucinated depth per validation condition and over all of them."""
        self.decoder.eval()
        try:
            enc = self._encoded_val()
        finally:
            self.decoder.train()
        rows = {n: mean_abs_rel(c) for n, c in enc.items()}
        finite = [v for v in rows.values() if math.isfinite(v)]
        out = {"step": self.step, "abs_rel": float(sum(finite) / len(finite)) if finite else math.nan, **rows}
        if self.recipe.depth.select == "r1":
            out["depth_r1"] = self._depth_r1(enc)
        return out

    def _depth_r1(self, enc: dict[str, EncodedCondition]) -> float:
        """Mean depth-only R@1 of the validation query conditions against the validation database."""
        ref = enc.get(self.data.reference)
        if ref is None or ref.positions is None or ref.positions.ndim != 2:
            raise ValueError("depth.select: r1 needs validation places (a dataset with poses): use abs_rel")
        self.decoder.eval()
        try:
            db = self._val_database(ref)
        finally:
            self.decoder.train()
        t = self.recipe.train
        rows = [condition_recalls(c, db, (), t.val_tolerance, t.val_queries) for n, c in enc.items()
                if n != self.data.reference]
        scored = [r["depth"] for r in rows if r.get("queries")]
        return float(sum(scored) / len(scored)) if scored else math.nan

    def _better(self, val: dict[str, Any], best: dict[str, Any] | None) -> bool:
        """The validation point to keep (the earlier point wins ties)."""
        if best is None:
            return True
        if self.recipe.depth.select == "r1":
            return val["depth_r1"] > best["depth_r1"]
        return val["abs_rel"] < best["abs_rel"]

    def _val_database(self, ref: Any) -> Any:
        """The validation database: the reference's validation part, plus its training part with
        `depth.val_distractors` (never its test part)."""
        if not self.recipe.depth.val_distractors:
            return ref
        train = next(dom for dom in self.data.train if dom.name == self.data.reference)
        extra = encode_condition(self._codes, self._branch(), train, self.cfg.image_size, train.name)
        return merge_conditions(ref.name, [ref, extra])

    def choose_fusion(self) -> tuple[float, dict[str, Any]]:
        """The fusion weight by mean validation R@1 (see depth_scores.choose_weight), and with `depth.per_domain`
        one per query condition; the configured `depth.fusion_weight` when no candidates are listed or the data
        has no places."""
        d, t = self.recipe.depth, self.recipe.train
        if not d.fusion_weights:
            return d.fusion_weight, {}
        self.decoder.eval()
        enc = self._encoded_val()
        ref = enc.get(self.data.reference)
        if ref is None or ref.positions is None or ref.positions.ndim != 2:
            log.warning("no validation places: using the configured depth.fusion_weight %g", d.fusion_weight)
            return d.fusion_weight, {}
        db = self._val_database(ref)
        rows = {n: condition_recalls(c, db, d.fusion_weights, t.val_tolerance, t.val_queries)
                for n, c in enc.items() if n != self.data.reference}
        w, score = choose_weight(rows, d.fusion_weights)
        per = domain_weights(rows, d.fusion_weights) if d.per_domain and 0.0 < w < 1.0 else {}
        if d.per_domain and not per:
            log.warning("depth.per_domain: the chosen map weight %g leaves no room for query weights", w)
        return w, {"rows": rows, "chosen": w, "mean_r1": score, "database": len(db.positions),
                   "domain_weights": per}

    def fit(self, until: int | None = None) -> dict[str, Any]:
        r = self.recipe
        total = self.schedule.steps if until is None else min(until, self.schedule.steps)
        self.paths.out.mkdir(parents=True, exist_ok=True)
        r.dump(self.paths.recipe)
        t0 = time.perf_counter()
        views = self._training_set()
        codes, depths = views.codes, views.depths
        doms = views.domains if self.decoder.domains else None
        d = r.depth
        partners = positive_table(views, d.place_radius_m) if d.place_weight > 0 else None
        anchors = torch.nonzero((partners >= 0).any(1)).flatten() if partners is not None else None
        if anchors is not None and not len(anchors):
            raise ValueError(f"depth.place_weight: no training view has another condition's view within "
                             f"{d.place_radius_m} m: raise depth.place_radius_m or set place_weight 0")
        log.info("depth: %d training views with depth (%.1f s to encode)%s", len(codes), time.perf_counter() - t0,
                 "" if anchors is None else f", {len(anchors)} with a cross-condition partner")
        gen = torch.Generator().manual_seed(r.seed)
        best_state, best = None, None
        rows: list[dict[str, Any]] = []
        self.decoder.train()
        t1 = time.perf_counter()
        for step in range(total + 1):
            self.step = step
            if step == 0 or step == total or (r.train.val_every and step % r.train.val_every == 0):
                val = self.validate()
                self.history.append(val)
                log.info("step %d: validation abs. rel. %.4f%s", step, val["abs_rel"],
                         f", depth-only R@1 {val['depth_r1']:.3f}" if "depth_r1" in val else "")
                if self._better(val, best):
                    best, best_state = val, {k: v.clone() for k, v in self.decoder.state_dict().items()}
            if step == total:
                break
            for group in self.opt.param_groups:
                group["lr"] = self.schedule.lr_at(step)
            if anchors is None:
                idx = torch.randint(len(codes), (r.train.batch_size,), generator=gen)
            else:
                idx = anchors[torch.randint(len(anchors), (r.train.batch_size,), generator=gen)]
            pred = self.decoder(codes[idx].float(), None if doms is None else doms[idx])
            loss = depth_loss(pred, depths[idx], r.depth.loss)
            if partners is not None:
                loss = loss + d.place_weight * self._place_loss(views, partners, idx, pred, gen)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            rows.append({"step": step + 1, "loss": float(loss.detach()), "lr": self.schedule.lr_at(step)})
        seconds = time.perf_counter() - t1
        self.decoder.load_state_dict(best_state)
        weight, fusion = self.choose_fusion()
        self._save(weight, best, fusion.get("domain_weights"))
        out = {"step": total, "seconds": seconds, "val_start": self.history[0], "val_best": best,
               "val_last": self.history[-1], "improved": best["step"] > 0, "fusion_weight": weight,
               "fusion": fusion, "model": str(self.paths.model), "init_sha256": self.init_sha}
        self._write_logs(rows, out)
        return out

    def _place_loss(self, views: DepthViews, partners: torch.Tensor, idx: torch.Tensor, pred: torch.Tensor,
                    gen: torch.Generator) -> torch.Tensor:
        """Cross-condition place loss of the anchors' hallucinated depth against a random partner each."""
        d = self.recipe.depth
        valid = (partners[idx] >= 0).float()
        col = torch.multinomial(valid, 1, generator=gen)[:, 0]
        pid = partners[idx, col]
        doms = views.domains[pid] if self.decoder.domains else None
        other = self.decoder(views.codes[pid].float(), doms)
        same = torch.cdist(views.positions[idx], views.positions[pid]) <= d.place_radius_m
        return place_contrastive(depth_descriptor(pred, d.grid), depth_descriptor(other, d.grid), same, d.place_tau)

    def _save(self, weight: float, best: dict[str, Any], per_domain: dict[str, float] | None = None) -> None:
        extra = {"kind": "depth_branch", "recipe": self.recipe.to_dict(), "step": best["step"],
                 "data_root": str(self.data_root), "reference": self.data.reference, "init_sha256": self.init_sha,
                 "val": {k: v for k, v in best.items() if k != "step"},
                 EXTRA_KEY: self._branch(weight, per_domain).to_extra()}
        save_checkpoint(self.paths.model, self.net, self.cfg, extra, parts=self.parts, dtype=self.dtype)

    def _write_logs(self, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["step", "loss", "lr"])
        w.writeheader()
        w.writerows(rows[k] for k in range(0, len(rows), max(1, self.recipe.train.log_every)))
        atomic_write_text(self.paths.log, buf.getvalue())
        atomic_write_text(self.paths.val, json.dumps(self.history, indent=1))
        atomic_write_text(self.paths.summary, json.dumps(summary, indent=1, default=float))


@dataclass(frozen=True, eq=False)
class DepthViews:
    """The cached training views: codes (N,C,h,w) float16, depth (N,1,S,S), condition index, position (N,3)
    (NaN where the data has no places) and whether the view is mirrored."""

    codes: torch.Tensor
    depths: torch.Tensor
    domains: torch.Tensor
    positions: torch.Tensor
    mirrored: torch.Tensor


def place_positions(positions: Any, start: int, n: int) -> torch.Tensor:
    """(n, 3) float32 positions of images [start, start + n) of a condition; NaN when it has none."""
    if positions is None or np.ndim(positions) != 2:
        return torch.full((n, 3), math.nan)
    p = torch.as_tensor(np.asarray(positions[start:start + n], dtype=np.float32))
    return torch.nn.functional.pad(p, (0, 3 - p.shape[1])) if p.shape[1] < 3 else p[:, :3]


def positive_table(views: DepthViews, radius_m: float) -> torch.Tensor:
    """(N, D) for every view, the nearest view of each other condition with the same mirroring within
    `radius_m` (its index), or -1 (same condition, none that close, or no positions)."""
    n_dom = int(views.domains.max()) + 1 if len(views.domains) else 0
    table = torch.full((len(views.domains), n_dom), -1, dtype=torch.long)
    for flip in (False, True):
        groups = {k: torch.nonzero((views.domains == k) & (views.mirrored == flip)).flatten() for k in range(n_dom)}
        for a, ia in groups.items():
            for b, ib in groups.items():
                if a == b or not len(ia) or not len(ib):
                    continue
                dist = torch.cdist(views.positions[ia], views.positions[ib]).nan_to_num(math.inf)
                near, j = dist.min(1)
                table[ia, b] = torch.where(near <= radius_m, ib[j], torch.tensor(-1))
    return table


def make_trainer(recipe: Recipe, data_root: str | Path, out: str | Path, init: str | Path | None = None,
                 resume: bool = False) -> Any:
    """The trainer for a recipe: `DepthTrainer` when it trains the depth branch, else the DISAM `Trainer`."""
    if recipe.depth.enabled:
        return DepthTrainer(recipe, data_root, out, init=init, resume=resume)
    return Trainer(recipe, data_root, out, init=init, resume=resume)
