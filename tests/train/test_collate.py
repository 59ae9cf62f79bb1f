"""delia.train.collate / batching: assistant-only labels, packing, the data plan."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from delia.core.errors import DeliaError
from delia.core.example import Example
from delia.train.batching import plan_steps, shard, split_micro
from delia.train.collate import IGNORE, EncodeStats, encode_examples, next_token_targets, pack, pad


def chat(user: str, answer: str, source: str = "task") -> Example:
    return Example(
        messages=[{"role": "user", "content": user}, {"role": "assistant", "content": answer}], source=source
    )


def test_labels_cover_only_the_assistant_answer(tokenizer: Any) -> None:
    example = chat("What is the capital of France?", "Paris, of course.")
    (item,) = encode_examples([example], tokenizer, max_length=1024)
    learned = tokenizer.decode(item.input_ids[item.n_prompt :])
    prompt = tokenizer.decode(item.input_ids[: item.n_prompt])
    assert learned.startswith("Paris, of course.<|im_end|>")
    assert learned.strip() == "Paris, of course.<|im_end|>"
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "capital of France" in prompt and "Paris" not in prompt


def test_multi_turn_learns_only_the_last_answer(tokenizer: Any) -> None:
    example = Example(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "FIRST"},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "SECOND"},
        ]
    )
    (item,) = encode_examples([example], tokenizer, max_length=1024)
    assert "FIRST" in tokenizer.decode(item.input_ids[: item.n_prompt])
    assert tokenizer.decode(item.input_ids[item.n_prompt :]).strip() == "SECOND<|im_end|>"


def test_targets_are_next_tokens_at_label_positions(tokenizer: Any) -> None:
    (item,) = encode_examples([chat("q", "the answer")], tokenizer, max_length=1024)
    targets = next_token_targets(item)
    assert len(targets) == len(item.input_ids)
    for t, target in enumerate(targets):
        expected = item.input_ids[t + 1] if t + 1 < len(item.input_ids) and t + 1 >= item.n_prompt else IGNORE
        assert target == expected
    assert sum(t != IGNORE for t in targets) == item.n_labels


def test_truncation_and_dropping(tokenizer: Any) -> None:
    stats = EncodeStats()
    long_answer = chat("q", "word " * 200)
    long_prompt = chat("word " * 200, "a")
    items = encode_examples([long_answer, long_prompt], tokenizer, max_length=64, stats=stats)
    assert len(items) == 1 and len(items[0].input_ids) == 64 and items[0].truncated
    assert (stats.examples, stats.truncated, stats.dropped) == (2, 2, 1)


def test_example_without_answer_is_refused(tokenizer: Any) -> None:
    with pytest.raises(DeliaError, match="assistant"):
        encode_examples([Example(messages=[{"role": "user", "content": "q"}])], tokenizer, 128)


def test_pack_and_pad_hold_the_same_tokens(tokenizer: Any) -> None:
    items = encode_examples([chat("one", "a b c", "task"), chat("two two", "d", "diverse")], tokenizer, 1024)
    index = {"diverse": 0, "task": 1}
    packed, padded = pack(items, index), pad(items, index, tokenizer.pad_token_id)
    assert packed.input_ids.shape == (1, sum(len(i.input_ids) for i in items))
    assert packed.cu_seq_lens.tolist() == [0, len(items[0].input_ids), packed.n_tokens]
    assert packed.position_ids[0, len(items[0].input_ids)].item() == 0  # restarts per sequence
    assert padded.input_ids.shape == (2, max(len(i.input_ids) for i in items))
    packed_targets = packed.targets[packed.targets != IGNORE]
    padded_targets = padded.targets[padded.targets != IGNORE]
    assert torch.equal(packed_targets, padded_targets)
    assert packed.n_labels == padded.n_labels == len(packed_targets)
    assert packed.sources[0].tolist() == [1] * len(items[0].input_ids) + [0] * len(items[1].input_ids)


def test_plan_is_seeded_and_covers_epochs() -> None:
    plan = plan_steps(10, effective_batch=4, epochs=1.0, max_steps=None, seed=0)
    assert [len(s) for s in plan.steps] == [4, 4, 2]
    assert sorted(i for s in plan.steps for i in s) == list(range(10))
    assert plan.steps == plan_steps(10, 4, 1.0, None, 0).steps
    assert plan.steps != plan_steps(10, 4, 1.0, None, 1).steps
    two = plan_steps(10, 4, 2.5, None, 0)
    assert len(two) == 7 and two.steps[:2] == plan.steps[:2]
    capped = plan_steps(10, 4, 1.0, max_steps=5, seed=0)
    assert [len(s) for s in capped.steps] == [4] * 5


def test_micro_batches_group_by_length_and_shard() -> None:
    assert split_micro([5, 50, 7, 40], 2, group_by_length=True) == [[1, 3], [2, 0]]
    assert split_micro([5, 50, 7, 40], 2, group_by_length=False) == [[0, 1], [2, 3]]
    assert shard([0, 1, 2], rank=0, world=1) == [(0, True), (1, True), (2, True)]
    assert shard([0, 1, 2], rank=1, world=2) == [(1, True), (0, False)]  # padded with a zero-weight batch
