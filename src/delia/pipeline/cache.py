"""The stage cache: a stage whose manifest carries its key is skipped; else it is computed in a partial
directory that is renamed into place only after its manifest is written.

A crash therefore never leaves a stage looking finished, and resumable work (sampling, checkpoints) survives
in the partial directory for the next attempt with the same resume key.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delia.core.example import Example, content_id
from delia.core.io import read_json, swap_into_place, write_json

MANIFEST = "manifest.json"
Log = Callable[[str], None]


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    """The stage's manifest, or None when the stage never finished."""
    return read_json(stage_dir / MANIFEST)


def _prepare_partial(final: Path, resume_key: str) -> Path:
    """A work directory for the stage: kept from a crashed attempt (or the last finished one) only when its
    resume key matches, so resumable caches are reused but never mixed across different inputs."""
    partial = final.with_name(f".{final.name}.partial")
    marker = partial / ".resume_key"
    if partial.exists() and (not marker.exists() or marker.read_text() != resume_key):
        shutil.rmtree(partial)
    if not partial.exists():
        previous = read_manifest(final)
        if previous is not None and previous.get("resume_key") == resume_key:
            shutil.copytree(final, partial, ignore=shutil.ignore_patterns(MANIFEST))
    partial.mkdir(parents=True, exist_ok=True)
    marker.write_text(resume_key)
    return partial


@dataclass
class StageResult:
    dir: Path
    manifest: dict[str, Any]
    cached: bool


def run_stage(
    run_dir: Path,
    name: str,
    key: str,
    compute: Callable[[Path], dict[str, Any]],
    *,
    inputs: dict[str, Any] | None = None,
    resume_key: str | None = None,
    log: Log = print,
) -> StageResult:
    """Skip the stage when its manifest carries `key`; else compute it in a partial dir and rename it in."""
    final = run_dir / name
    manifest = read_manifest(final)
    if manifest is not None and manifest.get("hash") == key:
        log(f"{name:<9} cached  ({key})")
        return StageResult(final, manifest, cached=True)
    log(f"{name:<9} running ({key})")
    partial = _prepare_partial(final, resume_key or key)
    start = time.perf_counter()
    info = compute(partial)
    manifest = {
        "stage": name,
        "hash": key,
        "resume_key": resume_key or key,
        "inputs": inputs or {},
        **info,
        "seconds": round(time.perf_counter() - start, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (partial / ".resume_key").unlink(missing_ok=True)
    write_json(partial / MANIFEST, manifest)
    swap_into_place(partial, final)
    log(f"{name:<9} done in {manifest['seconds']:.1f}s")
    return StageResult(final, manifest, cached=False)


def fingerprint(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def files_in(value: Any) -> dict[str, str]:
    """Fingerprints of every existing file a (nested) config value names, so edited data invalidates."""
    found: dict[str, str] = {}
    if isinstance(value, str) and value and len(value) < 4096 and Path(value).is_file():
        found[value] = fingerprint(value)
    elif isinstance(value, dict):
        for item in value.values():
            found.update(files_in(item))
    elif isinstance(value, list):
        for item in value:
            found.update(files_in(item))
    return found


def examples_hash(examples: list[Example]) -> str:
    """Content, not ids: transforms may keep an example's id while changing its messages."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(f"{ex.source}:{content_id(ex.messages)}\n".encode())
    return digest.hexdigest()[:12]


def data_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
