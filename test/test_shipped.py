"""Shipped checkpoints by name: `--coarse real` on a fresh install finds the real-world starter inside the
package, and the file is what the docs promise (an encoder export with the Nordland domains, a few MB at most)."""
from __future__ import annotations

from pathlib import Path

import pytest

from disam_ros.maps.build_map import _parser as build_parser
from disam_ros.model import Encoder
from disam_ros.shipped import SHIPPED, checkpoint_arg, shipped_path


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_name_is_a_file_in_the_package(name):
    path = shipped_path(name)
    assert path.is_file() and path.parent.name == "assets"
    assert path.stat().st_size < 5 * 2 ** 20  # the brief: a few MB at most


def test_a_value_that_is_no_shipped_name_stays_a_path():
    assert checkpoint_arg("runs/x/model.pt") == Path("runs/x/model.pt")
    assert checkpoint_arg("real") == shipped_path("real") != Path("real")


def test_the_real_starter_has_the_domains_its_docs_name():
    enc = Encoder.from_checkpoint(shipped_path("real"), device="cpu")
    assert set(enc.domains) == {"summer", "winter"}


def test_build_map_accepts_a_shipped_name():
    args = build_parser().parse_args(["--dataset", "W", "--condition", "sunny", "--coarse", "real",
                                      "--fine", "demo-fine", "--out", "M"])
    assert args.coarse == shipped_path("real") and args.fine == shipped_path("demo-fine")


def test_the_real_default_keeps_the_untrained_small_start_on_the_map_side():
    """real_anchor: the summer encoder is the seed-0 untrained small start (frozen), stored in float16; only the
    winter encoder was trained. Recomputed here from the seed, independently of the file."""
    import torch

    from disam_ros.model import DisamNet, preset
    from disam_ros.training.start import share_initialisation

    enc = Encoder.from_checkpoint(shipped_path("real"), device="cpu")
    assert enc.config.image_size == 128 and tuple(enc.domains) == ("summer", "winter")
    torch.manual_seed(0)
    start = DisamNet(preset("small", ("summer", "winter")))
    share_initialisation(start)
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        want = start.encode(x, "summer")
        got_summer, got_winter = enc.encode(x, "summer").float(), enc.encode(x, "winter").float()
    scale = want.abs().max()
    assert (got_summer - want).abs().max() <= 1e-2 * scale  # float16 storage of the same weights
    assert (got_winter - want).abs().max() > 5e-2 * scale  # the winter encoder learned
