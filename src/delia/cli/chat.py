"""`delia chat`: one streamed reply."""

from __future__ import annotations

import typer

from delia.cli._common import MODEL_OPTION_HELP
from delia.models import EMBEDDED


def register(app: typer.Typer) -> None:
    @app.command("chat")
    def chat(
        prompt: str = typer.Argument(..., help="The user message."),
        model: str = typer.Option(EMBEDDED, "--model", help=MODEL_OPTION_HELP),
        max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
        temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
        device: str = typer.Option("cpu", "--device"),
    ) -> None:
        """Stream one reply from the model to PROMPT."""
        import torch
        from transformers import TextStreamer

        from delia.models import load_model, load_tokenizer

        tokenizer = load_tokenizer(model)
        lm = load_model(model, device=device)
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
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
