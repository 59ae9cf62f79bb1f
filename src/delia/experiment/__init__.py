"""Experiments: a grid of pipeline runs (methods x task sizes x diverse ratios x seeds), results with
95% CIs over seeds, the paper's tables and plots, and a search for the best diverse ratio.

  spec.py          the experiment YAML            grid.py     cells and their run configs
  records.py       typed cell.json, results.json, probes/summary.json   search_records.py  search/recheck
  runner.py        resumable execution            results.py  results.json (cells + summary)
  paired.py        DELIA minus its controls       facts.py    per-cell facts read from the run dirs
  probes.py        probes on the headline slice   report/     report.md / report.html (tables, plots)
  cell_probes.py   per-cell probes (every slice)  measures.py  their results, read back into results.json
  search.py        golden-section search          ratio_search.py  the search as runs
  budget_search.py each method tuned at fixed step budgets on a dev split, then tested and paired
See docs/experiments.md.
"""

from __future__ import annotations

from pathlib import Path

from delia.experiment.cell_probes import run_cell_probes
from delia.experiment.grid import Expansion, expand
from delia.experiment.probes import run_probes
from delia.experiment.records import Cell, ExperimentResults
from delia.experiment.results import write_results
from delia.experiment.runner import run_grid
from delia.experiment.spec import ExperimentSpec, load_experiment


def run_experiment(
    spec: ExperimentSpec,
    *,
    probes: bool = True,
    report: bool = True,
    command: str | None = None,
    quiet: bool = False,
    run_cells: bool = True,
) -> ExperimentResults:
    """Run every unfinished cell (none with run_cells=False: a grid cut short is written up as it stands),
    then results.json, the probes and the report; returns the results."""
    expansion = expand(spec)
    if run_cells:
        run_grid(
            spec, expansion.cells, on_cell_done=lambda _: write_results(spec, expansion, command), quiet=quiet
        )
    if probes:
        # Before results.json: it reads the per-cell measurements back from the run directories.
        run_cell_probes(spec, expansion.cells)
    results = write_results(spec, expansion, command)
    if probes:
        run_probes(spec, expansion.cells)
    if report:
        from delia.experiment.report import write_report  # pulls in matplotlib

        write_report(Path(spec.out))
    return results


__all__ = [
    "Cell",
    "Expansion",
    "ExperimentResults",
    "ExperimentSpec",
    "expand",
    "load_experiment",
    "run_experiment",
]
