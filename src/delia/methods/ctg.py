"""CTG, controlled text generation by model arithmetic (Dekoninck et al. 2023, "Controlled Text Generation
via Language Model Arithmetic"), no training.

Each evaluation prompt gets the format description appended to its last user turn ("with"); the same
prompt without it is the "without" variant. At every decoding step the next-token distribution is

    scores = log p(x | with) + w * (log p(x | with) - log p(x | without))
           = (1 + w) * log p(x | with) - w * log p(x | without)

(log p = log-softmax of the logits; sampling or argmax then softmax-normalises the result), i.e. the
paper's linear arithmetic over prompted models, pushing generation towards what the description adds.
w = 0 is plain prompting with the description. `ctg.description` sets the description (default: one
read off the task answers), `ctg.weight` sets w.

The "without" prompts run through the same model as one left-padded batch with their own KV cache;
each decoding step feeds them the token the main generation just chose (methods/_arithmetic.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from delia.core.config import Section
from delia.core.example import Example
from delia.methods._common import (
    edit_last_user,
    format_token,
    long_description,
    summarize_format,
    task_only_plan,
)
from delia.methods.base import ExampleTransform, Method, MethodPlan, StageDirs

if TYPE_CHECKING:
    from transformers import LogitsProcessorList

    from delia.core.config import RunConfig


ProcessorFactory = Callable[[Any, Any], "LogitsProcessorList"]


def processor_factory(marker: str, weight: float) -> ProcessorFactory:
    """What plan.generation_options["logits_processor_factory"] holds: (model, tokenizer) -> processors."""

    def factory(model: Any, tokenizer: Any) -> LogitsProcessorList:
        from transformers import LogitsProcessorList

        from delia.methods._arithmetic import PromptArithmeticProcessor

        return LogitsProcessorList([PromptArithmeticProcessor(model, tokenizer, marker, weight)])

    return factory


def with_description(marker: str) -> ExampleTransform:
    def transform(examples: list[Example]) -> list[Example]:
        return [
            edit_last_user(ex, ex.instruction + marker, keep_id=True, ctg_marker=marker) for ex in examples
        ]

    return transform


class CtgOptions(Section):
    description: str | None = None
    weight: float = 1.0


class CTG(Method):
    name = "ctg"
    description = (
        "model arithmetic: log p(with description) + w * (log p(with) - log p(without)), no training"
    )
    Options = CtgOptions

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        options = config.options(self.name)
        given = options.description
        description = given or long_description(summarize_format(task), format_token(config))
        marker = f"\n\n{description.strip()}"
        weight = options.weight
        return task_only_plan(
            train=False,
            eval_transform=with_description(marker),
            generation_options={"logits_processor_factory": processor_factory(marker, weight)},
            notes=[
                f"no training: log p(with) + {weight:g} * (log p(with) - log p(without)), description "
                f"{'from ctg.description' if given else 'derived from the task answers'}: {description!r}"
            ],
        )
