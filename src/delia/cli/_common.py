"""Small helpers shared by the command modules."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from delia.core.errors import DeliaError
from delia.core.io import exclusive_writer, sweep_stale_temps

console = Console()
SHOWN_CHARS = 300  # a longer value is cut when printed: one 50 MB record should not fill the terminal
OutKind = Literal["file", "dir"]


def shortened(value: Any, limit: int = SHOWN_CHARS) -> Any:
    """`value` with every string longer than `limit` cut (saying how much was left out), in any nesting."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}... ({len(value) - limit} more characters)"
    if isinstance(value, dict):
        return {key: shortened(item, limit) for key, item in value.items()}
    if isinstance(value, list):
        return [shortened(item, limit) for item in value]
    return value


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def print_mapping(title: str, mapping: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in mapping.items():
        table.add_row(str(key), shortened(str(value)))
    console.print(table)


MODEL_OPTION_HELP = (
    "Model spec: smollm2-135m-instruct (embedded), a local directory, a .gguf file, or an HF id."
)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: Path, kind: OutKind, flag: str = "--out") -> None:
    """Refuse, before any work, an output that cannot be written: a directory where a file goes (or the
    reverse), or a place this process may not write in (read-only directory or file system)."""
    if kind == "file" and path.is_dir():
        raise DeliaError(f"{flag} {path}: is a directory; give the path of the file to write")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise DeliaError(f"{flag} {path}: is a file; give a directory")
    base = path if kind == "dir" and path.is_dir() else _nearest_existing(path.parent)
    if not base.is_dir():
        raise DeliaError(f"{flag} {path}: {base} is a file, not a directory")
    # os.access and not a probe file: it knows read-only file systems, and leaves nothing behind.
    if not os.access(base, os.W_OK | os.X_OK):
        raise DeliaError(f"{flag} {path}: cannot write in {base} (permission denied or read-only)")


@contextmanager
def writing_to(path: str | Path, kind: OutKind, flag: str = "--out") -> Iterator[Path]:
    """For the block that writes `path` (a file, or a directory of outputs): checked first, the temps of a
    killed earlier writer there removed, and locked against a second delia command writing it meanwhile."""
    path = Path(path)
    check_writable(path, kind, flag)
    if launched_rank() != 0:  # one rank of a multi-process launch: rank 0 locks (and writes) for them all
        yield path
        return
    with exclusive_writer(path, flag):
        sweep_stale_temps(path.parent)
        if kind == "dir":
            sweep_stale_temps(path)
        yield path


def launched_rank() -> int:
    """This process's rank under accelerate or torchrun (every rank runs the same command); 0 otherwise."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
