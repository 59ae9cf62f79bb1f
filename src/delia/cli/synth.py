"""`delia synth sample | diversify | stats`: self-sampled data, instruction rewrites, diversity statistics."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from delia.cli._common import MODEL_OPTION_HELP, check_writable, console, print_json, writing_to
from delia.cli._config import command_config, config_file_option, config_option, set_option

if TYPE_CHECKING:
    from delia.core.config import BackendConfig, RunConfig
    from delia.generation import Backend

THREADS_HELP = "torch CPU threads (default: the cores other processes leave free, re-checked as it runs)."
BACKEND_HELP = "local (transformers, in-process), openai (any OpenAI-compatible server) or vllm (in-process)."
MAX_NEW_TOKENS_HELP = "Most tokens generated per answer."
SEED_HELP = "Sampling seed: the same seed and inputs give the same text."
TEMPERATURE_HELP = "Sampling temperature (0: greedy)."
TOP_P_HELP = "Nucleus sampling: keep the smallest set of tokens holding this much probability."
BATCH_HELP = "Prompts per generate call."
BASE_URL_HELP = "openai backend: e.g. http://127.0.0.1:8000/v1"
API_KEY_ENV_HELP = "NAME of the env var holding the key."
CONCURRENCY_HELP = "openai backend: requests in flight."
TIMEOUT_HELP = "openai backend: seconds per request."
DEVICE_HELP = "local backend: cpu, cuda, cuda:N or auto."


def _generator(config: RunConfig, backend: BackendConfig) -> Backend:
    """The configured backend on the configured model, with `train.threads` torch threads when set, else
    as many as other processes leave free (re-checked between decode steps)."""
    from delia.core.models import pick_device
    from delia.generation import make_backend
    from delia.generation.threads import follow_free_cores  # torch

    follow_free_cores(config.train.threads, pick_device(config.model.device))
    return make_backend(backend, config.model.name, device=config.model.device, dtype=config.model.dtype)


def _backend_flags(
    section: str,
    kind: str | None,
    base_url: str | None,
    api_key_env: str | None,
    batch_size: int | None,
    concurrency: int | None,
    timeout_s: float | None,
) -> dict[str, Any]:
    """The backend flags of `section` (sample or diversify) as its config keys."""
    given = {
        "kind": kind,
        "base_url": base_url,
        "api_key_env": api_key_env,
        "batch_size": batch_size,
        "concurrency": concurrency,
        "timeout_s": timeout_s,
    }
    return {f"{section}.backend.{key}": value for key, value in given.items()}


def _generator_flags(
    section: str,
    model: str | None,
    device: str | None,
    threads: int | None,
    max_new_tokens: int | None,
    temperature: float | None,
    seed: int | None,
) -> dict[str, Any]:
    """The flags of the model that writes `section`'s text (sample or diversify) as their config keys."""
    return {
        "model.name": model,
        "model.device": device,
        "train.threads": threads,
        f"{section}.sampling.max_new_tokens": max_new_tokens,
        f"{section}.sampling.temperature": temperature,
        f"{section}.sampling.seed": seed,
    }


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
        queries: str | None = config_option(
            "sample.queries",
            "--queries",
            help="Query file (alpaca / messages / prompt, .gz ok) or a datasets directory; "
            "omitted: built-in topics x task types.",
        ),
        fmt: str | None = config_option(
            "sample.queries_format", "--format", help="Query file format: auto, messages, alpaca or prompt."
        ),
        limit: int | None = config_option(
            "sample.limit", "--limit", help="Answer at most N queries (the first N)."
        ),
        model: str | None = config_option("model.name", "--model", help=MODEL_OPTION_HELP),
        max_new_tokens: int | None = config_option(
            "sample.sampling.max_new_tokens", "--max-new-tokens", help=MAX_NEW_TOKENS_HELP
        ),
        batch_size: int | None = config_option(
            "sample.backend.batch_size",
            "--batch-size",
            help="Prompts per generate call (and per cache flush).",
        ),
        seed: int | None = config_option("sample.sampling.seed", "--seed", help=SEED_HELP),
        temperature: float | None = config_option(
            "sample.sampling.temperature", "--temperature", help=TEMPERATURE_HELP
        ),
        top_p: float | None = config_option("sample.sampling.top_p", "--top-p", help=TOP_P_HELP),
        in_context: bool | None = config_option(
            "sample.in_context",
            "--in-context/--no-in-context",
            help="Put the query's reference answer in one in-context turn.",
        ),
        backend: str | None = config_option("sample.backend.kind", "--backend", help=BACKEND_HELP),
        base_url: str | None = config_option("sample.backend.base_url", "--base-url", help=BASE_URL_HELP),
        api_key_env: str | None = config_option(
            "sample.backend.api_key_env", "--api-key-env", help=API_KEY_ENV_HELP
        ),
        concurrency: int | None = config_option(
            "sample.backend.concurrency", "--concurrency", help=CONCURRENCY_HELP
        ),
        timeout: float | None = config_option("sample.backend.timeout_s", "--timeout", help=TIMEOUT_HELP),
        device: str | None = config_option("model.device", "--device", help=DEVICE_HELP),
        threads: int | None = config_option("train.threads", "--threads", help=THREADS_HELP),
        config_path: str | None = config_file_option(),
        overrides: list[str] = set_option(),
    ) -> None:
        """Answer diverse queries with a model (resumable: rerun the same command after an interruption)."""
        from delia.core.errors import DeliaError
        from delia.synth.sample import load_queries, manifest_path, sample_diverse
        from delia.synth.topics import builtin_queries

        flags = {
            **_generator_flags("diversify", model, device, threads, max_new_tokens, temperature, seed),
            **_backend_flags("diversify", backend, base_url, api_key_env, batch_size, concurrency, timeout),
            **_generator_flags("sample", model, device, threads, max_new_tokens, temperature, seed),
            **_backend_flags("sample", backend, base_url, api_key_env, batch_size, concurrency, timeout),
            "sample.queries": queries,
            "sample.queries_format": fmt,
            "sample.limit": limit,
            "sample.in_context": in_context,
            "sample.sampling.top_p": top_p,
        }
        config = command_config(config_path, overrides, flags)
        cfg = config.sample
        if cfg.queries is None and cfg.limit is None:
            raise DeliaError("without --queries, give --limit N: how many built-in queries to answer")
        if cfg.queries is None:
            query_examples = builtin_queries(cfg.limit or 0, cfg.sampling.seed)
        else:
            query_examples = load_queries(cfg.queries, cfg.queries_format, cfg.limit)
        if not query_examples:
            raise DeliaError(f"no queries to answer in {cfg.queries}")
        with writing_to(out, "file"):
            engine = _generator(config, cfg.backend)
            examples = sample_diverse(query_examples, engine, cfg, out, config.model.name)
        console.print(f"wrote {len(examples)} examples to {out}; manifest {manifest_path(out)}")

    @synth_app.command("diversify")
    def diversify(
        task: str = typer.Option(..., "--task", help="Task examples (any supported format)."),
        out: Path = typer.Option(
            ..., "--out", help="Output JSONL: k rewrites per example (or the original)."
        ),
        k: int | None = config_option("diversify.k", "--k", help="Rewrites per example."),
        keep_token: list[str] | None = config_option(
            "diversify.keep_tokens",
            "--keep-token",
            help="Token that must appear exactly as often as in the original (repeat).",
        ),
        axes: str | None = config_option("diversify.axes", "--axes", help="Comma-separated axes."),
        instruction_field: str | None = config_option(
            "diversify.instruction_field", "--instruction-field", help="Meta key of the instruction."
        ),
        separator: str | None = config_option(
            "diversify.separator",
            "--separator",
            help="Instruction = text after the last separator (escapes allowed).",
        ),
        regex: str | None = config_option(
            "diversify.regex", "--regex", help="Instruction = first group of this regex."
        ),
        min_similarity: float | None = config_option(
            "diversify.min_similarity", "--min-similarity", help="Embedding cosine needed to keep one."
        ),
        limit: int | None = typer.Option(None, "--limit", help="Only the first N task examples."),
        rounds: int = typer.Option(2, "--rounds", help="LLM attempts per rewrite before the rule fallback."),
        llm: bool = typer.Option(True, "--llm/--no-llm", help="--no-llm: rule-based rewrites only."),
        rules: bool = typer.Option(
            True, "--rules/--no-rules", help="Rule-based fallback for failed rewrites."
        ),
        model: str | None = config_option("model.name", "--model", help=MODEL_OPTION_HELP),
        max_new_tokens: int | None = config_option(
            "diversify.sampling.max_new_tokens", "--max-new-tokens", help=MAX_NEW_TOKENS_HELP
        ),
        temperature: float | None = config_option(
            "diversify.sampling.temperature", "--temperature", help=TEMPERATURE_HELP
        ),
        batch_size: int | None = config_option(
            "diversify.backend.batch_size", "--batch-size", help=BATCH_HELP
        ),
        seed: int | None = config_option("diversify.sampling.seed", "--seed", help=SEED_HELP),
        backend: str | None = config_option("diversify.backend.kind", "--backend", help=BACKEND_HELP),
        base_url: str | None = config_option("diversify.backend.base_url", "--base-url", help=BASE_URL_HELP),
        api_key_env: str | None = config_option(
            "diversify.backend.api_key_env", "--api-key-env", help=API_KEY_ENV_HELP
        ),
        concurrency: int | None = config_option(
            "diversify.backend.concurrency", "--concurrency", help=CONCURRENCY_HELP
        ),
        timeout: float | None = config_option("diversify.backend.timeout_s", "--timeout", help=TIMEOUT_HELP),
        device: str | None = config_option("model.device", "--device", help=DEVICE_HELP),
        threads: int | None = config_option("train.threads", "--threads", help=THREADS_HELP),
        config_path: str | None = config_file_option(),
        overrides: list[str] = set_option(),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Rewrite each task instruction k ways along drawn axes, keeping required tokens and responses."""
        from delia.data import read_examples
        from delia.synth.diversify import diversify as run_diversify
        from delia.synth.diversify import report_path

        flags = {
            "diversify.k": k,
            "diversify.keep_tokens": keep_token or None,
            "diversify.axes": [a.strip() for a in axes.split(",") if a.strip()] if axes else None,
            "diversify.instruction_field": instruction_field,
            "diversify.separator": None if separator is None else codecs.decode(separator, "unicode_escape"),
            "diversify.regex": regex,
            "diversify.min_similarity": min_similarity,
        }
        config = command_config(config_path, overrides, flags)
        cfg = config.diversify
        check_writable(out, "file")  # before reading: a bad --out is said at once
        examples = read_examples(task, require_response=True)
        examples = examples[:limit] if limit else examples
        with writing_to(out, "file"):
            engine = _generator(config, cfg.backend) if llm else None
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
        fmt: str = typer.Option("auto", "--format", help="auto, messages, alpaca or prompt."),
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
