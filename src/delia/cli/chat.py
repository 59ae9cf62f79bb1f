"""`delia chat`: one streamed reply, optionally through an adapter; `--compare` answers several instructions
about the same context side by side (the paper's plug-and-play `<sep>` demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from delia.cli._common import MODEL_OPTION_HELP, console

CHAT_HELP = (
    "Stream one reply to PROMPT, or with --compare answer each instruction about one context side by side."
    "\n\n"
    'Example: delia chat --adapter runs/x --compare "follow the <sep> format" "DO NOT follow the <sep> '
    'format" --context context.txt'
)
COMPARE_HELP = (
    "Treat each PROMPT as an instruction: append each to the same --context, answer all (greedy unless "
    "--temperature), and print the answers side by side."
)


def context_text(context: str | None) -> str:
    """--context is a file path when such a file exists, else the text itself."""
    if not context:
        return ""
    try:
        is_file = Path(context).is_file()
    except OSError:  # text with a line longer than a file name may be (ENAMETOOLONG) is no path
        is_file = False
    return Path(context).read_text(encoding="utf-8").strip() if is_file else context.strip()


def compose_user_turn(context: str, instruction: str) -> str:
    # The task data puts the context block first and the instruction last; keep that order.
    return f"{context}\n\n{instruction}" if context else instruction


def load_chat_model(model: str | None, adapter: str | None, device: str) -> tuple[Any, Any]:
    from delia.core.models import pick_device
    from delia.generation.threads import follow_free_cores  # torch
    from delia.methods import load_trained
    from delia.probe.loading import probe_targets

    target = probe_targets(model, [adapter] if adapter else [], include_base=adapter is None)[0]
    follow_free_cores(None, pick_device(device))
    return load_trained(target.model_spec, target.adapter_dir, device)


def stream_reply(lm: Any, tokenizer: Any, prompt: str, max_new_tokens: int, temperature: float) -> None:
    import torch
    from transformers import TextStreamer

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    ).to(lm.device)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": 0.95} if temperature > 0 else {}
    with torch.inference_mode():
        lm.generate(
            **ids,
            max_new_tokens=max_new_tokens,
            streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True),
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )


def compare_replies(
    lm: Any, tokenizer: Any, context: str, instructions: list[str], max_new_tokens: int, temperature: float
) -> list[str]:
    from delia.core.config import SamplingConfig
    from delia.generation.local import LocalBackend

    backend = LocalBackend(lm, tokenizer, batch_size=len(instructions), autocast_mode="none", progress=False)
    prompts = [[{"role": "user", "content": compose_user_turn(context, text)}] for text in instructions]
    return backend.generate(prompts, SamplingConfig(temperature=temperature, max_new_tokens=max_new_tokens))


def print_side_by_side(instructions: list[str], replies: list[str]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_lines=True, expand=True)
    for instruction in instructions:
        table.add_column(escape(instruction), ratio=1, overflow="fold")
    table.add_row(*(escape(reply) for reply in replies))
    console.print(table)


def register(app: typer.Typer) -> None:
    @app.command("chat", help=CHAT_HELP)
    def chat(
        prompts: list[str] = typer.Argument(
            ..., help="The user message (with --compare: one per instruction)."
        ),
        model: str | None = typer.Option(
            None, "--model", help=MODEL_OPTION_HELP + " Default: the adapter's base, else the embedded model."
        ),
        adapter: str | None = typer.Option(
            None, "--adapter", help="An adapter directory or a run holding adapter/."
        ),
        compare: bool = typer.Option(False, "--compare", help=COMPARE_HELP),
        context: str | None = typer.Option(
            None, "--context", help="FILE or TEXT put before each instruction (with --compare)."
        ),
        max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Most tokens generated per reply."),
        temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
        as_json: bool = typer.Option(False, "--json", help="With --compare: print a JSON object instead."),
    ) -> None:
        from delia.core.errors import DeliaError

        if not compare and len(prompts) != 1:
            raise DeliaError(f"got {len(prompts)} prompts: give one, or use --compare to answer each")
        if context and not compare:
            raise DeliaError("--context goes with --compare")
        lm, tokenizer = load_chat_model(model, adapter, device)
        if not compare:
            stream_reply(lm, tokenizer, prompts[0], max_new_tokens, temperature)
            return
        text = context_text(context)
        replies = compare_replies(lm, tokenizer, text, prompts, max_new_tokens, temperature)
        if as_json:
            from delia.cli._common import print_json

            answers = [{"instruction": p, "answer": r} for p, r in zip(prompts, replies, strict=True)]
            print_json({"context": text, "answers": answers})
            return
        print_side_by_side(prompts, replies)
