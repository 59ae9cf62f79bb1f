"""Per-cell measurements made after a cell finished (experiment.cell_probes runs them), kept in the cell's
run directory under probes/ and read back into results.json as rows of their own metrics, so that each gets
the mean and CI over seeds that every metric gets:

  heldout_task_loss  pooled per-token loss of the eval examples' reference answers under the model at the
                     end of training (probe.heldout): the paper's Figure 3, against the diverse ratio
  format_leakage     share of ordinary questions (probe.general) answered in the task's JSON format anyway
  general_qa         share of those questions answered with the known fact (general ability kept)

A stored measurement counts only while its key matches the cell's record (its config hash and finish time):
a cell trained again reads as unmeasured until the probes run again, never with the old model's numbers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from delia.core.io import read_json
from delia.experiment.records import CellRecord, Figure
from delia.probe.general import ANSWER_TOKENS, GENERAL_QUESTIONS

CELL_PROBES_DIR = "probes"
HELDOUT_FILE = "heldout_loss.json"
GENERAL_FILE = "general.json"
HELDOUT_LOSS = "heldout_task_loss"
LEAKAGE = "format_leakage"
GENERAL_QA = "general_qa"
MEASURES = (HELDOUT_LOSS, LEAKAGE, GENERAL_QA)
VERSION = 1  # bump when what a probe asks or how it scores changes: stored results then count as stale


def measure_key(record: CellRecord, probe: str, *settings: Any) -> str:
    """What a stored measurement of this cell must have been made with to count."""
    parts = [record.cell.name, record.config_hash, record.finished_at, probe, VERSION, *settings]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def heldout_key(record: CellRecord) -> str:
    """The examples and max_length come from the cell's own config, which its config hash covers."""
    return measure_key(record, HELDOUT_FILE)


def general_key(record: CellRecord) -> str:
    return measure_key(record, GENERAL_FILE, GENERAL_QUESTIONS, ANSWER_TOKENS)


def probe_file(record: CellRecord, name: str) -> Path:
    return Path(record.run_dir) / CELL_PROBES_DIR / name


def stored(record: CellRecord, name: str, key: str) -> dict[str, Any] | None:
    """The stored measurement when it was made with `key`, else None."""
    data = read_json(probe_file(record, name))
    return data if isinstance(data, dict) and data.get("key") == key else None


def measure_figures(record: CellRecord) -> dict[str, Figure]:
    """The cell's measurements that are up to date, as metric figures (no CI: one number per cell)."""
    figures: dict[str, Figure] = {}
    heldout = stored(record, HELDOUT_FILE, heldout_key(record))
    if heldout is not None and heldout.get("loss") is not None:
        figures[HELDOUT_LOSS] = Figure(value=heldout["loss"], n=heldout["used"])
    general = stored(record, GENERAL_FILE, general_key(record))
    if general is not None:
        figures[LEAKAGE] = Figure(value=general["general_json"], n=general["n"])
        figures[GENERAL_QA] = Figure(value=general["general_correct"], n=general["n"])
    return figures
