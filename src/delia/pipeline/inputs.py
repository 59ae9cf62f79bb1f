"""The training files of a run, read through before any stage runs: a record without an answer is refused
with its file:line before a model loads or an answer is sampled, by `delia run` and by every grid."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from delia.core.config import RunConfig
from delia.data.io import check_training_file


def training_files(config: RunConfig) -> list[tuple[str, str, str]]:
    """(path, format, source) of the task file and of a given diverse file that exist; a missing file is
    left to the stage that reads it, which names its key."""
    task = config.task
    files = []
    if task.train and not task.builder and Path(task.train).is_file():
        files.append((str(task.train), str(task.format), "task"))
    if config.sample.data and Path(config.sample.data).is_file():
        files.append((str(config.sample.data), "auto", "diverse"))
    return files


def check_training_inputs(configs: RunConfig | Iterable[RunConfig]) -> None:
    """Every record of every run's training files, each file read once however many runs share it."""
    runs = [configs] if isinstance(configs, RunConfig) else list(configs)
    for path, fmt, source in dict.fromkeys(f for config in runs for f in training_files(config)):
        check_training_file(path, fmt, source=source)
