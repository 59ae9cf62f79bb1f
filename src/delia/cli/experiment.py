"""`delia experiment CONFIG.yaml [--search ratio]` and `delia report DIR` (docs/experiments.md)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from delia.cli._common import console

if TYPE_CHECKING:
    from delia.experiment import Expansion, ExperimentSpec
    from delia.experiment.search_records import SearchPlanRow

EXPERIMENT_HELP = (
    "Run an experiment grid: methods x task sizes x diverse ratios x seeds, each cell a normal run "
    "directory. Finished cells are skipped, so rerunning resumes. Writes results.json (cells + summary "
    "with 95% CIs over seeds), the probes of the headline slice and report.md / report.html."
)


def register(app: typer.Typer) -> None:
    @app.command("experiment", help=EXPERIMENT_HELP)
    def experiment_command(
        config: Path = typer.Argument(..., help="An experiment YAML (see configs/experiments/)."),
        search: str | None = typer.Option(
            None,
            "--search",
            help="'ratio': golden-section search for the best diverse ratio instead of the grid.",
        ),
        overrides: list[str] = typer.Option(
            [], "--set", help="Override an experiment key, e.g. --set grid.seeds=[0] (repeatable)."
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="List the cells and their state; run nothing."),
        recheck: str | None = typer.Option(
            None, "--recheck", help="Rerun this finished cell from scratch and compare with results.json."
        ),
        no_probes: bool = typer.Option(False, "--no-probes", help="Skip the probes."),
        no_report: bool = typer.Option(False, "--no-report", help="Skip report.md / report.html."),
        no_run: bool = typer.Option(
            False, "--no-run", help="Run no cell: results.json, probes and report from the finished cells."
        ),
    ) -> None:
        from delia.core.errors import DeliaError
        from delia.experiment import expand, load_experiment, run_experiment

        spec = load_experiment(config, overrides)
        command = "delia " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if search is not None:
            if search != "ratio":
                raise DeliaError(f"--search {search!r}: only 'ratio' is supported")
            from delia.experiment.ratio_search import plan_ratio_search, run_ratio_search
            from delia.experiment.report import write_report

            if dry_run:
                print_search_plan(spec, plan_ratio_search(spec))
                return
            result = run_ratio_search(
                spec, log_line=lambda line: console.print(line, highlight=False, markup=False)
            )
            best = result.argmax
            console.print(
                f"best ratio: {best.ratio} ({result.metric} {best.value:.4f}) "
                f"after {result.evaluations} evaluations"
            )
            if not no_report:
                md, page = write_report(Path(spec.out))
                console.print(f"wrote {spec.out}/search.json, {md}, {page}")
            return
        if dry_run:
            print_plan(spec, expand(spec))
            return
        if recheck is not None:
            from delia.experiment.recheck import recheck_cell
            from delia.experiment.report import write_report

            report = recheck_cell(
                spec, recheck, log=lambda line: console.print(line, highlight=False, markup=False)
            )
            for check in report.checks:
                console.print(
                    f"{check.metric}: stored {check.stored:.4f}, rerun {check.rerun}, "
                    f"within the summary CI: {check.within_summary_ci}",
                    highlight=False,
                )
            if not no_report:
                write_report(Path(spec.out))
            return
        results = run_experiment(
            spec, probes=not no_probes, report=not no_report, command=command, run_cells=not no_run
        )
        finished = len({row.cell for row in results.cells})
        console.print(
            f"{finished}/{len(results.grid.planned)} cells finished, {len(results.failed)} failed; "
            f"wrote {Path(spec.out) / 'results.json'}" + ("" if no_report else " and the report")
        )

    @app.command("report")
    def report_command(
        directory: Path = typer.Argument(
            ..., help="An experiment's output directory (holding results.json)."
        ),
    ) -> None:
        """Write report.md and report.html (tables, plots, CIs, the regenerating command) for DIRECTORY."""
        from delia.experiment.report import write_report

        md, page = write_report(directory)
        console.print(f"wrote {md} and {page}")


def print_plan(spec: ExperimentSpec, expansion: Expansion) -> None:
    from rich.table import Table

    from delia.experiment.grid import cell_dir
    from delia.experiment.runner import finished_record

    table = Table(title=f"{spec.name}: {len(expansion.cells)} cells")
    for column in ("cell", "method", "size", "ratio", "seed", "state"):
        table.add_column(column)
    for cell in expansion.cells:
        done = finished_record(spec, cell) is not None
        started = cell_dir(spec, cell).exists()
        state = "done" if done else "started" if started else "to run"
        ratio = "-" if cell.ratio is None else f"{cell.ratio:g}"
        table.add_row(cell.name, cell.method, str(cell.task_size), ratio, str(cell.seed), state)
    console.print(table)
    for item in expansion.skipped:
        console.print(f"skipped {item.name}: {item.reason}", highlight=False)


def print_search_plan(spec: ExperimentSpec, rows: list[SearchPlanRow]) -> None:
    from rich.table import Table

    search = spec.search
    table = Table(
        title=f"{spec.name}: ratio search over [{search.lo:g}, {search.hi:g}], {search.max_evals} points"
    )
    for column in ("cell", "ratio", "seed", "state", "value"):
        table.add_column(column)
    for row in rows:
        value = "-" if row.value is None else f"{row.value:.4f}"
        table.add_row(row.cell, str(row.ratio), str(row.seed), row.state, value)
    console.print(table)
    if rows and rows[-1].state != "done":
        console.print("later points depend on the values of the earlier ones", highlight=False)
