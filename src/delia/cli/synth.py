"""`delia synth sample | diversify | stats`: self-sampled data, instruction rewrites, diversity statistics."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import typer

from delia.cli._common import MODEL_OPTION_HELP, console, print_json
from delia.core.models import EMBEDDED

THREADS_HELP = "torch CPU threads (default: torch's choice); 1 is fastest on a CPU shared with other jobs."
BACKEND_HELP = "local (transformers, in-process), openai (any OpenAI-compatible server) or vllm (in-process)."


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))


def _backend_config(
    kind: str,
    base_url: str | None,
    api_key_env: str | None,
    batch_size: int,
    concurrency: int,
    timeout: float,
) -> Any:
    from pydantic import ValidationError

    from delia.core.config import BackendConfig
    from delia.core.errors import ConfigError

    try:
        return BackendConfig(
            kind=kind,
            base_url=base_url,
            api_key_env=api_key_env,
            batch_size=batch_size,
            concurrency=concurrency,
            timeout_s=timeout,
        )
    except ValidationError as err:
        first = err.errors()[0]
        message = first["msg"].removeprefix("Value error, ")  # as config.build_config words it
        raise ConfigError(f"backend.{'.'.join(str(p) for p in first['loc'])}", message) from None


def _print_axis_table(report: dict[str, Any]) -> None:
    from rich.table import Table

    console.print(f"acceptance per axis (meaning check: {report['meaning_check']})", highlight=False)
    table = Table()
    table.add_column("axis", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    for column in ("ok/drawn", "rate", "llm ok", "rule ok"):
        table.add_column(column, justify="right", no_wrap=True)
    for axis, row in report["axes"].items():
        rate = "-" if row["acceptance"] is None else f"{row['acceptance']:.0%}"
        table.add_row(
            axis,
            row["kind"],
            f"{row['accepted']}/{row['drawn']}",
            rate,
            f"{row['llm_accepted']}/{row['llm_attempts']}",
            f"{row['rule_accepted']}/{row['rule_attempts']}",
        )
    console.print(table)
    for axis, row in report["axes"].items():
        top = sorted(row["rejections"].items(), key=lambda item: -item[1])[:4]
        if top:
            console.print(
                f"  {axis} rejected: " + ", ".join(f"{name} x{count}" for name, count in top), highlight=False
            )


def register(app: typer.Typer) -> None:
    synth_app = typer.Typer(
        help="Synthesise data: self-sampling, diversification, statistics.", no_args_is_help=True
    )

    @synth_app.command("sample")
    def sample(
        out: Path = typer.Option(..., "--out", help="Output messages JSONL (source: diverse)."),
        queries: str | None = typer.Option(
            None,
            "--queries",
            help="Query file (alpaca / messages / prompt, .gz ok) or a datasets directory; "
            "omitted: built-in topics x task types.",
        ),
        fmt: str = typer.Option(
            "auto", "--format", help="Query file format: auto, messages, alpaca or prompt."
        ),
        limit: int | None = typer.Option(None, "--limit", help="Answer at most N queries (the first N)."),
        model: str = typer.Option(EMBEDDED, "--model", help=MODEL_OPTION_HELP),
        max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
        batch_size: int = typer.Option(
            16, "--batch-size", help="Prompts per generate call (and per cache flush)."
        ),
        seed: int = typer.Option(0, "--seed"),
        temperature: float = typer.Option(0.7, "--temperature"),
        top_p: float = typer.Option(0.95, "--top-p"),
        in_context: bool = typer.Option(
            True,
            "--in-context/--no-in-context",
            help="Put the query's reference answer in one in-context turn.",
        ),
        backend: str = typer.Option("local", "--backend", help=BACKEND_HELP),
        base_url: str | None = typer.Option(
            None, "--base-url", help="openai backend: e.g. http://127.0.0.1:8000/v1"
        ),
        api_key_env: str | None = typer.Option(
            None, "--api-key-env", help="NAME of the env var holding the key."
        ),
        concurrency: int = typer.Option(4, "--concurrency", help="openai backend: requests in flight."),
        timeout: float = typer.Option(120.0, "--timeout", help="openai backend: seconds per request."),
        device: str = typer.Option("cpu", "--device", help="local backend: cpu, cuda, auto."),
        threads: int | None = typer.Option(None, "--threads", help=THREADS_HELP),
    ) -> None:
        """Answer diverse queries with a model (resumable: rerun the same command after an interruption)."""
        from delia.core.config import SampleConfig, SamplingConfig
        from delia.core.errors import DeliaError
        from delia.generation import make_backend
        from delia.synth.sample import load_queries, manifest_path, sample_diverse
        from delia.synth.topics import builtin_queries

        if queries is None and limit is None:
            raise DeliaError("without --queries, give --limit N: how many built-in queries to answer")
        if queries is None:
            query_examples = builtin_queries(limit or 0, seed)
        else:
            query_examples = load_queries(queries, fmt, limit)
        if not query_examples:
            raise DeliaError(f"no queries to answer in {queries}")
        backend_cfg = _backend_config(backend, base_url, api_key_env, batch_size, concurrency, timeout)
        sampling = SamplingConfig(
            temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed
        )
        cfg = SampleConfig(
            queries=queries, limit=limit, in_context=in_context, backend=backend_cfg, sampling=sampling
        )
        _set_threads(threads)
        engine = make_backend(backend_cfg, model, device=device, dtype="float32")
        examples = sample_diverse(query_examples, engine, cfg, out, model)
        console.print(f"wrote {len(examples)} examples to {out}; manifest {manifest_path(out)}")

    @synth_app.command("diversify")
    def diversify(
        task: str = typer.Option(..., "--task", help="Task examples (any supported format)."),
        out: Path = typer.Option(
            ..., "--out", help="Output JSONL: k rewrites per example (or the original)."
        ),
        k: int = typer.Option(4, "--k", help="Rewrites per example."),
        keep_token: list[str] = typer.Option(
            ["<sep>"],
            "--keep-token",
            help="Token that must appear exactly as often as in the original (repeat).",
        ),
        axes: str | None = typer.Option(None, "--axes", help="Comma-separated axes (default: all)."),
        instruction_field: str | None = typer.Option(
            None, "--instruction-field", help="Meta key of the instruction."
        ),
        separator: str = typer.Option(
            "\\n\\n", "--separator", help="Instruction = text after the last separator (escapes allowed)."
        ),
        regex: str | None = typer.Option(None, "--regex", help="Instruction = first group of this regex."),
        min_similarity: float = typer.Option(
            0.6, "--min-similarity", help="Embedding cosine needed to keep one."
        ),
        limit: int | None = typer.Option(None, "--limit", help="Only the first N task examples."),
        rounds: int = typer.Option(2, "--rounds", help="LLM attempts per rewrite before the rule fallback."),
        llm: bool = typer.Option(True, "--llm/--no-llm", help="--no-llm: rule-based rewrites only."),
        rules: bool = typer.Option(
            True, "--rules/--no-rules", help="Rule-based fallback for failed rewrites."
        ),
        model: str = typer.Option(EMBEDDED, "--model", help=MODEL_OPTION_HELP),
        max_new_tokens: int = typer.Option(160, "--max-new-tokens"),
        temperature: float = typer.Option(0.9, "--temperature"),
        batch_size: int = typer.Option(16, "--batch-size"),
        seed: int = typer.Option(0, "--seed"),
        backend: str = typer.Option("local", "--backend", help=BACKEND_HELP),
        base_url: str | None = typer.Option(None, "--base-url"),
        api_key_env: str | None = typer.Option(None, "--api-key-env"),
        concurrency: int = typer.Option(4, "--concurrency"),
        timeout: float = typer.Option(120.0, "--timeout"),
        device: str = typer.Option("cpu", "--device"),
        threads: int | None = typer.Option(None, "--threads", help=THREADS_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Rewrite each task instruction k ways along drawn axes, keeping required tokens and responses."""
        from delia.core.config import DEFAULT_AXES, DiversifyConfig, SamplingConfig
        from delia.data import read_examples
        from delia.generation import make_backend
        from delia.synth.diversify import diversify as run_diversify
        from delia.synth.diversify import report_path

        examples = read_examples(task)[:limit] if limit else read_examples(task)
        backend_cfg = _backend_config(backend, base_url, api_key_env, batch_size, concurrency, timeout)
        cfg = DiversifyConfig(
            k=k,
            axes=[a.strip() for a in axes.split(",") if a.strip()] if axes else list(DEFAULT_AXES),
            keep_tokens=keep_token,
            instruction_field=instruction_field,
            separator=codecs.decode(separator, "unicode_escape"),
            regex=regex,
            min_similarity=min_similarity,
            backend=backend_cfg,
            sampling=SamplingConfig(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed),
        )
        _set_threads(threads)
        engine = make_backend(backend_cfg, model, device=device) if llm else None
        outputs, report = run_diversify(examples, engine, cfg, out, rounds=rounds, rule_fallback=rules)
        if as_json:
            print_json(report)
            return
        _print_axis_table(report)
        console.print(
            f"{report['accepted']}/{report['requested']} rewrites accepted ({report['accepted_llm']} LLM, "
            f"{report['accepted_rule']} rule-based); {report['fallbacks']} examples kept their original; "
            f"wrote {len(outputs)} examples to {out}; report {report_path(out)}"
        )

    @synth_app.command("stats")
    def stats(
        file: str = typer.Argument(..., help="A data file (any supported format)."),
        fmt: str = typer.Option("auto", "--format"),
        embed: bool = typer.Option(
            True, "--embed/--no-embed", help="Embedding spread with the offline embedder."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
    ) -> None:
        """distinct-1/2, near-duplicate rate (MinHash), length histogram, embedding spread."""
        from delia.core.errors import DataError
        from delia.data import read_examples
        from delia.synth.stats import dataset_stats

        examples = read_examples(file, fmt)
        if not examples:
            raise DataError(file, None, "no records")
        result = {"file": file, **dataset_stats(examples, embedder="auto" if embed else None)}
        if as_json:
            print_json(result)
            return
        _print_stats(result)

    app.add_typer(synth_app, name="synth")


def _print_stats(result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{result['file']}: {result['records']} records {result['sources']}")
    table.add_column("statistic", style="bold")
    table.add_column("instruction", justify="right")
    table.add_column("response", justify="right")
    keys = ("texts", "mean_words", "distinct_1", "distinct_2", "near_duplicate_rate", "exact_duplicate_rate")
    for key in keys:
        table.add_row(key, str(result["instruction"][key]), str(result["response"][key]))
    spread = [result[f]["embedding_spread"] for f in ("instruction", "response")]
    table.add_row(f"spread ({spread[0]['method']})", str(spread[0]["spread"]), str(spread[1]["spread"]))
    console.print(table)
    histogram = Table(title="length histogram (words)")
    histogram.add_column("words")
    histogram.add_column("instruction", justify="right")
    histogram.add_column("response", justify="right")
    for label, count in result["instruction"]["length_histogram"].items():
        histogram.add_row(label, str(count), str(result["response"]["length_histogram"][label]))
    console.print(histogram)
