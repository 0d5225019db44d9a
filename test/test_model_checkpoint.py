"""Checkpoint round trip and failure messages; Encoder and preprocessing behaviour."""
from __future__ import annotations

import copy
import os
import stat

import numpy as np
import pytest
import torch

from disam_ros.model import CheckpointError, DisamNet, Encoder, file_sha256, load_checkpoint, preset, save_checkpoint
from disam_ros.model.checkpoint import read_checkpoint
from disam_ros.model.preprocess import to_model_input

DOMS = ("day", "night")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    cfg = preset("micro", DOMS)
    net = DisamNet(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "coarse.pt"
    save_checkpoint(path, net, cfg, extra={"role": "coarse", "epoch": 3, "lr": [2e-4, 0.0]})
    return net, cfg, path


def _images(seed=0, b=2, size=32):
    return np.random.default_rng(seed).integers(0, 256, (b, size, size, 3), dtype=np.uint8)


def test_round_trip_gives_identical_encodings(saved):
    net, cfg, path = saved
    loaded, cfg2, meta = load_checkpoint(path, expect_domains=["night", "day"])
    assert cfg2 == cfg
    assert meta["extra"] == {"role": "coarse", "epoch": 3, "lr": [2e-4, 0.0]}
    assert meta["sha256"] == file_sha256(path) and len(meta["sha256"]) == 64
    x = to_model_input(_images(), 32)
    with torch.no_grad():
        for d in DOMS:
            assert torch.equal(net.eval().encode(x, d), loaded.encode(x, d))
    enc = Encoder.from_checkpoint(path, device="cpu")
    assert enc.checkpoint_sha256 == meta["sha256"]
    assert torch.equal(enc.encode(_images(), "night"), loaded.encode(x, "night"))
    assert not list(path.parent.glob(".*tmp*"))  # the atomic-save temp file is gone


def test_loaded_net_is_trainable(saved):
    loaded, _, _ = load_checkpoint(saved[2])
    loaded.encode(torch.zeros(1, 3, 32, 32), 0).sum().backward()
    assert all(p.requires_grad for p in loaded.parameters())
    assert next(loaded.encoders.parameters()).grad is not None


def _assert_one_line_error(path, match, **kw):
    with pytest.raises(CheckpointError, match=match) as e:
        load_checkpoint(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg and path.name in msg
    return msg


def test_missing_truncated_and_garbage_files(saved, tmp_path):
    _assert_one_line_error(tmp_path / "nope.pt", "not found")
    data = saved[2].read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    _assert_one_line_error(trunc, "truncated or corrupt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 this is not a model \xff" * 40)
    _assert_one_line_error(garbage, "truncated or corrupt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.zeros(2)}, foreign)
    _assert_one_line_error(foreign, "not a disam_ros model checkpoint")


def test_wrong_domains_version_and_shapes(saved, tmp_path):
    _assert_one_line_error(saved[2], r"trained for domains \['day', 'night'\].*\['dusk', 'night'\]",
                           expect_domains=["night", "dusk"])
    payload = torch.load(saved[2], weights_only=True)
    old = tmp_path / "v99.pt"
    torch.save({**payload, "format_version": 99}, old)
    _assert_one_line_error(old, "format version 99")
    bad = tmp_path / "shapes.pt"
    cfg_wider = {**payload["config"], "ngf": 16}  # config says ngf 16, weights are ngf 8
    torch.save({**payload, "config": cfg_wider}, bad)
    msg = _assert_one_line_error(bad, "weights do not match its config: .*shape mismatches")
    assert "re-save" in msg
    missing = tmp_path / "missing.pt"
    sd = dict(payload["state_dict"])
    sd.pop(next(k for k in sd if k.startswith("decoders.")))
    torch.save({**payload, "state_dict": sd}, missing)
    _assert_one_line_error(missing, "1 missing keys")
    with pytest.raises(CheckpointError, match="v99.pt"):
        Encoder.from_checkpoint(old, device="cpu")


def test_save_rejects_non_plain_extra(saved, tmp_path):
    net, cfg, _ = saved
    with pytest.raises(ValueError, match=r"extra\['opt'\] is a object"):
        save_checkpoint(tmp_path / "x.pt", net, cfg, extra={"opt": object()})
    assert not (tmp_path / "x.pt").exists()


def test_encoder_errors_resize_and_dtype(saved):
    net, cfg, _ = saved
    enc = Encoder(net, cfg, device="cpu")
    assert enc.domains == DOMS and enc.content_shape == (32, 8, 8) and enc.device == torch.device("cpu")
    with pytest.raises(ValueError, match=r"unknown domain 'snow'.*\['day', 'night'\]"):
        enc.encode(_images(), "snow")
    with pytest.raises(ValueError, match="half=True needs a CUDA device"):
        Encoder(net, cfg, device="cpu", half=True)
    big = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)  # other size, not square
    z = enc.encode(big, "day")
    assert z.shape == (1, 32, 8, 8) and z.dtype == torch.float32
    import cv2

    manual = torch.from_numpy(cv2.resize(big, (32, 32), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = net.encode(manual.float() / 127.5 - 1, "day")
    torch.testing.assert_close(z, expected)
    batched = enc.encode(_images(b=5), 1, batch_size=2)
    torch.testing.assert_close(batched, enc.encode(_images(b=5), 1))
    assert net.encoders["day"][1].weight.device.type == "cpu"  # the training net is untouched


def test_preprocess_values_and_errors():
    img = np.zeros((4, 4, 3), dtype=np.uint8)
    img[0, 0] = (255, 0, 128)
    x = to_model_input(img, 4)
    assert x.shape == (1, 3, 4, 4) and x.dtype == torch.float32
    assert x[0, :, 0, 0].tolist() == pytest.approx([1.0, -1.0, 128 / 127.5 - 1], abs=1e-6)
    t = torch.rand(3, 8, 8) * 2 - 1
    assert to_model_input(t, 4).shape == (1, 3, 4, 4)
    sized = [np.zeros((10, 20, 3), np.uint8), np.zeros((40, 30, 3), np.uint8)]
    assert to_model_input(sized, 8).shape == (2, 3, 8, 8)
    for bad, match in [
        (np.zeros((4, 4), np.uint8), "expected HxWx3"),
        (np.zeros((4, 4, 4), np.uint8), "expected HxWx3"),
        (np.zeros((4, 4, 3), np.float32), "dtype is float32"),
        (np.zeros((0, 4, 4, 3), np.uint8), "empty"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "must be float"),
        (torch.full((1, 3, 4, 4), 255.0), "outside the model range"),
        (torch.zeros(1, 1, 4, 4), "channels-first RGB"),
        ([], "empty image list"),
    ]:
        with pytest.raises(ValueError, match=match):
            to_model_input(bad, 4)


def test_channels_last_encoder_matches_default(saved):
    net, cfg, _ = saved
    imgs = _images(b=3)
    plain = Encoder(net, cfg, device="cpu").encode(imgs, "day")
    cl = Encoder(net, cfg, device="cpu", channels_last=True).encode(imgs, "day")
    assert cl.is_contiguous()
    torch.testing.assert_close(cl, plain, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ parts and dtype: encoders-only exports


@pytest.fixture(scope="module")
def exported(saved, tmp_path_factory):
    net, cfg, _ = saved
    path = tmp_path_factory.mktemp("export") / "enc16.pt"
    save_checkpoint(path, net, cfg, extra={"role": "coarse"}, parts=("encoders",), dtype=torch.float16)
    return path


def _half_rounded_encoders(net):
    """A copy of `net` whose encoder weights went float32 -> float16 -> float32 (what an export should hold)."""
    rounded = copy.deepcopy(net)
    with torch.no_grad():
        for t in rounded.encoders.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    return rounded


def test_encoders_only_float16_export_encodes_like_the_half_rounded_full_model(saved, exported):
    net, cfg, path = saved
    enc = Encoder.from_checkpoint(exported, device="cpu")
    ref = Encoder(_half_rounded_encoders(net), cfg, device="cpu")
    full = Encoder.from_checkpoint(path, device="cpu")
    assert enc.dtype == torch.float32 and next(enc._encoders.parameters()).dtype == torch.float32
    for d in DOMS:
        z = enc.encode(_images(seed=3, b=3), d)
        assert z.dtype == torch.float32
        assert torch.equal(z, ref.encode(_images(seed=3, b=3), d))
        assert not torch.equal(z, full.encode(_images(seed=3, b=3), d))  # the float16 rounding did happen
    _, cfg2, meta = read_checkpoint(exported)
    assert cfg2 == cfg and meta["parts"] == ["encoders"] and meta["dtype"] == "float16"
    assert meta["extra"] == {"role": "coarse"}


def test_export_file_holds_only_float16_encoder_weights(saved, exported):
    net = saved[0]
    payload = torch.load(exported, weights_only=True)
    assert payload["parts"] == ["encoders"] and payload["dtype"] == "float16"
    keys = set(payload["state_dict"])
    assert keys == {k for k in net.state_dict() if k.startswith("encoders.")} and keys
    assert not any(k.startswith(("decoders.", "discriminators.")) for k in keys)
    assert all(v.dtype == torch.float16 for v in payload["state_dict"].values())
    assert exported.stat().st_size < 0.5 * saved[2].stat().st_size


def test_load_checkpoint_refuses_an_export_with_one_line(exported):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(exported)
    assert str(e.value) == (f"{exported}: holds only the encoders (an inference export): load it with "
                            "Encoder.from_checkpoint, or resume from the full training checkpoint")


def test_save_rejects_unknown_or_encoderless_parts_and_non_float_dtype(saved, tmp_path):
    net, cfg, _ = saved
    with pytest.raises(ValueError, match=r"unknown checkpoint parts \['generator'\]: valid parts are "
                                         r"\['encoders', 'decoders', 'discriminators'\]"):
        save_checkpoint(tmp_path / "x.pt", net, cfg, parts=("encoders", "generator"))
    with pytest.raises(ValueError, match="lack 'encoders'"):
        save_checkpoint(tmp_path / "x.pt", net, cfg, parts=("decoders",))
    with pytest.raises(ValueError, match="not a floating torch dtype"):
        save_checkpoint(tmp_path / "x.pt", net, cfg, parts=("encoders",), dtype=torch.int8)
    assert not list(tmp_path.iterdir())


def test_export_is_validated_on_its_own_parts(exported, tmp_path):
    payload = torch.load(exported, weights_only=True)
    sd = dict(payload["state_dict"])
    extra_key = tmp_path / "with_decoder.pt"
    torch.save({**payload, "state_dict": {**sd, "decoders.day.0.body.1.weight": torch.zeros(1)}}, extra_key)
    with pytest.raises(CheckpointError, match="1 unexpected keys"):
        Encoder.from_checkpoint(extra_key, device="cpu")
    sd.pop(next(iter(sd)))
    short = tmp_path / "short.pt"
    torch.save({**payload, "state_dict": sd}, short)
    with pytest.raises(CheckpointError, match="1 missing keys"):
        Encoder.from_checkpoint(short, device="cpu")
    bad = tmp_path / "parts.pt"
    torch.save({**payload, "parts": ["encoders", "heads"]}, bad)
    _assert_one_line_error(bad, r"has invalid parts .*'heads'")


def test_checkpoints_from_before_parts_still_load_in_full(saved, tmp_path):
    net, cfg, path = saved
    payload = torch.load(path, weights_only=True)
    assert payload["parts"] == ["encoders", "decoders", "discriminators"] and payload["dtype"] == "float32"
    old = tmp_path / "old.pt"
    torch.save({k: v for k, v in payload.items() if k not in ("parts", "dtype")}, old)  # what v1 wrote
    loaded, cfg2, meta = load_checkpoint(old)
    assert cfg2 == cfg and meta["parts"] == ["encoders", "decoders", "discriminators"] and meta["dtype"] == "float32"
    x = to_model_input(_images(), 32)
    with torch.no_grad():
        for d in DOMS:
            assert torch.equal(net.eval().encode(x, d), loaded.encode(x, d))
            assert torch.equal(net.decode(net.encode(x, d), d), loaded.decode(loaded.encode(x, d), d))
    assert torch.equal(Encoder.from_checkpoint(old, device="cpu").encode(_images(), "day"),
                       Encoder(net, cfg, device="cpu").encode(_images(), "day"))


def test_full_float16_checkpoint_loads_as_a_float32_trainable_net(saved, tmp_path):
    net, cfg, _ = saved
    path = save_checkpoint(tmp_path / "full16.pt", net, cfg, dtype=torch.float16)
    loaded, _, meta = load_checkpoint(path)
    assert meta["dtype"] == "float16" and meta["parts"] == ["encoders", "decoders", "discriminators"]
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    for (k, v), (k2, v2) in zip(loaded.state_dict().items(), net.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2.half().float()), k


def test_saved_file_is_world_readable_whatever_the_umask(saved, tmp_path):
    assert stat.S_IMODE(saved[2].stat().st_mode) == 0o644
    old = os.umask(0o077)
    try:
        path = save_checkpoint(tmp_path / "m.pt", saved[0], saved[1], parts=("encoders",))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_half_cuda_encoder_keeps_the_stored_float16_weights(exported):
    enc = Encoder.from_checkpoint(exported, device="cuda", half=True)
    stored = torch.load(exported, weights_only=True)["state_dict"]
    assert enc.dtype == torch.float16
    for k, v in enc._encoders["night"].state_dict().items():
        assert v.dtype == torch.float16 and torch.equal(v.cpu(), stored[f"encoders.night.{k}"]), k
    assert enc.encode(_images(), "night").dtype == torch.float16


def test_seeded_net_is_the_same_draw_for_the_same_seed():
    """Every tool's untrained baseline comes from seeded_net: one seed, one set of weights, in any tool."""
    import torch

    from disam_ros.model import preset, seeded_net

    cfg = preset("tiny", ["summer"])
    a, b, c = seeded_net(cfg, 3).state_dict(), seeded_net(cfg, 3).state_dict(), seeded_net(cfg, 4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_a_new_net_has_the_dcgan_init_and_one_built_on_meta_draws_nothing(monkeypatch):
    """Conv weights N(0, 0.02) and zero biases (the reference's init); a net built on the meta device (shape checks,
    the skeleton a checkpoint's weights are assigned to) skips the init, whose normal_ ran torch's Python reference
    there and imported torch._dynamo: ~1.3 s of every process opening a checkpoint."""
    from disam_ros.model import networks

    torch.manual_seed(0)
    net = DisamNet(preset("tiny", DOMS))
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    weights = torch.cat([m.weight.detach().flatten() for m in convs])
    assert len(weights) > 100_000
    # the sample mean and std of n normal draws: within 5 standard errors of 0 and of 0.02
    assert abs(float(weights.mean())) < 5 * 0.02 / len(weights) ** 0.5
    assert float(weights.std()) == pytest.approx(0.02, rel=5 / (2 * len(weights)) ** 0.5)
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in convs if m.bias is not None)

    def drawn(_module):
        raise AssertionError("init_weights ran on the meta device")

    monkeypatch.setattr(networks, "init_weights", drawn)
    with torch.device("meta"):
        skeleton = DisamNet(preset("tiny", DOMS))
    assert {k: v.shape for k, v in skeleton.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    with pytest.raises(AssertionError, match="meta device"):
        DisamNet(preset("micro", DOMS))  # on the CPU the init still runs
