"""`disam-sequence-eval --route node` gives the node's figures: the same split through the command-line tools a user
runs (disam-build-map, disam-calibrate, disam-calibrate --from-map, disam-eval) publishes the same frames."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from disam_ros.eval import node_route as nr
from disam_ros.eval import sequence_eval as se

pytestmark = pytest.mark.skipif(not (se.NORDLAND_DEFAULT / "winter").is_dir(),
                                reason="../shared/data/nordland_trimmed_dev is absent (real data is not shipped)")
FIT, TEST = (1338, 1788), (894, 1040)  # a fit part of 450 frames: 300 published nothing


def test_route_parts_are_the_kept_frames_at_their_place(tmp_path):
    images, frames = nr.route_images(se.NORDLAND_DEFAULT)
    n = nr.write_part(images, frames, (100, 130), "x", tmp_path)
    kept = [int(f) for f in frames if 100 <= f < 130]
    assert n == len(kept) > 20
    for season in ("summer", "winter"):
        rows = np.loadtxt(tmp_path / f"{season}_x" / "poses.txt")
        np.testing.assert_allclose(rows[:, 0], np.array(kept) * nr.FRAME_S)
        np.testing.assert_allclose(rows[:, 1], np.array(kept) * nr.FRAME_M)
        names = sorted(p.name for p in (tmp_path / f"{season}_x" / "images").iterdir())
        assert names == [f"{k:05d}.png" for k in kept]
        # the k-th kept frame links to the route's image of that frame number (file images-<10 k>.png)
        assert (tmp_path / f"{season}_x" / "images" / names[0]).resolve().name == f"images-{10 * (kept[0] + 1):05d}.png"


def test_default_halves_leave_a_gap():
    fit, test = nr.default_split(np.array([0, 1, 2, 30, 31, 32, 40]))  # the middle kept frame is 30
    assert fit == (0, 30 - nr.HALVES_GAP) and test == (30, 41)


@pytest.mark.long
def test_the_route_equals_the_command_line(tmp_path, caplog):
    from disam_ros.eval.calibrate import main as calibrate_main
    from disam_ros.eval.offline import main as eval_main
    from disam_ros.maps.build_map import main as build_main

    ckpt = nr.untrained_checkpoint(tmp_path / "untrained.pt")
    model = nr.RouteModel("u", ckpt, "summer", "summer")
    images, frames = nr.route_images(se.NORDLAND_DEFAULT)
    caplog.set_level(logging.INFO, logger="disam_ros")
    rows = {r["mode"]: r for r in nr.run_route(model, images, frames, FIT, TEST, modes=("sequence",),
                                                 work=tmp_path, progress=True)}
    steps = [r.getMessage() for r in caplog.records if r.name == nr.log.name]  # minutes of work: it says where it is
    assert [m.split(": ")[1].split(" ")[0] for m in steps] == ["maps", "calibrating", "calibration"]
    assert all(m.startswith("u: ") for m in steps)
    root = tmp_path / "data"
    for name, part in (("fit", FIT), ("test", TEST)):
        nr.write_part(images, frames, part, name, root)
        assert build_main(["--dataset", str(root), "--condition", f"summer_{name}", "--domain", "summer",
                           "--coarse", str(ckpt), "--geometry", "none", "--out", str(tmp_path / name)]) == 0
    tracker = ["--modes", "sequence", *nr.NODE_ARGS]
    assert calibrate_main(["--map", str(tmp_path / "fit"), "--dataset", str(root), "--conditions", "winter_fit",
                           "--domain", "summer", "--quiet", *tracker]) == 0
    assert calibrate_main(["--map", str(tmp_path / "test"), "--from-map", str(tmp_path / "fit")]) == 0
    assert eval_main(["--map", str(tmp_path / "test"), "--dataset", str(root), "--conditions", "winter_test",
                      "--domain", "summer", "--no-verify", "--quiet", "--out", str(tmp_path / "report"),
                      *tracker]) == 0
    cli = {m["mode"]: m for m in json.loads(Path(tmp_path / "report" / "report.json").read_text())["modes"]
           if m["condition"] == "winter_test"}
    got = rows["sequence"]
    assert got["published"] == cli["sequence"]["published"] > 0
    assert got["precision"] == pytest.approx(cli["sequence"]["precision"])
    assert got["r1"] == pytest.approx(cli["sequence"]["within"][-1]["share"])
    assert got["queries"] == cli["sequence"]["frames"] == len([f for f in frames if TEST[0] <= f < TEST[1]])
