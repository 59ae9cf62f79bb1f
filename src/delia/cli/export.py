"""`delia export RUN --to DIR --format merged|vllm|gguf`: a trained run as files that transformers, vLLM
or llama.cpp load without delia (docs/deploy.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from delia.cli._common import MODEL_OPTION_HELP, print_json, print_mapping

EXPORT_HELP = (
    "Export a trained run for serving.\n\n"
    "merged: LoRA and the new tokens' trained rows merged into the base, a plain transformers checkpoint "
    "(safetensors, with the tokenizer). vllm: base/ (vocabulary grown, trained rows written in) and "
    "adapter/ (the LoRA alone, no token rows) with the `vllm serve` command in README.md. gguf: model.gguf "
    "of the merged model (llama architecture, F32 or F16) for llama.cpp and transformers' GGUF loader.\n\n"
    "Example: delia export runs/demo --to exports/demo --format merged"
)
FORMAT_HELP = "merged, vllm or gguf."
DTYPE_HELP = "Weights' dtype: float32, bfloat16 or float16 (gguf: float32 or float16)."
NAME_HELP = "vllm: the name the LoRA is served under. Default: the run's name."
TO_HELP = "Output directory: new, empty, or an earlier export (replaced whole, only when the export is done)."


def register(app: typer.Typer) -> None:
    @app.command("export", help=EXPORT_HELP)
    def export(
        run: str = typer.Argument(..., help="A run directory (holding adapter/) or an adapter directory."),
        to: Path = typer.Option(..., "--to", help=TO_HELP),
        fmt: str = typer.Option("merged", "--format", help=FORMAT_HELP),
        model: str | None = typer.Option(
            None, "--model", help=MODEL_OPTION_HELP + " Default: the base the adapter names."
        ),
        dtype: str = typer.Option("float32", "--dtype", help=DTYPE_HELP),
        name: str | None = typer.Option(None, "--name", help=NAME_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        from delia.export import export_run  # torch
        from delia.generation.threads import follow_free_cores

        follow_free_cores(None, "cpu")
        result = export_run(run, to, fmt, model_spec=model, dtype=dtype, lora_name=name)
        summary = {
            "format": result.format,
            "path": str(result.path),
            "files": len(result.files),
            "megabytes": round(sum(result.files.values()) / 1e6, 1),
            "seconds": result.seconds,
            "readme": str(result.path / "README.md"),
        }
        if as_json:
            print_json({**summary, "files": result.files})
        else:
            print_mapping(f"exported {run}", summary)
