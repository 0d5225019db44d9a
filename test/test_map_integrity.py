"""Map integrity is always enforced: `disam-map-info --verify` agrees with what the node loads on every manifest
edit, corrupt manifests are one line (never a traceback), missing model hashes are refused unless allowed, and
large files are verified chunk by chunk in the background after a fast start."""
from __future__ import annotations

import copy
import json
import logging
import shutil

import numpy as np
import pytest
import torch

from disam_ros.bench.table_encoder import TableEncoder, token_frames
from disam_ros.maps import LocalizationMap, MapError, build_map, settings_for_mode
from disam_ros.maps import map_info as map_info_cli
from disam_ros.maps.map_format import AUTO_VERIFY_BYTES, CHUNK_BYTES
from disam_ros.maps.model_check import verify_map
from disam_ros.model import DisamNet, Encoder, ModelConfig, save_checkpoint
from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
from disam_ros.retrieval import Localizer, SearchConfig

DOMAINS = ("sunny", "night")
CPU = SearchConfig(device="cpu")


@pytest.fixture(scope="module")
def small_map(tmp_path_factory):
    """6 images encoded by random coarse + fine models (real checkpoints, the smallest the config allows: the
    fuzz test loads them ~400 times), with site and dataset fields."""
    root = tmp_path_factory.mktemp("integrity")
    ckpts = []
    for role, seed in (("coarse", 0), ("fine", 1)):
        torch.manual_seed(seed)
        cfg = ModelConfig(domains=DOMAINS, image_size=16, ngf=4, n_blocks=1, ndf=4, disc_layers=1)
        ckpts.append(save_checkpoint(root / f"{role}.pt", DisamNet(cfg), cfg))
    coarse, fine = (Encoder.from_checkpoint(p, device="cpu") for p in ckpts)
    rng = np.random.default_rng(0)
    frames = [(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), float(i), np.array([2.0 * i, 0.0, 0.0]),
               np.array([0.0, 0.0, 0.0, 1.0]), f"{i:06d}.png") for i in range(6)]
    out = build_map(frames, coarse, fine, root / "map", "sunny", settings_for_mode("pooled"), progress=False,
                    checkpoint_paths=tuple(ckpts), source="test", site={"latitude": 47.4, "longitude": 8.5},
                    dataset={"root": str(root), "condition": "sunny"})
    return {"map": out, "ckpts": ckpts, "manifest": json.loads((out / "manifest.json").read_text())}


def node_load(map_dir) -> str | None:
    """What the node runs at start-up; None when it would start. Anything but a MapError propagates."""
    try:
        reloc = Relocalizer.from_map(map_dir, RelocalizerConfig(search=CPU))
    except MapError as exc:
        return str(exc)
    reloc.map.close()
    return None


def map_info_verify(map_dir, capsys) -> str | None:
    rc = map_info_cli.main([str(map_dir), "--verify"])
    captured = capsys.readouterr()
    assert rc in (0, 2), rc
    return None if rc == 0 else captured.err.strip()


def _paths(obj, prefix=()):
    """Every key path in the manifest, containers included, and the first element of each list (the others
    are alike, and each accepted edit costs four model loads)."""
    if prefix:
        yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj[:1]) if isinstance(obj, list) else ()
    for k, v in items:
        yield from _paths(v, (*prefix, k))


def _mutated(manifest, path, value):
    out = copy.deepcopy(manifest)
    node = out
    for k in path[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


_DELETE = object()
VALUES = (_DELETE, None, "", -1, 0, 10**30, 1.5, True, [])


def manifest_mutations(manifest):
    """(label, bytes of manifest.json): every field deleted / nulled / mistyped / negative / huge / empty, and
    whole-file damage: truncation, random bytes, not UTF-8, not JSON, JSON of the wrong type."""
    for path in _paths(manifest):
        for value in VALUES:
            label = f"{'.'.join(map(str, path))} = {'<deleted>' if value is _DELETE else repr(value)}"
            yield label, json.dumps(_mutated(manifest, path, value)).encode()
    text = json.dumps(manifest, indent=2).encode()
    for cut in (0, 1, 10, len(text) // 2, len(text) - 2):
        yield f"truncated to {cut} bytes", text[:cut]
    rng = np.random.default_rng(7)
    for i in range(5):
        yield f"random bytes {i}", rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    yield "not UTF-8", b"\xff\xfe" + text[2:]
    yield "latin-1 inside a string", text.replace(b'"sunny"', b'"sunn\xe9"', 1)
    for junk in (b"not json", b"[]", b"null", b"5", b'"map"', b"{}", b"[" * 100000, b"\x00" * 64):
        yield f"manifest {junk[:12]!r}", junk
    yield "NaN count", text.replace(b'"count": 6', b'"count": NaN', 1)


def test_verify_agrees_with_the_node_on_every_manifest_edit(small_map, tmp_path, capsys):
    d = tmp_path / "map"
    shutil.copytree(small_map["map"], d)
    assert node_load(d) is None and map_info_verify(d, capsys) is None  # the intact map passes both
    disagree, multiline, refused = [], [], 0
    for label, data in manifest_mutations(small_map["manifest"]):
        (d / "manifest.json").write_bytes(data)
        node, info = node_load(d), map_info_verify(d, capsys)
        rc, err = map_info_cli.main([str(d), "--json"]), capsys.readouterr().err.strip()  # no --verify: fields only
        if rc != (0 if info is None else rc) or (rc == 2 and (not err or "\n" in err)):
            multiline.append(f"{label}: plain disam-map-info exit {rc}: {err!r}")
        if (node is None) != (info is None):
            disagree.append(f"{label}: node {'loads' if node is None else 'refuses: ' + node}, --verify "
                            f"{'passes' if info is None else 'fails: ' + info}")
        for msg in (node, info):
            if msg is not None and ("\n" in msg or str(d) not in msg and ".pt" not in msg):  # names the file
                multiline.append(f"{label}: {msg!r}")
        refused += node is not None
    assert not disagree, f"{len(disagree)} disagreements:\n" + "\n".join(disagree[:20])
    assert not multiline, "\n".join(multiline[:20])
    assert refused > 400  # most edits break the map; the rest touch free-form fields (created, source, ...)


@pytest.mark.parametrize("label, path, value", [
    ("empty coarse hash", ("models", "coarse", "sha256"), ""),
    ("null fine hash", ("models", "fine", "sha256"), None),
    ("missing coarse hash", ("models", "coarse", "sha256"), _DELETE),
    ("one more image than stored", ("count",), 7),
    ("unlisted fine features", ("files", "fine.npy"), _DELETE),
    ("fine model dropped", ("models", "fine", "path"), None),
    ("domains edited", ("models", "coarse", "domains"), ["sunny"]),
    ("version true", ("version",), True),
    ("stats of the wrong type", ("stats", "spacing_m"), "far"),
    ("a file outside the map", ("files", "../../etc/passwd"), {"bytes": 0, "sha256": "0" * 64}),
])
def test_known_bad_edits_are_refused_by_both(small_map, tmp_path, capsys, label, path, value):
    """Edits the node refused while --verify passed them, and a missing hash the node accepted."""
    d = tmp_path / "map"
    shutil.copytree(small_map["map"], d)
    (d / "manifest.json").write_text(json.dumps(_mutated(small_map["manifest"], path, value)))
    node, info = node_load(d), map_info_verify(d, capsys)
    assert node is not None and info is not None, label
    assert "\n" not in node and str(d) in node


def test_missing_model_hash_allowed_only_explicitly(small_map, tmp_path, caplog):
    d = tmp_path / "map"
    shutil.copytree(small_map["map"], d)
    man = _mutated(small_map["manifest"], ("models", "coarse", "sha256"), "")
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(MapError, match="records no sha256 for the coarse checkpoint.*allow_unverified_model"):
        Localizer.from_map_dir(d, config=CPU)
    with caplog.at_level(logging.WARNING, logger="disam_ros.retrieval.search"):
        loc = Localizer.from_map_dir(d, config=CPU, allow_unverified_model=True)
    assert any("used unverified" in r.getMessage() for r in caplog.records)
    assert loc.map.manifest["models"]["coarse"]["sha256"] == ""
    assert verify_map(d) and verify_map(d, allow_unverified_model=True) == []
    assert map_info_cli.main([str(d), "--verify", "--allow-unverified-model"]) == 0


def test_verify_lists_every_bad_file(small_map, tmp_path):
    d = tmp_path / "map"
    shutil.copytree(small_map["map"], d)
    for name in ("names.txt", "fine.npy"):
        data = bytearray((d / name).read_bytes())
        data[-2] ^= 0x01
        (d / name).write_bytes(bytes(data))
    problems = verify_map(d)
    assert len(problems) == 2 and all("checksum" in p for p in problems)
    assert {p.split(":")[0].rsplit("/", 1)[1] for p in problems} == {"names.txt", "fine.npy"}


@pytest.fixture(scope="module")
def large_map(tmp_path_factory):
    """A map whose coarse.npy is just over the size hashed at start (so it is checked in the background)."""
    n, shape = 1040, (16, 32, 32)  # 1040 x 16384 float32 = 68 MB
    assert n * int(np.prod(shape)) * 4 > AUTO_VERIFY_BYTES
    feats = np.random.default_rng(3).standard_normal((n, *shape)).astype(np.float32)
    enc = TableEncoder(feats)
    out = build_map(token_frames(n), enc, None, tmp_path_factory.mktemp("large") / "map", "ref",
                    batch_size=260, progress=False)
    return {"map": out, "enc": enc, "feats": feats}


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_large_map_chunks_recorded_and_intact_map_verifies(large_map):
    man = json.loads((large_map["map"] / "manifest.json").read_text())
    info = man["files"]["coarse.npy"]
    assert man["integrity"]["chunk_bytes"] == CHUNK_BYTES
    assert len(info["chunks"]) == -(-info["bytes"] // CHUNK_BYTES) >= 3
    m = LocalizationMap.load(large_map["map"])
    assert m.verification.wait(60) and m.verification.state == "ok" and m.integrity_problem is None
    assert m.verification.bytes_checked >= info["bytes"]


def test_corrupt_chunk_found_in_background_and_no_pose(large_map, tmp_path, capsys):
    d = tmp_path / "map"
    shutil.copytree(large_map["map"], d)
    offset = CHUNK_BYTES + 12345  # inside chunk 1: past what any header check or start-up read looks at
    _flip(d / "coarse.npy", offset)
    m = LocalizationMap.load(d)  # starts: sizes are right, the file is too large to hash before returning
    loc = Localizer(m, large_map["enc"], None, CPU)
    assert m.verification.wait(60) and m.verification.state == "failed"
    problem = m.integrity_problem
    assert "\n" not in problem and "coarse.npy" in problem and "chunk 1 " in problem
    res = loc.localize(TableEncoder.image_for(5), "query")
    assert not res.ok and res.index == -1 and np.isnan(res.position).all() and res.topk == []
    assert "integrity" in res.reason and "coarse.npy" in res.reason
    assert map_info_verify(d, capsys) is not None  # --verify hashes everything before answering


def test_map_without_chunk_hashes_still_verified_with_a_warning(large_map, tmp_path, caplog):
    d = tmp_path / "map"
    shutil.copytree(large_map["map"], d)
    man = json.loads((d / "manifest.json").read_text())
    for info in man["files"].values():
        info.pop("chunks", None)
    man.pop("integrity")
    (d / "manifest.json").write_text(json.dumps(man))
    with caplog.at_level(logging.WARNING, logger="disam_ros.maps.localization_map"):
        m = LocalizationMap.load(d)
    assert m.verification.wait(60) and m.verification.state == "ok"
    assert any("before per-chunk hashes" in r.getMessage() and "coarse.npy" in r.getMessage()
               for r in caplog.records)
    _flip(d / "coarse.npy", 3 * (1 << 20))
    m = LocalizationMap.load(d)
    assert m.verification.wait(60) and m.verification.state == "failed" and "checksum" in m.integrity_problem


@pytest.mark.parametrize("verify", [None, False])
def test_damaged_files_are_one_line_map_errors(small_map, tmp_path, verify):
    """Every file truncated, emptied, replaced by random bytes of the same size or by a folder: loading refuses
    with a MapError naming the file (verify=False skips the hashes, so the parsers themselves must hold)."""
    rng = np.random.default_rng(11)
    names = sorted(small_map["manifest"]["files"])
    for name in names:
        for damage in ("empty", "half", "random", "folder"):
            d = tmp_path / f"{name}-{damage}-{verify}"
            shutil.copytree(small_map["map"], d)
            size = (d / name).stat().st_size
            if damage == "folder":
                (d / name).unlink()
                (d / name).mkdir()
            else:
                data = {"empty": b"", "half": (d / name).read_bytes()[: size // 2],
                        "random": rng.integers(0, 256, size, dtype=np.uint8).tobytes()}[damage]
                (d / name).write_bytes(data)
            try:
                loc = Localizer.from_map_dir(d, config=CPU, verify=verify)
            except MapError as exc:
                msg = str(exc)
                assert "\n" not in msg and name in msg, (name, damage, msg)
                continue
            loc.map.close()  # only a same-size payload change without hashing can load
            assert damage == "random" and verify is False and name in ("coarse.npy", "fine.npy"), (name, damage)
