"""`delia train`: LoRA-train the configured model on a (mixed) data file."""

from __future__ import annotations

from pathlib import Path

import typer

from delia.cli._common import check_writable, print_json, print_mapping, writing_to
from delia.cli._config import config_file_option, set_option


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        data: str = typer.Option(
            ..., "--data", help="Training examples (mixed JSONL keeps each example's source)."
        ),
        out: Path = typer.Option(
            ..., "--out", help="Output directory: adapter/, train_log.jsonl, checkpoints/."
        ),
        config_path: str | None = config_file_option(),
        overrides: list[str] = set_option(),
        resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in --out."),
        eval_data: str | None = typer.Option(
            None, "--eval-data", help="Held-out task examples for eval loss."
        ),
        data_format: str = typer.Option("auto", "--format", help="auto, messages, alpaca or prompt."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Add the config's special tokens, train LoRA (one epoch by default) and save the adapter."""
        from delia.core.config import load_config
        from delia.data import read_examples
        from delia.train import train_model

        config = load_config(config_path, overrides)
        check_writable(out, "dir")  # before reading: a bad --out is said at once
        examples = read_examples(data, data_format, require_response=True)
        eval_examples = read_examples(eval_data, require_response=True) if eval_data else None
        with writing_to(out, "dir"):
            result = train_model(config, examples, out, eval_examples=eval_examples, resume=resume)
        summary = {
            "adapter": str(result.adapter_dir),
            "examples": result.n_examples,
            "steps": result.steps,
            "resumed_from": result.resumed_from,
            "final_loss": None if result.final_loss is None else round(result.final_loss, 4),
            "seconds": result.seconds,
            "tokens_per_second": result.tokens_per_second,
            "truncated": result.truncated,
            "dropped": result.dropped,
            "log": str(out / "train_log.jsonl"),
        }
        if as_json:
            print_json(summary)
        else:
            print_mapping(f"trained {config.model.name}", summary)
