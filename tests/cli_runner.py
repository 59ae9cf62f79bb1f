"""`delia ARGS` run in the test's own process, as the console entry point runs it, for every CLI test."""

from __future__ import annotations

import logging
import sys

import pytest

from delia.cli import main


def run_cli(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    """`delia ARGS` through main(): (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["delia", *args])
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        delia_logger = logging.getLogger("delia")
        for handler in [h for h in delia_logger.handlers if h.get_name() == "delia-cli"]:
            delia_logger.removeHandler(handler)  # it writes to this test's captured stderr, gone after it
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, err: str) -> str:
    """The one `error: ...` line of a user error (exit 2), asserting there is nothing else on stderr."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]
