"""generation/kv_cache.py: appends land in spare room without copying what is cached, anything that replaced
the cached tensors from outside is picked up, and a model decodes exactly as with transformers' own cache."""

from __future__ import annotations

from typing import Any

import torch
from conftest import tiny_llama

from delia.generation.kv_cache import SPARE_POSITIONS, append_in_place, spare_room_cache


def states(rows: int, positions: int, start: float = 0.0) -> torch.Tensor:
    count = rows * 2 * positions * 4
    return torch.arange(start, start + count).reshape(rows, 2, positions, 4)


def test_appends_write_into_the_same_buffer_while_there_is_room() -> None:
    buffers: dict[str, torch.Tensor] = {}
    cached = append_in_place(buffers, "keys", torch.tensor([]), states(3, 5))
    first = buffers["keys"]
    assert first.shape[-2] == 5 + SPARE_POSITIONS
    for step in range(SPARE_POSITIONS):
        new = states(3, 1, start=1000.0 + step)
        grown = append_in_place(buffers, "keys", cached, new)
        assert torch.equal(grown, torch.cat([cached, new], dim=-2))
        cached = grown
    assert buffers["keys"] is first  # no reallocation while the spare positions lasted
    cached = append_in_place(buffers, "keys", cached, states(3, 1, start=-1.0))
    assert buffers["keys"] is not first and cached.shape[-2] == 5 + SPARE_POSITIONS + 1


def test_tensors_replaced_from_outside_are_copied_not_extended_in_place() -> None:
    buffers: dict[str, torch.Tensor] = {}
    cached = append_in_place(buffers, "values", torch.tensor([]), states(4, 6))
    kept = cached[torch.tensor([0, 2])]  # rows selected: a new tensor
    cut = cached[..., 2:, :]  # leading padding dropped: a view that starts later
    for replaced in (kept, cut):
        before = replaced.clone()
        new = states(replaced.shape[0], 1, start=500.0)
        grown = append_in_place(buffers, "values", replaced, new)
        assert torch.equal(grown, torch.cat([before, new], dim=-2))


def test_decoding_matches_transformers_dynamic_cache_bit_for_bit(tokenizer: Any) -> None:
    from transformers import DynamicCache

    model = tiny_llama(len(tokenizer), init_std=0.2).eval()
    torch.manual_seed(0)
    prompt = torch.randint(0, len(tokenizer), (3, 7))
    logits = {}
    caches = {"dynamic": DynamicCache(config=model.config), "spare": spare_room_cache(model.config)}
    for name, cache in caches.items():
        ids, steps = prompt, []
        with torch.inference_mode():
            for _ in range(6):
                out = model(input_ids=ids, cache=cache, use_cache=True)
                steps.append(out.logits[:, -1])
                ids = out.logits[:, -1:].argmax(-1)
        logits[name] = torch.stack(steps)
    assert torch.equal(logits["dynamic"], logits["spare"])
