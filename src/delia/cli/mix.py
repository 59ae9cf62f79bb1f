"""`delia mix`: task + diverse data -> one training file, in a seeded, reproducible order."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from delia.cli._common import print_json, print_mapping, writing_to
from delia.cli._config import command_config, config_file_option, config_option, set_option

SCHEDULES = (
    "shuffle (the paper's extensive shuffle), interleave (Algorithm 1), two_stage (DMT), task_only, "
    "diverse_only"
)


def show_library_logs() -> None:
    """The library's warnings (e.g. upsampling) and notes, one line each on the current stderr."""
    root = logging.getLogger("delia")
    for old in [h for h in root.handlers if h.get_name() == "delia-cli"]:
        root.removeHandler(old)  # a handler from an earlier call in this process may hold a stale stderr
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name("delia-cli")
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def register(app: typer.Typer) -> None:
    @app.command("mix")
    def mix_command(
        task: Path = typer.Option(..., "--task", help="Task examples: any supported format."),
        diverse: Path | None = typer.Option(None, "--diverse", help="Diverse examples (any format)."),
        schedule: str | None = config_option("mix.schedule", "--schedule", help=SCHEDULES),
        ratio: float | None = config_option(
            "mix.ratio", "--ratio", help="Diverse examples per task example (R)."
        ),
        seed: int | None = config_option(
            "mix.seed", "--seed", help="Same inputs and seed give a byte-identical output."
        ),
        out: Path = typer.Option(..., "--out", help="The mixed messages JSONL (written atomically)."),
        as_json: bool = typer.Option(False, "--json", help="Print the counts as a JSON object."),
        fmt: str | None = config_option(
            "task.format", "--format", help="Task format: auto|messages|alpaca|prompt."
        ),
        diverse_fmt: str = typer.Option("auto", "--diverse-format", help="Diverse file format."),
        order: str | None = config_option(
            "mix.two_stage_order", "--two-stage-order", help="task_first or diverse_first."
        ),
        config_path: str | None = config_file_option(),
        overrides: list[str] = set_option(),
    ) -> None:
        """Mix task examples with R x |task| diverse examples; print the counts."""
        from delia.data import read_examples
        from delia.mix import mix

        flags = {
            "mix.schedule": schedule,
            "mix.ratio": ratio,
            "mix.seed": seed,
            "mix.two_stage_order": order,
            "task.format": fmt,
        }
        config = command_config(config_path, overrides, flags)
        cfg = config.mix
        show_library_logs()
        with writing_to(out, "file"):
            examples = read_examples(task, config.task.format, source="task", require_response=True)
            counts = mix(examples, diverse, cfg, out, diverse_format=diverse_fmt)
        if as_json:
            print_json(counts)
        else:
            print_mapping(f"mix -> {out}", counts)
