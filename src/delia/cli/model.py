"""`delia model info`."""

from __future__ import annotations

import typer

from delia.cli._common import MODEL_OPTION_HELP, print_json, print_mapping
from delia.core.models import EMBEDDED


def register(app: typer.Typer) -> None:
    model_app = typer.Typer(help="Inspect models.", no_args_is_help=True)

    @model_app.command("info")
    def info(
        model: str = typer.Option(EMBEDDED, "--model", help=MODEL_OPTION_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
    ) -> None:
        """Parameters, layers, hidden size, vocabulary, chat template, load time."""
        from delia.core.models import model_info

        result = model_info(model)
        if as_json:
            print_json(result)
        else:
            print_mapping(f"model {model}", result)

    app.add_typer(model_app, name="model")
