"""JPEG frames before and while they are decoded: a structure walk and libjpeg's own damage warnings captured
from fd 2 (the hostile-input half of `image_codec`; what the scans will cost: `jpeg_scans`; PNG: `png_header`).

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
never). A frame damaged that little decodes into a plausible picture and goes on to retrieval.
"""
from __future__ import annotations

import atexit
import os
import re
import sys
import tempfile
import threading
from typing import Any

import cv2
import numpy as np

from disam_ros.data.jpeg_scans import JpegFrame, close_scan, finish, jpeg_error, open_scan, parse_frame

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


def jpeg_walk(buf: np.ndarray) -> JpegFrame:
    """Walk the marker segments and entropy-coded data: the frame header with its scans accounted for
    (`jpeg_scans`) and `end` just past the EOI marker (what follows is padding). Raises a one-line ValueError
    for a truncated, malformed or too costly stream; the caller checks the size and `check_work` on its caps."""
    data, n = buf.tobytes(), int(buf.size)
    pos, frame, restart = 2, None, 0
    for _ in range(_MAX_SEGMENTS):
        hit = _NOT_FF.search(data, pos)  # skip the marker's 0xFF and any fill bytes before it (at C speed)
        if hit is None:
            raise jpeg_error(n, "no end-of-image marker", truncated=True)
        if hit.start() == pos:
            raise jpeg_error(n, f"byte {pos} is 0x{data[pos]:02X} where a marker must start")
        marker, pos = data[hit.start()], hit.start() + 1
        if marker == 0xD9:
            if frame is None or not frame.scans:
                raise jpeg_error(n, "end-of-image marker before any frame or scan")
            finish(frame)
            frame.end = pos
            return frame
        if marker == 0x01:  # TEM: no length
            continue
        if marker in (0x00, 0xD8) or 0xD0 <= marker <= 0xD7 or 0x02 <= marker <= 0xBF:
            raise jpeg_error(n, f"unexpected marker 0xFF{marker:02X} at byte {pos - 2}")
        length = int.from_bytes(data[pos:pos + 2], "big")
        if pos + 2 > n or pos + length > n:
            raise jpeg_error(n, "no end-of-image marker (the stream ends inside a header)", truncated=True)
        if length < 2:
            raise jpeg_error(n, f"segment 0xFF{marker:02X} at byte {pos - 2} has length {length}")
        body, seg_end = data[pos + 2:pos + length], pos + length
        if marker in _SOF:
            if frame is not None:
                raise jpeg_error(n, f"second frame header at byte {pos - 2}")
            frame = parse_frame(marker, body, n, pos - 2)
        elif marker == 0xDD:  # DRI: restart markers are allowed (and numbered) only with an interval
            restart = int.from_bytes(body[:2], "big")
        elif marker == 0xDA:
            if frame is None:
                raise jpeg_error(n, f"scan at byte {pos - 2} before the frame header")
            at = pos - 2
            min_bits = open_scan(frame, body, at)  # counted (and capped) before its data is searched
            pos = _scan_end(data, buf, seg_end, restart > 0)
            close_scan(frame, min_bits, pos - seg_end, at)
            continue
        pos = seg_end
    raise jpeg_error(n, f"more than {_MAX_SEGMENTS} marker segments (real encoders write a few dozen)")


def _scan_end(data: bytes, buf: np.ndarray, start: int, restarts: bool) -> int:
    """Position of the marker that ends the entropy-coded data starting at `start`, checking that marker
    and the restart markers inside (none without an interval, else RST0..7 from 0 in each scan). Regex and
    uint8 arrays only: a payload made of 0xFF bytes costs no more memory than its own size."""
    hit = _SCAN_STOP.search(data, start)
    if hit is None:
        raise jpeg_error(buf.size, "no end-of-image marker (the stream ends inside the image data)", truncated=True)
    stop = hit.start()
    if data[stop + 1] not in _AFTER_SCAN:
        raise jpeg_error(buf.size, f"0xFF 0x{data[stop + 1]:02X} inside the image data at byte {stop}")
    seg = buf[start:stop]
    after = seg[1:][seg[:-1] == 0xFF]  # the byte after each 0xFF: stuffed 0x00, fill 0xFF or RSTn
    rst = after[(after >= 0xD0) & (after <= 0xD7)] - np.uint8(0xD0)
    if len(rst) and not restarts:
        raise jpeg_error(buf.size, f"restart marker RST{rst[0]} in a scan at byte {start} without a restart interval")
    wrong = rst != np.resize(np.arange(8, dtype=np.uint8), len(rst))
    if wrong.any():
        i = int(wrong.argmax())
        raise jpeg_error(buf.size, f"restart marker RST{rst[i]} out of sequence (RST{i % 8} expected, interval {i})")
    return stop


def imdecode_jpeg(buf: np.ndarray) -> tuple[np.ndarray | None, str]:
    """cv2.imdecode with libjpeg's warnings captured: (image, first damage warning or "").

    libjpeg prints warnings with fprintf(stderr) and decodes on, so damage shows nowhere else. fd 2 is
    pointed at a temporary file for the call (a lock serialises JPEG decodes in the process); anything else
    written in that window (another thread's log line) is written back to the real stderr afterwards."""
    global _capture
    with _STDERR_LOCK:
        try:
            if _capture is None or _capture[0] != os.getpid():  # one file per process (not shared over fork)
                _capture = (os.getpid(), tempfile.TemporaryFile())  # noqa: SIM115  (reused, lives with the process)
                atexit.register(_capture[1].close)  # closed at exit, not left to the garbage collector's warning
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
