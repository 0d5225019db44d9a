"""A tiny condition recogniser: photometric statistics of a 32x32 thumbnail -> small MLP -> one softmax per task.

Why not a head on the content code: the content code is trained to be condition-INVARIANT (that is what FCL and
SAM push for), so the evidence for "night" or "snow" is exactly what it tries to throw away; and it needs an
encoder pass before the encoder is chosen. Brightness, colour balance, contrast, haze (dark channel) and their
coarse layout over the frame are what a person reads a condition from; they cost well under a millisecond.

Tasks: always "domain" (the model's condition folders), plus the Table-I attributes ("weather", "daylight",
"foliage") when the training data labels them. Stored as a small file beside the model checkpoint
(`<checkpoint stem>.condition.pt`, see `sidecar_path`); a model without one keeps the clock + weather rule.

The file records the sha256 of the encoder checkpoint it was trained for, and loading checks it against the
coarse checkpoint in use. It is read with `torch.load(weights_only=True)`, and everything it declares is checked
BEFORE anything is allocated from it: sizes within `MAX_HIDDEN` / `MAX_TASKS` / `MAX_CLASSES` and equal to the
stored tensors' shapes (a 19.6 KB file declaring 3,000,000 hidden units once cost 1.59 GB before it was
refused), every weight finite, the normalisation's std positive. Every failure is one line naming the file and
the fix. A file written before the hash was recorded loads, and `checkpoint_sha256` is None: the caller warns
(the recogniser only chooses among the model's own domain names, which are checked per frame, so such a file
cannot pick an encoder the model lacks; refusing it would stop nodes that ran on it before an upgrade).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from disam_ros.fsutil import atomic_path

FORMAT_TAG = "disam_ros.condition_head"
FORMAT_VERSION = 1
# What a recogniser file may declare (training uses hidden 32, 2-5 tasks of a few classes each): far above any
# real recogniser, far below what would cost memory; the file itself is a few KB.
MAX_HIDDEN = 4096
MAX_TASKS = 16
MAX_CLASSES = 256
MAX_FILE_BYTES = 64 << 20
RETRAIN = ("retrain the recogniser on this model (disam-train-condition --data ROOT --checkpoint {ckpt}) "
           "or remove {name}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
THUMB = 32  # thumbnail side; the features below are defined on it
GRID = 4  # layout cells per side
N_FEATURES = GRID * GRID * 4 + 6 + 8 + 2 + 1 + 1 + 2 + 1


def thumbnail(image: np.ndarray, side: int = THUMB) -> np.ndarray:
    """HxWx3 uint8 RGB -> side x side x 3 float32 in [0, 1] (area averaging: noise-free, aspect ignored)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"condition recogniser needs HxWx3 uint8 RGB, got {image.dtype} {image.shape}")
    interp = cv2.INTER_AREA if image.shape[0] * image.shape[1] > side * side else cv2.INTER_LINEAR
    t = cv2.resize(np.ascontiguousarray(image), (side, side), interpolation=interp)
    return t.astype(np.float32) * (1.0 / 255.0)


def image_features(image: np.ndarray) -> np.ndarray:
    """N_FEATURES float32 statistics of one image: layout (per-cell mean RGB and luminance contrast), global
    colour moments, luminance histogram, saturation, haze (dark channel), edge energy, chroma ratios, log
    brightness. Everything a condition changes and a place barely does."""
    t = thumbnail(image)
    lum = t @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    c = THUMB // GRID
    cells = t.reshape(GRID, c, GRID, c, 3)
    cell_rgb = cells.mean(axis=(1, 3)).reshape(-1)
    cell_std = lum.reshape(GRID, c, GRID, c).std(axis=(1, 3)).reshape(-1)
    rgb_mean, rgb_std = t.mean(axis=(0, 1)), t.std(axis=(0, 1))
    hist = np.histogram(lum, bins=8, range=(0.0, 1.0))[0].astype(np.float32) / lum.size
    mx, mn = t.max(axis=2), t.min(axis=2)
    sat = (mx - mn) / (mx + 1e-3)
    dark = mn.mean()
    gy, gx = np.diff(lum, axis=0), np.diff(lum, axis=1)
    edges = 0.5 * (np.abs(gy).mean() + np.abs(gx).mean())
    g = rgb_mean[1] + 1e-3
    feats = np.concatenate([cell_rgb, cell_std, rgb_mean, rgb_std, hist, [sat.mean(), sat.std()], [dark],
                            [edges], [rgb_mean[0] / g, rgb_mean[2] / g], [np.log(lum.mean() + 1e-3)]])
    return feats.astype(np.float32)


def bright_enough(image: np.ndarray, min_brightness: float) -> bool:
    """The retrieval evaluation's dark-frame rule (training.layouts.drop_dark, Nordland preset 20): keep a frame
    whose 99th-percentile pixel reaches `min_brightness`. A percentile, not the maximum: Nordland's tunnel frames
    are black but for a bright watermark. Used so recognition is scored on the frames R@1 is scored on."""
    return min_brightness <= 0 or float(np.percentile(image, 99)) >= min_brightness


def batch_features(images: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([image_features(im) for im in images]) if len(images) else np.zeros((0, N_FEATURES), np.float32)


class ConditionHead(nn.Module):
    """Standardise -> Linear -> ReLU -> one Linear per task. `tasks` maps task name -> class names (ordered)."""

    def __init__(self, tasks: Mapping[str, Sequence[str]], hidden: int = 32, n_features: int = N_FEATURES) -> None:
        super().__init__()
        if "domain" not in tasks or not tasks["domain"]:
            raise ValueError("a condition head needs a 'domain' task naming the model's domains")
        self.tasks = {k: tuple(v) for k, v in tasks.items()}
        self.hidden, self.n_features = hidden, n_features
        self.checkpoint_sha256: str | None = None  # the encoder checkpoint it was trained for (None: unknown)
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.trunk = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU())
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, len(v)) for k, v in self.tasks.items()})

    def forward(self, feats: Tensor) -> dict[str, Tensor]:
        """Logits per task for (B, n_features) features."""
        h = self.trunk((feats - self.mean) / self.std)
        return {k: head(h) for k, head in self.heads.items()}

    def set_normalisation(self, feats: np.ndarray) -> None:
        """Feature mean/std from the training set (constant features get std 1, not a division by zero)."""
        f = torch.as_tensor(feats, dtype=torch.float32)
        self.mean.copy_(f.mean(0))
        std = f.std(0)
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    @torch.inference_mode()
    def predict_features(self, feats: np.ndarray) -> list[dict[str, dict[str, float]]]:
        logits = self(torch.as_tensor(np.atleast_2d(feats), dtype=torch.float32))
        probs = {k: torch.softmax(v, dim=1).numpy() for k, v in logits.items()}
        n = next(iter(probs.values())).shape[0]
        return [{k: dict(zip(self.tasks[k], map(float, probs[k][i]), strict=True)) for k in self.tasks}
                for i in range(n)]

    def predict(self, image: np.ndarray) -> dict[str, dict[str, float]]:
        """task -> class -> probability for one HxWx3 uint8 RGB frame (what the localizer calls per frame)."""
        return self.predict_features(image_features(image)[None])[0]

    def to_payload(self) -> dict:
        out = {"format": FORMAT_TAG, "format_version": FORMAT_VERSION, "hidden": self.hidden,
               "n_features": self.n_features, "tasks": {k: list(v) for k, v in self.tasks.items()},
               "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}
        if self.checkpoint_sha256 is not None:
            out["checkpoint_sha256"] = self.checkpoint_sha256
        return out

    @classmethod
    def from_payload(cls, payload: Any, where: str = "condition head") -> ConditionHead:
        """A head from a loaded file's payload, every field checked before anything is allocated from it;
        ValueError (one line naming `where` and the fix) for anything that is not a recogniser this code wrote."""
        tasks, hidden = check_payload(payload, where, RETRAIN.format(ckpt="CKPT", name=Path(where).name))
        head = cls(tasks, hidden)
        head.load_state_dict(payload["state_dict"], strict=True)  # keys and shapes already match
        head.checkpoint_sha256 = payload.get("checkpoint_sha256")
        return head.eval()


def check_payload(payload: Any, where: str, fix: str) -> tuple[dict[str, tuple[str, ...]], int]:
    """(tasks, hidden) of a recogniser payload after checking every field against the others and the bounds
    above; nothing is allocated from the declared sizes (see the module docstring)."""
    def bad(problem: str) -> ValueError:
        return ValueError(f"{where}: {problem}; {fix}")

    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT_TAG:
        raise bad("not a condition recogniser file")
    if payload.get("format_version") != FORMAT_VERSION or payload.get("n_features") != N_FEATURES:
        raise bad(f"condition recogniser of another version (format {payload.get('format_version')!r}, "
                  f"{payload.get('n_features')!r} features; this software reads {FORMAT_VERSION}, {N_FEATURES})")
    hidden = payload.get("hidden")
    if type(hidden) is not int or not 1 <= hidden <= MAX_HIDDEN:
        raise bad(f"field hidden is {hidden!r}: must be a whole number in [1, {MAX_HIDDEN}]")
    raw = payload.get("tasks")
    if not isinstance(raw, Mapping) or not 1 <= len(raw) <= MAX_TASKS or "domain" not in raw:
        raise bad(f"field tasks must map 1 to {MAX_TASKS} task names, 'domain' among them, to class lists")
    tasks: dict[str, tuple[str, ...]] = {}
    for task, names in raw.items():
        ok = isinstance(task, str) and task and "." not in task and isinstance(names, list | tuple) \
            and 1 <= len(names) <= MAX_CLASSES
        if not ok or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise bad(f"field tasks[{str(task)[:40]!r}] must be a name without '.' listing 1 to {MAX_CLASSES} "
                      "distinct class names")
        tasks[task] = tuple(names)
    sha = payload.get("checkpoint_sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        raise bad(f"field checkpoint_sha256 is {str(sha)[:20]!r}: must be 64 hex digits")
    state = payload.get("state_dict")
    want = {"mean": (N_FEATURES,), "std": (N_FEATURES,), "trunk.0.weight": (hidden, N_FEATURES),
            "trunk.0.bias": (hidden,)}
    for task, names in tasks.items():
        want[f"heads.{task}.weight"], want[f"heads.{task}.bias"] = (len(names), hidden), (len(names),)
    if not isinstance(state, Mapping) or set(state) != set(want):
        got = sorted(map(str, state))[:8] if isinstance(state, Mapping) else type(state).__name__
        raise bad(f"field state_dict must hold exactly {sorted(want)}, holds {got}")
    for key, shape in want.items():
        t = state[key]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or tuple(t.shape) != shape:
            what = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise bad(f"weight {key} is {what}, declared {shape} floating point")
        if not bool(torch.isfinite(t).all()):
            raise bad(f"weight {key} holds NaN or inf")
    if not bool((state["std"] > 0).all()):
        raise bad("weight std holds values <= 0 (the features are divided by it)")
    return tasks, hidden


def sidecar_path(checkpoint: str | os.PathLike) -> Path:
    """Where the recogniser of a model checkpoint lives: `coarse.pt` -> `coarse.condition.pt`."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".condition.pt")


def _checkpoint_of(sidecar: Path) -> Path | None:
    """The checkpoint a sidecar sits beside (`coarse.condition.pt` -> `coarse.pt`), when it exists."""
    if not sidecar.name.endswith(".condition.pt"):
        return None
    ckpt = sidecar.with_name(sidecar.name[: -len(".condition.pt")] + ".pt")
    return ckpt if ckpt.is_file() else None


def save_condition_head(path: str | os.PathLike, head: ConditionHead,
                        checkpoint: str | os.PathLike | None = None) -> Path:
    """Write the recogniser with the sha256 of the encoder checkpoint it was trained for: `checkpoint`, else
    the checkpoint `path` sits beside as its sidecar (none: the head's own record, if any)."""
    from disam_ros.model.checkpoint import file_sha256

    path = Path(path)
    ckpt = Path(checkpoint) if checkpoint is not None else _checkpoint_of(path)
    if ckpt is not None:
        head.checkpoint_sha256 = file_sha256(ckpt)
    with atomic_path(path, mode=0o644) as tmp:
        torch.save(head.to_payload(), tmp)
    return path


def load_condition_head(path: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                        checkpoint_sha256: str | None = None) -> ConditionHead:
    """The recogniser in `path`, checked (module docstring). With `checkpoint` (the coarse checkpoint in use)
    and/or its `checkpoint_sha256`, a file recording another checkpoint's sha256 is refused in one line naming
    both files; a file recording none loads with `checkpoint_sha256` None (the caller warns)."""
    path = Path(path)
    ckpt = str(checkpoint) if checkpoint is not None else "CKPT"
    fix = RETRAIN.format(ckpt=ckpt, name=path.name)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ValueError(f"{path}: unreadable condition recogniser ({exc.strerror or type(exc).__name__}); "
                         f"{fix}") from None
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {size} bytes, more than any condition recogniser ({MAX_FILE_BYTES}); {fix}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (pickle, zip, torch and OS errors alike; their text is multi-line
        # and may advise weights_only=False, which must not be followed for a file that fails here)
        raise ValueError(f"{path}: not a condition recogniser torch.load can read safely "
                         f"({type(exc).__name__}); {fix}") from None
    check_payload(payload, str(path), fix)
    want = checkpoint_sha256
    if want is None and checkpoint is not None and Path(checkpoint).is_file():
        from disam_ros.model.checkpoint import file_sha256

        want = file_sha256(checkpoint)
    got = payload.get("checkpoint_sha256")
    if want is not None and got is not None and got != want:
        raise ValueError(f"{path}: trained for the encoder checkpoint with sha256 {got[:12]}..., but the coarse "
                         f"checkpoint in use {ckpt} has sha256 {want[:12]}...; {fix}")
    return ConditionHead.from_payload(payload, str(path))


def find_condition_head(checkpoint: str | os.PathLike, checkpoint_sha256: str | None = None) -> ConditionHead | None:
    """The recogniser beside `checkpoint`, checked against it (or against `checkpoint_sha256`, the sha256 of the
    encoder in use, when given), or None (the model then keeps the clock + weather behaviour)."""
    side = sidecar_path(checkpoint)
    return load_condition_head(side, checkpoint, checkpoint_sha256) if side.is_file() else None
