"""Files and folders written so that nobody sees half of one, and so that a killed writer's debris goes away.

Every temporary lives beside its target as `.NAME.tmp-disam-<pid>-<random>`: on the same file system, so the
final rename is atomic, and named after the process that owns it. A write to a place first removes the
leftovers there whose owner is no longer alive (kill -9, power loss, OOM killer), and never one whose owner
is: another process may be writing it right now. (A writer in another PID namespace sharing the folder would
look dead; don't share output folders across containers while they are being written.)

Folders our tools create carry a `.disam-made` marker naming the tool, so `--force` / `--overwrite` replace
only what a tool made (or an empty folder), never a user's folder that happens to sit at that path, nor one that
holds anything the tool would not have written there, nor the tool's own input. Every tool that replaces a folder
asks `replace_refusal` with its `OutputKind`: one rule, one message.

Base layer: imports nothing from disam_ros.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TMP_TAG = ".tmp-disam-"
MARKER = ".disam-made"
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def temp_path(target: str | Path, suffix: str = "") -> Path:
    """A fresh temp name beside `target` owned by this process; `suffix` keeps an extension (cv2 needs it)."""
    target = Path(target)
    return target.with_name(f".{target.name}{TMP_TAG}{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def owner_pid(name: str, target_name: str) -> int | None:
    """The PID in a temp name made by `temp_path` for `target_name`, None for any other name."""
    m = re.fullmatch(rf"\.{re.escape(target_name)}{re.escape(TMP_TAG)}(\d+)-[0-9a-f]+(\.[^/]*)?", name)
    return int(m.group(1)) if m else None


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie writes nothing more: only its exit status
    is left for a parent that has not reaped it yet). Someone else's process counts as alive."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux) or it just vanished: kill said it exists, so stay on the safe side
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def remove(path: str | Path) -> None:
    """Delete a file, link or folder tree; one already gone is fine (cleanup must never mask the real error)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clean_stale(target: str | Path) -> list[Path]:
    """Remove temporaries of `target` (see `temp_path`) whose owning process is dead; returns what went."""
    target = Path(target)
    prefix = f".{target.name}{TMP_TAG}"
    try:
        names = [e.name for e in os.scandir(target.parent) if e.name.startswith(prefix)]
    except OSError:
        return []  # no folder yet (or unreadable): nothing of ours can be there
    removed = []
    for name in names:
        pid = owner_pid(name, target.name)
        if pid is not None and not pid_alive(pid):
            remove(target.parent / name)
            removed.append(target.parent / name)
    if removed:
        log.info("removed %d leftover(s) of killed writers beside %s: %s", len(removed), target,
                 ", ".join(p.name for p in removed))
    return removed


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = "", mode: int | None = None, fsync: bool = False,
                ) -> Iterator[Path]:
    """Yield a temp path beside `path` to write by any means (torch.save, savefig, cv2.imwrite); on success it
    replaces `path` in one rename, on error it is deleted. So `path` is the old file or the whole new one.

    mode: chmod before the rename (else the umask decides); fsync: flush file and folder to disk first
    (for what must survive a power cut, like a checkpoint).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
        if fsync:
            _fsync(path.parent)
    except BaseException:
        remove(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, *, mode: int | None = None, fsync: bool = False) -> Path:
    """Write `data` to `path` through a temp file (see `atomic_path`); returns `path`."""
    with atomic_path(path, mode=mode, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, *, mode: int | None = None, fsync: bool = False) -> Path:
    """Write `text` (UTF-8) to `path` through a temp file (see `atomic_path`); returns `path`."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode, fsync=fsync)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE), so a replaced folder is never missing,
    not even for a moment; False where the system or file system cannot (the caller falls back)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_in(src: Path, target: Path) -> Path | None:
    """Move `src` to `target`; where `target` existed, returns the path now holding the old one (to delete)."""
    if not os.path.lexists(target):
        os.rename(src, target)
        return None
    if _exchange(src, target):
        return src
    old = temp_path(target)
    os.rename(target, old)
    os.rename(src, target)
    return old


def replaceable(path: str | Path) -> bool:
    """May a --force/--overwrite replace `path`? Yes if absent, an empty folder, or a folder with our marker;
    never a file, a link, or a user's folder."""
    path = Path(path)
    if not os.path.lexists(path):
        return True
    if path.is_symlink() or not path.is_dir():
        return False
    return (path / MARKER).is_file() or not any(path.iterdir())


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


@dataclass(frozen=True)
class OutputKind:
    """One kind of output folder one tool writes: the tool named in its MARKER, and which entries such a folder
    holds (`entry_ok`, asked for each top-level entry but the marker and our writers' temporaries).

    Why both: a marker can be copied along with a map into a user's folder (`cp -r map ~/thesis/`), and a tool's
    marker says nothing about another tool's output (a dataset is no map). A folder is replaced only when its
    marker names this tool and it holds nothing the tool would not have written there."""

    tool: str
    entry_ok: Callable[[Path], bool]


def marker_tool(path: Path) -> str | None:
    """The tool named in `path`'s marker (its first line), None without a readable one."""
    try:
        return (path / MARKER).read_text(errors="replace").strip().splitlines()[0].strip()
    except (OSError, IndexError):
        return None


def foreign_entry(path: Path, kind: OutputKind) -> str | None:
    """The first top-level entry of folder `path` that `kind` does not write (sorted names), None when none."""
    for entry in sorted(path.iterdir()):
        if entry.name == MARKER or TMP_TAG in entry.name:
            continue
        if entry.is_symlink() or not kind.entry_ok(entry):
            return entry.name
    return None


def overlap_refusal(path: str | Path, inputs: Iterable[tuple[str, str | Path]], option: str = "--out") -> str | None:
    """Why `path` may not be written because it is, holds, or lies inside one of the tool's `inputs` ((option,
    path) pairs, e.g. ("--dataset", W)), or None. Replacing the folder a tool reads from deletes its input."""
    out = Path(os.path.realpath(path))
    for name, given in inputs:
        inp = Path(os.path.realpath(given))
        where = ("is" if out == inp else "contains" if out in inp.parents else "is inside" if inp in out.parents
                 else None)
        if where is not None:
            return f"{option} {path} {where} the {name} folder {given}: choose an {option} outside it"
    return None


def replace_refusal(path: str | Path, *, replace: bool, flag: str = "--overwrite", option: str = "--out",
                    legacy: Callable[[Path], bool] | None = None, kind: OutputKind | None = None,
                    inputs: Iterable[tuple[str, str | Path]] = ()) -> str | None:
    """Why a tool may not write its output folder at `path` (one line), or None when it may.

    Never over one of the tool's `inputs` (`overlap_refusal`). It may when `path` is absent or an empty folder;
    a folder disam_ros made (our MARKER inside, or `legacy` true for it: the tool's own output from before
    markers, e.g. a map whose manifest.json parses as a map manifest) only with `replace` (the tool's `flag`,
    e.g. --overwrite), and with a `kind` only when the marker names `kind.tool` and every entry is one that tool
    writes (`foreign_entry`); anything else never: a file, a link, a user's folder. `option` names where the
    path came from (--out, OUT_ROOT/CONDITION) in the message.
    """
    path = Path(path)
    if (problem := overlap_refusal(path, inputs, option)) is not None:
        return problem
    if not os.path.lexists(path) or _empty_dir(path):
        return None
    ours = replaceable(path) or (legacy is not None and path.is_dir() and not path.is_symlink() and legacy(path))
    if not ours:
        return (f"{path} exists and was not made by disam_ros (no {MARKER}): choose another {option} or remove it "
                "yourself")
    if kind is not None and (problem := _kind_refusal(path, kind, option)) is not None:
        return problem
    if not replace:
        return f"{path} already exists: choose another {option} or pass {flag} to replace it"
    return None


def _kind_refusal(path: Path, kind: OutputKind, option: str) -> str | None:
    tool = marker_tool(path)
    if tool is not None and tool != kind.tool:
        return f"{path} was made by {tool} (its {MARKER}), not by {kind.tool}: choose another {option}"
    if (name := foreign_entry(path, kind)) is not None:
        return (f"{path} holds {name!r}, which {kind.tool} does not write there: it is replaced only when it holds "
                f"nothing else; move {name!r} out or choose another {option}")
    return None


class StagedDir:
    """A folder built under a temp name beside `target` and swapped in by one rename on `commit()`.

    As a context manager: a clean exit commits, an exception removes the temp folder, so `target` only ever
    holds the old content or the whole new one. `nested=True` stages in `TEMP/<target name>` (not created) for
    writers that name their files after their folder (rosbags); `marker` (a tool name) writes `.disam-made`.
    Whether an existing `target` may be replaced is the caller's decision (see `replace_refusal`).
    """

    def __init__(self, target: str | Path, *, nested: bool = False, marker: str | None = None) -> None:
        self.target = Path(target).absolute()
        self.target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(self.target)
        self.root = temp_path(self.target)
        self.root.mkdir()
        self.path = self.root / self.target.name if nested else self.root
        self.marker, self.done = marker, False

    def commit(self) -> Path:
        """Swap the staged folder in (replacing an existing target) and delete what it replaced."""
        try:
            if self.marker is not None:
                (self.path / MARKER).write_text(self.marker + "\n")
            old = swap_in(self.path, self.target)
        except BaseException:
            self.abort()
            raise
        self.done = True
        if old is not None:
            remove(old)
        if self.path != self.root:
            remove(self.root)
        return self.target

    def abort(self) -> None:
        """Delete the staged folder; the target is untouched."""
        self.done = True
        remove(self.root)

    def __enter__(self) -> StagedDir:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()
