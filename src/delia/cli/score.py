"""`delia score`: score a predictions JSONL without a model."""

from __future__ import annotations

from typing import Any

import typer

from delia.cli._common import console, print_json
from delia.cli._config import EXPLICIT_NONE, command_config, config_file_option, config_option, set_option

KEYS_HELP = "Comma-separated keys the answer's dict must have (json_format)."
LABEL_HELP = "Key whose value is compared with the reference's label (json_format); '' for none."
BOOTSTRAP_HELP = "Bootstrap resamples for the 95% CIs."
BLEURT_HELP = "Local BLEURT checkpoint."
COMET_HELP = "Local COMET checkpoint."


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
        config_path: str | None = config_file_option(),
        overrides: list[str] = set_option(),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON object with per-example scores."),
    ) -> None:
        """Score predictions without a model: every figure with n and a bootstrap 95% CI."""
        from delia.evaluate.metrics import score

        predictions, references, hit_limit, sources = read_predictions(predictions_file)
        flags = scoring_flags(keys, label_key, bootstrap, bleurt, comet)
        cfg = command_config(config_path, overrides, flags).eval
        result = score(metric, predictions, references, cfg, hit_limit=hit_limit, sources=sources, seed=seed)
        if as_json:
            print_json(result)
            return
        print_figures(result, f"{metric} on {predictions_file}")
