"""`delia run CONFIG.yaml [--set a.b=c ...]`: every stage of one run, cached; prints the summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from delia.cli._common import console


def summary_table(rows: list[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    from delia.pipeline import format_value

    table = Table(title=title)
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    for column in columns:
        table.add_column(column, justify="left" if column in ("run", "method") else "right")
    for row in rows:
        table.add_row(*(format_value(row.get(c)) for c in columns))
    return table


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_command(
        config: Path = typer.Argument(..., help="A run config (YAML); see configs/."),
        overrides: list[str] = typer.Option(
            [], "--set", help="Override a config value, e.g. --set mix.ratio=2 (repeatable)."
        ),
    ) -> None:
        """Run sample -> diversify -> mix -> train -> eval for CONFIG, reusing every cached stage."""
        from delia.config import load_config
        from delia.pipeline import run, summary_row

        cfg = load_config(config, overrides)
        run_dir = run(cfg)
        console.print(summary_table([summary_row(run_dir)], f"{cfg.name} ({cfg.method})"))
        console.print(f"run directory: {run_dir}")
