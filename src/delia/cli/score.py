"""`delia score`: score a predictions JSONL without a model."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import typer

from delia.cli._common import console, print_json
from delia.cli._config import EXPLICIT_NONE, command_config, config_file_option, config_option, set_option

KEYS_HELP = (
    "Comma-separated keys the answer's dict must have (json_format); default: the keys the --adapter's run "
    "saved, else the paper's."
)
LABEL_HELP = "Key whose value is compared with the reference's label (json_format); '' for none."
BOOTSTRAP_HELP = "Bootstrap resamples for the 95% CIs."
BLEURT_HELP = "Local BLEURT checkpoint."
COMET_HELP = "Local COMET checkpoint."
ADAPTER_HELP = "An adapter directory or a run holding adapter/: score with the eval keys its run saved."
# What `score` takes from the adapter's saved run config (`eval` also takes its metric).
SAVED_SCORING = ("keys", "label_key")


def scoring_flags(
    keys: str | None, label_key: str | None, bootstrap: int | None, bleurt: str | None, comet: str | None
) -> dict[str, Any]:
    """The scoring flags `score` and `eval` share, as eval.* config keys."""
    return {
        "eval.keys": None if keys is None else [k.strip() for k in keys.split(",") if k.strip()],
        "eval.label_key": EXPLICIT_NONE if label_key == "" else label_key,
        "eval.bootstrap": bootstrap,
        "eval.bleurt_checkpoint": bleurt,
        "eval.comet_checkpoint": comet,
    }


def given_eval_keys(config_path: str | Path | None, overrides: list[str]) -> set[str]:
    """The eval.* keys that --config or --set give (a saved setting must not override them)."""
    from delia.core.config import load_config

    return set(load_config(config_path, overrides).eval.model_fields_set)


def with_saved_scoring(
    flags: dict[str, Any],
    adapter_dir: Path | None,
    config_path: str | Path | None,
    overrides: list[str],
    names: tuple[str, ...] = SAVED_SCORING,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(flags with each eval setting in `names` that the adapter's run saved and that no flag, --config or
    --set gives, the settings so taken): an adapter is scored as its own run scored it."""
    from delia.core.adapters import saved_eval_settings

    saved = saved_eval_settings(adapter_dir, names) if adapter_dir is not None else {}
    if not saved:
        return flags, {}
    given = given_eval_keys(config_path, overrides)
    taken = {
        name: value
        for name, value in saved.items()
        if flags.get(f"eval.{name}") is None and name not in given
    }
    filled = {f"eval.{name}": EXPLICIT_NONE if value is None else value for name, value in taken.items()}
    return {**flags, **filled}, taken


def note_saved_scoring(taken: dict[str, Any], adapter_dir: Path | None) -> None:
    if taken and adapter_dir is not None:
        shown = ", ".join(f"eval.{name}={_shown(value)}" for name, value in taken.items())
        print(f"note: {shown}, as saved in {adapter_dir / 'config.yaml'}", file=sys.stderr)


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def missing_keys_warning(predictions: list[str], keys: list[str]) -> str | None:
    """One line when not one answer holds any of `keys`: every answer then fails json_format, most likely
    because the keys are another task's (the paper's thought/hallucination by default)."""
    from delia.evaluate.jsonfmt import parse_answer

    if not keys:
        return None
    found: Counter[str] = Counter()
    for text in predictions:
        parsed, _ = parse_answer(text)
        if parsed is None:
            continue
        if any(key in parsed for key in keys):
            return None
        found.update(str(key) for key in parsed)
    held = f"; the answers hold {', '.join(k for k, _ in found.most_common(6))}" if found else ""
    return (
        f"warning: no answer holds any of the keys {', '.join(keys)} (eval.keys), so every answer fails "
        f"json_format{held}: give the task's keys with --keys or eval.keys"
    )


def warn_if_keys_missing(metric: str, predictions: list[str], keys: list[str]) -> None:
    warning = missing_keys_warning(predictions, keys) if metric == "json_format" else None
    if warning is not None:
        print(warning, file=sys.stderr)


def print_figures(result: dict[str, Any], title: str) -> None:
    """A table of every figure with its n and bootstrap 95% CI, then sacreBLEU signatures if any."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("figure", "value", "95% CI", "n"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for name, fig in result["values"].items():
        table.add_row(
            name, f"{fig['value']:.4g}", f"[{fig['ci_low']:.4g}, {fig['ci_high']:.4g}]", str(fig["n"])
        )
    console.print(table)
    for name, signature in result.get("details", {}).get("signatures", {}).items():
        console.print(f"{name} signature: {signature}", highlight=False)


def read_predictions(
    path: str,
) -> tuple[list[str], list[str | None] | None, list[bool] | None, list[str] | None]:
    """(predictions, references or None, hit_limit or None, sources or None) from a JSONL/JSON file."""
    from delia.core.errors import DataError
    from delia.data.io import iter_json_records

    predictions: list[str] = []
    references: list[str | None] = []
    hit_limit: list[Any] = []
    sources: list[Any] = []
    for line, row in iter_json_records(path):
        if not isinstance(row.get("prediction"), str):
            raise DataError(path, line, "each row needs a string 'prediction'")
        reference = row.get("reference")
        if reference is not None and not isinstance(reference, str):
            raise DataError(path, line, "'reference' must be a string when present")
        predictions.append(row["prediction"])
        references.append(reference)
        hit_limit.append(row.get("hit_limit"))
        sources.append(row.get("source"))
    has_refs = any(r is not None for r in references)
    has_limits = all(isinstance(h, bool) for h in hit_limit)
    has_sources = all(isinstance(s, str) for s in sources)
    return (
        predictions,
        references if has_refs else None,
        hit_limit if has_limits else None,
        sources if has_sources else None,
    )


def register(app: typer.Typer) -> None:
    @app.command("score")
    def score_command(
        metric: str = typer.Argument(..., help="json_format, translation or exact."),
        predictions_file: str = typer.Option(
            ..., "--predictions", help="JSONL rows with 'prediction' and optional 'reference'."
        ),
        keys: str | None = config_option("eval.keys", "--keys", help=KEYS_HELP),
        label_key: str | None = config_option("eval.label_key", "--label-key", help=LABEL_HELP),
        bootstrap: int | None = config_option("eval.bootstrap", "--bootstrap", help=BOOTSTRAP_HELP),
        seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
        bleurt: str | None = config_option("eval.bleurt_checkpoint", "--bleurt-checkpoint", help=BLEURT_HELP),
        comet: str | None = config_option("eval.comet_checkpoint", "--comet-checkpoint", help=COMET_HELP),
        adapter: str | None = typer.Option(None, "--adapter", help=ADAPTER_HELP),
        config_path: str | None = config_file_option(),
        overrides: list[str] = set_option(),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON object with per-example scores."),
    ) -> None:
        """Score predictions without a model: every figure with n and a bootstrap 95% CI."""
        from delia.core.adapters import resolve_adapter_dir
        from delia.evaluate.metrics import score

        adapter_dir = resolve_adapter_dir(adapter) if adapter else None
        predictions, references, hit_limit, sources = read_predictions(predictions_file)
        flags = scoring_flags(keys, label_key, bootstrap, bleurt, comet)
        flags, taken = with_saved_scoring(flags, adapter_dir, config_path, overrides)
        cfg = command_config(config_path, overrides, flags).eval
        note_saved_scoring(taken, adapter_dir)
        result = score(metric, predictions, references, cfg, hit_limit=hit_limit, sources=sources, seed=seed)
        warn_if_keys_missing(metric, predictions, cfg.keys)
        if as_json:
            print_json(result)
            return
        print_figures(result, f"{metric} on {predictions_file}")
