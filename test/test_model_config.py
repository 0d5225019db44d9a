"""ModelConfig validation, presets and network shapes (paper config on the meta device: no compute)."""
from __future__ import annotations

import json

import pytest
import torch

from disam_ros.model import PRESETS, DisamNet, ModelConfig, preset

DOMS = ("day", "night")


pytestmark = pytest.mark.usefixtures("one_thread")


def _disc_sides(size: int, layers: int) -> list[int]:
    """Independent size arithmetic: k4/s2/p2 convs give n//2 + 1, the two k4/s1/p2 head convs n + 1 each."""
    n = size // 2 + 1  # stem
    sides = []
    for _ in range(1, layers):
        n = n // 2 + 1
        sides.append(n)
    sides.append(n + 2)
    return sides


def test_paper_content_code_is_256x64x64():
    cfg = ModelConfig(domains=DOMS)  # defaults are the paper configuration
    assert cfg.content_shape == (256, 64, 64)
    assert (cfg.n_blocks_enc, cfg.n_blocks_dec) == (4, 5)
    with torch.device("meta"), torch.inference_mode():
        net = DisamNet(cfg)
        z = net.encode(torch.empty(1, 3, 256, 256), "night")
    assert tuple(z.shape) == (1, 256, 64, 64)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_shapes(name):
    cfg = preset(name, DOMS)
    s = cfg.image_size
    with torch.device("meta"), torch.inference_mode():
        net = DisamNet(cfg)
        x = torch.empty(2, 3, s, s)
        z = net.encode(x, 0)
        y = net.decode(z, 1)
        outs = net.discriminate(x, "day")
    assert tuple(z.shape) == (2, *cfg.content_shape)
    assert cfg.content_shape == (cfg.ngf * 4, s // 4, s // 4)
    assert tuple(y.shape) == (2, 3, s, s)
    assert [tuple(o.shape) for o in outs] == [(2, 2, n, n) for n in _disc_sides(s, cfg.disc_layers)]


def test_micro_real_forward_matches_meta_shapes_and_ranges():
    torch.manual_seed(0)
    cfg = preset("micro", DOMS)
    net = DisamNet(cfg)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        y = net.translate(x, "day", "night")
        outs = net.discriminate(y, "night")
    assert tuple(y.shape) == (2, 3, 32, 32)
    assert y.abs().max() <= 1.0  # tanh output
    assert [tuple(o.shape) for o in outs] == [(2, 2, n, n) for n in _disc_sides(32, cfg.disc_layers)]


def test_weight_init_is_dcgan_normal():
    torch.manual_seed(0)
    net = DisamNet(preset("tiny", DOMS))
    w = torch.cat([m.weight.flatten() for m in net.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(w.std().item() - 0.02) < 0.002
    assert abs(w.mean().item()) < 0.002
    biases = [m.bias for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None]
    assert biases and all(torch.count_nonzero(b) == 0 for b in biases)


def test_module_dicts_keyed_by_domain_and_index_lookup():
    net = DisamNet(preset("micro", DOMS))
    assert list(net.encoders) == list(DOMS) == list(net.decoders) == list(net.discriminators)
    assert net.config.domain_name(1) == "night"
    with pytest.raises(ValueError, match=r"unknown domain 'snow'.*\['day', 'night'\]"):
        net.encode(torch.zeros(1, 3, 32, 32), "snow")
    with pytest.raises(ValueError, match="out of range"):
        net.encode(torch.zeros(1, 3, 32, 32), 2)


def test_dict_round_trip_is_json():
    cfg = preset("small", ["a", "b", "c"])
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["domains"] == ["a", "b", "c"]
    assert ModelConfig.from_dict(d) == cfg


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(domains=()), "domains is empty"),
        (dict(domains=("a", "a")), "duplicate domain"),
        (dict(domains=("a", "")), "invalid"),
        (dict(domains=("a.b",)), "invalid"),
        (dict(domains=("train",)), "clash"),
        (dict(domains="day"), "not the string"),
        (dict(domains=("a",), image_size=250), "not divisible by 2\\*\\*n_downsampling = 4"),
        (dict(domains=("a",), image_size=8), "larger image_size"),
        (dict(domains=("a",), ngf=0), "ngf must be an integer >= 1"),
        (dict(domains=("a",), norm="group"), "norm 'group'"),
    ],
)
def test_invalid_configs_raise_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        ModelConfig(**kwargs)
    assert "\n" not in str(e.value)


def test_from_dict_rejects_unknown_keys_and_unknown_preset():
    with pytest.raises(ValueError, match="unknown model config keys \\['ngff'\\]"):
        ModelConfig.from_dict({"domains": ["a"], "ngff": 3})
    with pytest.raises(ValueError, match="valid presets are \\['paper', 'small', 'tiny', 'micro'\\]"):
        preset("huge", DOMS)
