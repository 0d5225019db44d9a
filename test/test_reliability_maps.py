"""Reliability of map files (issue items 1, 5, 7b, 8), each on a hostile file the test builds itself:

1. --overwrite / --force replace only what disam_ros made (`.disam-made`, or a map from before markers whose
   manifest parses as ours): a web project's folder with a `manifest.json` is never deleted; 1b: only what the
   same tool made as that kind of output and that holds nothing else (a copied map beside a thesis.tex); 1c:
   never the --dataset folder, nor one containing it or inside it;
5. NaN/inf in stored descriptors with hashes rewritten to match is refused at build, --verify and load, and
   found by the background check on a large map;
7b. `disam-build-map --max-gap` must be a finite number >= 0;
8. the background check's progress is visible (`verification_state()`).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import threading

import cv2
import numpy as np
import pytest
import torch

from disam_ros.bench.table_encoder import TableEncoder, token_frames
from disam_ros.data.bags import bag_to_folder, write_folder_bag
from disam_ros.data.bags.common import BagError
from disam_ros.data.bags.write import staging_dir
from disam_ros.data.synthetic import WorldConfig, make_world
from disam_ros.fsutil import MARKER, replace_refusal
from disam_ros.maps import (
    LocalizationMap,
    MapBuildConfig,
    MapError,
    build_map,
    build_map_from_bag,
    integrity,
    settings_for_mode,
)
from disam_ros.maps import map_info as map_info_cli
from disam_ros.maps.build_map import main as build_map_main
from disam_ros.maps.map_format import AUTO_VERIFY_BYTES, CHUNK_BYTES, MapStage
from disam_ros.maps.model_check import verify_map
from disam_ros.model import DisamNet, Encoder, ModelConfig, save_checkpoint
from disam_ros.relocalizer import Relocalizer, RelocalizerConfig
from disam_ros.retrieval import Localizer, SearchConfig

CPU = SearchConfig(device="cpu")
WEB = {"manifest.json": '{"name": "shop", "version": "2.1.0", "start_url": "/", "display": "standalone"}\n',
       "index.html": "<!doctype html><title>shop</title>\n", "app.js": "console.log('years of work')\n"}


def refusal(path) -> str:
    """The one line every tool prints for a folder it did not make (written out here, not taken from the code)."""
    return f"{path} exists and was not made by disam_ros (no .disam-made): choose another --out or remove it yourself"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny real checkpoints, a flat dataset of 6 images for the CLI, and two maps (exact, pca) to damage."""
    root = tmp_path_factory.mktemp("reliability")
    ckpts = []
    for role, seed in (("coarse", 0), ("fine", 1)):
        torch.manual_seed(seed)
        cfg = ModelConfig(domains=("sunny", "night"), image_size=16, ngf=4, n_blocks=1, ndf=4, disc_layers=1)
        ckpts.append(save_checkpoint(root / f"{role}.pt", DisamNet(cfg), cfg))
    rng = np.random.default_rng(0)
    (root / "data" / "sunny").mkdir(parents=True)
    images = [cv2.resize(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), (24, 24)) for _ in range(12)]
    for i, img in enumerate(images[:6]):
        assert cv2.imwrite(str(root / "data" / "sunny" / f"{i:03d}.png"), img)
    coarse, fine = (Encoder.from_checkpoint(p, device="cpu") for p in ckpts)
    frames = [(img, float(i), np.array([2.0 * i, 0.0, 0.0]), np.array([0.0, 0.0, 0.0, 1.0]), f"{i:06d}.png")
              for i, img in enumerate(images)]
    pca = {"exact": {}, "pca": {"pca_dim": 4}}
    maps = {mode: build_map(frames, coarse, fine, root / mode, "sunny", settings_for_mode(mode, **pca[mode]),
                            progress=False, checkpoint_paths=tuple(ckpts)) for mode in ("exact", "pca")}
    return {"root": root, "ckpts": ckpts, "data": root / "data", **maps}


def build_cli(world, out, *extra) -> int:
    return build_map_main(["--dataset", str(world["data"]), "--condition", "sunny", "--coarse", str(world["ckpts"][0]),
                           "--out", str(out), "--quiet", "--device", "cpu", *extra])


def listing(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ------------------------------------------------------------------ 1. replace only what disam_ros made


def test_overwrite_never_deletes_a_folder_with_a_foreign_manifest_json(world, tmp_path, capsys):
    web = tmp_path / "site"
    web.mkdir()
    for name, text in WEB.items():
        (web / name).write_text(text)
    before = listing(web)
    assert build_cli(world, web, "--overwrite") == 2
    err = capsys.readouterr().err.strip()
    assert err == f"disam-build-map: error: {refusal(web)}"
    assert listing(web) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # nothing staged beside it either


def test_new_maps_carry_the_marker_and_still_verify(world, tmp_path, capsys):
    out = tmp_path / "map"
    assert build_cli(world, out) == 0
    assert (out / MARKER).read_text() == "disam-build-map\n"
    man = json.loads((out / "manifest.json").read_text())
    assert MARKER not in man["files"]  # not part of the map: hashing and --verify allow it unlisted
    assert map_info_cli.main([str(out), "--verify"]) == 0
    assert len(LocalizationMap.load(out)) == 6


def test_overwrite_replaces_our_maps_new_and_from_before_markers(world, tmp_path, capsys):
    out = tmp_path / "map"
    assert build_cli(world, out) == 0
    capsys.readouterr()
    assert build_cli(world, out) == 2  # ours, but no --overwrite
    err = capsys.readouterr().err.strip()
    assert str(out) in err and "already exists" in err and "--overwrite" in err and "\n" not in err
    assert build_cli(world, out, "--overwrite") == 0
    (out / MARKER).unlink()  # a map written before markers: its manifest parses as a map manifest
    assert build_cli(world, out, "--overwrite") == 0 and (out / MARKER).is_file()


def test_overwrite_refuses_a_map_like_folder_whose_manifest_is_not_ours(world, tmp_path, capsys):
    out = tmp_path / "map"
    shutil.copytree(world["exact"], out)
    (out / MARKER).unlink(missing_ok=True)
    man = json.loads((out / "manifest.json").read_text())
    man["version"] = 99  # looks like ours, does not parse as ours: refused like any other folder
    (out / "manifest.json").write_text(json.dumps(man))
    before = listing(out)
    assert build_cli(world, out, "--overwrite") == 2
    assert capsys.readouterr().err.strip() == f"disam-build-map: error: {refusal(out)}"
    assert listing(out) == before


def test_every_tool_refuses_a_foreign_folder_with_the_same_line(tmp_path):
    web = tmp_path / "site"
    web.mkdir()
    (web / "manifest.json").write_text(WEB["manifest.json"])
    with pytest.raises(MapError) as map_exc:
        MapStage(web, overwrite=True)
    with pytest.raises(BagError) as bag_exc:
        staging_dir(web, overwrite=True, made_by="disam-bag to-folder")
    with pytest.raises(FileExistsError) as synth_exc:
        make_world(WorldConfig(image_size=16, frames=2, conditions=("sunny",)), web, progress=False, force=True)
    assert str(map_exc.value) == str(synth_exc.value) == refusal(web.absolute())
    assert str(bag_exc.value) == refusal(web).replace("--out", "output path")
    assert listing(web) == {"manifest.json": WEB["manifest.json"].encode()}
    link = tmp_path / "link"
    link.symlink_to(web)
    assert replace_refusal(link, replace=True) == refusal(link)  # never through a link, whatever it points at
    (tmp_path / "empty").mkdir()
    assert replace_refusal(tmp_path / "empty", replace=False) is None
    assert replace_refusal(tmp_path / "absent", replace=False) is None


def tree(folder) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes): what a refused --overwrite must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth_world(tmp_path_factory):
    """A world made by disam-synth (its marker, two conditions with images, poses and camera.yaml)."""
    root = tmp_path_factory.mktemp("synth") / "W"
    return make_world(WorldConfig(image_size=16, frames=3, conditions=("sunny", "night"), workers=1), root,
                      progress=False)


def test_overwrite_refuses_a_copied_map_that_holds_a_users_file(world, tmp_path, capsys):
    """1b: a map copied into a user's folder carries its manifest and marker; the thesis beside it must stay."""
    thesis = tmp_path / "thesis"
    shutil.copytree(world["exact"], thesis)
    assert (thesis / MARKER).read_text() == "disam-build-map\n" and (thesis / "manifest.json").is_file()
    (thesis / "thesis.tex").write_text("\\chapter{Results}  % three years of work\n")
    before = tree(thesis)
    assert build_cli(world, thesis, "--overwrite") == 2
    assert capsys.readouterr().err.strip() == (
        f"disam-build-map: error: {thesis} holds 'thesis.tex', which disam-build-map does not write there: it is "
        "replaced only when it holds nothing else; move 'thesis.tex' out or choose another --out")
    assert tree(thesis) == before
    (thesis / MARKER).unlink()  # a map from before markers with the same extra file: refused alike
    assert build_cli(world, thesis, "--overwrite") == 2 and "holds 'thesis.tex'" in capsys.readouterr().err
    (thesis / "thesis.tex").unlink()  # the map alone is the tool's own output: replaced
    assert build_cli(world, thesis, "--overwrite") == 0 and sorted(p.name for p in thesis.iterdir()) == [
        MARKER, "coarse.npy", "manifest.json", "names.txt", "poses.txt"]


def test_build_map_never_overwrites_its_dataset(synth_world, world, tmp_path, capsys):
    """1c: `--dataset W --out W --overwrite` replaced a whole synthetic dataset with the map."""
    w = synth_world
    before = tree(w)
    for out, where in ((w, "is"), (w / "sunny", "is inside"), (w / "maps" / "m", "is inside"),
                       (w.parent, "contains")):
        argv = ["--dataset", str(w), "--condition", "sunny", "--coarse", str(world["ckpts"][0]), "--out", str(out),
                "--quiet", "--device", "cpu", "--overwrite"]
        assert build_map_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"disam-build-map: error: --out {out} {where} the --dataset folder {w}: choose an --out "
                       "outside it")
    assert tree(w) == before and not (w / "maps").exists()


def test_build_map_refuses_another_tools_marked_output(synth_world, world, tmp_path, capsys):
    """A dataset made by disam-synth is no map: its marker names another tool (here not the build's input)."""
    other = tmp_path / "W2"
    shutil.copytree(synth_world, other)
    before = tree(other)
    assert build_cli(world, other, "--overwrite") == 2
    assert capsys.readouterr().err.strip() == (
        f"disam-build-map: error: {other} was made by disam-synth (its .disam-made), not by disam-build-map: "
        "choose another --out")
    assert tree(other) == before


def test_synth_force_keeps_a_world_that_holds_a_map(synth_world, world, tmp_path):
    """disam-synth --force: the same rule; a map kept inside a world is not the world's."""
    w = tmp_path / "W"
    shutil.copytree(synth_world, w)
    shutil.copytree(world["exact"], w / "my_map")
    before = tree(w)
    with pytest.raises(FileExistsError) as exc:
        make_world(WorldConfig(image_size=16, frames=2, conditions=("sunny",), workers=1), w, progress=False,
                   force=True)
    assert str(exc.value) == (f"{w.absolute()} holds 'my_map', which disam-synth does not write there: it is "
                              "replaced only when it holds nothing else; move 'my_map' out or choose another --out")
    assert tree(w) == before
    shutil.rmtree(w / "my_map")
    make_world(WorldConfig(image_size=16, frames=2, conditions=("sunny",), workers=1), w, progress=False, force=True)
    assert sorted(p.name for p in w.iterdir()) == [MARKER, "contact_sheet.png", "sunny", "world.yaml"]


def test_bag_to_folder_overwrite_keeps_a_condition_folder_with_notes(synth_world, tmp_path):
    """disam-bag to-folder --overwrite: the same rule on OUT_ROOT/<condition>."""
    bag = tmp_path / "drive"
    write_folder_bag(synth_world, "sunny", bag)
    out = tmp_path / "data"
    bag_to_folder(bag, out, "sunny")
    (out / "sunny" / "notes.txt").write_text("lens cleaned at 14:02\n")
    before = tree(out / "sunny")
    with pytest.raises(BagError) as exc:
        bag_to_folder(bag, out, "sunny", overwrite=True)
    assert str(exc.value) == (f"{out / 'sunny'} holds 'notes.txt', which disam-bag to-folder does not write there: "
                              "it is replaced only when it holds nothing else; move 'notes.txt' out or choose "
                              "another output path")
    assert tree(out / "sunny") == before
    (out / "sunny" / "notes.txt").unlink()
    assert bag_to_folder(bag, out, "sunny", overwrite=True).frames == 3


# ------------------------------------------------------------------ 5. NaN/inf in stored descriptors


def rehash(map_dir, name) -> None:
    """What an attacker or a buggy tool does after editing a file: make the manifest agree with it again."""
    man = json.loads((map_dir / "manifest.json").read_text())
    data = (map_dir / name).read_bytes()
    info = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if "chunks" in man["files"][name]:
        step = man["integrity"]["chunk_bytes"]
        info["chunks"] = [hashlib.sha256(data[i:i + step]).hexdigest() for i in range(0, len(data), step)]
    man["files"][name] = info
    (map_dir / "manifest.json").write_text(json.dumps(man, indent=2))


def poison_npy(map_dir, name, rows, value) -> None:
    arr = np.load(map_dir / name, mmap_mode="r+")
    arr[list(rows)] = value
    arr.flush()
    del arr
    rehash(map_dir, name)


@pytest.mark.parametrize("mode, name, row, value", [
    ("exact", "coarse.npy", 4, np.nan), ("exact", "fine.npy", 7, np.inf), ("pca", "coarse.npy", 0, -np.inf),
])
def test_nonfinite_rows_with_matching_hashes_are_refused_everywhere(world, tmp_path, capsys, mode, name, row, value):
    d = tmp_path / "map"
    shutil.copytree(world[mode], d)
    poison_npy(d, name, [row, 9], value)
    problems = verify_map(d)
    assert len(problems) == 1 and f"{d / name}: row {row} holds NaN/inf" in problems[0], problems
    assert map_info_cli.main([str(d), "--verify"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{name}: row {row} holds NaN/inf" in err
    with pytest.raises(MapError, match=rf"{name}: row {row} holds NaN/inf.*rebuild the map"):
        LocalizationMap.load(d)
    with pytest.raises(MapError, match=f"{name}: row {row}"):
        Relocalizer.from_map(d, RelocalizerConfig(search=CPU))  # what the node runs at start-up


def test_nonfinite_pca_is_refused_at_load_and_verify(world, tmp_path):
    d = tmp_path / "map"
    shutil.copytree(world["pca"], d)
    with np.load(d / "pca.npz") as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["components"][2, 5] = np.nan
    with open(d / "pca.npz", "wb") as f:
        np.savez(f, **arrays)
    rehash(d, "pca.npz")
    with pytest.raises(MapError, match=r"pca\.npz: components row 2 holds NaN/inf.*rebuild the map"):
        LocalizationMap.load(d)
    problems = verify_map(d)
    assert len(problems) == 1 and "pca.npz: components row 2" in problems[0]


@pytest.mark.parametrize("role", ["coarse", "fine"])
def test_build_refuses_nonfinite_features_naming_the_image(tmp_path, role):
    feats = np.random.default_rng(1).standard_normal((10, 4, 3, 3)).astype(np.float32)
    bad = feats.copy()
    bad[6, 1, 2, 0] = np.nan
    coarse = TableEncoder(bad if role == "coarse" else feats)
    fine = TableEncoder(bad if role == "fine" else feats)
    with pytest.raises(ValueError, match=rf"map image img00006 \(frame 6\): the {role} model gives NaN/inf"):
        build_map(token_frames(10), coarse, fine, tmp_path / "map", "ref", batch_size=4, progress=False)
    assert list(tmp_path.iterdir()) == []  # no map, no staging folder


@pytest.fixture(scope="module")
def large_map(tmp_path_factory):
    """coarse.npy over AUTO_VERIFY_BYTES: hashed and scanned in the background, chunk by chunk."""
    n, shape = 1040, (16, 32, 32)
    feats = np.random.default_rng(3).standard_normal((n, *shape)).astype(np.float32)
    enc = TableEncoder(feats)
    out = build_map(token_frames(n), enc, None, tmp_path_factory.mktemp("large") / "map", "ref",
                    batch_size=260, progress=False)
    assert (out / "coarse.npy").stat().st_size > AUTO_VERIFY_BYTES
    return {"map": out, "enc": enc, "row_bytes": int(np.prod(shape)) * 4}


def test_nonfinite_row_in_a_large_map_fails_the_background_check(large_map, tmp_path):
    d = tmp_path / "map"
    shutil.copytree(large_map["map"], d)
    row = (CHUNK_BYTES + 5 * large_map["row_bytes"]) // large_map["row_bytes"]  # well inside chunk 1
    poison_npy(d, "coarse.npy", [row], np.nan)
    m = LocalizationMap.load(d)  # starts: the file is too large to scan before returning
    loc = Localizer(m, large_map["enc"], None, CPU)
    assert m.verification.wait(60) and m.verification.state == "failed"
    assert f"coarse.npy: row {row} holds NaN/inf" in m.integrity_problem
    state = m.verification_state()
    assert state.startswith("failed: ") and f"coarse.npy: row {row} holds NaN/inf" in state and "rebuild" in state
    res = loc.localize(TableEncoder.image_for(5), "query")
    assert not res.ok and "integrity" in res.reason and "coarse.npy" in res.reason
    assert any(f"row {row}" in p for p in verify_map(d))


# ------------------------------------------------------------------ 8. the background check, visible


def test_verification_state_shows_progress(large_map, monkeypatch):
    gate, reached = threading.Event(), threading.Event()
    scan = integrity._chunk_rows_problem

    def held(*args):
        reached.set()
        assert gate.wait(30)
        return scan(*args)

    monkeypatch.setattr(integrity, "_chunk_rows_problem", held)
    m = LocalizationMap.load(large_map["map"])
    chunks = -(-(large_map["map"] / "coarse.npy").stat().st_size // CHUNK_BYTES)
    assert reached.wait(30)
    assert m.verification_state() == f"verifying 0/{chunks} chunks"
    gate.set()
    assert m.verification.wait(60) and m.verification_state() == "verified"
    assert LocalizationMap.load(large_map["map"], verify=False).verification_state().startswith("unverified")


# ------------------------------------------------------------------ 7b. --max-gap


@pytest.mark.parametrize("value", ["nan", "inf", "-0.5", "-inf"])
def test_max_gap_must_be_finite_and_not_negative(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exc:
        build_map_main(["--bag", str(tmp_path / "drive"), "--domain", "sunny", "--coarse", str(tmp_path / "c.pt"),
                        "--out", str(tmp_path / "map"), f"--max-gap={value}"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err and "--max-gap" in err and repr(value) in err
    assert not (tmp_path / "map").exists()
    conf = MapBuildConfig(out=tmp_path / "map", bag=tmp_path / "drive", coarse=tmp_path / "c.pt", domain="sunny",
                          max_gap=float(value))
    with pytest.raises(ValueError, match="--max-gap .*finite number of seconds >= 0"):
        build_map_from_bag(conf)
