"""The package logger (`disam_ros`, hloc-style) and the one-call set-up the command-line tools use.

Library code logs with `logging.getLogger(__name__)` (a child of `disam_ros`), never print(): a program
that embeds the package decides where messages go, and the ROS node hands them to its rclpy logger.
No handler is attached at import, on purpose: until a program configures logging, Python's last-resort
handler still shows warnings on stderr (a NullHandler would swallow them), while info stays quiet.
A CLI calls `setup(verbosity)` once: -1 = warnings only (`--quiet`), 0 = info, 1+ = debug (`-v`).

Values a sender controls (CompressedImage.format, Image.encoding, header.frame_id, a library's exception
text about a file) go into log lines and errors through `clip` / `one_line` only: throttling counts lines,
not bytes, and a 5 MB format string echoed in full made 10.5 MB of log in 10 s.
"""
from __future__ import annotations

import logging
import sys
from typing import TextIO

NAME = "disam_ros"
logger = logging.getLogger(NAME)
FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"
DATEFMT = "%Y/%m/%d %H:%M:%S"
ECHO_CHARS = 80  # the most characters of a sender-controlled value a log line or error repeats


class _SetupHandler(logging.StreamHandler):
    """Marks the handler `setup` installed, so calling it again replaces it instead of doubling every line.

    Without an explicit stream it writes to whatever `sys.stderr` is at each record, not the one at setup: a CLI's
    main() called in-process (tests, notebooks, another tool) must not leave a handler on a stream that was
    swapped out and closed since ("I/O operation on closed file" on every later log line)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self._follow_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stderr:
            self.stream = sys.stderr
        super().emit(record)


def level_for(verbosity: int) -> int:
    """-1 (or less) -> WARNING, 0 -> INFO, 1 (or more) -> DEBUG."""
    return logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG


def setup(verbosity: int = 0, stream: TextIO | None = None) -> logging.Logger:
    """Send the package's log records at the level `verbosity` selects to `stream` (default stderr, so a
    CLI's stdout stays its result). Idempotent; records still propagate to the root logger's handlers."""
    for h in [h for h in logger.handlers if isinstance(h, _SetupHandler)]:
        logger.removeHandler(h)
    handler = _SetupHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    logger.addHandler(handler)
    logger.setLevel(level_for(verbosity))
    return logger


def clip(value: object, limit: int = ECHO_CHARS) -> str:
    """`value` quoted for a log line, at most `limit` characters of it: repr() form, so newlines and control
    characters cannot forge extra lines, and "'jpegjpeg...'...(5000000 chars)" when it was longer."""
    text = value if isinstance(value, str) else str(value)
    shown = repr(text[:limit])
    cut = len(text) > limit or len(shown) > limit + 2
    if len(shown) > limit + 2:  # escapes (\x00, \U0010ffff) lengthen the repr: cut it too, keep it quoted
        shown = shown[:limit + 1] + shown[0]
    return f"{shown}...({len(text)} chars)" if cut else shown


def one_line(text: object, limit: int = 4 * ECHO_CHARS) -> str:
    """A message from elsewhere (a library's exception, a parser's report) as one line of at most `limit`
    characters: whitespace runs, newlines included, become one space; longer text ends '...(N chars)'."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else f"{flat[:limit]}...({len(flat)} chars)"
