"""What a map's manifest says about fused descriptors (seed 002), read without torch or the model package.

A map built with a coarse model that carries an active depth branch stores, per image, the eq. 16 appearance
vector followed by the depth descriptor: [sqrt(w) a, sqrt(1-w) d]. Its manifest records that in
`models.coarse.depth_branch = {fusion_weight, grid, dim, max_depth_m}`; a map without the key holds plain
appearance vectors. The manifest checker and the loader only need the record's validity and the extra length.
"""
from __future__ import annotations

import math
from typing import Any

KEY = "depth_branch"
FIELDS = ("fusion_weight", "grid", "dim", "max_depth_m")


def branch_of(model_record: Any) -> dict[str, Any] | None:
    """The depth-branch record of a manifest's model record, or None (appearance-only map)."""
    return model_record.get(KEY) if isinstance(model_record, dict) else None


def record_ok(rec: Any) -> bool:
    """Exactly the record a builder writes: 0 <= w < 1, a positive grid, dim = grid^2, a positive max depth."""
    if not isinstance(rec, dict) or set(rec) != set(FIELDS):
        return False
    w, g, d, m = (rec[k] for k in FIELDS)
    nums = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (w, g, d, m))
    return (nums and math.isfinite(w) and 0.0 <= w < 1.0 and isinstance(g, int) and g >= 1 and d == g * g
            and math.isfinite(m) and m > 0)


def extra_dim(model_record: Any) -> int:
    """Length the depth descriptor adds to every coarse vector of the map (0 for appearance-only maps)."""
    rec = branch_of(model_record)
    return int(rec["dim"]) if record_ok(rec) else 0


def describe(models: Any) -> str:
    """A note for `disam-map-info` on a map whose manifest `models` say fused ("" for appearance-only maps)."""
    rec = branch_of(models.get("coarse") if isinstance(models, dict) else None)
    if not record_ok(rec):
        return ""
    return f" (appearance {rec['fusion_weight']:g} + hallucinated-depth {rec['dim']} dims; seed 002)"
