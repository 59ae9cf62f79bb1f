"""`delia export`: a trained run as files other tools load and serve without delia.

  merged  LoRA and the new tokens' trained rows merged into the base: a plain transformers checkpoint
  vllm    base/ (vocabulary grown, trained rows written in) + adapter/ (the LoRA alone) + README.md
  gguf    model.gguf: the merged model for llama.cpp and transformers' GGUF loader (llama architecture)

An export is built in a temp directory beside `--to` and renamed into place (`delia.core.io.atomic_dir`),
so a crash leaves no half export; an existing `--to` is replaced only when it is empty or an earlier
export (it holds delia_export.json), never a directory of other files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delia.core.errors import DeliaError
from delia.core.io import atomic_dir, write_json
from delia.export.gguf_file import check_dtype, write_gguf
from delia.export.merged import write_merged
from delia.export.source import Options, Source, load_source
from delia.export.vllm import served_name, write_vllm

RECORD = "delia_export.json"
WRITERS: dict[str, Callable[[Source, Path, Options], None]] = {
    "merged": write_merged,
    "vllm": write_vllm,
    "gguf": write_gguf,
}
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Exported:
    path: Path
    format: str
    files: dict[str, int]  # path inside the export -> bytes
    seconds: float


def export_run(
    run: str | Path,
    to: str | Path,
    fmt: str = "merged",
    *,
    model_spec: str | None = None,
    dtype: str = "float32",
    lora_name: str | None = None,
) -> Exported:
    """Export the adapter of `run` (a run directory or an adapter directory) to the directory `to`."""
    start = time.perf_counter()
    check_options(fmt, dtype, lora_name)
    target = Path(to)
    check_target(target)
    source = load_source(run, model_spec)
    options = Options(target, dtype, lora_name)
    with atomic_dir(target) as tmp:
        WRITERS[fmt](source, tmp, options)
        write_json(tmp / RECORD, export_record(source, fmt, options))
        files = listing(tmp)
    return Exported(target, fmt, files, round(time.perf_counter() - start, 2))


def check_options(fmt: str, dtype: str, lora_name: str | None = None) -> None:
    """Refuse a bad --format, --dtype or --name before any model is loaded."""
    if fmt not in WRITERS:
        raise DeliaError(f"--format {fmt!r}: choose {', '.join(WRITERS)}")
    if dtype not in DTYPES:
        raise DeliaError(f"--dtype {dtype!r}: choose {', '.join(DTYPES)}")
    if fmt == "gguf":
        check_dtype(dtype)
    if lora_name is not None:
        served_name(lora_name)


def check_target(target: Path) -> None:
    """Refuse before any work a `--to` that is a file, a directory of other files, or not writable."""
    if target.exists() and not target.is_dir():
        raise DeliaError(f"--to {target}: a file is there; give a directory")
    if target.is_dir() and any(target.iterdir()) and not (target / RECORD).is_file():
        raise DeliaError(
            f"--to {target}: the directory holds files that are not a delia export; give a new or empty one"
        )
    parent = target.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DeliaError(f"--to {target}: cannot write in {parent}")


def export_record(source: Source, fmt: str, options: Options) -> dict[str, Any]:
    """delia_export.json: what was exported, from which run and base, and how."""
    import delia

    record = {
        "format": fmt,
        "dtype": options.dtype,
        "run": source.name,
        "method": source.manifest.get("method"),
        "base": source.base_record(),
        "new_tokens": source.manifest.get("new_tokens", {}),
        "lora": source.manifest.get("lora"),
        "delia_version": getattr(delia, "__version__", "unknown"),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if fmt == "vllm":
        record["lora_name"] = options.lora_name or source.name
    return record


def listing(root: Path) -> dict[str, int]:
    return {
        str(path.relative_to(root)): path.stat().st_size for path in sorted(root.rglob("*")) if path.is_file()
    }


__all__ = ["DTYPES", "RECORD", "WRITERS", "Exported", "check_options", "export_run"]
