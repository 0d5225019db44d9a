"""PNG frames before they are decoded: the size from IHDR, then the zlib streams bounded (the PNG half of the
hostile-input checks in `image_codec`).

The IHDR size is checked against the pixel caps by the caller before anything else. A PNG's zlib streams
are bounded here, before libpng sees them, because libpng inflates whatever they hold:
- IDAT data past the image (zlib expands up to ~1000:1): a 2 MB PNG of 64x48 pixels holding 2 GB of
  zeros after its rows cost 4.9 s of inflate and still decoded (libpng only warns "Too much image data").
  The IDAT stream is inflated here in 1 MiB pieces, nothing kept, and refused as soon as it yields more
  than the rows IHDR declares (filter byte + packed pixels per row; per pass when Adam7-interlaced).
- Compressed text and ICC chunks (zTXt, iTXt, iCCP): libpng inflates each up to 8 MB; 200 zTXt chunks of
  7 MB zeros (1.4 MB of PNG) cost 6 s. Their inflated sizes together may not pass MAX_METADATA_BYTES.
- More than MAX_CHUNKS chunks (encoders write IDAT chunks of 8 KiB or more) is refused, so the walk's own
  Python loop stays short.
Corrupt data (bad CRCs, a zlib error, a truncated stream) is left to libpng, which refuses it.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

MAX_METADATA_BYTES = 8 << 20  # inflated zTXt/iTXt/iCCP bytes in one frame (libpng's limit for ONE chunk)
MAX_CHUNKS = 65536
_PIECE = 1 << 20  # inflate output per step
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


@dataclass(frozen=True)
class PngHeader:
    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlace: int

    def raw_bytes(self) -> int:
        """Bytes the IDAT stream inflates to: per row a filter byte and the packed samples, per Adam7 pass."""
        bits = self.bit_depth * _CHANNELS.get(self.colour_type, 4)
        if not self.interlace:
            return self.height * (1 + (self.width * bits + 7) // 8)
        total = 0
        for x0, y0, dx, dy in _ADAM7:
            w, h = max(0, (self.width - x0 + dx - 1) // dx), max(0, (self.height - y0 + dy - 1) // dy)
            total += h * (1 + (w * bits + 7) // 8) if w else 0
        return total


def _corrupt(n: int, problem: str) -> ValueError:
    return ValueError(f"corrupt PNG ({n} bytes, {problem}): the frame is damaged; check the driver and the "
                      "compression settings")


def _bomb(n: int, problem: str) -> ValueError:
    return ValueError(f"PNG frame refused before decoding ({n} bytes, {problem}): a zlib bomb costs seconds of "
                      "decompression; publish PNG as a PNG encoder writes it (or jpeg)")


def png_header(buf: np.ndarray) -> PngHeader:
    """The IHDR chunk, which the PNG standard puts first."""
    head = buf[:29].tobytes()
    if len(head) < 29 or head[12:16] != b"IHDR":
        raise _corrupt(buf.size, "no valid IHDR header chunk")
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if 0 in (width, height):
        raise _corrupt(buf.size, f"IHDR says {width}x{height}")
    return PngHeader(width, height, head[24], head[25], head[28])


def _inflated(streams: list[memoryview], limit: int) -> int:
    """Bytes the zlib stream cut into `streams` inflates to, counted up to just past `limit` (then the
    inflate stops); what is inflated is dropped at once. A zlib error stops the count (libpng decides)."""
    d, total = zlib.decompressobj(), 0
    for piece in streams:
        data = piece
        while data and total <= limit and not d.eof:
            try:
                total += len(d.decompress(data, _PIECE))
            except zlib.error:
                return total
            data = d.unconsumed_tail
        if total > limit or d.eof:
            break
    return total


def _text_stream(kind: bytes, body: memoryview) -> memoryview | None:
    """The zlib stream inside a zTXt / iCCP (keyword NUL method data) or compressed iTXt chunk."""
    raw = bytes(body)  # (a copy of one chunk: the translated keyword of iTXt has no length limit)
    nul = raw.find(b"\x00")
    if nul < 0:
        return None
    if kind != b"iTXt":
        return body[nul + 2:]
    if len(raw) < nul + 3 or raw[nul + 1] != 1:  # compression flag 0: plain text
        return None
    lang = raw.find(b"\x00", nul + 3)
    trans = raw.find(b"\x00", lang + 1) if lang >= 0 else -1
    return body[trans + 1:] if trans >= 0 else None


def check_png_streams(buf: np.ndarray, header: PngHeader) -> None:
    """Walk the chunks and refuse zlib streams that inflate past what the frame can use (see the module)."""
    data, n = memoryview(buf.reshape(-1)), int(buf.size)
    pos, idat, metadata, chunks = 8, [], 0, 0
    while pos + 8 <= n:
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), bytes(data[pos + 4:pos + 8])
        body = data[pos + 8:min(n, pos + 8 + length)]
        chunks += 1
        if chunks > MAX_CHUNKS:
            raise _bomb(n, f"more than {MAX_CHUNKS} chunks; encoders write a few dozen")
        if kind == b"IDAT":
            idat.append(body)
        elif kind in (b"zTXt", b"iTXt", b"iCCP"):
            stream = _text_stream(kind, body)
            if stream is not None:
                metadata += _inflated([stream], MAX_METADATA_BYTES - metadata)
                if metadata > MAX_METADATA_BYTES:
                    raise _bomb(n, f"its text/ICC chunks inflate to more than {MAX_METADATA_BYTES >> 20} MiB")
        elif kind == b"IEND":
            break
        pos += 12 + length
    want = header.raw_bytes()
    if _inflated(idat, want) > want:
        raise _bomb(n, f"its image data inflates past the {want} bytes a {header.width}x{header.height} image holds")
