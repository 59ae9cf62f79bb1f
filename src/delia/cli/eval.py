"""`delia eval`: answer a task file with a model (and adapter), score the answers, write the results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from delia.cli._common import MODEL_OPTION_HELP, console, print_json
from delia.cli.score import KEYS_HELP, LABEL_HELP, print_figures, split_keys
from delia.core.models import EMBEDDED

MODEL_DEFAULT = "Default: the base model the adapter names, else the embedded model."


def load_for_eval(model_spec: str | None, adapter: str | None, device: str) -> tuple[Any, Any]:
    """A base model, or a base model with a trained adapter (and the adapter's tokenizer with new tokens).
    Without a model spec: the base model the adapter names, else the embedded model."""
    if adapter is not None:
        from delia.train import load_adapter_model

        return load_adapter_model(model_spec or "", adapter, device)
    from delia.core.models import load_model, load_tokenizer

    spec = model_spec or EMBEDDED
    return load_model(spec, device=device).eval(), load_tokenizer(spec)


def eval_config(**fields: Any) -> Any:
    """An EvalConfig from CLI values; a bad value is a ConfigError naming the option."""
    from pydantic import ValidationError

    from delia.core.config import EvalConfig
    from delia.core.errors import ConfigError

    try:
        return EvalConfig(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(f"eval.{'.'.join(str(p) for p in first['loc'])}", first["msg"]) from None


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_command(
        data: str = typer.Option(
            ..., "--data", help="Evaluation examples (messages, alpaca or prompt format)."
        ),
        out: str = typer.Option(..., "--out", help="Directory for predictions.jsonl and metrics.json."),
        model: str | None = typer.Option(None, "--model", help=f"{MODEL_OPTION_HELP} {MODEL_DEFAULT}"),
        adapter: str | None = typer.Option(None, "--adapter", help="A trained adapter directory."),
        fmt: str = typer.Option("auto", "--format", help="auto, messages, alpaca or prompt."),
        limit: int | None = typer.Option(None, "--limit", help="Evaluate only the first N examples."),
        metric: str = typer.Option("json_format", "--metric", help="json_format, translation or exact."),
        keys: str = typer.Option("thought,hallucination", "--keys", help=KEYS_HELP),
        label_key: str = typer.Option("hallucination", "--label-key", help=LABEL_HELP),
        max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Generation budget per answer."),
        batch_size: int = typer.Option(16, "--batch-size", help="Prompts per generation batch."),
        bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the 95% CIs."),
        bleurt: str | None = typer.Option(None, "--bleurt-checkpoint", help="Local BLEURT checkpoint."),
        comet: str | None = typer.Option(None, "--comet-checkpoint", help="Local COMET checkpoint."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
        as_json: bool = typer.Option(False, "--json", help="Print metrics.json's content."),
    ) -> None:
        """Greedy answers for --data, scored; writes predictions.jsonl and metrics.json into --out."""
        from delia.core.models import pick_device
        from delia.data import read_examples
        from delia.evaluate import evaluate_model

        cfg = eval_config(
            file=data,
            format=fmt,
            limit=limit,
            metric=metric,
            keys=split_keys(keys),
            label_key=label_key or None,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            bootstrap=bootstrap,
            bleurt_checkpoint=bleurt,
            comet_checkpoint=comet,
        )
        examples = read_examples(data, fmt)
        loaded_model, tokenizer = load_for_eval(model, adapter, pick_device(device))
        metrics = evaluate_model(loaded_model, tokenizer, examples, cfg, Path(out))
        if as_json:
            print_json(metrics)
            return
        print_figures(metrics, f"{metric} on {data}")
        generation = metrics["generation"]
        console.print(
            f"{generation['new_tokens']} new tokens at {generation['tokens_per_second']:.1f} tokens/s; "
            f"{metrics['seconds']:.1f} s in all; results in {out}",
            highlight=False,
        )
