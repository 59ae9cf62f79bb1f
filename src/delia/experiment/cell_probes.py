"""The per-cell probes of an experiment, on every finished cell of every slice (experiment.measures says what
each measures and how results.json reads them back):

  heldout_loss  probe.heldout on the cell's eval examples as its method evaluated them (the plan's eval
                transform applied), cut at the cell's train.max_length
  leakage       probe.general: the ordinary questions, asked without any format token or instruction

Each cell's model (its adapter, or the base model for a method that does not train) is loaded once for
whatever is stale; the results go to {run_dir}/probes/ with the key they were made with, so a second
invocation measures nothing and a retrained cell is measured again.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from delia.core.errors import DeliaError
from delia.core.io import write_json
from delia.experiment.grid import cell_config, cell_dir
from delia.experiment.measures import (
    GENERAL_FILE,
    HELDOUT_FILE,
    general_key,
    heldout_key,
    probe_file,
    stored,
)
from delia.experiment.probes import has_adapter, method_prompts, model_spec_of, probe_device
from delia.experiment.records import Cell, CellRecord
from delia.experiment.runner import read_cell_record
from delia.experiment.spec import ExperimentSpec

Log = Callable[[str], None]


def stale_probes(spec: ExperimentSpec, record: CellRecord) -> list[str]:
    """The stored files of this cell's wanted probes that are missing or were made with another key."""
    wanted = []
    if spec.probes.heldout_loss and stored(record, HELDOUT_FILE, heldout_key(record)) is None:
        wanted.append(HELDOUT_FILE)
    if spec.probes.leakage and stored(record, GENERAL_FILE, general_key(record)) is None:
        wanted.append(GENERAL_FILE)
    return wanted


def run_cell_probes(spec: ExperimentSpec, cells: list[Cell], log: Log | None = None) -> list[str]:
    """Measure every finished cell whose wanted probes are stale; returns the names of the cells measured."""
    measured = []
    for cell in cells:
        record = read_cell_record(cell_dir(spec, cell))
        wanted = stale_probes(spec, record) if record is not None else []
        if record is None or not wanted:
            continue
        if log is not None:
            log(f"cell probes ({', '.join(wanted)}): {cell.name}")
        measure_cell(spec, cell, record, wanted)
        measured.append(cell.name)
    return measured


def measure_cell(spec: ExperimentSpec, cell: Cell, record: CellRecord, wanted: list[str]) -> None:
    from delia.probe.loading import load_model_and_tokenizer  # torch

    adapter = cell_dir(spec, cell) / "adapter" if has_adapter(spec, cell) else None
    model, tokenizer = load_model_and_tokenizer(model_spec_of(spec, cell), adapter, probe_device(spec))
    batch_size = cell_config(spec, cell, spec.entry(cell.method)).eval.batch_size
    try:
        if HELDOUT_FILE in wanted:
            figures = heldout_figures(spec, cell, model, tokenizer)
            write_json(probe_file(record, HELDOUT_FILE), {"key": heldout_key(record), **figures})
        if GENERAL_FILE in wanted:
            from delia.probe.general import ask_general  # torch

            figures, rows = ask_general(model, tokenizer, batch_size)
            answers = {"key": general_key(record), **figures, "rows": rows}
            write_json(probe_file(record, GENERAL_FILE), answers)
    finally:
        del model
        gc.collect()  # one cell's model at a time: a grid has dozens


def heldout_figures(spec: ExperimentSpec, cell: Cell, model: Any, tokenizer: Any) -> dict[str, Any]:
    """probe.heldout's figures on the cell's eval examples, or the reason there is no loss."""
    from delia.probe.heldout import LossSettings, heldout_loss_figures  # torch

    config = cell_config(spec, cell, spec.entry(cell.method))
    examples = method_prompts(spec, cell, None)
    settings = LossSettings(config.train.max_length, config.eval.batch_size)
    try:
        return {"ratio": cell.ratio, **heldout_loss_figures(model, tokenizer, examples, settings)}
    except DeliaError as err:  # no example with a reference answer: the cell has no held-out loss
        return {"ratio": cell.ratio, "loss": None, "reason": str(err)}
