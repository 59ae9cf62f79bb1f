"""`delia run CONFIG.yaml [--set a.b=c ...]`: every stage of one run, cached; prints the summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from delia.cli._common import console, print_mapping, writing_to
from delia.cli._config import SET_METAVAR
from delia.core.markdown import format_value


def summary_table(rows: list[dict[str, Any]], title: str) -> Any:
    """One table row per run; no box, so that ten short columns fit an 80-column terminal."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, padding=0, pad_edge=False, show_edge=False)
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    cells = [[format_value(row.get(c)) for c in columns] for row in rows]
    for column in columns:
        justify = "left" if column in ("run", "method") else "right"
        table.add_column(column, justify=justify, no_wrap=True)
    for line in cells:
        table.add_row(*line)
    return table


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_command(
        config: Path = typer.Argument(..., help="A run config (YAML); see configs/."),
        overrides: list[str] = typer.Option(
            [],
            "--set",
            metavar=SET_METAVAR,
            help="Override a config value, e.g. --set mix.ratio=2 (repeatable).",
        ),
    ) -> None:
        """Run sample -> diversify -> mix -> train -> eval for CONFIG, reusing every cached stage."""
        from delia.core.config import load_config
        from delia.methods import get_method
        from delia.pipeline import run, run_dir_of, summary_row
        from delia.pipeline.inputs import check_training_inputs
        from delia.pipeline.summary import summary_notes

        cfg = load_config(config, overrides)
        get_method(cfg.method)  # an unknown method is refused before the run directory is made
        check_training_inputs(cfg)
        with writing_to(run_dir_of(cfg), "dir", flag="run directory"):
            run_dir = run(cfg)
        row = {key: format_value(value) for key, value in summary_row(run_dir).items()}
        print_mapping(f"{cfg.name} ({cfg.method})", row)
        for note in summary_notes(run_dir):
            console.print(f"note: {note}", highlight=False, markup=False)
        console.print(f"run directory: {run_dir}")
