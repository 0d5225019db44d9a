"""`disam-bench real`: any checkpoint on every real image set, with raw pixels and untrained encoders beside it.

Why: gains measured where a model was tuned shrink on new ground, and a trained encoder can lose to random weights
at night. So every checkpoint is scored the same way, on fixed splits, next to the baselines that tell what the
training added: raw pixels (per-image standardised, cosine), and untrained `tiny` and `small` encoders (random
weights, one encoder for every condition; mean of `--seeds` draws, their range beside).

Sets (../shared/data; what each may be used for is in its README):
- `nordland_val` / `nordland_test`: the Nordland dev half, winter queries against the summer frames of the same
  part, R@1 within +-2 frames, near-black frames dropped. Parts as training cuts them (train_fraction 0.5,
  val_fraction 0.1, gap 5: train [0, 705) | val [710, 889) | test [894, 1788)): validation may choose, test never.
- `gp_night>day` / `gp_day>night`: Gardens Point mini, 10 places, R@1 at the exact place (one place = 10 points).
  Scored, never chosen on.
- `webcams_night` (and `webcams_<camera>`): webcams_dev night frames (mean grey < 40) against a map of one day
  frame per camera (each camera's brightest frame, 5 cameras); right = the same camera. Validation only: the
  collection's other cameras are the test.
- Any other folder in one of these layouts (another route part, the collection's other cameras, another pair set):
  a test set named after it, scored whole (`real_sets`); a route's spring, fall or autumn frames, where it has them,
  are sets of their own against its summer frames.

A model's encoders: the map side uses the model's day encoder (`day`, `sunny` or `summer`, else its first), a query
its condition's encoder when the model has one (`winter`, `night`), else the map side's (the paper's fallback).

    disam-bench real [--checkpoint NAME=PATH|real ...] [--seeds 10] [--quick] [--json out.json] [--plot out.png]
"""
from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from disam_ros.bench.output import emit
from disam_ros.cliutil import OneLineParser, check_output_files
from disam_ros.data.folders import IMAGE_SUFFIXES
from disam_ros.shipped import checkpoint_arg
from disam_ros.tracking.calibration import wilson_lower
from disam_ros.training.layouts import DomainImages, discover, drop_dark
from disam_ros.training.split import split_route

if TYPE_CHECKING:
    from torch import Tensor

# torch (disam_ros.model, training.evaluate) and scipy (real_paired) are imported where they are used, not at
# import: a typo or --help answers without loading them.

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
NORDLAND_DEV, GARDENS_MINI, WEBCAMS_DEV = "nordland_trimmed_dev", "gardens_point_mini", "webcams_dev"
NORDLAND_SPLIT = (0.5, 0.1, 5)  # train_fraction, val_fraction, gap: as the real-camera recipes train
NIGHT_GREY = 40.0  # webcams_dev README: mean grey < 40 is night
DAY_NAMES = ("day", "sunny", "summer")
SEASONS = ("winter", "spring", "fall", "autumn")  # a route's query seasons, each against its summer frames
RAW_SIZE = 64
Z95 = 1.959964  # two-sided 95 %
QUICK_FRAMES = 10  # --quick: route frames kept per part, queries per group (a camera, a night set)
# Untrained draws per preset: their R@1 spreads 10-40 % on Gardens Point and 42-76 % on webcams night (small), so
# the mean of 3 moved by ~6 points with the seeds drawn; 10 bring its error to ~3 (30 draws: notes/training.md).
SEEDS = 10
FeatureFn = Callable[["Tensor", str], "Tensor"]


@dataclass(frozen=True)
class RealSet:
    """One scored comparison: a map (db) and query groups; right = a map place within `tolerance`."""

    name: str
    part: str  # "validation" (choices allowed) or "test" (never chosen on)
    db: DomainImages
    queries: dict[str, DomainImages]  # group -> images; the pooled row is over all groups
    query_condition: str
    tolerance: float


@dataclass(frozen=True)
class Method:
    """Features at `size`, compared by `metric`; `domains` are the model's encoders (empty: one for all)."""

    name: str
    features: FeatureFn
    size: int
    metric: str = "mean_channel"
    domains: tuple[str, ...] = ()


def map_domain(domains: tuple[str, ...]) -> str:
    return next((d for d in DAY_NAMES if d in domains), domains[0] if domains else "")


def query_domain(domains: tuple[str, ...], condition: str) -> str:
    return condition if condition in domains else map_domain(domains)


# ---------------------------------------------------------------------------------------------- the sets


def nordland_sets(root: Path, quick: bool) -> list[RealSet]:
    domains = discover(root, "flat")
    _, parts = split_route(domains, "summer", *NORDLAND_SPLIT)
    out = []
    for part, label in (("val", "validation"), ("test", "test")):
        by = {d.name: getattr(p, part) for d, p in zip(domains, parts, strict=True)}
        out += [quick_cut(s, quick, cut_db=True) for s in seasons_against_summer(f"nordland_{part}", label, by)]
    return out


def seasons_against_summer(name: str, part: str, by: dict[str, DomainImages]) -> list[RealSet]:
    """Each of a route's other seasons against its summer frames, +-2 frames, near-black frames dropped. Winter
    keeps the route's name (the dev half has only winter); spring, fall or autumn, where a route has them (the
    full Nordland route has four seasons), are `<name>_<season>`."""
    out = []
    for season in (s for s in SEASONS if s in by):
        summer, frames = drop_dark([by["summer"], by[season]], 20)
        out.append(RealSet(name if season == "winter" else f"{name}_{season}", part, summer, {season: frames},
                           season, 2.0))
    return out


def is_route(d: Path) -> bool:
    return (d / "summer").is_dir() and any((d / s).is_dir() for s in SEASONS)


def route_sets(root: Path, quick: bool) -> list[RealSet]:
    """A held-out route of the Nordland layout (never trained or chosen on): every frame, scored as the dev
    half's parts are."""
    by = {d.name: d for d in discover(root, "flat")}
    return [quick_cut(s, quick, cut_db=True) for s in seasons_against_summer(root.name, "test", by)]


def gardens_point_sets(root: Path, prefix: str = "gp") -> list[RealSet]:
    """`query/i.jpg` (day) and `ref/i.jpg` (night) show place i (the README's layout); names that are not numbers
    pair by name, a place per name."""
    files = {f: {p.stem: p for p in (root / f).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
             for f in ("query", "ref")}
    stems = sorted(set(files["query"]) | set(files["ref"]), key=lambda t: (not t.isdigit(), int(t) if t.isdigit()
                                                                            else 0, t))
    place = {t: float(t) if t.isdigit() else float(i) for i, t in enumerate(stems)}

    def images(folder: str) -> DomainImages:
        named = [t for t in stems if t in files[folder]]
        pos = np.zeros((len(named), 3))
        pos[:, 0] = [place[t] for t in named]
        return DomainImages(folder, tuple(files[folder][t] for t in named), pos)

    day, night = images("query"), images("ref")
    return [RealSet(f"{prefix}_night>day", "test", day, {"night": night}, "night", 0.0),
            RealSet(f"{prefix}_day>night", "test", night, {"day": day}, "day", 0.0)]


def webcam_frames(root: Path) -> list[dict]:
    with open(root / "frames.csv", newline="") as f:
        return [dict(r, mean_gray=float(r["mean_gray"])) for r in csv.DictReader(f)]


def webcams_set(root: Path, name: str = "webcams_night", part: str = "validation") -> RealSet:
    rows = webcam_frames(root)
    cams = sorted({r["camera"] for r in rows})
    place = {c: float(i) for i, c in enumerate(cams)}

    def images(name: str, picked: list[dict]) -> DomainImages:
        pos = np.zeros((len(picked), 3))
        pos[:, 0] = [place[r["camera"]] for r in picked]
        return DomainImages(name, tuple(root / r["camera"] / r["file"] for r in picked), pos)

    brightest = [max((r for r in rows if r["camera"] == c), key=lambda r: r["mean_gray"]) for c in cams]
    nights = {c: [r for r in rows if r["camera"] == c and r["mean_gray"] < NIGHT_GREY] for c in cams}
    groups = {c: images("night", n) for c, n in nights.items() if n}
    return RealSet(name, part, images("day", brightest), groups, "night", 0.0)


def real_sets(data: Path, quick: bool) -> list[RealSet]:
    """Every set under `data`, told by its layout (../shared/data/README.md's): `summer/` + `winter/` (or
    `spring/`, `fall/`, `autumn/`) frames a route, `query/` (day) + `ref/` (night) a pair set, `frames.csv` a
    webcam collection. The development copies keep their names and parts (`nordland_trimmed_dev`: validation and
    test parts; `webcams_dev`: validation); any other folder is held out whole, a test set named after it. Routes
    first, then pairs, then webcams."""
    routes, pairs, webcams = [], [], []
    for d in sorted(p for p in data.iterdir() if p.is_dir()) if data.is_dir() else []:
        if is_route(d):
            routes += nordland_sets(d, quick) if d.name == NORDLAND_DEV else route_sets(d, quick)
        elif (d / "query").is_dir() and (d / "ref").is_dir():
            pairs += gardens_point_sets(d) if d.name == GARDENS_MINI else [
                quick_cut(s, quick, cut_db=True) for s in gardens_point_sets(d, d.name)]
        elif (d / "frames.csv").is_file():
            webcams.append(quick_cut(webcams_set(d) if d.name == WEBCAMS_DEV else
                                     webcams_set(d, f"{d.name}_night", "test"), quick))
    return routes + pairs + webcams


def quick_cut(s: RealSet, quick: bool, cut_db: bool = False) -> RealSet:
    """--quick (CI: the code path, not a figure): the first QUICK_FRAMES queries per group (and map places, where
    each query has its own), so the run stays short whatever data is mounted there."""
    if not quick:
        return s

    def first(d: DomainImages) -> DomainImages:
        return d.subset(np.arange(min(QUICK_FRAMES, len(d))))

    return RealSet(s.name, s.part, first(s.db) if cut_db else s.db, {g: first(q) for g, q in s.queries.items()},
                   s.query_condition, s.tolerance)


# ---------------------------------------------------------------------------------------------- scoring


def interval95(rate: float, n: int) -> list[float]:
    """Two-sided 95 % Wilson interval of a share `rate` of n queries: how far one model's R@1 on a set of this
    size could move by the draw of the queries alone (3 of 10 places: 11-60 %)."""
    hits = rate * n
    return [float(wilson_lower(hits, n, Z95)), float(1.0 - wilson_lower(n - hits, n, Z95))]



def top1_right(sim: Tensor, q_pos: np.ndarray, db_pos: np.ndarray, tol: float) -> np.ndarray:
    best = sim.argmax(1).numpy()
    return np.abs(db_pos[best, 0] - q_pos[:, 0]) <= tol + 1e-9


def score_set(method: Method, s: RealSet, cache: dict) -> dict[str, Any]:
    """{group: R@1, "pooled": R@1 over every query, "queries": n, "hits": each query's 0/1, pooled order}."""
    from disam_ros.training.evaluate import cosine_similarity, encode_all, load_images, mean_channel_similarity

    sim_fn = mean_channel_similarity if method.metric == "mean_channel" else cosine_similarity
    db_dom = map_domain(method.domains)
    key = (method.name, s.name)
    if key not in cache:
        cache[key] = encode_all(method.features, load_images(s.db.paths, method.size), db_dom)
    db = cache[key]
    rights, out = [], {}
    for group, q in s.queries.items():
        near = np.abs(q.positions[:, None, 0] - s.db.positions[None, :, 0]).min(1) <= s.tolerance + 1e-9
        idx = np.flatnonzero(near)  # a query whose place has no map frame (dark, cut) is not a failure
        if not len(idx):
            continue
        z = encode_all(method.features, load_images([q.paths[i] for i in idx], method.size),
                       query_domain(method.domains, s.query_condition))
        right = top1_right(sim_fn(z, db), q.positions[idx], s.db.positions, s.tolerance)
        out[group] = float(right.mean())
        rights.append(right)
    pooled = np.concatenate(rights) if rights else np.zeros(0)
    out.update(pooled=float(pooled.mean()) if len(pooled) else float("nan"), queries=int(len(pooled)),
               hits=pooled.astype(np.float64))
    return out


# ---------------------------------------------------------------------------------------------- methods


def raw_pixels(x: Tensor, domain: str) -> Tensor:
    """The raw-pixel baseline (training.evaluate's: per-image standardised pixels)."""
    from disam_ros.training.evaluate import raw_pixels as standardised

    return standardised(x, domain)


def untrained(name: str, seed: int) -> Method:
    """A random encoder of preset `name` (one for every condition): what architecture alone gives."""
    from disam_ros.model import preset, seeded_net

    cfg = preset(name, ("any",))
    enc = seeded_net(cfg, seed).encoders["any"].eval()
    return Method(f"untrained {name} s{seed}", lambda x, d: enc(x), cfg.image_size)


def checkpoint_method(name: str, path: Path) -> Method:
    from disam_ros.model import Encoder

    enc = Encoder.from_checkpoint(path, device="cpu")
    return Method(name, lambda x, d: enc.encode(x, d), enc.config.image_size, domains=tuple(enc.domains))


def baselines(seeds: int) -> list[tuple[str, list[Method]]]:
    """Rows: raw pixels, then each untrained preset's seeds (averaged into one row)."""
    raw = [Method("raw pixels", raw_pixels, RAW_SIZE, metric="cosine")]
    return [("raw pixels", raw)] + [(f"untrained {p}", [untrained(p, s) for s in range(seeds)])
                                    for p in ("tiny", "small")]


def run(sets: list[RealSet], groups: list[tuple[str, list[Method]]]) -> list[dict]:
    """One row per group: per set and per query group, R@1 (mean over the group's methods, min-max beside)."""
    from disam_ros.bench.real_paired import paired_rows

    rows, cache, hits = [], {}, {}
    for name, methods in groups:
        per = []
        for i, m in enumerate(methods, 1):
            if len(methods) > 1:
                print(f"  scoring {name}, draw {i}/{len(methods)}", file=sys.stderr, flush=True)
            per.append({s.name: score_set(m, s, cache) for s in sets})
        hits[name] = {s.name: np.mean([p[s.name].pop("hits") for p in per], axis=0) for s in sets}
        row: dict = {"method": name, "draws": len(methods)}
        for s in sets:
            for col in per[0][s.name]:
                if col == "queries":
                    continue
                label = s.name if col == "pooled" else f"{s.name}:{col}"
                if len(s.queries) == 1 and col != "pooled":
                    continue
                vals = [p[s.name][col] for p in per]
                row[label] = float(np.mean(vals))
                if len(vals) > 1:
                    row[label + ":range"] = [float(min(vals)), float(max(vals))]
            row[s.name + ":queries"] = n = per[0][s.name]["queries"]
            if len(methods) == 1 and n:  # one model: what the set's size allows its figure to say
                row[s.name + ":ci95"] = interval95(row[s.name], n)
        rows.append(row)
        print(f"  scored {name}", file=sys.stderr, flush=True)
    paired = paired_rows(hits, {r["method"]: r["draws"] for r in rows})
    for r in rows:
        r.update({f"{s}:vs_small": v for s, v in paired.get(r["method"], {}).items()})
    return rows


def format_table(rows: list[dict], sets: list[RealSet]) -> str:
    from disam_ros.bench.real_paired import paired_lines

    cols = [s.name for s in sets]
    head = "| method | " + " | ".join(f"{c} ({s.part[:4]}, {rows[0][c + ':queries']})" for c, s in
                                       zip(cols, sets, strict=True)) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        cells = []
        for c in cols:
            v = f"{100 * r[c]:.1f}"
            if c + ":range" in r:
                lo, hi = r[c + ":range"]
                v += f" ({100 * lo:.0f}-{100 * hi:.0f})"
            if c + ":ci95" in r:
                lo, hi = r[c + ":ci95"]
                v += f" [{100 * lo:.0f}-{100 * hi:.0f}]"
            cells.append(v)
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    lines += ["", "(a-b): the untrained draws' range; [a-b]: one model's 95 % interval (Wilson) at the set's query "
              "count", *paired_lines(rows, cols)]
    for s in sets:
        keys = [f"{s.name}:{g}" for g in s.queries if f"{s.name}:{g}" in rows[0]]
        if len(keys) > 1:
            lines += ["", f"{s.name}, per camera (R@1 %): | method | " + " | ".join(k.split(":")[1] for k in keys)
                      + " |"]
            lines += [f"| {r['method']} | " + " | ".join(f"{100 * r[k]:.1f}" for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def named_checkpoint(text: str) -> tuple[str, Path]:
    name, _, path = text.rpartition("=")
    return (name or text), checkpoint_arg(path)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="disam-bench real", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", type=named_checkpoint, metavar="NAME=PATH",
                   help="a model to score (repeatable; 'real' = the shipped real-camera default; default: real)")
    p.add_argument("--seeds", type=int, default=SEEDS, help=f"untrained draws per preset (default {SEEDS})")
    p.add_argument("--data", type=Path, default=SHARED_DATA, help="the folder holding the real sets (default "
                   "../shared/data): every folder in its README's layouts; the dev copies by their parts, any other "
                   "scored whole as a test set")
    p.add_argument("--quick", action="store_true",
                   help=f"CI, the code path and not a figure: each route part and each query group (a webcam) "
                   f"cut to its first {QUICK_FRAMES} frames, one untrained draw")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads of torch, OpenCV and OpenBLAS (0: the product's default)")
    p.add_argument("--json", help="also write the rows as JSON here")
    p.add_argument("--plot", type=Path, help="also draw the table as bars here (PNG; whiskers: the draws' range)")
    args = p.parse_args(argv)
    check_output_files(p, args, "--json", "--plot")
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, e.g. --seeds {SEEDS}")
    from disam_ros.threads import apply_threads

    apply_threads(args.threads)
    sets = real_sets(args.data, args.quick)
    if not sets:
        p.error(f"--data {args.data}: no real set there: a folder of summer/ + winter/ (or spring/, fall/) frames, "
                "of query/ + ref/ images, or of camera folders with frames.csv (../shared/data/README.md)")
    ckpts = args.checkpoint or [("shipped real", checkpoint_arg("real"))]
    for _, path in ckpts:
        if not path.is_file():
            p.error(f"--checkpoint {path}: no such file: give a model.pt, an export, or 'real'")
    groups = baselines(1 if args.quick else args.seeds) + [(n, [checkpoint_method(n, path)]) for n, path in ckpts]
    rows, parts = run(sets, groups), {s.name: s.part for s in sets}
    emit("real", rows, format_table(rows, sets), args.json, sets=parts, data=str(args.data), quick=args.quick)
    if args.plot:
        from disam_ros.bench.real_plot import plot_battery

        print(f"plot: {plot_battery(rows, parts, args.plot)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
