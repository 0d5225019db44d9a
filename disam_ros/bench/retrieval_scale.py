"""`disam-bench retrieval scale`: ivfpq maps of 10k / 100k / 1M images on one machine, without rendering them.

Rendering and encoding a million images takes days here, so the map features are synthesised from a small
rendered set (the generator, documented because every number below depends on it):

* render a synthetic world (seed 0, 64 px) with a reference drive of B frames and a query drive; encode both
  with the shipped demo coarse and fine weights (real 64x16x16 content codes);
* fit the map's PCA (512 dims) on the B reference coarse vectors; map image i is the projection of reference
  frame i mod B plus Gaussian noise whose variance per principal direction is NOISE_SHARE of that
  direction's variance over the B frames (so every copy is a distinct nearby place and the spectrum, which is
  what PQ and IVF quality depends on, stays the real one); its fine feature is the frame's 4x4-pooled fine
  feature plus noise of the same share, re-normalised (4x4 keeps 1M fine rows at 2 GB of disk; the fine stage
  reads N = 3 rows whatever their size);
* write a real map directory (manifest, checksums, names, poses: copy t of the drive 100 m to the left),
  build its IVF-PQ index with the product's own `build_faiss` (quantisers trained on a sample), and time it.

Queries are real: the query drive's frames, encoded, searched through `Localizer.localize_features` (times
exclude the encoders; `disam-bench model` measures them). Per size it reports the build time, RAM per image
(RSS growth of a fresh process loading the map, and the index file's bytes), query latency median / p95, and
recall@K of the search against exact (brute-force float32) search over the same vectors, with refine and
with the PQ codes alone.
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from disam_ros.cliutil import OneLineParser, check_output_files, int_list, output_dir_error, positive_int
from disam_ros.fsutil import atomic_write_text
from disam_ros.maps.descriptors import coarse_vectors, fine_vectors, fit_pca, settings_for_mode
from disam_ros.maps.ivfpq import shortlist_recall
from disam_ros.shipped import ASSETS

# torch is imported where it is used: a typo or --help answers without loading it

NOISE_SHARE = 0.25
FINE_GRID = 4
TILE_OFFSET_M = 100.0
_CHUNK = 1 << 16


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def real_features(world: Path | None, frames: int, workdir: Path) -> dict[str, Any]:
    """Encode a rendered reference drive and query drive with the demo weights (see the module docstring)."""
    import torch

    from disam_ros.data.folders import iter_frames, load_condition
    from disam_ros.model import Encoder

    if world is None:
        from disam_ros.data.synthetic import WorldConfig, make_world

        world = make_world(WorldConfig(seed=0, image_size=64, frames=frames, conditions=("sunny", "overcast"),
                                       workers=1), workdir / "world", progress=False)
    coarse = Encoder.from_checkpoint(ASSETS / "demo_coarse.pt", device="cpu")
    fine = Encoder.from_checkpoint(ASSETS / "demo_fine.pt", device="cpu")
    out: dict[str, Any] = {"coarse_enc": coarse, "fine_enc": fine}
    for role, cond in (("map", "sunny"), ("query", "overcast")):
        folder = load_condition(world, cond, require_poses=True)
        images = [f.image for f in iter_frames(folder)]
        c = torch.cat([coarse.encode(images[i:i + 64], cond) for i in range(0, len(images), 64)]).float()
        f = torch.cat([fine.encode(images[i:i + 64], cond) for i in range(0, len(images), 64)]).float()
        out[role] = {"coarse": c, "fine": f, "traj": folder.trajectory}
    return out


def synthesise(base_c: np.ndarray, base_f: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows i of (coarse in PCA space, fine): base row i mod B plus NOISE_SHARE of its per-direction variance."""
    rng = np.random.default_rng(seed)
    b = len(base_c)
    idx = np.arange(n) % b
    sd_c = np.sqrt(NOISE_SHARE * base_c.var(axis=0)).astype(np.float32)
    sd_f = np.sqrt(NOISE_SHARE * base_f.var(axis=0)).astype(np.float32)
    c = base_c[idx] + rng.standard_normal((n, base_c.shape[1]), dtype=np.float32) * sd_c
    f = base_f[idx] + rng.standard_normal((n, base_f.shape[1]), dtype=np.float32) * sd_f
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    return c, f


def write_map(out: Path, n: int, feats: dict[str, Any], pca: Any, base_c: np.ndarray, base_f: np.ndarray,
              progress: bool) -> dict[str, float]:
    """A real ivfpq map directory of n synthesised images; returns generation and index-build seconds."""
    import faiss

    from disam_ros.data.tum import make_trajectory, write_tum
    from disam_ros.maps.builder import _manifest, model_record
    from disam_ros.maps.ivfpq import build_faiss
    from disam_ros.maps.map_format import MapStage, load_npy, write_manifest
    from disam_ros.maps.npy_stream import NpyAppender

    s = settings_for_mode("ivfpq", fine_grid=FINE_GRID)
    ref = feats["map"]["traj"]
    b = len(base_c)
    t0 = time.perf_counter()
    with MapStage(out, overwrite=True) as stage:
        fine_shape = (base_f.shape[1] // FINE_GRID ** 2, FINE_GRID, FINE_GRID)
        with NpyAppender(stage.dir / "coarse.npy", (pca.dim,), "float16") as cw, \
                NpyAppender(stage.dir / "fine.npy", fine_shape, "float16") as fw:
            for i in tqdm(range(0, n, _CHUNK), desc=f"synthesise {n}", unit="chunk", disable=not progress):
                c, f = synthesise(base_c, base_f, min(_CHUNK, n - i), seed=i + n)
                cw.append(c)
                fw.append(f.reshape(len(f), *fine_shape))
        pca.save(stage.dir / "pca.npz")
        idx = np.arange(n) % b
        pos = ref.positions[idx] + np.stack([np.zeros(n), TILE_OFFSET_M * (np.arange(n) // b), np.zeros(n)], 1)
        traj = make_trajectory(np.arange(n, dtype=np.float64), pos, ref.quats[idx])
        write_tum(stage.dir / "poses.txt", traj)
        (stage.dir / "names.txt").write_text("".join(f"{i:08d}\n" for i in range(n)), encoding="utf-8")
        t1 = time.perf_counter()
        vectors = load_npy(stage.dir / "coarse.npy", mmap=True)
        faiss.write_index(build_faiss(vectors, s), str(stage.dir / "coarse.faiss"))
        del vectors
        t2 = time.perf_counter()
        models = {"coarse": model_record(feats["coarse_enc"], ASSETS / "demo_coarse.pt"),
                  "fine": model_record(feats["fine_enc"], ASSETS / "demo_fine.pt")}
        build = {"source": f"disam-bench retrieval scale (synthesised, noise share {NOISE_SHARE})"}
        write_manifest(stage.dir, _manifest("map", n, "sunny", "map", s, models, pca.dim, traj, build, None))
        stage.commit()
    return {"generate_s": t1 - t0, "index_build_s": t2 - t1, "manifest_s": time.perf_counter() - t2}


def _measure_child(map_dir: str, queries: dict[str, np.ndarray], top: int, nprobes: tuple[int, ...],
                   conn: Any) -> None:
    """In a fresh process (so the RSS growth is the map's, not the build's): load, query, report."""
    import torch

    torch.set_num_threads(1)
    import faiss

    from disam_ros.maps import LocalizationMap
    from disam_ros.retrieval import Localizer, SearchConfig

    base = rss_bytes()
    t0 = time.perf_counter()
    m = LocalizationMap.load(map_dir, verify=False)  # no background hashing of GBs while timing queries
    loc = Localizer(m, None, None, SearchConfig(device="cpu", top_k=top, confidence_pool=top, nprobe=nprobes[0]))
    load_s = time.perf_counter() - t0
    rss = rss_bytes() - base
    coarse, fine = torch.from_numpy(queries["coarse"]), torch.from_numpy(queries["fine"])
    out: dict[str, Any] = {"rss_bytes": rss, "load_s": load_s,
                           "index_bytes": os.path.getsize(Path(map_dir) / "coarse.faiss")}
    for nprobe in nprobes:
        loc = Localizer(m, None, None, SearchConfig(device="cpu", top_k=top, confidence_pool=top, nprobe=nprobe))
        for i in range(3):  # warm-up: first touches of the memory-mapped refine and fine rows
            loc.localize_features(coarse[i], fine[i])
        times = [loc.localize_features(c, f).timings_ms for c, f in zip(coarse, fine)]
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        ids, pq_ids = [], []
        for c in coarse:  # the coarse shortlist the search re-ranks from, and the PQ codes' own, for contrast
            q = m.pca.project_query(coarse_vectors(c[None], m.settings.coarse_grid)[0])[0]
            ids.append(loc.index.search(q, top)[0])
            pq_ids.append(m.coarse_faiss.search(q.numpy()[None], top, params=params)[1][0])
        out[nprobe] = {"timings": times, "ids": np.array(ids), "pq_ids": np.array(pq_ids)}
    conn.send(out)
    conn.close()


def exact_topk(vectors: np.ndarray, q: np.ndarray, k: int, rows: int) -> np.ndarray:
    """Brute-force top-k ids of (Q, d) queries over the first `rows` stored vectors, ties by smaller id."""
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for i in range(0, rows, _CHUNK):
        s = q @ np.asarray(vectors[i:min(i + _CHUNK, rows)], np.float32).T
        ids = np.broadcast_to(np.arange(i, i + s.shape[1]), s.shape)
        best_s, best_i = np.concatenate([best_s, s], 1), np.concatenate([best_i, ids], 1)
        order = np.lexsort((best_i, -best_s), axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    return best_i


def measure(map_dir: Path, queries: dict[str, np.ndarray], q_pca: np.ndarray, top: int, recall_rows: int,
            ks: tuple[int, ...], nprobes: tuple[int, ...]) -> list[dict[str, Any]]:
    """Fresh-process load + queries, then recall@k of both shortlists against exact search; one row per nprobe."""
    from disam_ros.maps.map_format import load_npy

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_measure_child, args=(str(map_dir), queries, top, nprobes, child))
    proc.start()
    res = parent.recv()
    proc.join()
    n = json.loads((map_dir / "manifest.json").read_text())["count"]
    exact = None
    if n <= recall_rows:
        exact = exact_topk(load_npy(map_dir / "coarse.npy", mmap=True), q_pca, top, n)
    rows = []
    for nprobe in nprobes:
        t = res[nprobe]["timings"]
        tot = np.array([x["total"] for x in t])
        row = {"n": n, "nprobe": nprobe, "rss_bytes_per_image": res["rss_bytes"] / n,
               "index_bytes_per_image": res["index_bytes"] / n, "load_s": res["load_s"], "queries": len(t),
               "total_ms_median": float(np.median(tot)), "total_ms_p95": float(np.percentile(tot, 95)),
               "coarse_ms_median": float(np.median([x["coarse_search"] for x in t])),
               "fine_ms_median": float(np.median([x["fine_rerank"] for x in t]))}
        for k in ks if exact is not None else ():
            row[f"recall@{k}"] = shortlist_recall(res[nprobe]["ids"][:, :k], exact[:, :k])
            row[f"recall@{k}_pq_only"] = shortlist_recall(res[nprobe]["pq_ids"][:, :k], exact[:, :k])
        rows.append(row)
    return rows


def render(rows: list[dict[str, Any]], ks: tuple[int, ...]) -> str:
    head = ["images", "nprobe", "build s", "RAM B/img (RSS)", "index B/img", "load s", "median ms", "p95 ms",
            "coarse ms", "fine ms"] + [f"recall@{k} (PQ only)" for k in ks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in rows:
        cells = [f"{r['n']:,}", str(r["nprobe"]), f"{r['index_build_s']:.0f}", f"{r['rss_bytes_per_image']:.0f}",
                 f"{r['index_bytes_per_image']:.0f}", f"{r['load_s']:.1f}", f"{r['total_ms_median']:.2f}",
                 f"{r['total_ms_p95']:.2f}", f"{r['coarse_ms_median']:.2f}", f"{r['fine_ms_median']:.2f}"]
        cells += [f"{r[f'recall@{k}']:.3f} ({r[f'recall@{k}_pq_only']:.3f})" if f"recall@{k}" in r else "-"
                  for k in ks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="disam-bench retrieval scale", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int_list, default="10000,100000,1000000", help="map sizes, comma-separated")
    p.add_argument("--world", type=Path, help="rendered world (sunny = map drive, overcast = queries); "
                   "default: render one (seed 0, 64 px)")
    p.add_argument("--frames", type=positive_int, default=1000, help="frames per drive of the rendered world")
    p.add_argument("--queries", type=positive_int, default=200)
    p.add_argument("--nprobe", type=int_list, default="16,128", help="IVF lists visited per query, comma-separated "
                   "(128: what ivfpq maps use by default)")
    p.add_argument("--recall-max", type=positive_int, default=1_000_000,
                   help="exact search (for recall) on maps up to this size (it reads every vector)")
    p.add_argument("--workdir", type=Path, help="keep the maps here (default: a temporary folder)")
    p.add_argument("--json", type=Path)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    check_output_files(p, args, "--json")
    if args.workdir is not None and (problem := output_dir_error(args.workdir, "--workdir")):
        p.error(problem)
    if args.workdir is not None:
        try:
            args.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            p.error(f"--workdir {args.workdir}: {exc.strerror or exc}; pass a writable folder")
    import torch

    torch.set_num_threads(1)
    ks = (3, 20)
    rows = []
    with tempfile.TemporaryDirectory(prefix="disam-bench-scale-") as tmp:
        work = args.workdir or Path(tmp)
        feats = real_features(args.world, args.frames, work)
        base_raw = coarse_vectors(feats["map"]["coarse"]).numpy()
        pca = fit_pca(base_raw, 512)
        base_c = pca.project_map(base_raw)
        base_f = fine_vectors(feats["map"]["fine"], FINE_GRID).numpy()
        nq = min(args.queries, len(feats["query"]["coarse"]))
        sel = np.linspace(0, len(feats["query"]["coarse"]) - 1, nq).astype(int)
        queries = {"coarse": feats["query"]["coarse"][sel].numpy(), "fine": feats["query"]["fine"][sel].numpy()}
        q_pca = pca.project_query(coarse_vectors(feats["query"]["coarse"][sel]))[0].numpy()
        print(f"{len(base_c)} rendered map frames, PCA to {pca.dim} dims; {nq} real queries", file=sys.stderr)
        for n in args.sizes:
            out = work / f"map_{n}"
            timing = write_map(out, n, feats, pca, base_c, base_f, not args.quiet)
            for row in measure(out, queries, q_pca, max(ks), args.recall_max, ks, tuple(args.nprobe)):
                rows.append({**timing, **row})
                print(f"  {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()})}",
                      file=sys.stderr)
            if args.workdir is None:
                import shutil

                shutil.rmtree(out)
    env = {"torch_threads": 1, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpus": os.cpu_count(),
           "load_avg_1min": os.getloadavg()[0], "noise_share": NOISE_SHARE, "fine_grid": FINE_GRID}
    print(render(rows, ks))
    if args.json:
        atomic_write_text(args.json, json.dumps({"env": env, "rows": rows}, indent=2, default=float))
    return 0 if rows and all(math.isfinite(r["total_ms_median"]) for r in rows) else 1


__all__ = ["exact_topk", "main", "synthesise"]
