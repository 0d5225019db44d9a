"""What a JPEG will cost libjpeg, read from its frame and scan headers before any pixel is decoded.

libjpeg makes one pass over the frame's coefficient blocks per scan, and a progressive JPEG may hold any
number of scans: a 376 KB file declaring 6000x6000 with one small scan repeated 2,000 times kept the frame
worker decoding for ~48 s (libjpeg only warned "Inconsistent progression sequence" at the end). The walk in
`compressed_header` hands every frame (SOFn) and scan (SOS) header here. A frame is refused when
- it has more than MAX_SCANS scans (counted as they come: the walk stops at the 65th). libjpeg writes 1
  (baseline; one per component if not interleaved), 10 for a progressive colour frame, 6 for grey;
- a component has no scan of its DC coefficients (a conforming stream codes them all), or a progressive
  AC scan comes before its component's first DC scan (libjpeg warns, after doing the work);
and, in `check_work`, which the caller runs after its size check with its pixel cap, when
- a scan that codes every one of its blocks (sequential scans, progressive DC scans) holds fewer bytes than
  1 bit per block, the least a Huffman code spends (frames SOF0/1/2; arithmetic coding can spend less). So a
  frame's bytes bound its pixels: 6000x6000 4:2:0 needs 105 KB in each DC scan; short data, which libjpeg
  would only warn about after decoding, is refused first. libjpeg's black frames sit exactly at this floor;
- its scans together visit more blocks than SCAN_PASSES per 64 pixels of a `max_pixels` frame. cv2's
  progressive frames visit 8 (4:2:0) to 14 (4:4:4) per 64 pixels, baseline 1.5 to 3.
So the most a frame can cost is bounded by the pixel cap: the 2,000-scan file is refused in a few ms, and
the dearest frames the checks let through decode in about the time of a legitimate progressive frame at the
cap (measured at 6000x6000: 0.4 s 4:2:0 and 1.1 s 4:4:4 progressive, 0.2-0.3 s baseline; the 2,000-scan
file took 6.4 s here, 48 s in the issue). libjpeg itself is neither timed nor interrupted: cv2.imdecode
cannot be stopped, so its work is bounded before it starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MAX_SCANS = 64
SCAN_PASSES = 16  # 8x8 block visits allowed per 64 pixels of a frame of max_pixels (one pass over luma = 1)
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_HUFFMAN_DCT = frozenset({0xC0, 0xC1, 0xC2})  # frames whose every coded block costs at least 1 bit


def jpeg_error(n: int, problem: str, truncated: bool = False) -> ValueError:
    fix = "truncated in transit; check the driver and the QoS depth" if truncated else "damaged; check the " \
        "driver and the compression settings"
    return ValueError(f"corrupt JPEG ({n} bytes, {problem}): the frame was {fix}")


def costly_error(n: int, problem: str) -> ValueError:
    return ValueError(f"JPEG frame refused before decoding ({n} bytes, {problem}): it would cost far more "
                      "decoding than a camera frame; publish baseline or standard progressive JPEG")


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class JpegFrame:
    """A frame header and the scans seen so far (block visits, DC coverage)."""

    marker: int
    width: int
    height: int
    components: dict[int, tuple[int, int]]  # component id -> (H, V) sampling factors
    n_bytes: int
    scans: int = 0
    block_visits: int = 0
    dc_coded: set[int] = field(default_factory=set)
    thin: str = ""  # the first scan with fewer bytes than its blocks take (refused by check_work)
    end: int = 0  # just past the end-of-image marker, once reached

    @property
    def progressive(self) -> bool:
        return self.marker in _PROGRESSIVE

    def blocks(self, cid: int) -> int:
        """8x8 blocks of one component (what a non-interleaved scan of it codes)."""
        h, v = self.components[cid]
        hmax = max(c[0] for c in self.components.values())
        vmax = max(c[1] for c in self.components.values())
        return _ceil(_ceil(self.width * h, hmax), 8) * _ceil(_ceil(self.height * v, vmax), 8)

    def scan_blocks(self, ids: list[int]) -> int:
        """Blocks an interleaved scan of `ids` codes: whole MCUs, H*V blocks of each component per MCU."""
        if len(ids) == 1:
            return self.blocks(ids[0])
        hmax = max(c[0] for c in self.components.values())
        vmax = max(c[1] for c in self.components.values())
        mcus = _ceil(self.width, 8 * hmax) * _ceil(self.height, 8 * vmax)
        return mcus * sum(self.components[c][0] * self.components[c][1] for c in ids)


def parse_frame(marker: int, body: bytes, n: int, at: int) -> JpegFrame:
    """A SOFn segment body -> JpegFrame; malformed headers (which libjpeg refuses too) raise."""
    count = body[5] if len(body) >= 6 else 0
    if count == 0 or len(body) < 6 + 3 * count:
        raise jpeg_error(n, f"short frame header at byte {at}")
    size = (int.from_bytes(body[3:5], "big"), int.from_bytes(body[1:3], "big"))
    if 0 in size:
        raise jpeg_error(n, f"frame header says {size[0]}x{size[1]} (DNL-defined height is not supported)")
    comps: dict[int, tuple[int, int]] = {}
    for k in range(count):
        cid, hv = body[6 + 3 * k], body[7 + 3 * k]
        h, v = hv >> 4, hv & 15
        if cid in comps or not (1 <= h <= 4 and 1 <= v <= 4):
            raise jpeg_error(n, f"frame header at byte {at}: component {cid} is repeated or has sampling {h}x{v}")
        comps[cid] = (h, v)
    return JpegFrame(marker, size[0], size[1], comps, n)


def open_scan(frame: JpegFrame, body: bytes, at: int) -> int:
    """Account for a scan header (SOS body); the bits its entropy-coded data must hold at least."""
    n = frame.n_bytes
    frame.scans += 1
    if frame.scans > MAX_SCANS:
        raise costly_error(n, f"more than {MAX_SCANS} scans; encoders write 1 to about 10, and each scan is "
                              "a pass over the whole frame")
    count = body[0] if body else 0
    if count == 0 or len(body) < 4 + 2 * count:
        raise jpeg_error(n, f"short scan header at byte {at}")
    ids = [body[1 + 2 * k] for k in range(count)]
    unknown = [c for c in ids if c not in frame.components]
    if unknown or len(set(ids)) != count:
        raise jpeg_error(n, f"scan at byte {at} names component(s) {ids} of a frame with {sorted(frame.components)}")
    ss, ah = body[1 + 2 * count], body[3 + 2 * count] >> 4
    blocks = frame.scan_blocks(ids)
    frame.block_visits += blocks
    codes_dc = not frame.progressive or ss == 0
    if frame.progressive and not codes_dc and ids[0] not in frame.dc_coded:
        raise jpeg_error(n, f"progressive AC scan at byte {at} before the first DC scan of component {ids[0]}")
    if codes_dc and (ah == 0 or not frame.progressive):
        frame.dc_coded.update(ids)
    return blocks if codes_dc and frame.marker in _HUFFMAN_DCT else 0


def close_scan(frame: JpegFrame, min_bits: int, data_bytes: int, at: int) -> None:
    """Note the first scan whose entropy-coded data cannot hold 1 bit for each block it must code (refused
    by `check_work`, after the caller's size check, which says more about a frame that declares too much)."""
    if data_bytes * 8 < min_bits and not frame.thin:
        frame.thin = (f"the scan at byte {at} holds {data_bytes} bytes of image data, fewer than the "
                      f"{_ceil(min_bits, 8)} its {min_bits} blocks take at least: the data cannot fill the "
                      f"{frame.width}x{frame.height} frame it declares")


def finish(frame: JpegFrame) -> None:
    """At the end-of-image marker: every component must have had its DC coefficients coded."""
    missing = sorted(set(frame.components) - frame.dc_coded)
    if missing:
        raise jpeg_error(frame.n_bytes, f"component(s) {missing} have no scan of their DC coefficients")


def check_work(frame: JpegFrame, max_pixels: int) -> None:
    """Refuse a frame with a scan too thin for its blocks, or whose scans visit more blocks than SCAN_PASSES
    passes over a `max_pixels` frame."""
    if frame.thin:  # data missing: damage (or a frame declared far larger than its data)
        raise jpeg_error(frame.n_bytes, frame.thin)
    budget = SCAN_PASSES * _ceil(max_pixels, 64)
    if frame.block_visits > budget:
        passes = frame.block_visits * 64 / (frame.width * frame.height)
        raise costly_error(frame.n_bytes, f"its {frame.scans} scans visit {frame.block_visits} 8x8 blocks, "
                                          f"{passes:.1f} per 64 pixels of its {frame.width}x{frame.height} frame, "
                                          f"above the {budget} allowed ({SCAN_PASSES} per 64 pixels of the "
                                          f"{max_pixels / 1e6:g} megapixel cap; a progressive frame takes 8-14)")
