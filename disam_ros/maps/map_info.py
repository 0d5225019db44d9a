"""`disam-map-info MAP [--verify] [--json]`: what a map holds, and (with --verify) whether the node would load it.

--verify runs the node's own start-up checks (`verify_map`: manifest fields, every file's sha256, NaN/inf in
every stored float array, arrays, the recorded models and their hashes), so it passes exactly the maps the node
accepts (a large map's background check included).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from disam_ros.cliutil import OneLineParser
from disam_ros.maps.depth_record import describe
from disam_ros.maps.descriptors import DescriptorSettings, estimate_map_size
from disam_ros.maps.geometry_store import SPARSE_IMAGE_POINTS, geometry_note, geometry_problem
from disam_ros.maps.map_format import MANIFEST, read_manifest
from disam_ros.maps.model_check import verify_map


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The facts `disam-map-info` prints, as a dict (also its --json output)."""
    if (problem := geometry_problem(manifest)) is not None:
        raise ValueError(f"{MANIFEST}: {problem}; the manifest is damaged or was edited; rebuild the map")
    n = int(manifest["count"])
    files = {k: int(v["bytes"]) for k, v in manifest.get("files", {}).items()}
    total = sum(files.values())
    per_image = {k: v / max(n, 1) for k, v in files.items()}
    desc = manifest["descriptors"]
    settings = DescriptorSettings.from_dict(desc["settings"])
    models = manifest.get("models") or {}
    ram = None
    if models.get("coarse"):  # what the localizer keeps resident; fine features stay on disk, read by row
        fine = models.get("fine")
        ram = estimate_map_size(n, tuple(models["coarse"]["content_shape"]),
                                tuple(fine["content_shape"]) if fine else None, settings).ram
    return {
        "kind": manifest.get("kind"),
        "images": n,
        "frame_id": manifest.get("frame_id"),
        "reference_domain": manifest.get("reference_domain"),
        "created": manifest.get("created"),
        "software": manifest.get("software"),  # what built it: compare with `--version` when a map misbehaves
        "settings": DescriptorSettings.from_dict(desc["settings"]).to_dict(),  # defaults filled in
        "coarse_shape": desc["coarse_shape"],
        "coarse_dim": desc["coarse_dim"],
        "fine_shape": desc.get("fine_shape"),
        "models": manifest.get("models"),
        "stats": manifest.get("stats"),
        "bytes_total": total,
        "bytes_per_image": total / max(n, 1),
        "files": files,
        "bytes_per_image_by_file": per_image,
        "ram_estimate_bytes": ram,
        "shard": manifest.get("shard"),
        "build": manifest.get("build"),
        "poses_source": manifest.get("poses_source", "given"),
        "chunk_hashes": any("chunks" in v for v in manifest.get("files", {}).values()),
        "geometry": manifest.get("geometry"),
        "geometry_note": geometry_note(manifest),
    }


def render(info: dict[str, Any], root: Path) -> str:
    s = info["settings"]
    lines = [
        f"map            {root}  ({info['kind']}{', shard ' + str(info['shard']) if info.get('shard') else ''})",
        f"images         {info['images']}",
        f"frame_id       {info['frame_id']}",
        f"domain         {info['reference_domain']}",
        f"created        {info['created']}" + (f" by {info['software']}" if info.get("software") else ""),
        f"mode           {s['mode']}: coarse grid {s['coarse_grid'] or 'full'}, pca {s['pca_dim'] or 'none'}, "
        f"{s['coarse_dtype']}, index {s['index']}; fine grid {s['fine_grid'] or 'full'}, {s['fine_dtype']}"
        + (f"; best {s['coarse_refine']} re-scored on full-grid rows" if s.get("coarse_refine") else ""),
        f"coarse         {info['coarse_shape']} -> {info['coarse_dim']} dims{describe(info['models'])}",
        f"fine           {info['fine_shape'] if info['fine_shape'] else 'none (coarse-only map)'}",
    ]
    for role in ("coarse", "fine"):
        m = (info["models"] or {}).get(role)
        if m:
            lines.append(f"{role + ' model':<15}{m.get('path')}  sha256 {str(m.get('sha256'))[:16]}...  "
                         f"domains {m.get('domains')}")
    st = info.get("stats") or {}
    if st:
        lo, hi = st.get("extent_min", [0] * 3), st.get("extent_max", [0] * 3)
        lines.append("extent         " + "  ".join(f"{a}: {x:.2f}..{y:.2f} m" for a, x, y in zip("xyz", lo, hi)))
        lines.append(f"spacing        {st.get('spacing_m', 0):.3f} m, {st.get('spacing_deg', 0):.2f} deg (median)")
    if info["poses_source"] == "index":
        lines.append("poses          index: no poses.txt, image i of the sorted names sits at (i, 0, 0) m, identity "
                     "rotation (positions are ranks, not metres)")
    else:
        lines.append(f"poses          {info['poses_source']}")
    g = info.get("geometry")
    lines.append(f"geometry       {g['method']}: {g.get('detected', g['keypoints'])} SIFT keypoints, "
                 f"{g.get('with_point', '?')} with a 3D point ({g['intrinsics']['width']}x{g['intrinsics']['height']} "
                 "px)" if g else
                 f"geometry       none: {info.get('geometry_note')} (retrieval-only)")
    if g and g["method"] == "triangulate":
        lines.append(f"               triangulated with {g.get('partners', '?')} pose partners, "
                     + (f"matched within {g['epipolar_px']:.3g} px of their epipolar lines" if g.get("epipolar_px")
                        else "matched plainly (maps built before 2026-11-26)")
                     + (f" (the poses' own noise ~{g['pose_noise_px']:.2g} px)" if g.get("pose_noise_px") else "")
                     + (f"; {g['widened']} images took farther partners (too little parallax)" if g.get("widened")
                        else ""))
    if g and (lg := g.get("learned")):
        found, points = lg.get("detected", lg["keypoints"]), lg.get("with_point", lg["keypoints"])
        lines.append(f"learned        {found} learned keypoints, {points} with a 3D point "
                     f"({points / max(found, 1):.0%}); verify_features {lg['verify_features']}, network sha256 "
                     f"{lg['sha256'][:16]}...")
    if g and g.get("sparse_images"):
        lines.append(f"               {g['sparse_images']} map images with fewer than {SPARSE_IMAGE_POINTS} 3D points "
                     "(frames answered there are not verified)")
    lines.append(f"on disk        {_size(info['bytes_total'])} total, {_size(info['bytes_per_image'])} per image")
    if info.get("ram_estimate_bytes"):
        ram = info["ram_estimate_bytes"]
        lines.append(f"RAM (search)   ~{_size(ram)} total, ~{_size(ram / max(info['images'], 1))} per image (estimate: "
                     "coarse search, names, poses; fine features and full-grid rows are read from disk)")
    width = max((len(name) for name in info["files"]), default=0) + 2  # sizes in one column under each other
    for name, b in sorted(info["files"].items()):
        lines.append(f"  {name:<{width}}{_size(b):>10}  {_size(info['bytes_per_image_by_file'][name]):>10}/image")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="disam-map-info", description=__doc__.splitlines()[0])
    p.add_argument("map", type=Path)
    p.add_argument("--verify", action="store_true",
                   help="run the localizer's start-up checks with every file hashed; exit 2 on the first problem")
    p.add_argument("--coarse", type=Path, help="with --verify: coarse checkpoint to check (default: the recorded one)")
    p.add_argument("--fine", type=Path, help="with --verify: fine checkpoint to check (default: the recorded one)")
    p.add_argument("--allow-unverified-model", action="store_true",
                   help="with --verify: accept a map without model checkpoint hashes, as the node's "
                        "allow_unverified_model parameter does")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = p.parse_args(argv)
    try:
        info = summary(read_manifest(args.map, kind=None))
    except ValueError as exc:  # MapError: one line naming the file and the fix
        print(f"disam-map-info: error: {exc}", file=sys.stderr)
        return 2
    if args.verify:
        problems = verify_map(args.map, args.coarse, args.fine, allow_unverified_model=args.allow_unverified_model)
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            print(f"disam-map-info: error: {problems[0]}{more}", file=sys.stderr)
            return 2
        info["verified"] = True
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(render(info, args.map))
        if args.verify:
            print(f"verified       all {len(info['files'])} files match {MANIFEST} checksums, every stored float "
                  "is finite; the models and arrays pass the localizer's start-up checks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
