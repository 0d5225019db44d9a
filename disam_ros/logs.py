"""The package logger (`disam_ros`, hloc-style) and the one-call set-up the command-line tools use.

Library code logs with `logging.getLogger(__name__)` (a child of `disam_ros`), never print(): a program
that embeds the package decides where messages go, and the ROS node hands them to its rclpy logger.
No handler is attached at import, on purpose: until a program configures logging, Python's last-resort
handler still shows warnings on stderr (a NullHandler would swallow them), while info stays quiet.
A CLI calls `setup(verbosity)` once: -1 = warnings only (`--quiet`), 0 = info, 1+ = debug (`-v`).
"""
from __future__ import annotations

import logging
import sys
from typing import TextIO

NAME = "disam_ros"
logger = logging.getLogger(NAME)
FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"
DATEFMT = "%Y/%m/%d %H:%M:%S"


class _SetupHandler(logging.StreamHandler):
    """Marks the handler `setup` installed, so calling it again replaces it instead of doubling every line."""


def level_for(verbosity: int) -> int:
    """-1 (or less) -> WARNING, 0 -> INFO, 1 (or more) -> DEBUG."""
    return logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG


def setup(verbosity: int = 0, stream: TextIO | None = None) -> logging.Logger:
    """Send the package's log records at the level `verbosity` selects to `stream` (default stderr, so a
    CLI's stdout stays its result). Idempotent; records still propagate to the root logger's handlers."""
    for h in [h for h in logger.handlers if isinstance(h, _SetupHandler)]:
        logger.removeHandler(h)
    handler = _SetupHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    logger.addHandler(handler)
    logger.setLevel(level_for(verbosity))
    return logger
