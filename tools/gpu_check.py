"""Every CUDA path of the product in one run on a lent GPU, ending in one summary table (tools/gpu_check.sh).

Steps, each in its own process with its own time limit, so one failure is a row, not the end of the check:
CUDA tests, `disam-bench model / retrieval / training / threads` on the device, a short `real_starter` training run
on the device with its held-out R@1 (the Nordland dev half's test part, which training never sees), the same run
under torch.distributed (nccl on CUDA), and the CPU vs device answers of `disam-eval` on one map. Figures go to
OUT/summary.md and OUT/summary.json, each labelled with the device that produced it.

    python3 tools/gpu_check.py --data DIR --out OUT [--device cuda] [--quick]

`--device cpu --quick` is the dry run a machine without a GPU can do: the same steps, small sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


@dataclass
class Check:
    device: str
    data: Path
    out: Path
    quick: bool
    deadline: float = float("inf")  # time.monotonic() by which every step must have ended
    min_step_s: float = 5.0  # a step with less time than this left is skipped, not started
    rows: list[dict] = field(default_factory=list)

    @property
    def work(self) -> Path:
        return self.out / "work"

    def run(self, name: str, argv: list[str], timeout: float, env: dict | None = None) -> tuple[bool, str, float]:
        """Run one step; its output goes to OUT/logs/<name>.log. (ok, output, seconds)."""
        t0 = time.perf_counter()
        timeout = min(timeout, self.deadline - time.monotonic())
        if timeout < self.min_step_s:
            return False, "SKIPPED: the check's time budget is spent (raise --budget-s)", 0.0
        try:
            p = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                               env={**os.environ, **(env or {})})
            ok, text = p.returncode == 0, p.stdout + p.stderr
        except subprocess.TimeoutExpired as e:
            ok, text = False, f"{_text(e.stdout)}{_text(e.stderr)}\nTIMEOUT after {timeout:.0f} s"
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        (logs / f"{name}.log").write_text(text)
        return ok, text, time.perf_counter() - t0

    def add(self, step: str, ok: bool, seconds: float, figure: str) -> None:
        self.rows.append({"step": step, "status": "ok" if ok else "FAIL", "seconds": round(seconds, 1),
                          "device": self.device, "figure": figure})
        print(f"[gpu_check] {step}: {'ok' if ok else 'FAIL'} ({seconds:.0f} s) {figure}", flush=True)


def _text(out: str | bytes | None) -> str:
    """A timed-out child's partial output (bytes even under text=True)."""
    return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")


def bench_argv(suite: str, *args: str) -> list[str]:
    return [PY, "-c", "import sys; from disam_ros.bench import main; sys.exit(main(sys.argv[1:]))", suite, *args]


def last_line(text: str, pattern: str) -> str:
    hits = [ln for ln in text.splitlines() if re.search(pattern, ln)]
    return hits[-1].strip() if hits else ""


def step_tests(c: Check) -> None:
    tests = ["test/test_training_device.py", "test/test_model_checkpoint.py", "test/test_threads.py",
             "test/test_verify_learned.py"]
    ok, text, s = c.run("tests", [PY, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *tests],
                        300)
    c.add("CUDA tests" if c.device.startswith("cuda") else "tests (CUDA ones skip)", ok, s,
          last_line(text, r"passed|failed|error"))


def step_bench(c: Check, suite: str, args: list[str], timeout: float, figure: Callable[[dict], str]) -> None:
    path = c.out / f"bench_{suite}.json"
    ok, text, s = c.run(f"bench_{suite}", bench_argv(suite, *args, "--json", str(path)), timeout)
    try:
        fig = figure(json.loads(path.read_text())) if ok else last_line(text, r"rror|TIMEOUT|SKIPPED")
    except (OSError, ValueError, KeyError, IndexError) as e:
        ok, fig = False, f"unreadable JSON: {e}"
    c.add(f"disam-bench {suite}", ok, s, fig)


def fmt_model(d: dict) -> str:
    return "; ".join(f"{r['preset']} {r['mode']} b1 {r['b1_ms_per_image']:.2f} ms, b8 {r['b8_ms_per_image']:.2f} ms"
                     for r in d["results"])


def fmt_retrieval(d: dict) -> str:
    return "; ".join(f"{r['mode']} {r['n'] // 1000}k {r['device']}: {r['total_ms']:.2f} ms" if r["status"] == "ok"
                     else f"{r['mode']} {r['n'] // 1000}k {r['device']}: {r['status']}" for r in d["rows"])


def fmt_training(d: dict) -> str:
    return "; ".join(f"{r['preset']} {r['recipe']} {r['it_per_s']:.1f} it/s" for r in d["rows"])


def fmt_threads(d: dict) -> str:
    return f"{d['cpus']} cores: " + "; ".join(
        f"{r['threads']} thr encode {r['encode_frame_ms']:.2f} ms, search 1k {r['search_1k_ms']:.2f} ms"
        for r in d["results"])


def train_overrides(c: Check) -> list[str]:
    steps = "40" if c.quick else "1000"
    return [f"train.device={c.device.split(':')[0]}", f"steps={steps}", "progress=false"] + (
        ["mine_every=20", "val_every=20"] if c.quick else [])


def held_out_r1(c: Check, model: Path, name: str) -> tuple[bool, str, float]:
    """R@1 within 2 frames on the test part (train_fraction 0.5: frames the recipe never trained on)."""
    js = c.out / f"{name}_eval.json"
    argv = [PY, "-m", "disam_ros.training.evaluate", "nordland", "--coarse", str(model), "--data", str(c.data),
            "--train-fraction", "0.5", "--json", str(js)]
    ok, text, s = c.run(f"{name}_eval", argv, 240)
    if not ok:
        return ok, last_line(text, r"rror|TIMEOUT|SKIPPED"), s
    table = json.loads(js.read_text())["table"]
    return ok, "R@1 within 2 frames: " + ", ".join(f"{m} {100 * row['mean']['R@1@2']:.1f} %"
                                                   for m, row in table.items()), s


def step_train(c: Check) -> None:
    out = c.work / "real_starter"
    argv = [PY, "-m", "disam_ros.training.cli", "--recipe", "real_starter", "--data", str(c.data), "--out", str(out),
            *train_overrides(c)]
    ok, text, s = c.run("train_real_starter", argv, 420)
    fig = last_line(text, r"it/s|steps|Error|TIMEOUT|SKIPPED")
    summary = out / "summary.json"
    if ok and summary.is_file():
        d = json.loads(summary.read_text())
        fig = f"{d['step']} steps, {d['it_per_s']:.1f} it/s, validation R@1 {d['val'].get('mean', float('nan')):.3f}"
    c.add("disam-train real_starter", ok, s, fig)
    if ok:
        ok2, fig2, s2 = held_out_r1(c, out / "model.pt", "real_starter")
        c.add("  held-out R@1 (test part)", ok2, s2, fig2)


def step_ddp(c: Check) -> None:
    out = c.work / "ddp"
    argv = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m",
            "disam_ros.training.cli", "--recipe", "real_starter", "--data", str(c.data), "--out", str(out),
            f"train.device={c.device.split(':')[0]}", "steps=20", "progress=false"]
    ok, text, s = c.run("train_ddp", argv, 240, env={"MASTER_ADDR": "127.0.0.1"})
    backend = "nccl" if c.device.startswith("cuda") else "gloo"
    c.add(f"torch.distributed ({backend}), 1 process", ok and (out / "model.pt").is_file(), s,
          last_line(text, r"world|rank|Error|TIMEOUT|SKIPPED") or "model.pt written")


def step_keypoints(c: Check) -> None:
    """The keypoint network trained on the device: a small rendered town, a few hundred steps, steps per second."""
    town, out = c.work / "kp_town", c.work / "kp" / "keypoints.pt"
    ok, text, s = c.run("kp_town", [PY, "-m", "disam_ros.data.synthetic.generate", "--out", str(town), "--seed", "101",
                                    "--size", "320x240", "--frames", "8", "--conditions", "sunny,night,snow",
                                    "--quiet", "--force"], 120)
    steps = 5 if c.quick else 300
    if ok:
        ok, text, s = c.run("train_keypoints", [PY, "-m", "disam_ros.training.keypoint_train", "--worlds", str(town),
                                                "--out", str(out), "--steps", str(steps), "--crop", "128",
                                                "--snapshot-every", "0", "--device", c.device, "--quiet"], 180)
    ok = ok and out.is_file()
    c.add("disam-train-keypoints", ok, s, f"{steps / s:.1f} steps/s (incl. start-up)" if ok else
          last_line(text, r"rror|TIMEOUT|SKIPPED"))


def nordland_dataset(c: Check) -> Path:
    """The dev half as a folder dataset with poses: frame k at x = k metres (frame numbers are the ground truth)."""
    root = c.work / "nordland_poses"
    for cond in ("summer", "winter"):
        images = root / cond / "images"
        images.mkdir(parents=True, exist_ok=True)
        frames = sorted((c.data / cond).glob("*.png"))[: 300 if c.quick else None]
        lines = []
        for f in frames:
            k = int(re.findall(r"\d+", f.stem)[-1])
            link = images / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
            lines.append(f"{k:.1f} {k:.1f} 0 0 0 0 0 1")
        (root / cond / "poses.txt").write_text("\n".join(lines) + "\n")
    return root


def step_eval_answers(c: Check) -> None:
    ds, m = nordland_dataset(c), c.work / "map"
    ok, text, s = c.run("build_map", [PY, "-m", "disam_ros.maps.build_map", "--dataset", str(ds), "--condition",
                                      "summer", "--coarse", "real", "--geometry", "none", "--mode", "exact",
                                      "--device", c.device, "--out", str(m), "--overwrite", "--quiet"], 240)
    c.add("disam-build-map (real, exact)", ok, s, last_line(text, r"rror|images|TIMEOUT"))
    if not ok:
        return
    runs: list[tuple[str, list[dict]]] = []
    # every 6th winter frame on the full route: the CPU side alone took over 255 s for all 1788 (small, 128 px)
    every = "1" if c.quick else "6"
    for k, dev in enumerate((c.device, "cpu")):  # a CPU dry run compares two CPU runs
        out = c.work / f"eval_{k}_{dev.replace(':', '')}"
        argv = [PY, "-m", "disam_ros.eval.offline", "--map", str(m), "--dataset", str(ds), "--conditions", "winter",
                "--domain", "winter", "--no-verify", "--modes", "single", "--every", every, "--device", dev,
                "--out", str(out), "--quiet",
                # every core on the CPU side: the answers are compared here, the thread default has its own row
                "--threads", str(os.cpu_count() or 1)]
        ok, text, s = c.run(f"eval_{k}_{dev}", argv, 300)
        c.add(f"disam-eval --device {dev}", ok, s, last_line(text, r"rror|TIMEOUT|SKIPPED"))
        if ok:
            runs.append((dev, [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]))
    if len(runs) == 2:
        (_, a), (_, b) = runs
        same1 = sum(x["match_name"] == y["match_name"] for x, y in zip(a, b, strict=True))
        lat = [(d, sorted(r["latency_s"] for r in rs)[len(rs) // 2] * 1e3) for d, rs in runs]
        c.add("CPU vs device answers", same1 == len(a), 0.0,
              f"same top-1 {same1}/{len(a)}; median ms per frame " + ", ".join(f"{d} {v:.2f}" for d, v in lat))


STEPS = ("tests", "train", "ddp", "eval", "keypoints", "model", "retrieval", "training", "threads")


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
           "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def write_summary(c: Check, env: dict) -> str:
    lines = [f"device: {env.get('gpu', c.device)}; torch {env['torch']}, {env['cpus']} CPU cores, "
             f"python {env['python']}", "", "| step | status | s | figure |", "|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['status']} | {r['seconds']} | {r['figure']} |" for r in c.rows]
    text = "\n".join(lines) + "\n"
    (c.out / "summary.md").write_text(text)
    (c.out / "summary.json").write_text(json.dumps({"env": env, "rows": c.rows}, indent=1))
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the nordland_trimmed_dev folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="small sizes (the CPU dry run)")
    p.add_argument("--budget-s", type=float, default=480.0, help="every step ends within this many seconds")
    p.add_argument("--steps", type=lambda v: [x for x in v.split(",") if x], default=list(STEPS),
                   help=f"a comma list of {','.join(STEPS)} (a rerun of what a spent budget skipped)")
    args = p.parse_args(argv)
    if not (args.data / "summer").is_dir():
        p.error(f"--data {args.data}: no summer/ folder: pass the nordland_trimmed_dev folder")
    unknown = sorted(set(args.steps) - set(STEPS))
    if unknown:
        p.error(f"--steps: unknown {', '.join(unknown)}: choose from {','.join(STEPS)}")
    c = Check(args.device, args.data.resolve(), args.out.resolve(), args.quick, time.monotonic() + args.budget_s)
    c.work.mkdir(parents=True, exist_ok=True)
    env = environment()
    dev = ["--device", args.device]
    run = set(args.steps).__contains__
    # what no GPU has run yet goes first, so a budget spent on the benches cannot skip it
    for name, step in (("tests", step_tests), ("train", step_train), ("ddp", step_ddp), ("eval", step_eval_answers),
                       ("keypoints", step_keypoints)):
        if run(name):
            step(c)
    q = args.quick
    benches = {
        "model": ([*dev, "--presets", "tiny,small" if q else "paper,small,tiny"], 150, fmt_model),
        "retrieval": ([*dev, "--quick", "--modes", "pca,exact16"] if q else
                      [*dev, "--sizes", "1000", "--modes", "pca,exact16", "--queries", "10"], 120, fmt_retrieval),
        "training": ([*dev, "--presets", "tiny"] if q else [*dev, "--presets", "small", "tiny", "--paper"], 240,
                     fmt_training),
        "threads": (["--reps", "3"], 150, fmt_threads),
    }
    for suite, (bench_args, timeout, fmt) in benches.items():
        if run(suite):
            step_bench(c, suite, bench_args, timeout, fmt)
    print(write_summary(c, env))
    return 0 if all(r["status"] == "ok" for r in c.rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
