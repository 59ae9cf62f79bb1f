"""`delia methods`: the method names a run config's `method:` takes."""

from __future__ import annotations

import typer

from delia.cli._common import console, print_json


def register(app: typer.Typer) -> None:
    @app.command("methods")
    def methods(as_json: bool = typer.Option(False, "--json", help="Print a JSON object.")) -> None:
        """List every registered method with a one-line description."""
        from rich.table import Table

        from delia.methods import available

        found = available()
        if as_json:
            print_json(found)
            return
        table = Table(title="methods (set `method:` in a run config)")
        table.add_column("method", style="bold")
        table.add_column("description")
        for name, description in found.items():
            table.add_row(name, description)
        console.print(table)
