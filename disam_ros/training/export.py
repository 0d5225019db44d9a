"""Export an inference checkpoint for shipping: the encoders only, optionally stored as float16.

    python -m disam_ros.training.export RUN_DIR/model.pt disam_ros/assets/demo_coarse.pt --role coarse [--float32]

Map building and the localizer load models with `Encoder.from_checkpoint`, which reads the encoders and
never builds decoders or discriminators (76 % of the weights of the tiny preset), so the export stores the
encoders alone (`save_checkpoint(..., parts=("encoders",), dtype=torch.float16)`). `load_checkpoint`, which
returns a trainable net, refuses such a file; train or fine-tune from the full training checkpoint instead.
`extra["kind"] == "inference_export"` marks it, with the role, source checksum, step and validation scores (of
the selected point and of the run's start: a run's model.pt is its best validation point, see best.py).
The exported encoders are checked against the source before returning.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from disam_ros.cliutil import OneLineParser
from disam_ros.model import CheckpointError, DisamNet, Encoder, load_checkpoint, save_checkpoint

PARTS = ("encoders",)


def export(src: str | Path, dst: str | Path, half: bool = True, role: str | None = None) -> dict[str, Any]:
    """Write the inference checkpoint; returns a report (size, max encoder deviation on a probe batch)."""
    net, cfg, meta = load_checkpoint(src, map_location="cpu")
    src_extra = meta["extra"]
    extra = {"kind": "inference_export", "role": role or src_extra.get("recipe", {}).get("name", ""),
             "source_sha256": meta["sha256"], "step": src_extra.get("step", -1), "val": src_extra.get("val", {}),
             "recipe": src_extra.get("recipe", {}), "reference": src_extra.get("reference", cfg.domains[0]),
             "selected": src_extra.get("selected", ""), "val_start": src_extra.get("val_start", {})}
    if "depth_branch" in src_extra:  # seed 002 branch: travels with its encoders (float32, ~0.2 MB)
        extra["depth_branch"] = src_extra["depth_branch"]
    dtype = torch.float16 if half else torch.float32
    path = save_checkpoint(dst, net, cfg, extra, parts=PARTS, dtype=dtype)
    return {"path": str(path), "bytes": path.stat().st_size, "domains": list(cfg.domains),
            "dtype": str(dtype).removeprefix("torch."), "max_abs_code_error": _verify(net, path)}


def _verify(net: DisamNet, path: Path) -> float:
    """Largest |code difference| between the source encoders and the exported file, on a fixed probe."""
    enc = Encoder.from_checkpoint(path, device="cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, enc.config.image_size, enc.config.image_size, generator=gen) * 2 - 1
    worst = 0.0
    with torch.no_grad():
        for d in enc.domains:
            worst = max(worst, (enc.encode(x, d).float() - net.encode(x, d)).abs().max().item())
    return worst


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m disam_ros.training.export", description=__doc__.splitlines()[0])
    p.add_argument("src", help="training checkpoint: a run's model.pt or checkpoints/last.pt")
    p.add_argument("dst", help="inference checkpoint to write (atomically)")
    p.add_argument("--role", help="coarse or fine (recorded in the file; default: the recipe name)")
    p.add_argument("--float32", action="store_true", help="keep float32 weights (default: float16 storage)")
    args = p.parse_args(argv)
    try:
        report = export(args.src, args.dst, half=not args.float32, role=args.role)
    except (CheckpointError, OSError, ValueError) as exc:
        print(f"export: error: {exc}", file=sys.stderr)
        return 2
    print(f"export: {report['path']} {report['bytes'] / 1e6:.2f} MB, {len(report['domains'])} domains, "
          f"{report['dtype']}, max |code error| {report['max_abs_code_error']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
