"""The node processes' signal handling and its start-up failure line (ROS-free; split from node_params.py,
which re-exports both)."""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

NODE_NAME = "disam_localizer"  # the node's name (node_params.NODE_NAME is this one)


class StopSignals:
    """SIGINT/SIGTERM: the first asks for a clean stop, a second exits at once (no traceback, no waiting).

    The handlers stay installed until the process ends: restoring Python's default SIGINT handler during
    teardown is what turned an impatient second Ctrl-C into a KeyboardInterrupt traceback."""

    def __init__(self, node_name: str = NODE_NAME) -> None:
        self.node_name = node_name  # named on the second signal's line
        self.event = threading.Event()
        self.install()

    def install(self) -> None:
        """(Re)install the handlers: after an import that put its own in place."""
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.event.is_set():
            os.write(2, f"[{self.node_name}] second {signal.Signals(signum).name}: exiting now\n".encode())
            os._exit(128 + signum)
        self.event.set()


def fail(text: str, prog: str = "disam-localizer") -> int:
    """A configuration error before the node has a logger: one line on stderr, exit status 2."""
    print(f"{prog}: error: {text}", file=sys.stderr)
    return 2
