"""Fused appearance + depth coarse vectors (seed 002) for the map builder and the search, and the refusal of a
model that does not match the map.

Why duck-typed on `encoder.depth_branch`: `Encoder.from_checkpoint` attaches the branch a checkpoint carries
(disam_ros.model.depth_branch), so every path that already loads encoders (disam-build-map, the Localizer, the
node) fuses without new arguments, and stand-in encoders without the attribute stay appearance-only.
Maps record the branch (disam_ros.maps.depth_record); a query must be described exactly as the map was, so
a fused map with an appearance-only model, or the reverse, or another fusion weight/grid, is refused.
A query may be scored with its condition's own weight (the branch's `domain_weights`, chosen on validation): only
the query vector is scaled (disam_ros.model.depth.fuse_query), so the map and its record stay as they are.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from disam_ros.maps.depth_record import FIELDS, KEY, branch_of
from disam_ros.maps.descriptors import coarse_vectors
from disam_ros.maps.map_format import map_error

if TYPE_CHECKING:
    from torch import Tensor


def active_branch(enc: Any) -> Any | None:
    """The encoder's depth branch when it changes the coarse vectors (fusion weight < 1), else None."""
    branch = getattr(enc, "depth_branch", None) if enc is not None else None
    return branch if branch is not None and branch.active else None


def depth_dim(enc: Any) -> int:
    """Extra coarse-vector length the encoder's branch adds (0 without an active branch)."""
    branch = active_branch(enc)
    return int(branch.dim) if branch is not None else 0


def branch_record(enc: Any) -> dict[str, Any]:
    """`{"depth_branch": {...}}` for a model record of the manifest, or {} (the key stays absent)."""
    branch = active_branch(enc)
    return {} if branch is None else {KEY: dict(branch.record())}


def with_depth(enc: Any, z: Tensor, vectors: Tensor, domain: str | None = None) -> Tensor:
    """Appearance vectors (B, D) of codes z (encoded under `domain`, which a conditioned decoder needs), fused
    with the depth descriptor when the encoder has a branch."""
    branch = active_branch(enc)
    return vectors if branch is None else branch.fuse(vectors, z, domain).to(vectors.device)


def query_vectors(m: Any, enc: Any, z: Tensor, domain: str | None = None, full: bool = False) -> Tensor:
    """The coarse query vectors a LocalizationMap `m` is searched with: eq. 16 vectors of the codes z (pooled as
    the map's; `full`: on the full grid, as the map's coarse_full rows), fused with the depth descriptor exactly when
    the map's are; `domain` (the condition z was encoded under) picks the branch's query weight for it (None or an
    unlisted one: the map's weight)."""
    vectors = coarse_vectors(z, None if full else m.settings.coarse_grid)
    if branch_of((getattr(m, "manifest", None) or {}).get("models", {}).get("coarse")) is None:
        return vectors
    if active_branch(enc) is None:
        raise ValueError("the map holds fused appearance+depth vectors (seed 002): describe queries with the coarse "
                         "encoder the map was built with (Encoder.from_checkpoint loads its depth branch)")
    return active_branch(enc).fuse_query(vectors, z, domain).to(vectors.device)


def check_fusion(map_models: dict[str, Any], enc: Any, where: Path, ckpt: Path | None = None) -> None:
    """Refuse (MapError, one line) a coarse model whose depth branch does not describe images as the map did."""
    want = branch_of(map_models.get("coarse"))
    branch = active_branch(enc)
    named = f" ({ckpt})" if ckpt else ""
    if want is None and branch is None:
        return
    if want is None:
        raise map_error(where, f"map holds appearance-only coarse vectors but the coarse model{named} carries a depth "
                        f"branch (fusion weight {branch.fusion_weight:g})", "use the appearance-only model the map "
                        "was built with, or rebuild the map with this model")
    if branch is None:
        raise map_error(where, f"map holds fused appearance+depth vectors (seed 002, fusion weight "
                        f"{want.get('fusion_weight')}) but the coarse model{named} has no depth branch",
                        "load the checkpoint the map was built with (it carries the branch), or rebuild the map "
                        "with this model")
    got = branch.record()
    diff = [k for k in FIELDS if got.get(k) != want.get(k)]
    if diff:
        raise map_error(where, f"map's depth branch {dict((k, want.get(k)) for k in diff)} differs from the coarse "
                        f"model's{named} {dict((k, got.get(k)) for k in diff)}", "use the model the map was built "
                        "with, or rebuild the map with this one")
