"""`delia eval`: answer a task file with a model (and adapter), score the answers, write the results."""

from __future__ import annotations

from pathlib import Path

import typer

from delia.cli._common import MODEL_OPTION_HELP, console, print_json, writing_to
from delia.cli._config import command_config, config_file_option, config_option, set_option
from delia.cli.score import (
    BLEURT_HELP,
    BOOTSTRAP_HELP,
    COMET_HELP,
    KEYS_HELP,
    LABEL_HELP,
    SAVED_SCORING,
    note_saved_scoring,
    print_figures,
    read_predictions,
    scoring_flags,
    warn_if_keys_missing,
    with_saved_scoring,
)

FORMAT_HELP = "auto, messages, alpaca or prompt."
LIMIT_HELP = "Evaluate only the first N examples."
METRIC_HELP = "json_format, translation or exact; default: the --adapter's run's metric, else json_format."
ADAPTER_HELP = "A trained adapter directory, or a run directory holding adapter/."
BUDGET_HELP = "Generation budget per answer: a number of tokens, or auto (2x the longest reference answer)."
BATCH_HELP = "Prompts per generation batch."
MODEL_DEFAULT = "Default: the base model the adapter names, else model.name (the embedded model)."


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_command(
        data: str = typer.Option(
            ..., "--data", help="Evaluation examples (messages, alpaca or prompt format)."
        ),
        out: str = typer.Option(..., "--out", help="Directory for predictions.jsonl and metrics.json."),
        model: str | None = typer.Option(None, "--model", help=f"{MODEL_OPTION_HELP} {MODEL_DEFAULT}"),
        adapter: str | None = typer.Option(None, "--adapter", help=ADAPTER_HELP),
        fmt: str | None = config_option("eval.format", "--format", help=FORMAT_HELP),
        limit: int | None = config_option("eval.limit", "--limit", help=LIMIT_HELP),
        metric: str | None = config_option("eval.metric", "--metric", help=METRIC_HELP),
        keys: str | None = config_option("eval.keys", "--keys", help=KEYS_HELP),
        label_key: str | None = config_option("eval.label_key", "--label-key", help=LABEL_HELP),
        max_new_tokens: str | None = config_option(
            "eval.max_new_tokens", "--max-new-tokens", help=BUDGET_HELP
        ),
        batch_size: int | None = config_option("eval.batch_size", "--batch-size", help=BATCH_HELP),
        bootstrap: int | None = config_option("eval.bootstrap", "--bootstrap", help=BOOTSTRAP_HELP),
        bleurt: str | None = config_option("eval.bleurt_checkpoint", "--bleurt-checkpoint", help=BLEURT_HELP),
        comet: str | None = config_option("eval.comet_checkpoint", "--comet-checkpoint", help=COMET_HELP),
        device: str | None = config_option("model.device", "--device", help="cpu, cuda, cuda:N or auto."),
        config_path: str | None = config_file_option(),
        overrides: list[str] = set_option(),
        as_json: bool = typer.Option(False, "--json", help="Print metrics.json's content."),
    ) -> None:
        """Greedy answers for --data, scored; writes predictions.jsonl and metrics.json into --out."""
        from delia.core.adapters import resolve_adapter_dir
        from delia.core.models import pick_device
        from delia.data import read_examples
        from delia.evaluate import PREDICTIONS_FILE, evaluate_model
        from delia.generation.threads import follow_free_cores  # torch
        from delia.methods import load_trained

        adapter_dir = resolve_adapter_dir(adapter) if adapter else None
        flags = {
            "eval.file": data,
            "eval.format": fmt,
            "eval.limit": limit,
            "eval.metric": metric,
            "eval.max_new_tokens": max_new_tokens,
            "eval.batch_size": batch_size,
            "model.device": device,
        }
        flags |= scoring_flags(keys, label_key, bootstrap, bleurt, comet)
        flags, taken = with_saved_scoring(
            flags, adapter_dir, config_path, overrides, ("metric", *SAVED_SCORING)
        )
        config = command_config(config_path, overrides, flags)
        cfg = config.eval
        note_saved_scoring(taken, adapter_dir)
        with writing_to(Path(out), "dir"):  # checked and locked before the first answer is generated
            examples = read_examples(data, cfg.format)
            # "" lets the adapter name its base; without one, the config's model (the embedded one).
            spec = model or ("" if adapter else config.model.name)
            device_name = pick_device(config.model.device)
            follow_free_cores(config.train.threads, device_name)
            loaded_model, tokenizer = load_trained(spec, adapter_dir, device_name)
            metrics = evaluate_model(loaded_model, tokenizer, examples, cfg, Path(out))
            warn_if_keys_missing(cfg.metric, read_predictions(str(Path(out) / PREDICTIONS_FILE))[0], cfg.keys)
        if as_json:
            print_json(metrics)
            return
        print_figures(metrics, f"{cfg.metric} on {data}")
        generation = metrics["generation"]
        console.print(
            f"{generation['new_tokens']} new tokens at {generation['tokens_per_second']:.1f} tokens/s; "
            f"{metrics['seconds']:.1f} s in all; results in {out}",
            highlight=False,
        )
