"""`delia probe repr | divergent | losscurve | gradients`: what a tuned model learnt, as tables and PNGs.

Every command compares the base model with the adapters given as `--run NAME=DIR` (a run directory holding
`adapter/`, or the adapter directory). docs/probes.md says exactly what each one measures.
"""

from __future__ import annotations

from pathlib import Path

import typer

from delia.cli._common import console
from delia.cli._config import command_config, config_file_option, config_option, set_option

MODEL_HELP = "Base model spec. Default: the base in the adapter's delia_adapter.json, else the embedded one."
RUN_HELP = "NAME=DIR: an adapter to compare (run directory or adapter directory). Repeatable."
OUT_HELP = "Directory for the tables and the PNG."

REPR_HELP = (
    "L2 distance between the hidden state of TOKEN and of each KEYWORD at every transformer block.\n\n"
    "Each template is filled with the token and with each keyword; at block l (hidden-state index "
    "1..L, l=0 the embeddings) the distance is ||h_l(token) - mean over the keyword's tokens "
    "h_l(keyword)||_2, averaged over templates (8 built-in ones unless --template is given). A model "
    'whose tokenizer lacks TOKEN is reported "n/a". Writes repr.json, repr.csv (every block), '
    "repr_table.csv/.md (first/middle/last block: the paper's Table 1) and repr.png (one curve per "
    "run: the paper's Figure 2)."
)

DIVERGENT_HELP = (
    "State space at the first token of the assistant's answer (where a formatted answer's '{' "
    "comes).\n\n"
    "For each prompt (chat template + generation prompt) the next-token distribution p gives: entropy "
    "in nats, the number of most probable tokens whose probabilities sum to --mass, p of tokens "
    "starting with '{' (leading whitespace stripped), and p of the reference answer's first token; "
    "each averaged over prompts. Writes divergent.json, divergent.csv/.md (one row per run), "
    "divergent_per_prompt.csv and divergent.png (bars per run: the paper's Figure 4)."
)

LOSSCURVE_HELP = (
    "Held-out task loss and per-source training loss against optimizer step, one colour per run.\n\n"
    "Reads each run's train_log.jsonl: the held-out task loss (eval_task_loss, or eval_loss as "
    "delia train logs it every train.eval_every steps) on the left, loss_task (solid) and "
    "loss_diverse (dashed) on the right; a missing key is skipped with a note. The legend shows the "
    "run's diverse ratio (plan.json, else config.yaml mix.ratio). "
    "Writes losscurve.json, losscurve.csv (every point), losscurve_table.csv/.md (first/last/min per "
    "loss) and losscurve.png (the paper's Figure 3)."
)

GRADIENTS_HELP = (
    "Buffering diagnostic: how LoRA gradients of task batches and diverse batches relate.\n\n"
    "Per batch (task-only or diverse-only, drawn by source with --seed): the gradient of the mean "
    "loss on assistant tokens w.r.t. all LoRA weights (eval mode), flattened. Reports cosine "
    "similarity task-task, diverse-diverse and task-diverse; norms; cancellation ||mean g|| / mean "
    "||g|| per source (about 1/sqrt(n) for unrelated directions); and, with V the top-k singular "
    "directions of half the task gradients, the held-out fraction ||V g|| / ||g|| for task, diverse "
    "and mixed batches: measured on real mixed batches (each task batch plus ratio x batch-size diverse "
    "examples, one loss over all their answer tokens, as training computes it) beside the old arithmetic "
    "mix w g_task + (1-w) g_diverse (w = 1/(1+ratio)), labelled as such. The findings, worded from the "
    "numbers, say what supports the paper and what goes against it. A fresh LoRA has gradients on B only "
    "(B = 0 at init). Writes gradients.json, gradients.csv/.md and gradients.png (cosine heatmap + "
    "fractions)."
)


def _print_outputs(
    title: str, table: list[dict], out_dir: str, files: list[str], columns: list[str] | None = None
) -> None:
    """The table (mean ± std merged; only `columns` when given, the files have all) and the files written."""
    from delia.probe.tables import merge_mean_std, rich_table

    shown = merge_mean_std(table)
    if columns:
        shown = [{key: row.get(key) for key in columns} for row in shown]
    console.print(rich_table(title, shown))
    console.print(f"wrote {', '.join(str(Path(out_dir) / f) for f in files)}")


def register(app: typer.Typer) -> None:
    probe_app = typer.Typer(
        help="Probes: representations, state space, loss curves, gradients.", no_args_is_help=True
    )

    @probe_app.command("repr", help=REPR_HELP)
    def repr_command(
        runs: list[str] = typer.Option([], "--run", help=RUN_HELP),
        model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
        no_base: bool = typer.Option(False, "--no-base", help="Leave the base model out."),
        token: str = typer.Option("<sep>", "--token", help="The special token."),
        keywords: list[str] = typer.Option(
            ["json", "thought"], "--keyword", help="A keyword to compare. Repeatable."
        ),
        templates: list[str] = typer.Option(
            [], "--template", help="A context with {token} once, e.g. 'The format is {token}.'. Repeatable."
        ),
        chat: bool = typer.Option(
            False, "--chat", help="Wrap each context in the chat template as a user turn."
        ),
        out: Path = typer.Option(Path("probes"), "--out", help=OUT_HELP),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
        missing_token: str = typer.Option(
            "skip",
            "--missing-token",
            help="A model without the token: skip (n/a), or add it for the probe only, its row the mean "
            "embedding of the token's plain-text pieces (recorded in the output).",
        ),
    ) -> None:
        from delia.core.errors import DeliaError
        from delia.probe.loading import probe_targets
        from delia.probe.repr import run_repr_probe

        if missing_token not in ("skip", "add"):
            raise DeliaError(f"--missing-token {missing_token!r}: choose skip or add")
        targets = probe_targets(model, runs, include_base=not no_base)
        result = run_repr_probe(targets, out, token, keywords, templates or None, chat, device, missing_token)
        files = ["repr.json", "repr.csv", "repr_table.csv", "repr_table.md", "repr.png"]
        _print_outputs(
            f"L2({token}, keyword) at first / middle / last block", result["table"], result["out_dir"], files
        )

    @probe_app.command("divergent", help=DIVERGENT_HELP)
    def divergent_command(
        task_file: str = typer.Argument(
            ..., help="Eval prompts: any supported format; the last assistant turn is dropped."
        ),
        runs: list[str] = typer.Option([], "--run", help=RUN_HELP),
        model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
        no_base: bool = typer.Option(False, "--no-base", help="Leave the base model out."),
        fmt: str = typer.Option("auto", "--format", help="auto, messages, alpaca or prompt."),
        limit: int | None = typer.Option(32, "--limit", help="Use the first N prompts (0 or less: all)."),
        mass: float = typer.Option(0.9, "--mass", help="Probability mass the counted top tokens must cover."),
        batch_size: int = typer.Option(8, "--batch-size", help="Prompts per generation batch."),
        out: Path = typer.Option(Path("probes"), "--out", help=OUT_HELP),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    ) -> None:
        from delia.core.errors import DeliaError
        from delia.data.io import read_examples
        from delia.probe.divergent import run_divergent_probe
        from delia.probe.loading import probe_targets

        if not 0 < mass <= 1:
            raise DeliaError(f"--mass {mass}: must be in (0, 1]")
        examples = read_examples(task_file, fmt)
        examples = examples[:limit] if limit and limit > 0 else examples
        if not examples:
            raise DeliaError(f"{task_file}: no prompts")
        targets = probe_targets(model, runs, include_base=not no_base)
        result = run_divergent_probe(targets, examples, out, mass, batch_size, device)
        files = [
            "divergent.json",
            "divergent.csv",
            "divergent.md",
            "divergent_per_prompt.csv",
            "divergent.png",
        ]
        title = f"state space at the first assistant token ({len(examples)} prompts, mass {mass:g})"
        shown = ["run", "entropy", "tokens_at_mass", "p_brace", "p_reference"]
        _print_outputs(title, result["table"], result["out_dir"], files, shown)

    @probe_app.command("losscurve", help=LOSSCURVE_HELP)
    def losscurve_command(
        runs: list[str] = typer.Option(..., "--run", help="NAME=RUN_DIR (or a train_log.jsonl). Repeatable."),
        smooth: int = typer.Option(
            1, "--smooth", help="Trailing moving average over N steps for training losses."
        ),
        x_axis: str = typer.Option("step", "--x", help="step, or progress (step / last step) to align runs."),
        out: Path = typer.Option(Path("probes"), "--out", help=OUT_HELP),
    ) -> None:
        from delia.probe.loading import parse_named_path
        from delia.probe.losscurve import run_losscurve_probe

        result = run_losscurve_probe([parse_named_path(r) for r in runs], out, smooth, x_axis)
        for note in result["notes"]:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
        files = [
            "losscurve.json",
            "losscurve.csv",
            "losscurve_table.csv",
            "losscurve_table.md",
            "losscurve.png",
        ]
        shown = ["run", "ratio", "max_step", "eval_task_loss_last", "eval_task_loss_min"]
        shown += ["loss_task_last", "loss_diverse_last"]
        _print_outputs("losses per run", result["table"], result["out_dir"], files, shown)

    @probe_app.command("gradients", help=GRADIENTS_HELP)
    def gradients_command(
        data: str = typer.Argument(..., help="Mixed JSONL whose records carry source (task / diverse)."),
        adapter: str | None = typer.Option(
            None, "--adapter", help="Adapter (or run) directory; default: a fresh LoRA."
        ),
        model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
        batches: int = typer.Option(8, "--batches", help="Batches per source."),
        batch_size: int = typer.Option(4, "--batch-size", help="Examples per gradient batch."),
        max_length: int = typer.Option(512, "--max-length", help="Tokens per example (longer ones are cut)."),
        ratio: float | None = typer.Option(
            None, "--ratio", help="Diverse:task ratio of the mix; default: the file's."
        ),
        top_k: int = typer.Option(1, "--top-k", help="Number of principal task-gradient directions."),
        lora_r: int | None = config_option("lora.r", "--lora-r", help="Fresh LoRA rank."),
        lora_alpha: int | None = config_option("lora.alpha", "--lora-alpha", help="Fresh LoRA alpha."),
        lora_targets: str | None = config_option(
            "lora.target_modules",
            "--lora-targets",
            help="Fresh LoRA target modules, comma-separated, or all-linear.",
        ),
        task_source: str = typer.Option("task", "--task-source", help="The source tag of task records."),
        diverse_source: str = typer.Option(
            "diverse", "--diverse-source", help="The source tag of diverse records."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the batch draw and the fresh LoRA."),
        out: Path = typer.Option(Path("probes"), "--out", help=OUT_HELP),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
        config_path: str | None = config_file_option(),
        overrides: list[str] = set_option(),
    ) -> None:
        from delia.data.io import read_examples
        from delia.probe.gradients import FreshLora, run_gradient_probe
        from delia.probe.loading import probe_targets

        # One target: the adapter when given, else the base model (which gets a fresh LoRA).
        target = probe_targets(model, [adapter] if adapter else [], include_base=adapter is None)[0]
        flags = {
            "lora.r": lora_r,
            "lora.alpha": lora_alpha,
            "lora.target_modules": None if lora_targets is None else lora_targets.split(","),
        }
        lora = command_config(config_path, overrides, flags).lora
        modules = "all-linear" if lora.target_modules == ["all-linear"] else tuple(lora.target_modules)
        fresh = FreshLora(lora.r, lora.alpha, modules)
        result = run_gradient_probe(
            target,
            read_examples(data),
            out,
            batches,
            batch_size,
            max_length,
            ratio,
            top_k,
            fresh,
            (task_source, diverse_source),
            seed,
            device,
        )
        _print_outputs(
            "LoRA gradients: task vs diverse batches",
            result["table"],
            result["out_dir"],
            ["gradients.json", "gradients.csv", "gradients.md", "gradients.png"],
        )
        for item in result["findings"]:
            console.print(
                f"- {item['verdict']} ({item['topic']}): {item['text']}", highlight=False, markup=False
            )

    app.add_typer(probe_app, name="probe")
