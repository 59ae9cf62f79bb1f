"""Crash-safe files: every writer goes through a temp file or directory and one rename.

A reader (or a process restarted after SIGKILL) sees the old content or the new one, never half of either.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_STARTED = time.time()  # a temp file last written before this process started is not this process's


def drop_stale_temps(path: Path) -> None:
    """Remove the temp files of `path` that a killed earlier writer left behind (hidden `.NAME.*.tmp`)."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if stale.stat().st_mtime < _STARTED:
                stale.unlink()
        except FileNotFoundError:  # another process cleaned it first
            pass


def atomic_write_lines(path: str | Path, lines: Iterable[str]) -> int:
    """Write `lines` (each without its newline) to `path` atomically, fsync'd; returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line + "\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    drop_stale_temps(path)
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
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp."))
    try:
        yield tmp
        if keep_existing and target.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    drop_stale_dirs(target)


def drop_stale_dirs(target: Path) -> None:
    """Temp directories of `target` that a writer killed mid-write left behind."""
    for stale in target.parent.glob(f".{glob.escape(target.name)}.tmp.*"):
        if stale.is_dir() and stale.stat().st_mtime < _STARTED:
            shutil.rmtree(stale, ignore_errors=True)
