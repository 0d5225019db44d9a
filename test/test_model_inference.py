"""`EncoderLike`: the contract retrieval code types "an encoder" with, met by the real Encoder and the stand-in."""
from __future__ import annotations

import numpy as np
import torch

from disam_ros.bench.table_encoder import TableEncoder
from disam_ros.model import DisamNet, Encoder, EncoderLike, preset


def test_the_real_encoder_and_the_table_stand_in_both_satisfy_the_protocol(one_thread):
    cfg = preset("micro", ("sunny", "night"))
    real = Encoder(DisamNet(cfg), cfg, device="cpu", checkpoint_sha256="a" * 64)
    table = TableEncoder(np.zeros((3, 4, 2, 2), np.float32))
    for enc in (real, table):
        assert isinstance(enc, EncoderLike)
        # the members retrieval reads, with the types it relies on
        assert isinstance(enc.domains, tuple) and len(enc.content_shape) == 3
        assert isinstance(enc.config.image_size, int) and isinstance(enc.device, torch.device)
        image = TableEncoder.image_for(1) if enc is table else np.zeros((8, 8, 3), np.uint8)
        feat = enc.encode([image], enc.domains[0])
        assert tuple(feat.shape) == (1, *enc.content_shape)


class _NoEncode:
    domains = ("a",)
    content_shape = (1, 1, 1)
    config = None
    checkpoint_sha256 = None
    device = torch.device("cpu")


class _NoHash:
    """Everything but the checkpoint hash the map check compares."""

    domains = ("a",)
    content_shape = (1, 1, 1)
    config = None
    device = torch.device("cpu")

    def encode(self, images, domain):
        return torch.zeros(1, 1, 1, 1)


def test_objects_missing_a_member_are_not_encoders():
    assert not isinstance(_NoEncode(), EncoderLike)
    assert not isinstance(_NoHash(), EncoderLike)
    assert not isinstance(object(), EncoderLike)
