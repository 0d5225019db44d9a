"""How every benchmark suite hands its rows over: the table for people, one JSON line for machines, and the
same JSON in a file when asked (written atomically, so a run killed half way leaves no broken file)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from disam_ros.fsutil import atomic_write_text


def emit(suite: str, rows: list[dict[str, Any]], table: str, json_path: str | Path | None, **extra: Any) -> None:
    """Print the table and the JSON line `{"suite": suite, **extra, "results": rows}`; write it to json_path."""
    print(table)
    blob = json.dumps({"suite": suite, **extra, "results": rows})
    print(blob)
    if json_path:
        atomic_write_text(json_path, blob + "\n")
