"""Image codec: every encoding round trips with and without row padding; bad input -> one-line errors."""
from __future__ import annotations

import array
from types import SimpleNamespace

import numpy as np
import pytest

from disam_ros.data import image_codec as ic

COLOUR = ("rgb8", "bgr8", "rgba8", "bgra8", "8UC3", "8UC4")
GREY = ("mono8", "8UC1", "mono16", "16UC1")


def rand_rgb(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def as_msg(f: ic.ImageFields, data=None) -> SimpleNamespace:
    return SimpleNamespace(height=f.height, width=f.width, encoding=f.encoding, step=f.step,
                           is_bigendian=f.is_bigendian, data=f.data if data is None else data)


@pytest.mark.parametrize("padding", [0, 3, 16])
@pytest.mark.parametrize("encoding", COLOUR)
def test_colour_round_trip(encoding, padding):
    rgb = rand_rgb()
    f = ic.encode_image(rgb, encoding, padding=padding)
    assert f.step == 7 * ic.bytes_per_pixel(encoding) + padding
    assert len(f.data) == f.height * f.step
    np.testing.assert_array_equal(ic.image_to_rgb(as_msg(f)), rgb)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("padding", [0, 5])
@pytest.mark.parametrize("encoding", GREY)
def test_grey_round_trip(encoding, padding, bigendian):
    g = np.random.default_rng(1).integers(0, 256, (4, 6), dtype=np.uint8)
    rgb = np.repeat(g[:, :, None], 3, axis=2)
    f = ic.encode_image(rgb, encoding, padding=padding, bigendian=bigendian)
    np.testing.assert_array_equal(ic.image_to_rgb(as_msg(f)), rgb)


@pytest.mark.parametrize("container", [bytes, bytearray, lambda b: array.array("B", b), list,
                                       lambda b: np.frombuffer(b, np.uint8), memoryview])
def test_data_containers(container):
    """rclpy gives array.array('B'), rosbags numpy, hand-made messages bytes or lists."""
    rgb = rand_rgb(3, 4)
    f = ic.encode_image(rgb, "bgr8", padding=2)
    np.testing.assert_array_equal(ic.image_to_rgb(as_msg(f, container(f.data))), rgb)


RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
EXPECT = np.array([[RED, GREEN], [BLUE, WHITE]], np.uint8)


@pytest.mark.parametrize("encoding,rows,step", [
    ("rgb8", [[255, 0, 0, 0, 255, 0], [0, 0, 255, 255, 255, 255]], 6),
    ("bgr8", [[0, 0, 255, 0, 255, 0, 9, 9], [255, 0, 0, 255, 255, 255, 9, 9]], 8),
    ("rgba8", [[255, 0, 0, 7, 0, 255, 0, 7], [0, 0, 255, 7, 255, 255, 255, 7]], 8),
    ("bgra8", [[0, 0, 255, 1, 0, 255, 0, 1, 5], [255, 0, 0, 1, 255, 255, 255, 1, 5]], 9),
])
def test_hand_built_2x2(encoding, rows, step):
    msg = SimpleNamespace(height=2, width=2, encoding=encoding, step=step, is_bigendian=0,
                          data=bytes(sum(rows, [])))
    np.testing.assert_array_equal(ic.image_to_rgb(msg), EXPECT)


def test_hand_built_mono():
    msg = SimpleNamespace(height=2, width=2, encoding="mono8", step=3, is_bigendian=0,
                          data=bytes([0, 10, 99, 200, 255, 99]))
    out = ic.image_to_rgb(msg)
    np.testing.assert_array_equal(out[:, :, 0], [[0, 10], [200, 255]])
    assert (out == out[:, :, :1]).all()


def test_mono16_scaling_and_endianness():
    vals = [0, 257, 32768, 65535]  # -> 0, 1, 128 (127.5 rounds to even), 255
    le = SimpleNamespace(height=2, width=2, encoding="mono16", step=4, is_bigendian=0,
                         data=np.array(vals, "<u2").tobytes())
    be = SimpleNamespace(height=2, width=2, encoding="16UC1", step=4, is_bigendian=1,
                         data=np.array(vals, ">u2").tobytes())
    for msg in (le, be):
        np.testing.assert_array_equal(ic.image_to_rgb(msg)[:, :, 0], [[0, 1], [128, 255]])
    # 12-bit sensor values are dark with full-range scaling and stretched with minmax.
    twelve = SimpleNamespace(height=1, width=2, encoding="mono16", step=4, is_bigendian=0,
                             data=np.array([0, 4095], "<u2").tobytes())
    assert ic.image_to_rgb(twelve)[0, 1, 0] == 16
    assert ic.image_to_rgb(twelve, mono16_scaling="minmax")[0, 1, 0] == 255


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_round_trip(fmt):
    # Smooth image: JPEG error stays small.
    y, x = np.mgrid[0:32, 0:48]
    rgb = np.stack([x * 5, y * 7, (x + y) * 3], -1).astype(np.uint8)
    f = ic.encode_compressed(rgb, fmt, quality=95)
    out = ic.compressed_to_rgb(SimpleNamespace(format=f.format, data=array.array("B", f.data)))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    if fmt == "png":
        np.testing.assert_array_equal(out, rgb)
    else:
        assert np.abs(out.astype(int) - rgb).mean() < 3
    # image_transport's format string is accepted too.
    out2 = ic.decode_compressed("rgb8; jpeg compressed bgr8" if fmt == "jpeg" else "rgb8; png compressed rgb8",
                                f.data)
    np.testing.assert_array_equal(out2, out)


def test_compressed_colour_order():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 250
    out = ic.decode_compressed("png", ic.encode_compressed(rgb, "png").data)
    assert tuple(out[0, 0]) == (250, 0, 0)


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 300
    return msg


GOOD = ic.encode_image(rand_rgb(4, 4), "rgb8")


@pytest.mark.parametrize("change,pattern", [
    (dict(encoding="yuv422"), r"unsupported image encoding 'yuv422': publish one of"),
    (dict(encoding="bayer_rggb8"), r"unsupported image encoding 'bayer_rggb8'"),
    (dict(height=0, data=b""), r"empty image \(4x0, encoding rgb8\)"),
    (dict(width=0), r"empty image \(0x4"),
    (dict(data=GOOD.data[:-1]), r"image data has 47 bytes, fewer than height\*step = 4\*12 = 48"),
    (dict(step=10), r"image step 10 is smaller than width\*bytes_per_pixel = 4\*3 = 12 for rgb8: set step"),
])
def test_bad_raw_images(change, pattern):
    msg = as_msg(GOOD)
    for k, v in change.items():
        setattr(msg, k, v)
    with pytest.raises(ValueError, match=pattern) as exc:
        ic.image_to_rgb(msg)
    one_line(exc)


def test_bad_compressed_images():
    jpeg = ic.encode_compressed(rand_rgb(16, 16), "jpeg").data
    cases = [
        (jpeg[: len(jpeg) // 2], "jpeg", r"corrupt JPEG \(\d+ bytes, no end-of-image marker\)"),
        (jpeg[:2] + bytes(200) + jpeg[-2:], "jpeg", r"corrupt JPEG \(\d+ bytes could not be decoded\)"),
        (b"", "jpeg", r"has no data"),
        (b"\x89PNG\r\n\x1a\n" + bytes(50), "png", r"corrupt PNG"),
        (b"GIF89a" + bytes(20), "gif", r"format 'gif' is not jpeg or png"),
        (jpeg, "16UC1; compressedDepth png", r"compressedDepth"),
    ]
    for data, fmt, pattern in cases:
        with pytest.raises(ValueError, match=pattern) as exc:
            ic.decode_compressed(fmt, data)
        one_line(exc)


def test_encode_rejects_non_rgb():
    with pytest.raises(ValueError, match="HxWx3 uint8 RGB"):
        ic.encode_image(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="unsupported compressed format"):
        ic.encode_compressed(rand_rgb(), "webp")
