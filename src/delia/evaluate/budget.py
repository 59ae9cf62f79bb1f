"""The eval token budget: `eval.max_new_tokens: auto` from the task's own reference answers.

A fixed budget cut off many answers of the 135M model (issue 18: 14-31 % truncated at 200 tokens), so a
format score measured the budget as much as the model. `auto` gives every answer room for twice the longest
reference, counted in the evaluated model's own tokens. A run's task answers count as references too: an
eval set whose references are short (Halu-CoT-JSON's dev thoughts, at most 59 tokens) would otherwise cut
off a model trained to write the task's longer answers (up to 174 tokens in the `<sep>` set).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from delia.core.config import EvalConfig
from delia.core.errors import ConfigError
from delia.core.example import Example

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

AUTO = "auto"
AUTO_FACTOR = 2  # budget = AUTO_FACTOR x the longest reference answer
AUTO_FLOOR = 16  # ...and never fewer tokens than this (a short label-only answer still gets room)


def longest_reference_tokens(examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase) -> int:
    """Tokens of the longest reference answer (final assistant turn) among the examples; 0 if none has one."""
    references = [ex.response for ex in examples if ex.response]
    if not references:
        return 0
    encoded = tokenizer(references, add_special_tokens=False)["input_ids"]
    return max(len(ids) for ids in encoded)


def resolve_budget(
    cfg: EvalConfig,
    examples: Sequence[Example],
    tokenizer: PreTrainedTokenizerBase,
    task_examples: Sequence[Example] = (),
) -> tuple[EvalConfig, dict[str, Any]]:
    """cfg with a number for max_new_tokens, and what to record about it: the configured value, the
    resolved number and, for `auto`, the longest eval reference and task answer it came from. A number
    passes through."""
    if cfg.max_new_tokens != AUTO:
        return cfg, {"max_new_tokens": cfg.max_new_tokens, "max_new_tokens_config": cfg.max_new_tokens}
    longest = longest_reference_tokens(examples, tokenizer)
    longest_task = longest_reference_tokens(task_examples, tokenizer)
    if max(longest, longest_task) == 0:
        raise ConfigError(
            "eval.max_new_tokens", "'auto' needs reference answers in the eval examples or the task"
        )
    budget = max(AUTO_FLOOR, AUTO_FACTOR * max(longest, longest_task))
    record = {
        "max_new_tokens": budget,
        "max_new_tokens_config": AUTO,
        "longest_reference_tokens": longest,
        "longest_task_answer_tokens": longest_task,
    }
    return cfg.model_copy(update={"max_new_tokens": budget}), record
