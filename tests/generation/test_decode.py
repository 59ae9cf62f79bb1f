"""Continuous batching (generation/decode.py) answers exactly as transformers' `generate` did, whatever the
number of slots: rows that finish leave, waiting prompts join, positions and seeded draws stay per row."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import tiny_llama

from delia.core.config import SamplingConfig
from delia.generation.local import LocalBackend

PROMPTS = [
    "Name a colour.",
    "Write one long sentence about the sea, the wind, the boats and the harbour at night.",
    "Hi",
    "List three fruits and say which one is sweetest, with a reason.",
    "2+2?",
    "Describe a cat.",
    "Why is the sky blue? Answer briefly.",
]


@pytest.fixture(scope="module")
def lively_model(tokenizer: Any) -> Any:
    """A tiny random llama initialised wide enough (std 0.2) that its answers differ by prompt: at the default
    0.02 it repeats one token for every prompt, and equal answers would prove nothing."""
    return tiny_llama(len(tokenizer), init_std=0.2)


def answers(model: Any, tokenizer: Any, sampling: SamplingConfig, slots: int, *, continuous: bool, **kw: Any):
    backend = LocalBackend(model, tokenizer, batch_size=slots, progress=False, cpu_bf16_weights=False)
    if not continuous:
        backend.continuous_batching = lambda: False  # type: ignore[method-assign]
    stops = kw.pop("stop_ids", None)
    if stops is not None:
        backend.stop_ids = stops
    backend.stop_strings = kw.pop("stop_strings", [])
    prompts = [[{"role": "user", "content": text}] for text in PROMPTS]
    texts = backend.generate(prompts, sampling, **kw)
    return texts, list(backend.last_new_tokens)


@pytest.mark.parametrize("slots", [1, 3, 7])
def test_greedy_answers_equal_generate(lively_model: Any, tokenizer: Any, slots: int) -> None:
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=10)
    reference = answers(lively_model, tokenizer, sampling, 7, continuous=False)
    assert answers(lively_model, tokenizer, sampling, slots, continuous=True) == reference


def test_rows_that_stop_early_leave_and_others_take_their_place(lively_model: Any, tokenizer: Any) -> None:
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=12)
    backend = LocalBackend(lively_model, tokenizer, batch_size=7, progress=False, cpu_bf16_weights=False)
    backend.stop_ids = [tokenizer.eos_token_id]
    prompts = [[{"role": "user", "content": text}] for text in PROMPTS]
    encoded = tokenizer([backend.render(p) for p in prompts], add_special_tokens=False)["input_ids"]
    decoder_rows = [
        lively_model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids) :]
        for ids in encoded
    ]
    # Row i stops at its own (i % 9 + 1)-th token: rows finish at different steps.
    stops = [row.tolist()[i % 9 + 1] for i, row in enumerate(decoder_rows)]
    reference = answers(lively_model, tokenizer, sampling, 7, continuous=False, stop_ids=stops)
    assert len(set(reference[1])) > 3  # rows did finish at different lengths
    assert answers(lively_model, tokenizer, sampling, 2, continuous=True, stop_ids=stops) == reference


def test_seeded_samples_equal_generate_and_ignore_the_batch(lively_model: Any, tokenizer: Any) -> None:
    sampling = SamplingConfig(temperature=0.9, top_p=0.9, max_new_tokens=8, seed=3)
    seeds = list(range(100, 100 + len(PROMPTS)))
    reference = answers(lively_model, tokenizer, sampling, 7, continuous=False, seeds=seeds)
    for slots in (2, 7):
        assert answers(lively_model, tokenizer, sampling, slots, continuous=True, seeds=seeds) == reference


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_stop_strings_end_answers_where_generate_ends_them(
    lively_model: Any, tokenizer: Any, temperature: float
) -> None:
    """Stop strings cut from the answers themselves (so several rows meet one, some across a token border):
    each answer ends where `generate`'s StopStringCriteria ends it, the completing token kept."""
    sampling = SamplingConfig(temperature=temperature, top_p=0.9, max_new_tokens=12, seed=5)
    seeds = list(range(len(PROMPTS))) if temperature else None
    free, free_counts = answers(lively_model, tokenizer, sampling, 7, continuous=True, seeds=seeds)
    long = [text for text in free if len(text) > 12]
    stops = [long[0][6:9], long[-1][3:5]]
    reference = answers(
        lively_model, tokenizer, sampling, 7, continuous=False, seeds=seeds, stop_strings=stops
    )
    assert any(r < f for r, f in zip(reference[1], free_counts, strict=True))  # the strings did cut answers
    for slots in (2, 7):
        cut = answers(
            lively_model, tokenizer, sampling, slots, continuous=True, seeds=seeds, stop_strings=stops
        )
        assert cut == reference


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "peft"])
def test_the_head_runs_only_at_each_rows_last_position(tokenizer: Any, wrapped: bool) -> None:
    """A prefill reads one position's logits per row: the 49k-row head must not run over every prompt token,
    also through a PEFT wrapper (whose forward takes **kwargs)."""
    from peft import LoraConfig, get_peft_model

    model = tiny_llama(len(tokenizer), init_std=0.2)
    head = model.lm_head
    if wrapped:
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    positions: list[int] = []
    handle = head.register_forward_hook(lambda module, args, out: positions.append(args[0].shape[1]))
    try:
        sampling = SamplingConfig(temperature=0.0, max_new_tokens=3)
        continuous = answers(model, tokenizer, sampling, 3, continuous=True)
    finally:
        handle.remove()
    assert positions and set(positions) == {1}
    assert continuous == answers(model, tokenizer, sampling, 7, continuous=False)
