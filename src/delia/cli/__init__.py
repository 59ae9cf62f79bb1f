"""The `delia` command: each module of COMMAND_GROUPS adds its commands with `register(app)`.

User errors (DeliaError) print one line and exit 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from delia.cli import chat, data, demo, eval, experiment, methods, mix, model, probe, run, score, synth, train
from delia.core.errors import DeliaError

app = typer.Typer(
    name="delia",
    help="DELIA: adapt an LLM to a small task with diverse data, a format token and extensive shuffling.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)
COMMAND_GROUPS = (chat, data, demo, eval, experiment, methods, mix, model, probe, run, score, synth, train)
_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _state["debug"] = debug


def _register_all() -> None:
    if _state.get("registered"):  # main() may run more than once in one process (tests)
        return
    _state["registered"] = True
    for group in COMMAND_GROUPS:
        group.register(app)


def main() -> None:
    _register_all()
    debug = "--debug" in sys.argv
    try:
        app(standalone_mode=False)
    except DeliaError as err:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as err:  # usage errors (click's, or the click copy typer >= 0.29 vendors), and the rest
        import click

        if isinstance(err, click.exceptions.Abort | typer.Abort):
            sys.exit(130)
        if isinstance(err, click.ClickException | typer.TyperException) and hasattr(err, "show"):
            err.show()
            sys.exit(getattr(err, "exit_code", 2))
        if debug:
            raise
        message = escape(f"{type(err).__name__}: {err}")
        err_console.print(f"[bold red]internal error:[/] {message} (rerun with --debug)", highlight=False)
        sys.exit(1)
