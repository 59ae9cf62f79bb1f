"""Crash-safe files: every writer goes through a temp file or directory and one rename.

A reader (or a process restarted after SIGKILL) sees the old content or the new one, never half of either.
Temp names carry the writer's pid (`.NAME.PID-XXXXXXXX.tmp`, `.NAME.tmp.PID-XXXXXXXX/`), so the next writer
in that directory removes those of a writer that has died; output files and directories follow the umask
(mkstemp and mkdtemp alone would make them 0600 and 0700).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from delia.core.errors import DeliaError

_STARTED = time.time()  # a temp file last written before this process started is not this process's
# A temp whose pid is alive may still be stale (pids are reused): one this old is removed anyway.
STALE_AFTER_S = 2 * 24 * 3600
_RANDOM = r"[a-z0-9_]{8}"  # tempfile's name characters
_TEMPS = (
    re.compile(rf"^\.(?P<target>.+)\.(?P<pid>\d+)-{_RANDOM}\.tmp$"),  # atomic_write_lines
    re.compile(rf"^\.(?P<target>.+)\.tmp\.(?P<pid>\d+)-{_RANDOM}$"),  # atomic_dir
)
# Named before temps carried a pid: stale when last written before this process started.
_PIDLESS_TEMPS = (re.compile(rf"^\..+\.{_RANDOM}\.tmp$"), re.compile(rf"^\..+\.tmp\.{_RANDOM}$"))


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask alone must set one)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | Path, directory: bool = False) -> None:
    """Give a temp file (0600) or directory (0700) the mode a plain open() or mkdir() would have given."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def open_tree_to_umask(root: Path) -> None:
    """Add to each file and directory under `root` the permissions the umask allows: some writers make
    theirs 0600 whatever the umask (safetensors' save_file does), which would hide an adapter from a
    serving process. Bits a writer set beyond those (an executable's) are kept."""
    allowed_file, allowed_dir = 0o666 & ~current_umask(), 0o777 & ~current_umask()
    for directory, subdirs, files in os.walk(root):
        for name, allowed in [*((d, allowed_dir) for d in subdirs), *((f, allowed_file) for f in files)]:
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and (mode & allowed) != allowed:
                os.chmod(path, stat.S_IMODE(mode) | allowed)


def _writer_gone(name: str, mtime: float) -> bool:
    """Whether the temp `name` (last written at `mtime`) belongs to no running writer."""
    match = next((m for pattern in _TEMPS if (m := pattern.match(name))), None)
    if match is None:
        return any(pattern.match(name) for pattern in _PIDLESS_TEMPS) and mtime < _STARTED
    pid = int(match["pid"])
    if pid == os.getpid():
        return False
    if time.time() - mtime > STALE_AFTER_S:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def sweep_stale_temps(directory: str | Path) -> list[Path]:
    """Remove the temp files and directories in `directory` whose writer died (kill -9, power loss) before
    renaming them into place; returns what was removed. Temps of live writers are left alone."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return removed
    for entry in entries:
        if not entry.name.startswith("."):
            continue
        try:
            if not _writer_gone(entry.name, entry.stat(follow_symlinks=False).st_mtime):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except FileNotFoundError:  # another process cleaned it first
            pass
    return removed


def atomic_write_lines(path: str | Path, lines: Iterable[str]) -> int:
    """Write `lines` (each without its newline) to `path` atomically, fsync'd; returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path.parent)
    count = 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line + "\n")
                count += 1
            handle.flush()
            follow_umask(tmp)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def atomic_write(path: str | Path, text: str) -> None:
    """Write one text document atomically."""
    atomic_write_lines(path, [text.removesuffix("\n")])


def write_json(path: str | Path, obj: Any) -> None:
    """Write one JSON document atomically (indented, non-ASCII kept, unknown types as str)."""
    atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def read_json(path: str | Path) -> Any | None:
    """The JSON document at `path`, or None when it is missing or unreadable (a manifest not yet written)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def swap_into_place(partial: Path, final: Path) -> None:
    """Replace directory `final` by `partial`: the old one is renamed aside before the new one is renamed
    in, and removed only after, so a crash leaves one complete directory under one of the two names."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(target: str | Path, *, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a fresh temp directory beside `target`; when the block succeeds it is swapped into place,
    when it raises it is removed and `target` is left as it was.

    `keep_existing`: a `target` that another process finished meanwhile wins and the new copy is dropped,
    so a cache that others may be reading (the dequantised model) is never swapped under them.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(target.parent)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp.{os.getpid()}-"))
    follow_umask(tmp, directory=True)
    try:
        yield tmp
        open_tree_to_umask(tmp)
        if keep_existing and target.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def exclusive_writer(target: str | Path, what: str) -> Iterator[None]:
    """Hold the lock of `target` (a file or directory about to be written; `what` names it in the error)
    while the block runs: a second delia process writing the same target is refused at once, naming the
    holder, instead of the last writer silently winning. The lock is `.NAME.lock` beside the target."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.with_name(f".{target.name}.lock")
    fd = _acquire(lock, f"{what} {target}")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # before the close: a waiter that opened it finds it gone and retries
        os.close(fd)


def _acquire(lock: Path, named: str) -> int:
    """An fd holding flock on `lock`, the pid written in it; DeliaError when another process holds it."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DeliaError(
                f"{named}: another delia command (pid {holder}) is writing it; "
                "wait for it to finish, or write somewhere else"
            ) from None
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            return fd  # a filesystem without locks: write unguarded, as before locks existed
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # the last holder removed this file while we opened it: take the fresh one
