"""`train_log.jsonl`: one row per optimizer step (loss by source, lr, tokens/s), optional TensorBoard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from delia.core.errors import DeliaError
from delia.data.io import AppendLog, write_jsonl

ALWAYS_LOGGED = ("task", "diverse")  # these loss columns exist in every row, null when the step had none


class SourceLosses:
    """Sums of per-token loss and token counts per source over one optimizer step."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.sums = [0.0] * len(names)
        self.counts = [0] * len(names)

    def add(self, source_ids: list[int], losses: list[float]) -> None:
        for source, loss in zip(source_ids, losses, strict=True):
            self.sums[source] += loss
            self.counts[source] += 1

    def add_totals(self, sums: list[float], counts: list[int]) -> None:
        for i, (total, count) in enumerate(zip(sums, counts, strict=True)):
            self.sums[i] += total
            self.counts[i] += count

    def columns(self) -> dict[str, float | None]:
        names = list(dict.fromkeys([*ALWAYS_LOGGED, *self.names]))
        means = {
            n: (s / c if c else None) for n, s, c in zip(self.names, self.sums, self.counts, strict=True)
        }
        return {f"loss_{name}": _round(means.get(name)) for name in names}


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


class TrainLog:
    """Rows survive a crash (fsync per line); on resume, rows after the checkpoint's step are dropped."""

    def __init__(self, out_dir: Path, resume_step: int, tensorboard: bool, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = out_dir / "train_log.jsonl"
        self.writer: Any = None
        if not enabled:
            return
        if resume_step == 0:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            kept = [row for row in AppendLog(self.path).records() if row.get("step", 0) <= resume_step]
            write_jsonl(self.path, kept)
        self.log = AppendLog(self.path)
        if tensorboard:
            self.writer = _tensorboard_writer(out_dir / "tensorboard", purge_step=resume_step + 1)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.log.append(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, row["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        self.log.close()
        if self.writer is not None:
            self.writer.close()


def _tensorboard_writer(path: Path, purge_step: int) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DeliaError(
            "train.tensorboard is on but tensorboard is not installed: pip install tensorboard"
        ) from None
    return SummaryWriter(str(path), purge_step=purge_step)
