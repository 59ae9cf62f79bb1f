"""Tiny trained runs to export: a 2-layer random llama with a small byte-level BPE vocabulary (so a GGUF
of it is read back in seconds, where SmolLM2's 49k tokens take transformers' reader about half a
minute), trained for a few steps with delia's trainer so the LoRA and the `<sep>` row really moved."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_gemma3, tiny_llama

from delia.core.config import RunConfig
from delia.core.example import Example

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "Answer in the <sep> format: name, city and job of the person in the text.",
    "Maria is a teacher who lives in Lisbon. Jon works as a baker in Reykjavik.",
    "{'name': 'Maria', 'city': 'Lisbon', 'job': 'teacher'} and more words for the merges to learn",
    "Numbers 12345, ünïcödé, tabs\tand new lines\n\nall become bytes first.",
]


def small_tokenizer() -> Any:
    """A byte-level BPE tokenizer of a few hundred tokens with ChatML specials and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def examples(n: int = 8) -> list[Example]:
    rows = []
    for i in range(n):
        user = f"Text {i}: Maria is a teacher in Lisbon. Answer in the <sep> format."
        answer = f"{{'name': 'Maria', 'city': 'Lisbon', 'job': 'teacher', 'i': {i}}}"
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        rows.append(Example(messages=messages, source="task"))
    return rows


@dataclass(frozen=True)
class TrainedRun:
    base_dir: Path  # the base model's checkpoint directory (its spec)
    run_dir: Path  # holds adapter/

    @property
    def adapter_dir(self) -> Path:
        return self.run_dir / "adapter"


def train_tiny_run(root: Path, tie: bool, tokenizer: Any | None = None, family: str = "llama") -> TrainedRun:
    from delia.train import fit, load_for_training

    tokenizer = tokenizer or small_tokenizer()
    base_dir = root / "base"
    if family == "gemma3":
        base = tiny_gemma3(len(tokenizer), sliding_window=8, init_std=0.05)
    else:
        base = tiny_llama(len(tokenizer), tie=tie, init_std=0.2)
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    config = RunConfig.model_validate(
        {
            "model": {"name": str(base_dir)},
            "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "down_proj"]},
            "train": {"batch_size": 4, "micro_batch_size": 4, "lr": 2e-2, "epochs": 2, "max_length": 96},
        }
    )
    model, tokenizer, token_ids = load_for_training(config)
    torch.manual_seed(0)
    fit(config, model, tokenizer, token_ids, examples(), root / "run")
    return TrainedRun(base_dir, root / "run")


@pytest.fixture(scope="session")
def tied_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    return train_tiny_run(tmp_path_factory.mktemp("tied"), tie=True)


@pytest.fixture(scope="session")
def gemma_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """Gemma 3's scaled embeddings, soft-capped logits and an 8-token sliding window (prompts are longer)."""
    return train_tiny_run(tmp_path_factory.mktemp("gemma"), tie=True, family="gemma3")


@pytest.fixture(scope="session")
def untied_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    return train_tiny_run(tmp_path_factory.mktemp("untied"), tie=False)
