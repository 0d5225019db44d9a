"""sensor_msgs/Image and CompressedImage <-> HxWx3 uint8 RGB, in numpy (no ROS, no cv_bridge).

Works on duck-typed fields (height, width, encoding, step, is_bigendian, data / format, data), so rclpy
messages and the `rosbags` message classes used by the bag reader both go through the same code. Every
bad input raises a one-line ValueError that names the problem and the fix; the node logs it and keeps
serving.
"""
from __future__ import annotations

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
_JPEG_SOI, _JPEG_EOI, _PNG_MAGIC = b"\xff\xd8", b"\xff\xd9", b"\x89PNG\r\n\x1a\n"


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


def decode_image(height: int, width: int, encoding: str, step: int, is_bigendian: int | bool, data: Any,
                 mono16_scaling: str = "full") -> np.ndarray:
    """Raw Image fields -> HxWx3 uint8 RGB (a fresh contiguous array), honouring row padding and endianness."""
    channels, dtype, order = _spec(encoding)
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ValueError(f"empty image ({width}x{height}, encoding {encoding}): the camera driver sent a "
                         "zero-size frame; check its resolution settings")
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


def image_to_rgb(msg: Any, mono16_scaling: str = "full") -> np.ndarray:
    """sensor_msgs/Image-like object -> HxWx3 uint8 RGB."""
    return decode_image(msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian, msg.data, mono16_scaling)


def decode_compressed(fmt: str, data: Any) -> np.ndarray:
    """CompressedImage fields (format 'jpeg', 'png', or image_transport's 'bgr8; jpeg compressed bgr8')
    -> HxWx3 uint8 RGB. The payload's magic bytes decide the codec; `format` is only checked for sanity."""
    f = (fmt or "").lower()
    if "compresseddepth" in f:
        raise ValueError(f"CompressedImage format {fmt!r} (compressedDepth) is not a camera image: "
                         "subscribe to the colour image topic")
    buf = _buffer(data)
    if buf.size == 0:
        raise ValueError(f"CompressedImage ({fmt or 'no format'}) has no data: the camera driver sent an "
                         "empty frame")
    head = buf[:8].tobytes()
    if head.startswith(_JPEG_SOI):
        # libjpeg decodes a truncated stream with a grey bottom and only warns: demand the end marker.
        tail = buf[-64:].tobytes().rstrip(b"\x00")
        if not tail.endswith(_JPEG_EOI):
            raise ValueError(f"corrupt JPEG ({buf.size} bytes, no end-of-image marker): the frame was "
                             "truncated in transit; check the driver and the QoS depth")
    elif not head.startswith(_PNG_MAGIC) and not any(k in f for k in COMPRESSED_FORMATS):
        raise ValueError(f"CompressedImage format {fmt!r} is not jpeg or png: republish with "
                         "image_transport's compressed plugin (jpeg/png)")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        kind = "JPEG" if head.startswith(_JPEG_SOI) else "PNG" if head.startswith(_PNG_MAGIC) else (fmt or "image")
        raise ValueError(f"corrupt {kind} ({buf.size} bytes could not be decoded): the frame is damaged; "
                         "check the driver and the compression settings")
    return np.ascontiguousarray(img[:, :, ::-1])


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage-like object -> HxWx3 uint8 RGB."""
    return decode_compressed(msg.format, msg.data)


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
