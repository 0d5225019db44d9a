"""Argument checks every disam command line shares: a bad value becomes ONE line and exit status 2, never a
traceback later (the house rule for CLIs). Base layer: imports nothing from disam_ros, so every tool (data,
training, retrieval, eval, ros, bench) may use it."""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import disam_ros


def version_text(prog: str) -> str:
    """What `--version` prints: the command and the package version (what a bug report should name)."""
    return f"{prog} (disam_ros {disam_ros.__version__})"


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line naming the fix, instead of usage + error, and answers
    `--version` (every command and sub-command built on it)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.add_help:
            self.add_argument("--version", action="version", version=version_text(self.prog),
                              help="print the command's package version and exit")

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(kind: type, test: Callable[[float], bool], need: str) -> Callable[[str], int | float]:
    """An argparse `type=` that parses `kind` and checks `test`; the failure names what is needed."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not (math.isfinite(value) and test(value)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {need}")
        return value
    return parse


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a number > 0")
non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0")
probability = _number(float, lambda v: 0 <= v < 1, "a probability in [0, 1)")
probability_or_one = _number(float, lambda v: 0 <= v <= 1, "a probability in [0, 1]")
scale_share = _number(float, lambda v: 0.1 <= v <= 1, "a scale share in [0.1, 1]")


def on_off(text: str) -> bool:
    """A switch: on/off, true/false, yes/no or 1/0 (any case)."""
    value = {"on": True, "true": True, "yes": True, "1": True,
             "off": False, "false": False, "no": False, "0": False}.get(text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not on or off")
    return value


def int_list(text: str) -> list[int]:
    """'1000,10000' -> [1000, 10000], every item an integer >= 1 (sizes, counts)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r} lists nothing: need integers >= 1, comma-separated")
    return [positive_int(t) for t in items]


def image_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480); '128' -> (128, 128); both sides whole pixels >= 16."""
    w, _, h = text.lower().strip().partition("x")
    size = (int(w), int(h or w)) if (w + h).isdigit() else (0, 0)
    if min(size) < 16:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT in pixels >= 16, e.g. 640x480")
    return size


def distance_band(text: str) -> tuple[float, float]:
    """'8,16' -> (8.0, 16.0): a band of distances in metres, 0 <= near <= far ('0,0' = off)."""
    items = [t.strip() for t in text.split(",")]
    try:
        lo, hi = (float(t) for t in items)
    except ValueError:
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
        raise argparse.ArgumentTypeError(f"{text!r} is not a band NEAR,FAR in metres with 0 <= NEAR <= FAR")
    return lo, hi


def name_list(text: str) -> tuple[str, ...]:
    """'night,snow' -> ('night', 'snow'); an empty list is an error, not 'all'."""
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r} lists nothing: need names, comma-separated")
    return items


def folder_name(text: str) -> str:
    """A condition name: one folder name, so ROOT/<condition> stays inside ROOT."""
    if not text or text in (".", "..") or "/" in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder name: a condition is one name such as night")
    return text


def output_dir_error(path: str | Path, option: str) -> str | None:
    """Why `path` cannot become (or be) an output folder, checked before any work is done; None if it can.

    Catches what otherwise fails late with an OSError traceback: the path or one of its parents is a file.
    (Permissions are left to the write itself: tests and containers run as root, where they never stop it.)
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"{option} {path} is a file, not a folder: choose a folder path"
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{option} {path}: {parent} is a file, so no folder can be made inside it: choose another path"
            return None
    return None


def output_file_error(path: str | Path, option: str) -> str | None:
    """Why `path` cannot become an output file, checked before a run of minutes that would end by writing it;
    None if it can (its folder is made when written)."""
    path = Path(path)
    if path.is_dir():
        return f"{option} {path} is a folder: give a file path, e.g. {path / 'out.json'}"
    return output_dir_error(path.parent, f"the folder of {option}")


def check_output_files(parser: argparse.ArgumentParser, args: argparse.Namespace, *options: str) -> None:
    """`parser.error` (exit 2, one line) for the first of these file options (e.g. "--json") that is set and
    cannot be written."""
    for option in options:
        value = getattr(args, option.lstrip("-").replace("-", "_"), None)
        if value and (problem := output_file_error(value, option)):
            parser.error(problem)


def os_error_line(exc: OSError, fix: str) -> str:
    """'PATH: reason; fix' for a system OSError (no errno noise); our own OSErrors already name their fix."""
    if exc.filename is None or not exc.strerror:
        return str(exc)
    return f"{exc.filename}: {exc.strerror.lower()}; {fix}"
