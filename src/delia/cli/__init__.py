"""The `delia` command: each module of COMMAND_GROUPS adds its commands with `register(app)`.

User errors (DeliaError, and a file the environment will not let delia write) print one line and exit 2;
`--debug`, before or after the command, shows the traceback instead.
"""

from __future__ import annotations

import errno
import sys

import typer
from rich.console import Console
from rich.markup import escape

from delia.cli import (
    chat,
    data,
    demo,
    eval,
    experiment,
    export,
    methods,
    mix,
    model,
    probe,
    run,
    score,
    synth,
    train,
)
from delia.core.errors import DeliaError

app = typer.Typer(
    name="delia",
    help="DELIA: adapt an LLM to a small task with diverse data, a format token and extensive shuffling.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)
COMMAND_GROUPS = (
    chat,
    data,
    demo,
    eval,
    experiment,
    export,
    methods,
    mix,
    model,
    probe,
    run,
    score,
    synth,
    train,
)
_state: dict[str, bool] = {}


DEBUG_FLAG = "--debug"
# OSErrors that name a path the user (or the machine) decides about, not a bug: a one-line error, exit 2.
USER_OS_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EISDIR)


@app.callback()
def _root(debug: bool = typer.Option(False, DEBUG_FLAG, help="Show full tracebacks on errors.")) -> None:
    """main() takes --debug out of the arguments wherever it is; the option stays for --help."""


def split_debug(args: list[str]) -> tuple[list[str], bool]:
    """(the arguments without --debug, whether it was given): it works after the command too. Arguments
    after `--` are positional and left alone."""
    end = args.index("--") if "--" in args else len(args)
    kept = [arg for arg in args[:end] if arg != DEBUG_FLAG]
    return kept + args[end:], len(kept) < end


def _flags_without_a_placeholder() -> None:
    """typer (>= 0.29) prints a type placeholder after every option, `--json <bool>` and `--help <bool>`
    included: a flag takes no value, so it gets none."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich  # patched once: _register_all runs once per process

    def display_type_rich(self: TyperOption, ctx: object) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


def _register_all() -> None:
    if _state.get("registered"):  # main() may run more than once in one process (tests)
        return
    _state["registered"] = True
    _flags_without_a_placeholder()
    for group in COMMAND_GROUPS:
        group.register(app)


def main() -> None:
    _register_all()
    args, debug = split_debug(sys.argv[1:])
    try:
        app(args=args, prog_name="delia", standalone_mode=False)
    except DeliaError as err:
        if debug:
            raise
        _print_error(str(err))
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
        if isinstance(err, OSError) and err.errno in USER_OS_ERRORS:  # e.g. a directory turned read-only
            _print_error(f"{err.filename}: {err.strerror}" if err.filename else str(err))
            sys.exit(2)
        message = escape(f"{type(err).__name__}: {err}")
        err_console.print(f"[bold red]internal error:[/] {message} (rerun with --debug)", highlight=False)
        sys.exit(1)


def _print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
