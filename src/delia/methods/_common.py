"""Helpers shared by the peer methods: task kind, a summary of the task's answer format (for token
descriptions, facts and CTG prompts), seeded demonstration picking, and example rewrites."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from delia.core.errors import ConfigError
from delia.core.example import Example
from delia.methods.base import MethodPlan

if TYPE_CHECKING:
    from delia.core.config import RunConfig


def task_kind(config: RunConfig, task: list[Example]) -> str:
    """ "translation" when the examples, builder or metric say so; else the builder, the examples' meta task,
    or "generic"."""
    kinds = Counter(str(ex.meta.get("task")) for ex in task if ex.meta.get("task"))
    if config.task.builder == "translation" or config.eval.metric == "translation" or "translation" in kinds:
        return "translation"
    return config.task.builder or (kinds.most_common(1)[0][0] if kinds else "generic")


def require_task_kind(name: str, supported: tuple[str, ...], config: RunConfig, task: list[Example]) -> None:
    kind = task_kind(config, task)
    if supported and kind not in supported:
        raise ConfigError(
            "method",
            f"{name} supports {', '.join(supported)} tasks only, but this run's task is {kind!r} "
            "(set task.builder=translation or eval.metric=translation for a translation task)",
        )


def task_only_plan(**changes: Any) -> MethodPlan:
    """Task data alone: no diverse data, no diversification, no special token."""
    plan = MethodPlan(use_diverse=False, diversify=False, schedule="task_only", ratio=0.0, special_tokens=[])
    for key, value in changes.items():
        setattr(plan, key, value)
    return plan


def format_token(config: RunConfig) -> str | None:
    """The token that names the task format (the first of tokens.add), if any."""
    return config.tokens.add[0] if config.tokens.add else None


def require_token(name: str, config: RunConfig) -> list[str]:
    if not config.tokens.add:
        raise ConfigError("tokens.add", f"{name} trains a special token: list at least one, e.g. [<sep>]")
    return list(config.tokens.add)


def token_only_plan(
    name: str, config: RunConfig, token_init: str, how: str, description: str | None = None
) -> MethodPlan:
    """The token baselines: the format token(s) initialised by `token_init` (`how`, for the notes), trained
    on the task data alone."""
    tokens = require_token(name, config)
    return task_only_plan(
        special_tokens=tokens,
        token_init=token_init,
        token_description=description,
        notes=[f"tokens {tokens}: {how}, task-only training"],
    )


# ------------------------------------------------------------------------------- answer format summary


@dataclass
class FormatSummary:
    """What the task's answers look like, read off the responses themselves."""

    kind: str  # "dict" (every answer parses to a dict) or "text"
    keys: list[str] = field(default_factory=list)
    value_types: dict[str, str] = field(default_factory=dict)  # key -> "string", "number", "list"...
    choices: dict[str, list[str]] = field(default_factory=dict)  # key -> its few distinct values
    quoting: str = "json"  # "json" (strict JSON) or "python" (Python literal, single quotes)
    mean_words: int = 0


TYPE_NAMES = {
    str: "string",
    bool: "boolean",
    int: "number",
    float: "number",
    list: "list",
    dict: "dictionary",
}
MAX_CHOICES = 4


def summarize_format(task: list[Example]) -> FormatSummary:
    """A dict format when most answers parse to a dict (json or Python literal), else plain text."""
    from delia.evaluate.jsonfmt import parse_answer

    responses = [ex.response for ex in task if ex.response]
    words = round(sum(len(r.split()) for r in responses) / len(responses)) if responses else 0
    parsed = [parse_answer(r) for r in responses]
    dicts = [(value, how) for value, how in parsed if value is not None]
    if not dicts or len(dicts) < 0.5 * len(responses):
        return FormatSummary(kind="text", mean_words=words)
    key_orders = Counter(tuple(value) for value, _ in dicts)
    keys = list(key_orders.most_common(1)[0][0])
    quoting = Counter(how for _, how in dicts).most_common(1)[0][0]
    value_types: dict[str, str] = {}
    choices: dict[str, list[str]] = {}
    for key in keys:
        values = [value[key] for value, _ in dicts if key in value]
        value_types[key] = Counter(TYPE_NAMES.get(type(v), "value") for v in values).most_common(1)[0][0]
        distinct = Counter(str(v) for v in values if isinstance(v, str | bool | int))
        # A key with a few values seen many times is a label; free text has a value per answer.
        if 0 < len(distinct) <= MAX_CHOICES and len(values) >= 2 * len(distinct):
            choices[key] = [v for v, _ in distinct.most_common()]
    return FormatSummary(
        kind="dict",
        keys=keys,
        value_types=value_types,
        choices=choices,
        quoting="python" if quoting == "python" else "json",
        mean_words=words,
    )


def example_answer(summary: FormatSummary) -> str:
    """A skeleton answer: label keys get their most common value, other strings an ellipsis."""
    values: dict[str, Any] = {}
    for key in summary.keys:
        if key in summary.choices:
            values[key] = summary.choices[key][0]
        else:
            values[key] = {"string": "...", "number": 0, "list": [], "boolean": True}.get(
                summary.value_types.get(key, ""), "..."
            )
    if summary.quoting == "python":
        return repr(values)
    import json

    return json.dumps(values, ensure_ascii=False)


def listed(words: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" and {words[-1]}"


def quoted_keys(keys: list[str]) -> str:
    return listed([f"'{k}'" for k in keys])


def short_description(summary: FormatSummary) -> str:
    """A few words for a token's prior meaning (their mean embedding initialises the token)."""
    if summary.kind == "text":
        return "a plain text answer"
    language = "Python dictionary" if summary.quoting == "python" else "JSON object"
    return f"a {language} with the keys {listed(summary.keys)}"


def long_description(summary: FormatSummary, token: str | None) -> str:
    """A full description of the answer format, as a user would write it in a prompt."""
    subject = f"The {token} format" if token else "The answer format"
    if summary.kind == "text":
        length = f" of about {summary.mean_words} words" if summary.mean_words else ""
        return f"{subject}: reply with plain text only{length}, with no extra formatting or commentary."
    container = "one Python dictionary literal" if summary.quoting == "python" else "one JSON object"
    parts = [f"{subject}: reply with {container} and nothing else."]
    parts.append(f"It has the keys {quoted_keys(summary.keys)}, in this order.")
    for key in summary.keys:
        if key in summary.choices:
            options = " or ".join(f"'{v}'" for v in summary.choices[key])
            parts.append(f"The value of '{key}' is {options}.")
        else:
            parts.append(f"The value of '{key}' is a {summary.value_types.get(key, 'value')}.")
    if summary.quoting == "python":
        parts.append("Keys are in single quotes, as Python prints a dict, so it is not strict JSON.")
    else:
        parts.append("It is strict JSON: keys and strings in double quotes.")
    parts.append(f"Example: {example_answer(summary)}")
    return " ".join(parts)


# ------------------------------------------------------------------------------------- demonstrations


def pick_demonstrations(pool: list[Example], example: Example, k: int, seed: int) -> list[Example]:
    """k examples from pool, never the example itself (same id or same prompt); the choice depends only on
    the seed and the example's id, so it is stable whatever else is evaluated."""
    prompt = example.prompt_messages
    candidates = [ex for ex in pool if ex.id != example.id and ex.prompt_messages != prompt and ex.response]
    rng = random.Random(f"demos:{seed}:{example.id}")
    return rng.sample(candidates, min(k, len(candidates)))


def split_system(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(leading system turns, the rest)."""
    cut = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
    return [dict(m) for m in messages[:cut]], [dict(m) for m in messages[cut:]]


def with_prior_turns(example: Example, turns: list[dict[str, str]], **meta: Any) -> Example:
    """The example with chat turns inserted before its own (after its system turns), keeping its id so
    predictions still join with the evaluation set."""
    system, rest = split_system(example.messages)
    return Example(
        id=example.id,
        messages=[*system, *turns, *rest],
        source=example.source,
        meta={**example.meta, **meta},
    )


def demonstration_turns(demos: list[Example]) -> list[dict[str, str]]:
    return [turn for demo in demos for turn in split_system(demo.messages)[1]]


def edit_last_user(example: Example, content: str, keep_id: bool, **meta: Any) -> Example:
    """with_instruction, optionally keeping the id (eval examples must keep theirs)."""
    edited = example.with_instruction(content, **meta)
    return edited.model_copy(update={"id": example.id}) if keep_id else edited
