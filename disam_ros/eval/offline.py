"""`disam-eval`: offline evaluation, with the node's retrieval code path run straight on folders or bags.

    disam-eval --map MAP --dataset WORLD [--conditions night,snow] --out report/
    disam-eval --map MAP --bag night=bags/night --bag bags/snow --world WORLD --out report/

Per query: the condition's encoder is chosen exactly as the node chooses it (image stamp -> daylight at the
map's site, weather as a driver would set it), then coarse-to-fine retrieval; the report breaks the results
down per condition. Online evaluation (replay into a running node) is `disam-eval-online`.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from disam_ros.cliutil import (
    OneLineParser,
    name_list,
    non_negative_int,
    os_error_line,
    output_dir_error,
    positive_int,
)
from disam_ros.eval.metrics import DEFAULT_RECALL_NS
from disam_ros.eval.plots import ExamplePair
from disam_ros.eval.queries import Query, bag_queries, folder_conditions, folder_queries, world_weather
from disam_ros.eval.report import CANDIDATES
from disam_ros.eval.scoring import THRESHOLDS, Answer, is_correct, query_result, summary_rows, write_report
from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
from disam_ros.retrieval import SearchConfig


@dataclass(frozen=True)
class QueryGroup:
    """One drive: its condition name, the weather a driver would set for it, and its queries."""

    condition: str
    weather: str | None
    queries: Iterable[Query]


def answer(reloc: Relocalizer, q: Query) -> tuple[Answer, object]:
    t0 = time.perf_counter()
    sel, res = reloc.localize(q.image, q.stamp)
    latency = time.perf_counter() - t0
    if not res.ok:
        return Answer(None, latency_s=latency, domain=sel.domain), res
    return Answer(int(res.index), np.asarray(res.position), np.asarray(res.quat),
                  tuple(int(i) for i, _ in res.topk), latency, sel.domain), res


def example_pair(reloc: Relocalizer, q: Query, res: object, correct: bool, domain: str) -> ExamplePair | None:
    """Query and match side by side with their Grad-SAM maps (paper Fig. 1), when the map image exists."""
    match = reloc.map_image(res.index)
    if match is None:
        return None
    q_heat, m_heat = reloc.activation_maps(res)
    return ExamplePair(q.image, match, f"{q.condition} {q.name} [{domain}] -> {reloc.map.names[res.index]}",
                       correct, q_heat, m_heat)


def evaluate(reloc: Relocalizer, groups: Sequence[QueryGroup], examples_per_condition: int = 1,
             progress: bool = True, default_weather: str = "sunny"):
    """Run every query; returns (QueryResults, ExamplePairs, Answers)."""
    results, examples, answers = [], [], []
    m = reloc.map
    for g in groups:
        reloc.selector.set_weather(g.weather or default_weather)
        shown = 0
        for q in tqdm(g.queries, desc=f"eval {g.condition}", disable=not progress, unit="img"):
            a, res = answer(reloc, q)
            r = query_result(q, a, m.positions, m.names)
            results.append(r)
            answers.append(a)
            if a.index is not None and shown < examples_per_condition:
                ex = example_pair(reloc, q, res, is_correct(r, THRESHOLDS[-1]), a.domain)
                if ex is not None:
                    examples.append(ex)
                    shown += 1
    return results, examples, answers


def parse_bag_arg(text: str) -> tuple[str, Path]:
    """'night=path/to/bag' or 'path/to/night' (the condition is then the bag folder's name)."""
    name, sep, path = text.partition("=")
    return (name, Path(path)) if sep else (Path(text).name, Path(text))


def query_groups(args: argparse.Namespace, reference: str) -> list[QueryGroup]:
    if args.dataset:
        conds = folder_conditions(args.dataset, args.conditions, reference)
        return [QueryGroup(c, args.weather or world_weather(args.dataset, c),
                           LazyQueries(folder_queries, args.dataset, c, args.every)) for c in conds]
    groups = []
    for text in args.bag:
        cond, path = parse_bag_arg(text)
        groups.append(QueryGroup(cond, args.weather or world_weather(args.world, cond),
                                 LazyQueries(bag_queries, path, cond, args.image_topic, args.pose_topic,
                                       every=args.every)))
    return groups


class LazyQueries:
    """Re-iterable query stream: the generator is made when iterated, so nothing is read before it's used."""

    def __init__(self, fn, *args, **kwargs) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __iter__(self) -> Iterator[Query]:
        return iter(self.fn(*self.args, **self.kwargs))


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="disam-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--map", required=True, type=Path, help="map directory (disam-build-map)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", type=Path, help="dataset root ROOT/<condition>/images + poses.txt")
    src.add_argument("--bag", action="append", help="query bag, 'NAME=PATH' or PATH (condition = folder name)")
    p.add_argument("--conditions", type=name_list,
                   help="with --dataset: conditions to query (default: all but the map's reference)")
    p.add_argument("--world", type=Path, help="with --bag: dataset root whose world.yaml gives each drive's weather")
    p.add_argument("--image-topic"), p.add_argument("--pose-topic")
    p.add_argument("--out", required=True, type=Path, help="report folder")
    p.add_argument("--coarse", default="", help="coarse checkpoint (default: the one recorded in the map)")
    p.add_argument("--fine", default="", help="fine checkpoint (default: the one recorded in the map)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--top-n", type=positive_int, default=3, help="coarse candidates re-ranked by the fine model")
    p.add_argument("--top-k", type=positive_int, default=max(DEFAULT_RECALL_NS),
                   help="candidates kept per query; recall@N above it is reported n/a (default %(default)s: the "
                        "largest N reported)")
    p.add_argument("--min-confidence", type=float, default=0.0, help="abstain below this confidence")
    p.add_argument("--weather", help="weather for every drive (default: world.yaml, else sunny)")
    p.add_argument("--domain", default="", help="force one encoder domain for every query")
    p.add_argument("--every", type=positive_int, default=1, help="use every N-th query image")
    p.add_argument("--examples", type=non_negative_int, default=1, help="example pairs per condition in examples.png")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def check_paths(args: argparse.Namespace) -> None:
    """ValueError (one line) for paths that would fail only after the models are loaded, or after the whole
    evaluation (an --out under a file)."""
    if not args.map.is_dir():
        raise ValueError(f"--map {args.map}: no such map folder; pass a folder written by disam-build-map")
    if args.dataset is not None and not args.dataset.is_dir():
        raise ValueError(f"--dataset {args.dataset}: no such folder; pass a dataset root ROOT/<condition>/images")
    if args.world is not None and not args.world.is_dir():
        raise ValueError(f"--world {args.world}: no such folder; pass the dataset root that holds world.yaml")
    if problem := output_dir_error(args.out, "--out"):
        raise ValueError(problem)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_paths(args)
        cfg = RelocalizerConfig(coarse_checkpoint=args.coarse, fine_checkpoint=args.fine, domain=args.domain,
                                search=SearchConfig(top_n=args.top_n, top_k=args.top_k,
                                                    min_confidence=args.min_confidence, device=args.device))
        reloc = Relocalizer.from_map(args.map, cfg)
        groups = query_groups(args, str(reloc.map.domain))
        results, examples, _ = evaluate(reloc, groups, args.examples, progress=not args.quiet)
        meta = {"mode": "offline", "map": str(args.map), "map images": len(reloc.map),
                "device": str(reloc.localizer.coarse.device), "top_n": args.top_n, CANDIDATES: args.top_k,
                "source": str(args.dataset or ", ".join(args.bag))}
        paths = write_report(args.out, results, reloc.map.positions, examples, meta,
                             title="DISAM offline localisation report")
    except ValueError as exc:
        print(f"disam-eval: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # FileNotFoundError included
        print(f"disam-eval: error: {os_error_line(exc, 'check the paths')}", file=sys.stderr)
        return 2
    print("\n".join(summary_rows(results)))
    print(f"report: {paths['markdown']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
