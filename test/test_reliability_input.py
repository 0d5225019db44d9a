"""Hostile frames and files are refused before they cost work, in one line (reliability issue, items 2 and 7).

Every hostile input is built here from scratch: a progressive JPEG from cv2 with scans spliced in or cut, PNGs
with hand-made zlib streams, a rosbag2 with a damaged metadata.yaml, sender strings of 5 MB. The numbers the
messages must state (blocks, bytes, lines) are computed here from the JPEG/PNG/YAML rules, not read back.
"""
from __future__ import annotations

import statistics
import struct
import time
import zlib
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from disam_ros.data import image_codec as ic
from disam_ros.data.bags.cli import main as bag_main
from disam_ros.data.compressed_header import jpeg_walk
from disam_ros.data.jpeg_scans import check_work
from disam_ros.logs import clip, one_line

SIDE = 6000
Y_BLOCKS = (SIDE // 8) ** 2  # 562500 luma blocks; 4:2:0 chroma: a quarter each
C_BLOCKS = (SIDE // 16) ** 2
MCUS = (SIDE // 16) ** 2  # 4:2:0 MCU = 16x16 pixels = 4 Y + 1 Cb + 1 Cr blocks


def refused(fmt: str, data: bytes, **kw) -> tuple[str, float]:
    """(the one-line error, seconds it took) for a frame decode_compressed must refuse."""
    t = time.perf_counter()
    with pytest.raises(ValueError) as exc:
        ic.decode_compressed(fmt, data, **kw)
    took = time.perf_counter() - t
    text = str(exc.value)
    assert "\n" not in text and len(text) < 600, text
    return text, took


def segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment of a cv2-written JPEG, a scan's entropy-coded data folded into
    its SOS segment (cv2 writes no fill bytes; inside scan data 0xFF is followed by 0x00 or RSTn)."""
    out, pos = [], 2
    while True:
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xD9:
            return [*out, (marker, pos, pos + 2)]
        end = pos + 2 + length
        if marker == 0xDA:
            while data[end] != 0xFF or data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                end += 1
        out.append((marker, pos, end))
        pos = end


def scans(data: bytes) -> list[bytes]:
    return [data[s:e] for m, s, e in segments(data) if m == 0xDA]


@lru_cache(maxsize=2)
def big_progressive() -> bytes:
    """A 6000x6000 black progressive JPEG from cv2 (libjpeg's 10-scan script, 4:2:0): ~210 KB."""
    return cv2.imencode(".jpg", np.zeros((SIDE, SIDE, 3), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()


def with_repeated_scan(data: bytes, repeats: int) -> bytes:
    """`data` with its second scan (luma AC 1-5: 59 bytes here) repeated before the end marker."""
    second = scans(data)[1]
    return data[:-2] + second * repeats + data[-2:]


# ----------------------------------------------------------------------------------------------- JPEG scans


def test_two_thousand_scan_progressive_jpeg_is_refused_in_milliseconds():
    base = big_progressive()
    assert len(scans(base)) == 10 and scans(base)[1][4] == 1  # 10 scans; the 2nd codes one component (luma)
    hostile = with_repeated_scan(base, 2000)
    assert 300_000 < len(hostile) < 400_000  # the file: 376 KB, 6000x6000, 2,000 repeated scans
    times = []
    for _ in range(5):
        text, took = refused("jpeg", hostile)
        times.append(took)
    assert text.startswith(f"JPEG frame refused before decoding ({len(hostile)} bytes, more than 64 scans")
    assert "publish baseline or standard progressive JPEG" in text
    assert statistics.median(times) < 0.25, times  # it was ~48 s of decoding


def test_block_visits_are_budgeted_against_the_pixel_cap():
    base = big_progressive()
    # libjpeg's script: DC first + refine (interleaved: 6 blocks per MCU), luma AC 1-5, 6-63, 1-63 (x2 refine),
    # Cb and Cr AC first + refine: 2*6*MCUS + 4*Y + 4*C blocks = 4.5 M, 8 per 64 pixels.
    plain = 2 * 6 * MCUS + 4 * Y_BLOCKS + 4 * C_BLOCKS
    frame = jpeg_walk(np.frombuffer(base, np.uint8))
    assert (frame.scans, frame.block_visits, frame.width, frame.height) == (10, plain, SIDE, SIDE)
    check_work(frame, ic.MAX_PIXELS)  # a legitimate frame of this size is within the budget
    extra = with_repeated_scan(base, 10)
    visits = plain + 10 * Y_BLOCKS  # 10125000 > 16 * 40e6 / 64 = 10000000
    text, _ = refused("jpeg", extra)
    assert f"its 20 scans visit {visits} 8x8 blocks, 18.0 per 64 pixels of its 6000x6000 frame, above the " \
           "10000000 allowed" in text
    frame = jpeg_walk(np.frombuffer(extra, np.uint8))
    check_work(frame, 41_000_000)  # budget 10250000: the same frame passes a higher cap


def test_scan_too_thin_for_the_blocks_it_declares_is_refused():
    base = big_progressive()
    first = scans(base)[0]  # interleaved DC scan: 6 * MCUS blocks, at least 1 bit each
    header_len = 2 + int.from_bytes(first[2:4], "big")
    thin = first[:header_len] + bytes(1000)  # 1000 bytes of zeros: valid entropy-coded data, far too short
    data = base.replace(first, thin)
    need = -(-6 * MCUS // 8)  # 843750 blocks -> 105469 bytes
    text, took = refused("jpeg", data)
    assert text.startswith(f"corrupt JPEG ({len(data)} bytes, the scan at byte ")
    assert f"holds 1000 bytes of image data, fewer than the {need} its {6 * MCUS} blocks take at least: the data " \
           "cannot fill the 6000x6000 frame it declares" in text
    assert took < 0.25  # libjpeg decoded it (0.4 s here) before warning "premature end of data segment"


def test_ac_scan_before_dc_and_a_component_never_coded_are_refused():
    small = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1]
    data = small.tobytes()
    no_dc = data.replace(scans(data)[0], b"")  # luma AC scans now come before any DC scan
    text, _ = refused("jpeg", no_dc)
    assert "progressive AC scan at byte" in text and "before the first DC scan of component 1" in text
    # A 4th component (id 4, 1x1, table 0) declared in the frame header that no scan codes.
    base = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()
    sof = base.index(b"\xff\xc0")
    length = int.from_bytes(base[sof + 2:sof + 4], "big")
    body = bytearray(base[sof + 4:sof + 2 + length])
    body[5] = 4
    four = base[:sof] + b"\xff\xc0" + struct.pack(">H", length + 3) + bytes(body) + b"\x04\x11\x00" + \
        base[sof + 2 + length:]
    text, _ = refused("jpeg", four)
    assert "component(s) [4] have no scan of their DC coefficients" in text


SAMPLING = {"420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
            "411": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411, "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422}


@pytest.mark.parametrize("progressive", [0, 1])
@pytest.mark.parametrize("sampling", list(SAMPLING))
@pytest.mark.parametrize("shape", [(1, 1), (33, 65), (241, 321)])
@pytest.mark.parametrize("content", ["flat", "noise", "grey"])
def test_ordinary_jpegs_still_decode(progressive, sampling, shape, content):
    """Flat frames are the edge: libjpeg spends exactly 1 bit per block on them, the least the check allows."""
    rng = np.random.default_rng(sum(shape))
    img = np.full((*shape, 3), 200, np.uint8) if content != "noise" else rng.integers(0, 256, (*shape, 3), np.uint8)
    if content == "grey":
        img = img[:, :, 0]
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, progressive, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, SAMPLING[sampling]]
    for extra in ([], [cv2.IMWRITE_JPEG_RST_INTERVAL, 1], [cv2.IMWRITE_JPEG_QUALITY, 5]):
        data = cv2.imencode(".jpg", img, params + extra)[1].tobytes()
        want = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        np.testing.assert_array_equal(ic.decode_compressed("jpeg", data), want)


def test_real_camera_jpegs_still_decode(shared_data):
    files = sorted(shared_data.glob("gardens_point_mini/*/*.jpg"))[:6]
    if not files:
        pytest.skip(f"no JPEG images under {shared_data}/gardens_point_mini")
    for f in files:
        data = f.read_bytes()
        want = cv2.imread(str(f), cv2.IMREAD_COLOR)[:, :, ::-1]
        np.testing.assert_array_equal(ic.decode_compressed("jpeg", data), want)
        # and the same picture re-encoded progressively (what a driver set to progressive sends)
        prog = cv2.imencode(".jpg", want[:, :, ::-1], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
        assert ic.decode_compressed("jpeg", prog).shape == want.shape


# ---------------------------------------------------------------------------------------------- PNG zlib


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def zeros_zlib(prefix: bytes, extra_mib: int) -> bytes:
    """A valid zlib stream of `prefix` + `extra_mib` MiB of zeros, from one sync-flushed deflate piece repeated
    (built in milliseconds; zlib.decompress checks it, adler32 included)."""
    c = zlib.compressobj(9)
    head = c.compress(prefix + bytes(1 << 20)) + c.flush(zlib.Z_SYNC_FLUSH)
    piece = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_SYNC_FLUSH)
    assert piece == c.compress(bytes(1 << 20)) + c.flush(zlib.Z_SYNC_FLUSH)  # the window is all zeros now
    a = zlib.adler32(prefix)
    s1, s2 = a & 0xFFFF, ((a >> 16) + (a & 0xFFFF) * (extra_mib << 20)) % 65521  # adler32 over the zeros
    return head + piece * (extra_mib - 1) + b"\x03\x00" + struct.pack(">I", (s2 << 16) | s1)  # final empty block


def png(width: int, height: int, idat: bytes, colour: int = 2, depth: int = 8, interlace: int = 0,
        before_idat: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + before_idat + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_png_idat_zlib_bomb_is_refused_before_libpng_inflates_it():
    rows = bytes(48 * (1 + 3 * 64))  # 64x48 RGB8: per row a filter byte and 192 bytes = 9264 bytes
    stream = zeros_zlib(rows, 1000)  # ~1 MB that inflates to 1 GB (libpng inflated 2 GB for 4.9 s)
    assert len(zlib.decompressobj().decompress(stream, 10_000)) == 10_000 and len(stream) < 1_100_000
    ok = png(64, 48, zlib.compress(rows))
    assert ic.decode_compressed("png", ok).shape == (48, 64, 3)
    text, took = refused("png", png(64, 48, stream))
    assert "its image data inflates past the 9264 bytes a 64x48 image holds" in text and took < 0.25


@pytest.mark.parametrize("kind", ["zTXt", "iTXt", "iCCP"])
def test_png_compressed_text_bombs_are_refused(kind):
    prefix = {"zTXt": b"Comment\x00\x00", "iTXt": b"XML:com.adobe.xmp\x00\x01\x00en\x00" + b"t" * 300 + b"\x00",
              "iCCP": b"icc\x00\x00"}
    rows = bytes(8 * (1 + 3 * 8))
    small = chunk(kind.encode(), prefix[kind] + zlib.compress(b"hello " * 100))
    if kind != "iCCP":  # (an ICC profile that small is refused by libpng itself; only its size matters here)
        assert ic.decode_compressed("png", png(8, 8, zlib.compress(rows), before_idat=small)).shape == (8, 8, 3)
    bomb = chunk(kind.encode(), prefix[kind] + zeros_zlib(b"", 7)) * 200  # 200 x 7 MiB: libpng took 6 s
    text, took = refused("png", png(8, 8, zlib.compress(rows), before_idat=bomb))
    assert "its text/ICC chunks inflate to more than 8 MiB" in text and took < 0.25


def adam7(img: np.ndarray) -> bytes:
    """Raw Adam7-interlaced rows (filter 0) of an 8-bit RGB image, by the PNG standard's pass table."""
    out = []
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):
        sub = img[y0::dy, x0::dx]
        if sub.size:
            out += [b"\x00" + row.tobytes() for row in sub]
    return b"".join(out)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (13, 17), (48, 64)])
def test_ordinary_pngs_still_decode(shape):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (*shape, 3), np.uint8)
    np.testing.assert_array_equal(ic.decode_compressed("png", png(shape[1], shape[0], zlib.compress(adam7(rgb)),
                                                                  interlace=1)), rgb)
    bgr = rgb[:, :, ::-1]
    for img, params in ((bgr, []), (bgr[:, :, 0], []), (bgr.astype(np.uint16) * 257, []),
                        (np.dstack([bgr, bgr[:, :, :1]]), []), (bgr[:, :, 0], [cv2.IMWRITE_PNG_BILEVEL, 1])):
        data = cv2.imencode(".png", img, params)[1].tobytes()
        want = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        np.testing.assert_array_equal(ic.decode_compressed("png", data), want)


def test_real_pngs_still_decode(shared_data):
    files = sorted(shared_data.glob("nordland_trimmed_dev/**/*.png"))[:4]
    if not files:
        pytest.skip(f"no PNG images under {shared_data}/nordland_trimmed_dev")
    for f in files:
        want = cv2.imread(str(f), cv2.IMREAD_COLOR)[:, :, ::-1]
        np.testing.assert_array_equal(ic.decode_compressed("png", f.read_bytes()), want)


# ------------------------------------------------------------------------------------- sender strings


def test_clip_caps_and_quotes_sender_values():
    assert clip("jpeg") == "'jpeg'"
    long = "jpeg" * 1_250_000
    assert clip(long) == "'" + "jpeg" * 20 + "'...(5000000 chars)"
    assert clip("a\nb") == "'a\\nb'"  # no forged log lines
    assert clip("x" * 80) == "'" + "x" * 80 + "'"
    weird = clip("\x00" * 80)  # escapes lengthen the repr: cut to 80 characters between quotes
    assert weird == "'" + "\\x00" * 20 + "'...(80 chars)"
    assert one_line("line one\n  line two\n") == "line one line two"
    assert one_line("y" * 1000, 100) == "y" * 100 + "...(1000 chars)"


def test_a_5mb_format_string_gives_a_short_error():
    fmt = "jpeg " * 1_000_000  # 5 MB
    data = ic.encode_compressed(np.zeros((8, 8, 3), np.uint8), "jpeg").data
    text, took = refused(fmt, data)
    assert text.startswith("CompressedImage format 'jpeg jpeg") and "...(5000000 chars) is not a format" in text
    assert len(text) < 300 and took < 0.1
    for bad in ("png\n" * 100_000, "x" * 200):  # a label that is no codec, and one too long to be a format
        text, _ = refused(bad, data)
        assert len(text) < 300 and "chars)" in text
    msg = type("Msg", (), dict(height=2, width=2, encoding="q" * 5_000_000, step=6, is_bigendian=0, data=bytes(12)))
    with pytest.raises(ValueError) as exc:
        ic.image_to_rgb(msg)
    assert "unsupported image encoding 'qqq" in str(exc.value) and len(str(exc.value)) < 300


# --------------------------------------------------------------------------------- bag metadata.yaml


@pytest.fixture(scope="module")
def broken_bag(tmp_path_factory) -> tuple[Path, int]:
    """A real rosbag2 written by `disam-bag from-folder`, then a tab put at the start of one line of its
    metadata.yaml (YAML forbids tabs in indentation): (bag, that line's number)."""
    root = tmp_path_factory.mktemp("broken")
    images = root / "ds" / "night" / "images"
    images.mkdir(parents=True)
    for k in range(3):
        cv2.imwrite(str(images / f"{k:03d}.png"), np.full((16, 24, 3), 40 * k, np.uint8))
    (root / "ds" / "night" / "poses.txt").write_text("".join(f"{0.1 * k:.1f} {k} 0 0 0 0 0 1\n" for k in range(3)))
    bag = root / "bag"
    with pytest.warns(UserWarning, match="no camera.yaml"):
        assert bag_main(["from-folder", str(root / "ds"), "night", str(bag)]) == 0
    meta = bag / "metadata.yaml"
    lines = meta.read_text().splitlines(keepends=True)
    lines[4] = "\t" + lines[4]
    meta.write_text("".join(lines))
    return bag, 5


def one_error_line(fn, argv, capsys) -> str:
    try:
        rc = fn(argv)
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in out + err, (rc, err)
    return lines[0]


def expect_yaml_line(line: str, bag: Path, n: int) -> None:
    assert f"{bag / 'metadata.yaml'} is not valid YAML (line {n}): re-record or restore the bag's metadata.yaml" \
        in line, line


def test_corrupt_metadata_yaml_is_one_line_in_bag_info(broken_bag, capsys):
    bag, n = broken_bag
    line = one_error_line(bag_main, ["info", str(bag)], capsys)
    assert line.startswith("disam-bag info: error: ")
    expect_yaml_line(line, bag, n)
    line = one_error_line(bag_main, ["to-folder", str(bag), str(bag.parent / "out"), "night"], capsys)
    expect_yaml_line(line, bag, n)


def test_corrupt_metadata_yaml_is_one_line_in_eval_calibrate_build_map(broken_bag, tiny_eval_world, tmp_path,
                                                                       capsys):
    from disam_ros.eval.calibrate import main as calibrate_main
    from disam_ros.eval.offline import main as offline_main
    from disam_ros.maps.build_map import main as build_map_main

    bag, n, world = *broken_bag, tiny_eval_world
    out = str(tmp_path / "out")
    for fn, argv in ((offline_main, ["--map", str(world["map"]), "--bag", str(bag), "--out", out]),
                     (calibrate_main, ["--map", str(world["map"]), "--bag", str(bag)]),
                     (build_map_main, ["--bag", str(bag), "--domain", "sunny", "--coarse", str(world["coarse"]),
                                       "--fine", str(world["fine"]), "--out", out])):
        expect_yaml_line(one_error_line(fn, argv, capsys), bag, n)
    assert not (tmp_path / "out").exists()


@pytest.mark.ros
def test_corrupt_metadata_yaml_is_one_line_in_replay(broken_bag, capsys):
    from disam_ros.ros.replay import main as replay_main

    bag, n = broken_bag
    expect_yaml_line(one_error_line(replay_main, [str(bag)], capsys), bag, n)
