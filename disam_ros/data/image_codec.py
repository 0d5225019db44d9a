"""sensor_msgs/Image and CompressedImage <-> HxWx3 uint8 RGB, in numpy (no ROS, no cv_bridge).

Works on duck-typed fields (height, width, encoding, step, is_bigendian, data / format, data), so rclpy
messages and the `rosbags` message classes used by the bag reader both go through the same code. Every
bad input raises a one-line ValueError that names the problem and the fix; the node logs it and keeps
serving.

Hostile input (the decoders run on whatever a network peer sends):
- Size is capped BEFORE any pixel is allocated: raw Images by height*width, PNG by its IHDR chunk, JPEG by
  its SOFn frame header (`max_pixels`, default MAX_PIXELS, and MAX_SIDE per side). A 109 KB PNG that
  declares 30000x30000 is refused from its first 29 bytes instead of costing 2.7 GB.
- CompressedImage.format is checked against the payload's magic bytes: the codec named in the format
  ("jpeg", "png", image_transport's "bgr8; jpeg compressed bgr8", ...) must be the one in the data, and only
  JPEG and PNG payloads are decoded (TIFF, WebP, BMP, GIF, PNM... are refused, whatever the label).
- JPEG structure, libjpeg's damage warnings and what is not detected: see `compressed_header`; the decoding
  work its scans may cost (scan count, bytes per block, block visits), `jpeg_scans`; PNG zlib bombs,
  `png_header`. Sender strings (format, encoding) are echoed through `logs.clip` only, and a format longer
  than MAX_FORMAT_CHARS is refused before it is parsed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from disam_ros.data.compressed_header import imdecode_jpeg, jpeg_walk
from disam_ros.data.jpeg_scans import check_work
from disam_ros.data.png_header import check_png_streams, png_header
from disam_ros.logs import clip

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
MAX_FORMAT_CHARS = 256  # image_transport writes e.g. "bgr8; jpeg compressed bgr8"
# Payloads we refuse, named in the message so the user knows what their publisher sends.
_OTHER_MAGIC = ((b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"), (b"GIF8", "GIF"),
                (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xff\x4f\xff\x51", "JPEG 2000"),
                *((f"P{i}".encode(), "PNM/PPM") for i in range(1, 8)))


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
        raise ValueError(f"unsupported image encoding {clip(encoding)}: publish one of {', '.join(ENCODINGS)} "
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
    if len(fmt or "") > MAX_FORMAT_CHARS:
        raise ValueError(f"CompressedImage format {clip(fmt)} is not a format: publish jpeg or png with "
                         "image_transport's format string (e.g. 'bgr8; jpeg compressed bgr8')")
    f = (fmt or "").strip().lower()
    if "compresseddepth" in f:
        raise ValueError(f"CompressedImage format {clip(fmt)} (compressedDepth) is not a camera image: "
                         "subscribe to the colour image topic")
    if not f:
        return None
    words = set(re.findall(r"[a-z0-9]+", f))
    named = [c for c, aliases in (("jpeg", {"jpeg", "jpg"}), ("png", {"png"})) if words & aliases]
    if len(named) != 1:
        raise ValueError(f"CompressedImage format {clip(fmt)} is not jpeg or png: republish with "
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
    the header's size is checked against the caps, a JPEG's structure walked and its scans' work bounded, a
    PNG's zlib streams bounded, before decoding."""
    declared = declared_codec(fmt)
    buf = _buffer(data)
    if buf.size == 0:
        raise ValueError(f"CompressedImage ({clip(fmt) if fmt else 'no format'}) has no data: the camera driver "
                         "sent an empty frame")
    kind = payload_kind(buf[:16].tobytes())
    if kind not in COMPRESSED_FORMATS:
        raise ValueError(f"CompressedImage payload is {kind} data (format {clip(fmt)}), not JPEG or PNG: publish "
                         "jpeg or png frames (image_transport's compressed plugin)")
    if declared is not None and declared != kind:
        raise ValueError(f"CompressedImage format {clip(fmt)} says {declared} but the payload is {kind.upper()}: "
                         "fix the publisher's format string or its encoder")
    if kind == "png":
        head = png_header(buf)
        check_size(head.width, head.height, "PNG frame", max_pixels, max_side)
        check_png_streams(buf, head)
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    else:
        frame = jpeg_walk(buf)
        check_size(frame.width, frame.height, "JPEG frame", max_pixels, max_side)
        check_work(frame, max_pixels)
        img, damage = imdecode_jpeg(buf[:frame.end])
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
