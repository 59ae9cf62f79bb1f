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
    from delia.experiment.search_records import BudgetTest, SearchPlanRow

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
            help="'ratio': golden-section search for the best diverse ratio instead of the grid; 'budget': "
            "every method tuned on a dev split at each budget.steps, then tested (budget.json).",
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
        if search == "budget":
            run_budget(spec, dry_run)
            return
        if search is not None:
            if search != "ratio":
                raise DeliaError(f"--search {search!r}: choose 'ratio' or 'budget'")
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


def run_budget(spec: ExperimentSpec, dry_run: bool) -> None:
    """`--search budget`: run it (or, with --dry-run, show what has finished) and print the table."""
    from rich.table import Table

    from delia.experiment.budget_search import BUDGET_FILE, run_budget_search

    result = run_budget_search(
        spec, lambda line: console.print(line, highlight=False, markup=False), run_cells=not dry_run
    )
    table = Table(title=f"{spec.name}: each method tuned on the dev split ({result.metric})")
    for column in ("budget", "method", "dev: candidate = score", "chosen", "test (mean, CI)"):
        table.add_column(column)
    for row in result.rows:
        dev = "; ".join(
            f"{' '.join(c.set) or 'as configured'} = {'to run' if c.value is None else f'{c.value:.3f}'}"
            for c in row.candidates
        )
        chosen = "-" if row.chosen is None else " ".join(row.chosen) or "as configured"
        test = "to run" if row.test is None else f"{row.test.value:.3f} {interval_text(row.test)}"
        table.add_row(str(row.budget), row.method, dev, chosen, test)
    console.print(table)
    for pair in result.paired:
        console.print(
            f"budget {pair.variant}: delia - {pair.control} = {pair.difference:+.3f} "
            f"[{pair.ci_low:+.3f}, {pair.ci_high:+.3f}] over {pair.n_seeds} seeds x {pair.n_items} items",
            highlight=False,
        )
    if not dry_run:
        console.print(f"wrote {Path(spec.out) / BUDGET_FILE}")


def interval_text(test: BudgetTest) -> str:
    if test.ci_low is None or test.ci_high is None:
        return "(no interval)"
    return f"[{test.ci_low:.3f}, {test.ci_high:.3f}] ({len(test.values)} seeds)"


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
