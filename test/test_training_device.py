"""Training on an accelerator: every tensor that training makes follows the network to its device.

A CPU-only machine cannot run CUDA kernels, but it can hold a network on a second device: torch's fake tensors
(shape and device, no data) on the `meta` device. An operation that mixes that device with the CPU raises
exactly as CUDA does ("Expected all tensors to be on the same device"), so these tests fail where training would
fail on a GPU (validation's features were once made on the CPU and fed to CUDA weights). The end-to-end run on a
real GPU is written below and skips here.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from test_training_utils import make_world, micro_recipe
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

from disam_ros.model import DisamNet, ModelConfig
from disam_ros.model.networks import module_device
from disam_ros.training.evaluate import encode_all, net_features
from disam_ros.training.layouts import discover
from disam_ros.training.mining import Miner

OTHER = torch.device("meta")  # stands in for cuda:0


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world") / "root")


def small_net() -> DisamNet:
    torch.manual_seed(0)
    return DisamNet(ModelConfig(domains=("night", "sunny"), image_size=16, ngf=4, n_downsampling=1, n_blocks=1,
                                ndf=4, disc_layers=2))


@contextlib.contextmanager
def on_other_device(net: DisamNet) -> Iterator[FakeTensorMode]:
    """The network's weights as fake tensors on OTHER; inside, new tensors are fake too (CPU unless told)."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    net._apply(lambda t: FakeTensor(mode, t.detach().to("meta"), OTHER))
    with mode:
        yield mode


def test_the_stand_in_device_catches_a_cpu_input_as_cuda_would():
    net = small_net()
    # torch's wording differs between releases (2.13: "same device"; 2.11: "two different devices")
    with on_other_device(net), pytest.raises(RuntimeError, match="same device|different devices"):
        net.encode(torch.zeros(2, 3, 16, 16), "night")


def test_module_device_is_where_the_first_parameter_lives():
    net = small_net()
    assert module_device(net) == torch.device("cpu")
    with on_other_device(net):
        assert module_device(net) == OTHER
    assert module_device(torch.nn.ReLU()) == torch.device("cpu")


def test_validation_features_follow_the_network_to_its_device():
    net = small_net()
    with on_other_device(net):
        x = torch.zeros(5, 3, 16, 16)  # validation images are decoded on the CPU
        z = encode_all(net_features(net, "sunny"), x, "night", batch=2)
        # back on the CPU for the similarity tables, one code per image: 4 channels x 2 after one stride-2 step
        assert z.device == torch.device("cpu") and tuple(z.shape) == (5, 8, 8, 8)


def test_mining_and_pseudo_place_descriptors_follow_the_network_to_its_device(world):
    net = small_net()
    domains = [d for d in discover(world) if d.name in ("night", "sunny")]
    miner = Miner(domains, image_size=16, descriptor="coarse", min_dist=1.0, m=2, cache=False, batch=5)
    with on_other_device(net):
        desc = miner.descriptors(net, 0, OTHER)
    assert desc.device == torch.device("cpu") and desc.shape[0] == len(domains[0])


CUDA_RUNS = {  # what each run exercises beyond validation, checkpoints, resume and export
    "triplets_pools": ("fine", ["hard_negatives_from=0.5"]),
    "mining": ("soft_contrastive", ["mine_every=2", "mined=2", "ramp_keys=[]"]),
    "pseudo_places": ("soft_contrastive", ["supervised.pseudo=true", "pseudo_window=1", "pseudo_tolerance=100",
                                           "pseudo_match=route", "mine_every=2", "mined=2", "ramp_keys=[]"]),
}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; tools/gpu_check.sh runs it on a lent GPU")
@pytest.mark.parametrize("recipe, extra", CUDA_RUNS.values(), ids=CUDA_RUNS.keys())
def test_training_on_cuda_end_to_end(world, tmp_path, recipe, extra):
    from disam_ros.model import Encoder, load_checkpoint
    from disam_ros.training.export import export
    from disam_ros.training.trainer import Trainer

    r = micro_recipe(recipe, "steps=4", "train.device=cuda", *extra)
    first = Trainer(r, world, tmp_path / "run")
    assert first.device.type == "cuda"
    first.fit(until=2)
    resumed = Trainer(r, world, tmp_path / "run", resume=True)
    out = resumed.fit()
    assert out["step"] == 4 and out["val"], out
    net, _, _ = load_checkpoint(tmp_path / "run" / "model.pt")
    assert all(t.device.type == "cpu" and torch.isfinite(t).all() for t in net.state_dict().values())
    exported = export(tmp_path / "run" / "model.pt", tmp_path / "enc.pt")
    enc = Encoder.from_checkpoint(exported["path"], device="cuda")
    assert enc.encode(torch.zeros(1, 3, 32, 32), net.domains[0]).device.type == "cuda"
