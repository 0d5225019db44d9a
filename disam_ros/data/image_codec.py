"""sensor_msgs/Image and CompressedImage <-> HxWx3 uint8 RGB, in numpy (no ROS, no cv_bridge).

Works on duck-typed fields (height, width, encoding, step, is_bigendian, data / format, data), so rclpy
messages and the `rosbags` message classes used by the bag reader both go through the same code. Every
bad input raises a one-line ValueError that names the problem and the fix; the node logs it and keeps
serving.

Hostile input (the decoders run on whatever a network peer sends):
- Size is capped BEFORE any pixel is allocated: raw Images by height*width, PNG by its IHDR chunk, JPEG by
  its SOFn frame header (`max_pixels`, default MAX_PIXELS, and MAX_SIDE per side). A 109 KB PNG that
  declares 30000x30000 is refused from its first 24 bytes instead of costing 2.7 GB.
- CompressedImage.format is checked against the payload's magic bytes: the codec named in the format
  ("jpeg", "png", image_transport's "bgr8; jpeg compressed bgr8", ...) must be the one in the data, and only
  JPEG and PNG payloads are decoded (TIFF, WebP, BMP, GIF, PNM... are refused, whatever the label).
- JPEG structure is walked before decoding: markers and segment lengths, one frame header, a scan before the
  end marker, and inside entropy-coded data every 0xFF must be a stuffed 0x00, a fill byte, a restart marker
  (only with a restart interval, RST0..7 in sequence from 0 in each scan) or a marker that may end a scan.
  Bytes after the end-of-image marker (zero or junk padding from MJPEG drivers) are ignored; a stream that
  ends before it is truncated.
- Entropy damage that keeps that structure (random bytes over the data, bytes cut from the middle) is at
  best WARNED about by libjpeg, which decodes on into a smeared picture. Its warnings go to file descriptor
  2, so the decode runs with fd 2 captured (under a lock; other output in that window is written back) and
  "Corrupt JPEG data ..." / "Premature end of JPEG file" refuses the frame.
Not detected: libjpeg-turbo's fast Huffman path decodes invalid codes silently as zeros, so damage after
which the decoder resynchronises with the right block count gives no warning at all. Measured on 640x360
quality-90 frames, damage at random places: blocks of 1000 random bytes and cuts of 200+ bytes are refused
98-100 % of the time, 64-byte blocks/cuts 65-75 %, 1-16 bytes only 20-55 % (a few flipped coefficient bits
never). A frame damaged that little decodes into a plausible picture and goes on to retrieval. PNG relies
on libpng's own checks (chunk CRCs, zlib checksums, filter bytes), which refuse truncated or corrupted data.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# encoding -> (channels, dtype, channel order of the stored pixel). 8UC3/8UC4 follow OpenCV (BGR/BGRA),
# as cv_bridge does.
ENCODINGS: dict[str, tuple[int, np.dtype, str]] = {
    "rgb8": (3, np.dtype(np.uint8), "rgb"),
    "bgr8": (3, np.dtype(np.uint8), "bgr"),
    "rgba8": (4, np.dtype(np.uint8), "rgba"),
    "bgra8": (4, np.dtype(np.uint8), "bgra"),
    "mono8": (1, np.dtype(np.uint8), "mono"),
    "8UC1": (1, np.dtype(np.uint8), "mono"),
    "8UC3": (3, np.dtype(np.uint8), "bgr"),
    "8UC4": (4, np.dtype(np.uint8), "bgra"),
    "mono16": (1, np.dtype(np.uint16), "mono"),
    "16UC1": (1, np.dtype(np.uint16), "mono"),
}
COMPRESSED_FORMATS = ("jpeg", "png")
_JPEG_SOI, _PNG_MAGIC = b"\xff\xd8", b"\x89PNG\r\n\x1a\n"
MAX_SIDE = 16384  # pixels per side: above any camera, below what a decoder bomb declares
MAX_PIXELS = 40_000_000  # width*height: a 40 MP frame is 120 MB of RGB; a camera sends far less
# Payloads we refuse, named in the message so the user knows what their publisher sends.
_OTHER_MAGIC = ((b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"), (b"GIF8", "GIF"),
                (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xff\x4f\xff\x51", "JPEG 2000"),
                *((f"P{i}".encode(), "PNM/PPM") for i in range(1, 8)))
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (C4 DHT, C8 JPG, CC DAC are not)
# Markers that may end entropy-coded data: EOI, tables or the next scan (progressive), DNL, DRI, APPn, COM.
_AFTER_SCAN = frozenset([0xC4, 0xCC, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, *range(0xE0, 0xF0), 0xFE])
_LIBJPEG_DAMAGE = re.compile(r"^(Corrupt JPEG data|Premature end of JPEG file|Inconsistent progression|"
                             r"Invalid SOS parameters)")
_NOT_FF = re.compile(rb"[^\xff]")
_SCAN_STOP = re.compile(rb"\xff[^\x00\xff\xd0-\xd7]")  # 0xFF + a byte that is no stuffing, fill or RSTn
_MAX_SEGMENTS = 4096  # a crafted stream of tiny segments must not cost seconds of Python loop
_STDERR_LOCK = threading.Lock()
_capture: tuple[int, Any] | None = None  # (pid, temporary file) that fd 2 points at while libjpeg runs


@dataclass(frozen=True)
class ImageFields:
    """The data fields of a sensor_msgs/Image (copy them onto a message with setattr)."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes


@dataclass(frozen=True)
class CompressedFields:
    """The data fields of a sensor_msgs/CompressedImage."""

    format: str
    data: bytes


def bytes_per_pixel(encoding: str) -> int:
    ch, dt, _ = _spec(encoding)
    return ch * dt.itemsize


def _spec(encoding: str) -> tuple[int, np.dtype, str]:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ValueError(f"unsupported image encoding {encoding!r}: publish one of {', '.join(ENCODINGS)} "
                         "(or CompressedImage jpeg/png)") from None


def _buffer(data: Any) -> np.ndarray:
    """uint8 view of bytes / bytearray / array.array('B') / memoryview / ndarray / list without copying."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _to_rgb(pixels: np.ndarray, order: str) -> np.ndarray:
    if order == "rgb":
        return pixels
    if order == "bgr":
        return pixels[:, :, ::-1]
    if order == "rgba":
        return pixels[:, :, :3]
    if order == "bgra":
        return pixels[:, :, 2::-1]
    return np.repeat(pixels[:, :, :1], 3, axis=2)


def mono16_to_8(pixels: np.ndarray, scaling: str = "full") -> np.ndarray:
    """16-bit grey -> 8-bit. ``full`` maps 0..65535 onto 0..255 (x/257, rounded: cv_bridge-like and
    frame-independent); ``minmax`` stretches each frame's own range (for 10/12-bit sensors or depth)."""
    p = pixels.astype(np.float32)
    if scaling == "full":
        return np.rint(p / 257.0).astype(np.uint8)
    if scaling == "minmax":
        lo, hi = float(p.min()), float(p.max())
        return np.zeros(p.shape, np.uint8) if hi <= lo else np.rint((p - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    raise ValueError(f"unknown mono16 scaling {scaling!r}: use 'full' or 'minmax'")


def check_size(width: int, height: int, what: str, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> None:
    """Refuse a frame whose declared size is above the caps, before anything of that size is allocated."""
    if width > max_side or height > max_side or width * height > max_pixels:
        raise ValueError(f"{what} of {width}x{height} pixels is above the cap of {max_side} px per side and "
                         f"{max_pixels / 1e6:g} megapixels: send camera-size frames (downscale at the driver) or "
                         "raise max_pixels/max_side where such frames are meant")


def decode_image(height: int, width: int, encoding: str, step: int, is_bigendian: int | bool, data: Any,
                 mono16_scaling: str = "full", *, max_pixels: int = MAX_PIXELS,
                 max_side: int = MAX_SIDE) -> np.ndarray:
    """Raw Image fields -> HxWx3 uint8 RGB (a fresh contiguous array), honouring row padding and endianness.
    Frames above `max_pixels` (or `max_side` per side) are refused before any conversion."""
    channels, dtype, order = _spec(encoding)
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ValueError(f"empty image ({width}x{height}, encoding {encoding}): the camera driver sent a "
                         "zero-size frame; check its resolution settings")
    check_size(width, height, f"image ({encoding})", max_pixels, max_side)
    bpp = channels * dtype.itemsize
    if step < width * bpp:
        raise ValueError(f"image step {step} is smaller than width*bytes_per_pixel = {width}*{bpp} = "
                         f"{width * bpp} for {encoding}: set step to at least {width * bpp}")
    buf = _buffer(data)
    if buf.size < height * step:
        raise ValueError(f"image data has {buf.size} bytes, fewer than height*step = {height}*{step} = "
                         f"{height * step} ({encoding} {width}x{height}): the message is truncated or "
                         "height/step are wrong")
    rows = buf[: height * step].reshape(height, step)[:, : width * bpp]
    if dtype.itemsize > 1:
        dt = dtype.newbyteorder(">" if is_bigendian else "<")
        pixels = np.ascontiguousarray(rows).view(dt).reshape(height, width, channels)
        pixels = mono16_to_8(pixels, mono16_scaling)
    else:
        pixels = rows.reshape(height, width, channels)
    return np.ascontiguousarray(_to_rgb(pixels, order))


def image_to_rgb(msg: Any, mono16_scaling: str = "full", *, max_pixels: int = MAX_PIXELS,
                 max_side: int = MAX_SIDE) -> np.ndarray:
    """sensor_msgs/Image-like object -> HxWx3 uint8 RGB."""
    return decode_image(msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian, msg.data, mono16_scaling,
                        max_pixels=max_pixels, max_side=max_side)


def declared_codec(fmt: str) -> str | None:
    """The codec a CompressedImage.format names ('jpeg' or 'png'; image_transport writes e.g. "bgr8; jpeg
    compressed bgr8"), None when the string is empty (then the payload alone decides)."""
    f = (fmt or "").strip().lower()
    if "compresseddepth" in f:
        raise ValueError(f"CompressedImage format {fmt!r} (compressedDepth) is not a camera image: "
                         "subscribe to the colour image topic")
    if not f:
        return None
    words = set(re.findall(r"[a-z0-9]+", f))
    named = [c for c, aliases in (("jpeg", {"jpeg", "jpg"}), ("png", {"png"})) if words & aliases]
    if len(named) != 1:
        raise ValueError(f"CompressedImage format {fmt!r} is not jpeg or png: republish with "
                         "image_transport's compressed plugin (jpeg/png)")
    return named[0]


def payload_kind(head: bytes) -> str:
    """'jpeg' or 'png' from the magic bytes, else a name for the refusal ('TIFF', 'WebP', ..., 'unknown')."""
    if head.startswith(_JPEG_SOI):
        return "jpeg"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp":
        return "HEIF/AVIF"
    return next((name for magic, name in _OTHER_MAGIC if head.startswith(magic)), "unknown")


def decode_compressed(fmt: str, data: Any, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> np.ndarray:
    """CompressedImage fields -> HxWx3 uint8 RGB. The declared codec must match the payload's magic bytes;
    the header's size is checked against the caps, and a JPEG's structure walked, before decoding."""
    declared = declared_codec(fmt)
    buf = _buffer(data)
    if buf.size == 0:
        raise ValueError(f"CompressedImage ({fmt or 'no format'}) has no data: the camera driver sent an "
                         "empty frame")
    kind = payload_kind(buf[:16].tobytes())
    if kind not in COMPRESSED_FORMATS:
        raise ValueError(f"CompressedImage payload is {kind} data (format {fmt!r}), not JPEG or PNG: publish "
                         "jpeg or png frames (image_transport's compressed plugin)")
    if declared is not None and declared != kind:
        raise ValueError(f"CompressedImage format {fmt!r} says {declared} but the payload is {kind.upper()}: "
                         "fix the publisher's format string or its encoder")
    if kind == "png":
        width, height = _png_size(buf)
        check_size(width, height, "PNG frame", max_pixels, max_side)
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    else:
        width, height, end = _jpeg_walk(buf)
        check_size(width, height, "JPEG frame", max_pixels, max_side)
        img, damage = _imdecode_jpeg(buf[:end])
        if damage:
            raise ValueError(f"corrupt JPEG ({buf.size} bytes, libjpeg: {damage}): the frame was damaged in "
                             "transit or by the encoder; check the driver and the QoS")
    if img is None or img.size == 0:
        raise ValueError(f"corrupt {kind.upper()} ({buf.size} bytes could not be decoded): the frame is damaged; "
                         "check the driver and the compression settings")
    return np.ascontiguousarray(img[:, :, ::-1])


def compressed_to_rgb(msg: Any, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> np.ndarray:
    """sensor_msgs/CompressedImage-like object -> HxWx3 uint8 RGB."""
    return decode_compressed(msg.format, msg.data, max_pixels=max_pixels, max_side=max_side)


def _png_size(buf: np.ndarray) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which the PNG standard puts first."""
    head = buf[:24].tobytes()
    size = (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) if len(head) == 24 else (0, 0)
    if head[12:16] != b"IHDR" or 0 in size:
        raise ValueError(f"corrupt PNG ({buf.size} bytes, no valid IHDR header chunk): the frame is damaged; check "
                         "the driver and the compression settings")
    return size


def _jpeg_error(n: int, problem: str, truncated: bool = False) -> ValueError:
    fix = "truncated in transit; check the driver and the QoS depth" if truncated else "damaged; check the " \
        "driver and the compression settings"
    return ValueError(f"corrupt JPEG ({n} bytes, {problem}): the frame was {fix}")


def _jpeg_walk(buf: np.ndarray) -> tuple[int, int, int]:
    """Walk the marker segments and entropy-coded data: (width, height, end), `end` just past the EOI
    marker (what follows is padding). Raises a one-line ValueError for a truncated or malformed stream."""
    data, n = buf.tobytes(), int(buf.size)
    pos, size, scanned, restart = 2, None, False, 0
    for _ in range(_MAX_SEGMENTS):
        hit = _NOT_FF.search(data, pos)  # skip the marker's 0xFF and any fill bytes before it (at C speed)
        if hit is None:
            raise _jpeg_error(n, "no end-of-image marker", truncated=True)
        if hit.start() == pos:
            raise _jpeg_error(n, f"byte {pos} is 0x{data[pos]:02X} where a marker must start")
        marker, pos = data[hit.start()], hit.start() + 1
        if marker == 0xD9:
            if size is None or not scanned:
                raise _jpeg_error(n, "end-of-image marker before any frame or scan")
            return size[0], size[1], pos
        if marker == 0x01:  # TEM: no length
            continue
        if marker in (0x00, 0xD8) or 0xD0 <= marker <= 0xD7 or 0x02 <= marker <= 0xBF:
            raise _jpeg_error(n, f"unexpected marker 0xFF{marker:02X} at byte {pos - 2}")
        length = int.from_bytes(data[pos:pos + 2], "big")
        if pos + 2 > n or pos + length > n:
            raise _jpeg_error(n, "no end-of-image marker (the stream ends inside a header)", truncated=True)
        if length < 2:
            raise _jpeg_error(n, f"segment 0xFF{marker:02X} at byte {pos - 2} has length {length}")
        body, seg_end = data[pos + 2:pos + length], pos + length
        if marker in _SOF:
            if size is not None or len(body) < 6:
                raise _jpeg_error(n, f"{'second' if size else 'short'} frame header at byte {pos - 2}")
            size = (int.from_bytes(body[3:5], "big"), int.from_bytes(body[1:3], "big"))
            if 0 in size:
                raise _jpeg_error(n, f"frame header says {size[0]}x{size[1]} (DNL-defined height is not supported)")
        elif marker == 0xDD:  # DRI: restart markers are allowed (and numbered) only with an interval
            restart = int.from_bytes(body[:2], "big")
        elif marker == 0xDA:
            if size is None:
                raise _jpeg_error(n, f"scan at byte {pos - 2} before the frame header")
            pos, scanned = _scan_end(data, buf, seg_end, restart > 0), True
            continue
        pos = seg_end
    raise _jpeg_error(n, f"more than {_MAX_SEGMENTS} marker segments (real encoders write a few dozen)")


def _scan_end(data: bytes, buf: np.ndarray, start: int, restarts: bool) -> int:
    """Position of the marker that ends the entropy-coded data starting at `start`, checking that marker
    and the restart markers inside (none without an interval, else RST0..7 from 0 in each scan). Regex and
    uint8 arrays only: a payload made of 0xFF bytes costs no more memory than its own size."""
    hit = _SCAN_STOP.search(data, start)
    if hit is None:
        raise _jpeg_error(buf.size, "no end-of-image marker (the stream ends inside the image data)", truncated=True)
    stop = hit.start()
    if data[stop + 1] not in _AFTER_SCAN:
        raise _jpeg_error(buf.size, f"0xFF 0x{data[stop + 1]:02X} inside the image data at byte {stop}")
    seg = buf[start:stop]
    after = seg[1:][seg[:-1] == 0xFF]  # the byte after each 0xFF: stuffed 0x00, fill 0xFF or RSTn
    rst = after[(after >= 0xD0) & (after <= 0xD7)] - np.uint8(0xD0)
    if len(rst) and not restarts:
        raise _jpeg_error(buf.size, f"restart marker RST{rst[0]} in a scan at byte {start} without a restart interval")
    wrong = rst != np.resize(np.arange(8, dtype=np.uint8), len(rst))
    if wrong.any():
        i = int(wrong.argmax())
        raise _jpeg_error(buf.size, f"restart marker RST{rst[i]} out of sequence (RST{i % 8} expected, interval {i})")
    return stop


def _imdecode_jpeg(buf: np.ndarray) -> tuple[np.ndarray | None, str]:
    """cv2.imdecode with libjpeg's warnings captured: (image, first damage warning or "").

    libjpeg prints warnings with fprintf(stderr) and decodes on, so damage shows nowhere else. fd 2 is
    pointed at a temporary file for the call (a lock serialises JPEG decodes in the process); anything else
    written in that window (another thread's log line) is written back to the real stderr afterwards."""
    global _capture
    with _STDERR_LOCK:
        try:
            if _capture is None or _capture[0] != os.getpid():  # one file per process (not shared over fork)
                _capture = (os.getpid(), tempfile.TemporaryFile())  # noqa: SIM115  (reused, lives with the process)
            tmp = _capture[1]
            tmp.seek(0)
            tmp.truncate()
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no usable fd 2 or temporary file: decode without the check
            return cv2.imdecode(buf, cv2.IMREAD_COLOR), ""
        try:
            os.dup2(tmp.fileno(), 2)
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        lines = tmp.read().decode(errors="replace").splitlines(keepends=True)
    damage = [ln.strip() for ln in lines if _LIBJPEG_DAMAGE.match(ln)]
    other = "".join(ln for ln in lines if not _LIBJPEG_DAMAGE.match(ln))
    if other:
        os.write(2, other.encode())
    return img, damage[0] if damage else ""


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise ValueError(f"expected a non-empty HxWx3 uint8 RGB array, got {rgb.dtype} {rgb.shape}: "
                         "convert with np.asarray(img, np.uint8)")
    return rgb


def encode_image(rgb: np.ndarray, encoding: str = "rgb8", padding: int = 0, bigendian: bool = False) -> ImageFields:
    """HxWx3 uint8 RGB -> Image fields; `padding` extra bytes per row (non-zero filler, so a decoder that
    ignores `step` shows garbage); mono from BT.601 luma, mono16 as value*257."""
    rgb = _check_rgb(rgb)
    channels, dtype, order = _spec(encoding)
    h, w = rgb.shape[:2]
    if order == "rgb":
        px = rgb
    elif order == "bgr":
        px = rgb[:, :, ::-1]
    elif order in ("rgba", "bgra"):
        alpha = np.full((h, w, 1), 255, np.uint8)
        px = np.concatenate([rgb if order == "rgba" else rgb[:, :, ::-1], alpha], axis=2)
    else:
        px = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)[:, :, None]
    if dtype.itemsize > 1:
        px = (px.astype(np.uint32) * 257).astype(dtype.newbyteorder(">" if bigendian else "<"))
    row = np.ascontiguousarray(px).reshape(h, -1).view(np.uint8)
    if padding:
        row = np.concatenate([row, np.full((h, int(padding)), 0xAB, np.uint8)], axis=1)
    bpp = channels * dtype.itemsize
    return ImageFields(h, w, encoding, int(bool(bigendian) and dtype.itemsize > 1), w * bpp + int(padding),
                       row.tobytes())


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> CompressedFields:
    """HxWx3 uint8 RGB -> CompressedImage fields (jpeg or png)."""
    rgb = _check_rgb(rgb)
    if fmt not in COMPRESSED_FORMATS:
        raise ValueError(f"unsupported compressed format {fmt!r}: use one of {COMPRESSED_FORMATS}")
    ext, params = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality)]) if fmt == "jpeg" else (".png", [])
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
    return CompressedFields(fmt, buf.tobytes())
