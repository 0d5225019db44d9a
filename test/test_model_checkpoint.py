"""Checkpoint round trip and failure messages; Encoder and preprocessing behaviour."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from disam_ros.model import CheckpointError, DisamNet, Encoder, file_sha256, load_checkpoint, preset, save_checkpoint
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
    assert not list(path.parent.glob(".*.tmp"))  # the atomic-save temp file is gone


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
