"""`delia data inspect`."""

from __future__ import annotations

import statistics
from typing import Any

import typer

from delia.cli._common import MODEL_OPTION_HELP, console, print_json, print_mapping, shortened
from delia.core.models import EMBEDDED

TOKENS_HELP = (
    f"Token-length statistics with the model's chat template (loads its tokenizer: seconds; default model "
    f"{EMBEDDED}). Without it, lengths are in characters."
)
QUERIES_HELP = "The records are queries: accept ones with no final assistant turn (training data needs one)."


def token_lengths(examples: list[Any], tokenizer: Any) -> list[int]:
    texts = [tokenizer.apply_chat_template(ex.messages, tokenize=False) for ex in examples]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def character_lengths(examples: list[Any]) -> list[int]:
    return [sum(len(turn["content"]) for turn in ex.messages) for ex in examples]


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
        tokens: bool = typer.Option(False, "--tokens", help=TOKENS_HELP),
        model: str | None = typer.Option(
            None, "--model", help=f"{MODEL_OPTION_HELP} Given: implies --tokens.", show_default=False
        ),
        queries: bool = typer.Option(False, "--queries", help=QUERIES_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
    ) -> None:
        """Format, record count, length statistics (tokens with --tokens), first record; each record is
        checked as training data (a non-empty final assistant turn) unless --queries."""
        from delia.core.errors import DataError
        from delia.data import read_examples_with_format

        examples, detected = read_examples_with_format(file, fmt, require_response=not queries)
        if not examples:
            raise DataError(file, None, "no records")
        sources: dict[str, int] = {}
        for ex in examples:
            sources[ex.source] = sources.get(ex.source, 0) + 1
        result = {"file": file, "format": detected, "records": len(examples), "sources": sources}
        if tokens or model is not None:
            from delia.core.models import load_tokenizer  # transformers: seconds to import

            result["tokens"] = length_stats(token_lengths(examples, load_tokenizer(model or EMBEDDED)))
        else:
            result["characters"] = length_stats(character_lengths(examples))
        result["first"] = shortened(examples[0].model_dump())
        if as_json:
            print_json(result)
            return
        print_mapping(f"{file} ({detected})", {k: v for k, v in result.items() if k != "first"})
        console.print("first record:", result["first"])

    app.add_typer(data_app, name="data")
