"""`delia data inspect`."""

from __future__ import annotations

import statistics
from typing import Any

import typer

from delia.cli._common import MODEL_OPTION_HELP, console, print_json, print_mapping
from delia.core.models import EMBEDDED


def token_lengths(examples: list[Any], tokenizer: Any) -> list[int]:
    texts = [tokenizer.apply_chat_template(ex.messages, tokenize=False) for ex in examples]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def length_stats(lengths: list[int]) -> dict[str, float]:
    ordered = sorted(lengths)
    return {
        "min": ordered[0],
        "mean": round(statistics.fmean(ordered), 1),
        "p50": ordered[len(ordered) // 2],
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
        "total": sum(ordered),
    }


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Inspect data files.", no_args_is_help=True)

    @data_app.command("inspect")
    def inspect(
        file: str = typer.Argument(
            ..., help="messages / alpaca / prompt-completion file, JSON(L), optionally .gz"
        ),
        fmt: str = typer.Option("auto", "--format", help="auto, messages, alpaca or prompt."),
        model: str = typer.Option(EMBEDDED, "--model", help=MODEL_OPTION_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
    ) -> None:
        """Format, record count, token-length statistics (with the model's chat template), first record."""
        from delia.core.models import load_tokenizer
        from delia.data import read_examples_with_format

        examples, detected = read_examples_with_format(file, fmt)
        if not examples:
            from delia.core.errors import DataError

            raise DataError(file, None, "no records")
        stats = length_stats(token_lengths(examples, load_tokenizer(model)))
        sources: dict[str, int] = {}
        for ex in examples:
            sources[ex.source] = sources.get(ex.source, 0) + 1
        result = {
            "file": file,
            "format": detected,
            "records": len(examples),
            "sources": sources,
            "tokens": stats,
            "first": examples[0].model_dump(),
        }
        if as_json:
            print_json(result)
            return
        print_mapping(f"{file} ({detected})", {k: v for k, v in result.items() if k != "first"})
        console.print("first record:", examples[0].model_dump())

    app.add_typer(data_app, name="data")
