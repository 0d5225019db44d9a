"""Image codec: every encoding round trips with and without row padding; bad input -> one-line errors."""
from __future__ import annotations

import array
import functools
import os
import re
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import cv2
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
        (jpeg[:2] + bytes(200) + jpeg[-2:], "jpeg", r"corrupt JPEG \(\d+ bytes, byte 2 is 0x00 where a marker must"),
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


# ------------------------------------------------------------------------------- hostile compressed input


def _chunk(tag: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + tag + body + zlib.crc32(tag + body).to_bytes(4, "big")


@functools.lru_cache(maxsize=4)
def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A real PNG of width x height 1-bit grey zeros (30000x30000: ~110 KB), compressed row block by row
    block so the test never holds the image it declares."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale, no interlace
    comp = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed pixels
    body = [comp.compress(row * 1000) for _ in range(height // 1000)]
    body += [comp.compress(row * (height % 1000)), comp.flush()]
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(body)) + _chunk(b"IEND", b"")


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_png_bomb_refused_from_its_header_without_memory():
    small = png_bomb(64, 48)  # the same builder makes real PNGs: libpng decodes this one
    assert ic.decode_compressed("png", small).shape == (48, 64, 3)
    bomb = png_bomb()
    assert len(bomb) < 200_000
    before = rss_bytes()
    with pytest.raises(ValueError, match=r"PNG frame of 30000x30000 pixels is above the cap of 16384 px per side"
                       ) as exc:
        ic.decode_compressed("png", bomb)
    assert rss_bytes() - before < 50 * 2**20
    assert "downscale at the driver" in one_line(exc)


def test_pixel_cap_is_a_keyword_and_covers_jpeg_and_raw():
    rgb = rand_rgb(40, 60)
    jpeg, png = ic.encode_compressed(rgb, "jpeg").data, ic.encode_compressed(rgb, "png").data
    for data in (jpeg, png):
        assert ic.decode_compressed("", data, max_pixels=2400).shape == (40, 60, 3)  # exactly at the cap
        with pytest.raises(ValueError, match=r"of 60x40 pixels is above the cap of .* 0.002399 megapixels"):
            ic.decode_compressed("", data, max_pixels=2399)
    with pytest.raises(ValueError, match=r"JPEG frame of 60x40 pixels is above the cap of 59 px per side"):
        ic.decode_compressed("jpeg", jpeg, max_side=59)
    # A JPEG header that declares 20000x100 (SOF0 height/width patched) is refused before decoding.
    sof = jpeg.index(b"\xff\xc0")
    big = jpeg[:sof + 5] + struct.pack(">HH", 100, 20000) + jpeg[sof + 9:]
    with pytest.raises(ValueError, match=r"JPEG frame of 20000x100 pixels is above the cap"):
        ic.decode_compressed("jpeg", big)
    # Raw Image: height*width is checked before the data is even looked at (here there is none).
    msg = SimpleNamespace(height=7000, width=7000, encoding="rgb8", step=21000, is_bigendian=0, data=b"")
    with pytest.raises(ValueError, match=r"image \(rgb8\) of 7000x7000 pixels is above the cap of 16384 px per "
                       r"side and 40 megapixels") as exc:
        ic.image_to_rgb(msg)
    one_line(exc)
    f = ic.encode_image(rgb, "bgr8")
    assert ic.image_to_rgb(as_msg(f), max_pixels=2400).shape == (40, 60, 3)
    with pytest.raises(ValueError, match="above the cap"):
        ic.image_to_rgb(as_msg(f), max_pixels=2399)


def _smooth_bgr(h: int = 240, w: int = 320) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x % 256, y % 256, (x * y) % 256], -1).astype(np.uint8)
    return cv2.GaussianBlur(img, (5, 5), 0)


def _jpeg(params=()) -> bytes:
    return cv2.imencode(".jpg", _smooth_bgr(), [cv2.IMWRITE_JPEG_QUALITY, 90, *params])[1].tobytes()


@pytest.mark.parametrize("fmt", ["jpeg", "png", "bgr8; jpeg compressed bgr8", "rgb8; png compressed rgb8",
                                 "mono8; jpeg compressed mono8", "JPEG", "jpg", ""])
def test_declared_format_matches_payload(fmt):
    rgb = np.ascontiguousarray(_smooth_bgr(32, 48)[:, :, ::-1])
    kind = "png" if "png" in fmt else "jpeg"
    data = ic.encode_compressed(rgb, kind).data
    assert ic.decode_compressed(fmt, data).shape == (32, 48, 3)
    if fmt:  # the other codec under this label is refused
        other = ic.encode_compressed(rgb, "jpeg" if kind == "png" else "png").data
        with pytest.raises(ValueError, match=rf"says {kind} but the payload is (PNG|JPEG)") as exc:
            ic.decode_compressed(fmt, other)
        one_line(exc)


@pytest.mark.parametrize("ext,name", [(".tiff", "TIFF"), (".webp", "WebP"), (".bmp", "BMP"), (".ppm", "PNM/PPM"),
                                      (".pgm", "PNM/PPM")])
def test_other_codecs_labelled_jpeg_are_refused(ext, name):
    bgr = _smooth_bgr(32, 48)
    data = cv2.imencode(ext, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if ext == ".pgm" else bgr)[1].tobytes()
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None  # OpenCV would decode it
    for fmt in ("jpeg", "bgr8; jpeg compressed bgr8", ""):
        with pytest.raises(ValueError, match=rf"payload is {re.escape(name)} data .* not JPEG or PNG") as exc:
            ic.decode_compressed(fmt, data)
        one_line(exc)


@pytest.mark.parametrize("padding", [bytes(1), bytes(4096), b"\xab" * 37, b"\xff\xd9\x00\x13junk",
                                     np.random.default_rng(5).integers(0, 256, 500, dtype=np.uint8).tobytes()],
                         ids=["zero", "4KiB-zeros", "0xAB-x37", "second-EOI-junk", "random-500"])
def test_jpeg_padding_after_end_marker_is_accepted(padding):
    data = _jpeg()
    want = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(ic.decode_compressed("jpeg", data + padding), want)


@pytest.mark.parametrize("params", [(), (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), (cv2.IMWRITE_JPEG_RST_INTERVAL, 2),
                                    (cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_RST_INTERVAL, 5),
                                    (cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)])
def test_valid_jpeg_variants_pass_the_structure_walk(params):
    data = _jpeg(params)
    assert ic.decode_compressed("jpeg", data).shape == (240, 320, 3)


def _corrupt(data: bytes, how: str) -> bytes:
    mid, rng = len(data) // 2, np.random.default_rng(0)
    if how == "overwrite":  # a block of entropy-coded data replaced by random bytes, one of them 0xFF followed
        # by a byte that is no marker (54 % of random 200-byte blocks hold a 0xFF)
        block = bytearray(rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
        block[50:52] = b"\xff\x3f"
        return data[:mid] + bytes(block) + data[mid + 200:]
    if how == "overwrite_no_ff":  # random bytes without any 0xFF: only libjpeg's warning shows it (it warns on
        # most such blocks, not all: see the limits in image_codec's docstring)
        return data[:mid] + rng.integers(0, 255, 64, dtype=np.uint8).tobytes() + data[mid + 64:]
    if how == "removed":  # bytes cut from the middle
        return data[:mid] + data[mid + 300:]
    if how == "restart_removed":  # an interval cut out together with its restart marker
        return data[:data.index(b"\xff\xd3")] + data[data.index(b"\xff\xd5"):]
    if how == "stray_restart":  # a restart marker where the stream defines no restart interval
        return data[:mid] + b"\xff\xd0" + data[mid + 2:]
    return data[:mid]  # truncated


@pytest.mark.parametrize("how,pattern", [
    ("overwrite", r"0xFF 0x3F inside the image data at byte \d+"),
    ("overwrite_no_ff", r"libjpeg: Corrupt JPEG data"),
    ("removed", r"libjpeg: Corrupt JPEG data: premature end of data segment"),
    ("restart_removed", r"restart marker RST5 out of sequence"),
    ("stray_restart", r"restart marker RST0 in a scan at byte \d+ without a restart interval"),
    ("truncated", r"no end-of-image marker .*truncated in transit"),
])
def test_corrupt_jpeg_with_intact_end_marker_is_refused(how, pattern, capfd):
    data = _jpeg((cv2.IMWRITE_JPEG_RST_INTERVAL, 8) if how == "restart_removed" else ())
    bad = _corrupt(data, how)
    assert bad.endswith(b"\xff\xd9") == (how != "truncated")
    if how != "truncated":  # OpenCV alone decodes it into a damaged picture (and only libjpeg warns)
        assert cv2.imdecode(np.frombuffer(bad, np.uint8), cv2.IMREAD_COLOR) is not None
    capfd.readouterr()
    with pytest.raises(ValueError, match=rf"corrupt JPEG \(\d+ bytes, {pattern}") as exc:
        ic.decode_compressed("jpeg", bad)
    one_line(exc)
    # libjpeg's warning was captured, not printed; other stderr output still gets through.
    os.write(2, b"after the decode\n")
    err = capfd.readouterr().err
    assert "Corrupt JPEG" not in err and "after the decode" in err
