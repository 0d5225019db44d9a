"""Is this the model the map was built with? The checks between a map and its encoders, and loading both.

Why in maps: a map's features only mean something under the exact model that made them, so the map
records each checkpoint's sha256, domains and feature shape, and every loader (the node, disam-eval,
`disam-map-info --verify`) must refuse a mismatch the same way, with one line naming the file and the fix.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from disam_ros.maps.fused import check_fusion
from disam_ros.maps.integrity import finite_problems
from disam_ros.maps.localization_map import LocalizationMap, load_contents
from disam_ros.maps.map_format import MANIFEST, MapError, check_file, map_error, read_manifest

if TYPE_CHECKING:  # typing only: importing the model package here would load torch eagerly
    from disam_ros.model.inference import EncoderLike

log = logging.getLogger(__name__)


def check_encoders(m: LocalizationMap, coarse: EncoderLike | None, fine: EncoderLike | None,
                   ckpts: tuple[Path | None, Path | None] = (None, None), allow_unverified_model: bool = False) -> None:
    """Refuse encoders the map was not built with (None: that role is not used)."""
    if coarse is not None:
        check_fusion(m.manifest["models"], coarse, m.root / MANIFEST, ckpts[0])  # seed 002 fused maps
        check_encoder(m, "coarse", coarse, ckpts[0], allow_unverified_model)
    if fine is not None:
        check_encoder(m, "fine", fine, ckpts[1], allow_unverified_model)


def check_encoder(m: LocalizationMap, role: str, enc: EncoderLike, ckpt: Path | None = None,
                   allow_unverified_model: bool = False) -> None:
    """Refuse an encoder that is not the one the map was built with: scores would be meaningless.

    A hash missing on either side (an edited manifest, a hand-built encoder) proves nothing, so it is refused
    too unless the caller explicitly accepts an unverified model (then it is logged as a warning)."""
    where = m.root / MANIFEST
    info = m.model_info(role)
    if info is None:
        raise map_error(where, f"map was built without a {role} model", f"pass {role}=None or rebuild it with --{role}")
    got = getattr(enc, "checkpoint_sha256", None) or None
    want = info.get("sha256") or None
    named = f" ({ckpt})" if ckpt else ""
    if want is None or got is None:
        problem = (f"records no sha256 for the {role} checkpoint, so the model cannot be checked" if want is None
                   else f"the {role} encoder{named} carries no checkpoint hash to check against the map")
        if not allow_unverified_model:
            raise map_error(where, problem, "rebuild the map with disam-build-map, load the model with "
                            "Encoder.from_checkpoint, or accept the risk with allow_unverified_model=True")
        log.warning("%s: %s; used unverified (allow_unverified_model=True)", where, problem)
    elif got != want:
        raise map_error(where, f"{role} checkpoint{named} has sha256 {got[:12]}..., the map was built with "
                        f"{want[:12]}... ({info.get('path')})",
                        "pass the checkpoint the map was built with, or rebuild the map with this one")
    if list(enc.domains) != list(info["domains"]):  # same hash, other domains: the manifest was edited
        raise map_error(where, f"records {role} domains {info['domains']}, the {role} encoder{named} has "
                        f"{list(enc.domains)}", "use the model the map was built with, or rebuild the map")
    if tuple(enc.content_shape) != tuple(info["content_shape"]):
        raise map_error(where, f"{role} encoder{named} makes {tuple(enc.content_shape)} features, the map holds "
                        f"{tuple(info['content_shape'])}", "use the model the map was built with")
    if m.domain not in enc.domains:
        raise map_error(where, f"reference domain {m.domain!r} is unknown to the {role} encoder{named} "
                        f"(domains {list(enc.domains)})", "use the model the map was built with")


def load_with_encoders(map_dir: str | Path, coarse_ckpt: str | Path | None = None,
                       fine_ckpt: str | Path | None = None, *, device: str = "cpu", mmap: bool = True,
                       verify: bool | None = None, allow_unverified_model: bool = False
                       ) -> tuple[LocalizationMap, Any, Any, tuple[Path | None, Path | None]]:
    """The map and its coarse / fine encoders (the checkpoints recorded in the manifest unless given), checked
    against each other: (map, coarse, fine or None, checkpoint paths). `verify`: see LocalizationMap.load.

    allow_unverified_model: accept a map or encoder without a checkpoint sha256 (then nothing proves the
    model is the one the map was built with); False refuses such maps.
    """
    from disam_ros.model import CheckpointError, Encoder  # local: map tools and tests without models stay light

    m = LocalizationMap.load(map_dir, mmap=mmap, verify=verify)
    try:
        paths: list[Path | None] = []
        for role, given in (("coarse", coarse_ckpt), ("fine", fine_ckpt)):
            info = m.model_info(role)
            path = Path(given) if given is not None else (Path(info["path"]) if info and info.get("path") else None)
            if path is None and (role == "coarse" or m.has_fine):  # else the fine re-rank would silently vanish
                raise map_error(m.root / MANIFEST, f"records no {role} checkpoint path", f"pass {role}_ckpt=")
            if path is not None and not path.is_file():
                raise map_error(path, f"{role} checkpoint not found", f"pass {role}_ckpt= with the model this map "
                                "was built with")
            paths.append(path)
        try:
            coarse = Encoder.from_checkpoint(paths[0], device=device)
            fine = Encoder.from_checkpoint(paths[1], device=device) if paths[1] is not None else None
        except CheckpointError as exc:  # already one line naming the checkpoint and the fix
            raise MapError(f"{exc} (model of the map {m.root})") from None
        ckpts = (paths[0], paths[1])
        check_encoders(m, coarse, fine, ckpts, allow_unverified_model)
    except MapError:
        m.close()
        raise
    return m, coarse, fine, ckpts


def verify_map(map_dir: str | Path, coarse_ckpt: str | Path | None = None, fine_ckpt: str | Path | None = None,
               *, allow_unverified_model: bool = False, device: str = "cpu") -> list[str]:
    """The problems the node's start-up checks (`load_with_encoders`) find in this map, with every file
    hashed now instead of in the background and every stored float scanned for NaN/inf (naming file and row):
    one line each, empty when the node would start on it.

    `disam-map-info --verify` runs exactly this, so a map it passes is a map the node loads. A shard gets the
    checks a merge runs on it."""
    map_dir = Path(map_dir)
    try:
        manifest = read_manifest(map_dir, kind=None)
    except MapError as exc:
        return [str(exc)]
    problems = []
    for name, info in manifest["files"].items():  # every file, not only the first bad one
        try:
            check_file(map_dir / name, info, hash_now=True)
        except MapError as exc:
            problems.append(str(exc))
    if problems:
        return problems
    problems = finite_problems(map_dir, manifest)  # hashes can be rewritten along with a NaN row: scan the floats
    if problems:
        return problems
    try:
        if manifest["kind"] == "shard":
            load_contents(map_dir, "shard", mmap=True, verify=False)  # just hashed: the rest of the checks
        else:
            m, *_ = load_with_encoders(map_dir, coarse_ckpt, fine_ckpt, device=device, verify=False,
                                       allow_unverified_model=allow_unverified_model)
            m.close()
    except MapError as exc:
        return [str(exc)]
    return []


__all__ = ["check_encoder", "check_encoders", "load_with_encoders", "verify_map"]
