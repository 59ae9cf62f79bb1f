"""halueval: HaluEval general records (or Halu-CoT-JSON prompts) -> the `<sep>` hallucination-check task, in
the delia-reproduce layout; thoughts templated, or written by a teacher LLM (`builder_options.teacher`)."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import Field, ValidationError

from delia.core.config import BackendConfig, SamplingConfig, config_error
from delia.core.errors import DataError
from delia.core.example import Example
from delia.core.registry import TASK_BUILDERS
from delia.data.builders._common import (
    Options,
    instructions_from_file,
    options_and_file,
    window,
)
from delia.data.builders._phrasings import (
    Group,
    Phrasings,
    Wanted,
    read_eval_instructions,
    split_phrasings,
)
from delia.data.io import iter_json_records
from delia.generation import make_backend

# Written for this project: each names <sep> as the required format and never says what it is.
HALUEVAL_INSTRUCTIONS = [
    "Decide whether the ChatGPT response above contains a hallucination. Answer in the <sep> format.",
    "Check the response against the query for made-up or wrong content, and reply using <sep>.",
    "Is there any hallucination in the ChatGPT response? Give your verdict in the <sep> format.",
    "Review the context and judge if the answer hallucinates. Your reply must follow <sep>.",
    "Evaluate the chatgpt_response for hallucinations; format your answer as <sep>.",
    "Read the query and the response, then say whether the response hallucinates, using the <sep> format.",
    "Determine if the ChatGPT answer is faithful to the query or contains hallucinations. Respond in <sep>.",
    "Inspect the response above for invented facts or errors and report your finding in the <sep> format.",
    "Using <sep>, state whether the ChatGPT response contains any hallucination.",
    "Judge the response for hallucinations. Stick to the <sep> format in your answer.",
    "Does the ChatGPT response stay accurate and on task? Answer with <sep>.",
    "Look for hallucinated content in the response and answer strictly in the <sep> format.",
    "Assess the ChatGPT output for hallucinations and write the result in <sep> form.",
    "Find out whether the response contains hallucinations; the answer has to be in the <sep> format.",
    "Examine the context and tell me, in the <sep> format, whether ChatGPT hallucinated.",
    "Give a hallucination verdict on the ChatGPT response, formatted according to <sep>.",
    "In the <sep> format, analyse whether the ChatGPT reply contains hallucinated statements.",
    "Verify the ChatGPT response for hallucinations and present your answer as <sep> requires.",
    "Tell whether the response above is a hallucination; follow the <sep> format exactly.",
    "Check this ChatGPT response for hallucinations. Output must be in <sep>.",
    "Please judge, following <sep>, if the ChatGPT response contains any hallucination.",
    "Hallucination check: look at the query and response and answer in the <sep> format.",
    "Could the ChatGPT response contain hallucinations? Reply in <sep> format only.",
    "Scrutinise the answer for unsupported or false content and give your decision in <sep>.",
]
HALUEVAL_SETS = {
    "train": HALUEVAL_INSTRUCTIONS[:16],
    "heldout": HALUEVAL_INSTRUCTIONS[16:],
    "all": HALUEVAL_INSTRUCTIONS,
}

_CONTEXT = re.compile(r"'relatives' : (.*?)\n'user_query' : (.*?)\n'chatgpt_response' : (.*)\Z", re.S)
_LABEL = re.compile(r"""['"]hallucination['"]\s*:\s*['"](yes|no)['"]""", re.I)


class HaluevalOptions(Options):
    instructions: list[str] | None = None  # explicit phrasings
    instructions_from: str | None = None  # a task file whose instructions (last paragraphs) to reuse
    instruction_set: Literal["train", "heldout", "all"] = "train"  # which built-in phrasings
    quote_style: Literal["json", "python"] = "json"  # python: the delia-reproduce dict style
    exclude_queries_from: str | None = None  # drop records whose user_query appears in this task file
    teacher: dict[str, Any] | None = None  # a synth BackendConfig: the thought comes from this LLM
    teacher_max_new_tokens: int = 120
    # Seen and unseen phrasings (docs/data-formats.md): the task's and the eval's builds name the same
    # phrasings, holdout and seed, so both hold out the same ones.
    holdout_instructions: int = Field(0, ge=0)  # phrasings kept out of the task, chosen by seed
    eval_instructions: list[str] | str | None = None  # new phrasings for evaluation: a list, or a file
    phrasing: Wanted = "seen"  # seen: the task's phrasings; unseen; both: every record once with each
    keep_own: bool = False  # a record with its own instruction and answer (the official <sep> set) keeps them


def halueval_record(record: dict[str, Any]) -> dict[str, str] | None:
    """A HaluEval general record or a Halu-CoT-JSON record -> relatives/query/response/label, or None."""
    if "user_query" in record and "chatgpt_response" in record:
        return {
            "relatives": "",
            "user_query": str(record["user_query"]),
            "chatgpt_response": str(record["chatgpt_response"]),
            "label": str(record.get("hallucination", "")).strip().lower(),
            "spans": " | ".join(record.get("hallucination_spans") or []),
        }
    prompt = record.get("prompt")
    if isinstance(prompt, str):
        match = _CONTEXT.search(prompt.split("Consider the following task:\n")[-1])
        if match:
            relatives, query, response = match.groups()
            label = str(record.get("response", "")).strip().lower()
            return {"relatives": relatives, "user_query": query, "chatgpt_response": response, "label": label}
    if "messages" in record:
        return messages_record(record["messages"])
    return None


def messages_record(messages: list[dict[str, str]]) -> dict[str, str] | None:
    """A delia-reproduce chat record: its context, its own instruction and answer, the answer's label."""
    user = next((m["content"] for m in messages if m.get("role") == "user"), "")
    answer = next((m["content"] for m in reversed(messages) if m.get("role") == "assistant"), "")
    context, _, instruction = user.rpartition("\n\n\n")
    match = _CONTEXT.search(context or user)
    if not match:
        return None
    relatives, query, response = match.groups()
    label = _LABEL.search(answer)
    return {
        "relatives": relatives,
        "user_query": query,
        "chatgpt_response": response,
        "label": label.group(1).lower() if label else "",
        "instruction": instruction.strip(),
        "answer": answer,
    }


def context_block(fields: dict[str, str]) -> str:
    """The delia-reproduce context layout, byte for byte."""
    return (
        f"\n'relatives' : {fields['relatives']}\n'user_query' : {fields['user_query']}\n"
        f"'chatgpt_response' : {fields['chatgpt_response']}"
    )


def templated_thought(fields: dict[str, str]) -> str:
    query = " ".join(fields["user_query"].split())
    query = query if len(query) <= 80 else query[:77] + "..."
    if fields["label"] == "yes":
        spans = fields.get("spans", "")
        detail = f" In particular, '{spans}' is not supported." if spans else ""
        return f"The response to '{query}' contains claims that are inaccurate or not supported.{detail}"
    return f"The response addresses '{query}' and its content is consistent with the request."


def halueval_answer(thought: str, label: str, quote_style: str) -> str:
    answer = {"thought": thought, "hallucination": label}
    return repr(answer) if quote_style == "python" else json.dumps(answer, ensure_ascii=False)


def teacher_thoughts(rows: list[dict[str, str]], options: HaluevalOptions) -> list[str]:
    """Ask a teacher LLM why the (known) label holds; an empty answer falls back to the template."""
    try:
        backend_cfg = BackendConfig.model_validate(options.teacher)
    except ValidationError as err:
        raise config_error(err, prefix="builder_options.teacher") from None
    backend = make_backend(backend_cfg, backend_cfg.model or "")
    prompts = [
        [
            {
                "role": "user",
                "content": f"{context_block(row)}\n\nThe correct verdict is hallucination = {row['label']}. "
                "In two or three sentences, explain why, citing the response.",
            }
        ]
        for row in rows
    ]
    sampling = SamplingConfig(
        temperature=0.0, max_new_tokens=options.teacher_max_new_tokens, seed=options.seed
    )
    replies = backend.generate(prompts, sampling)
    return [" ".join(r.split()) or templated_thought(row) for r, row in zip(replies, rows, strict=True)]


@TASK_BUILDERS.register("halueval")
def build_halueval(
    path: str | None, options: dict[str, Any], field: str = "builder_options"
) -> list[Example]:
    opts, path = options_and_file(HaluevalOptions, "halueval", path, options, field)
    records = read_rows(path)
    phrasings = split_phrasings(
        base_instructions(opts, records),
        opts.holdout_instructions,
        opts.seed,
        read_eval_instructions(opts.eval_instructions),
        field,
    )
    groups = phrasings.groups(opts.phrasing, field)
    rows = window(without_queries(records, opts.exclude_queries_from), opts)
    answers = row_answers(rows, opts)
    return [
        halueval_example(row, answer, group, phrasings, opts)
        for row, answer in zip(rows, answers, strict=True)
        for group in groups
    ]


def read_rows(path: str) -> list[dict[str, str]]:
    rows = []
    for where, record in iter_json_records(path):
        row = halueval_record(record)
        if row is None:
            raise DataError(path, where, "not a HaluEval general or Halu-CoT-JSON record")
        if row["label"] not in ("yes", "no"):
            raise DataError(path, where, f"hallucination label must be yes or no, got {row['label']!r}")
        rows.append(row)
    return rows


def without_queries(rows: list[dict[str, str]], task_file: str | None) -> list[dict[str, str]]:
    """The rows whose user_query does not appear in task_file (so eval contexts are never trained on)."""
    if not task_file:
        return rows
    excluded = set()
    for _, record in iter_json_records(task_file):
        row = halueval_record(record)
        if row:
            excluded.add(row["user_query"].strip())
    return [row for row in rows if row["user_query"].strip() not in excluded]


def base_instructions(opts: HaluevalOptions, rows: list[dict[str, str]]) -> list[str]:
    """The phrasings in effect: explicit, a task file's, the records' own (keep_own), or a built-in set."""
    if opts.instructions:
        return opts.instructions
    if opts.instructions_from:
        return instructions_from_file(opts.instructions_from)
    own = [row["instruction"] for row in rows if opts.keep_own and row.get("instruction")]
    return list(dict.fromkeys(own)) or HALUEVAL_SETS[opts.instruction_set]


def row_answers(rows: list[dict[str, str]], opts: HaluevalOptions) -> list[str]:
    """Each row's reference answer: its own (keep_own), else a templated or teacher-written thought."""
    if opts.keep_own and all(row.get("answer") for row in rows):
        return [row["answer"] for row in rows]
    thoughts = teacher_thoughts(rows, opts) if opts.teacher else [templated_thought(r) for r in rows]
    written = [
        halueval_answer(t, row["label"], opts.quote_style) for row, t in zip(rows, thoughts, strict=True)
    ]
    if not opts.keep_own:
        return written
    return [row.get("answer") or new for row, new in zip(rows, written, strict=True)]


def halueval_example(
    row: dict[str, str], answer: str, group: Group, phrasings: Phrasings, opts: HaluevalOptions
) -> Example:
    context = context_block(row)
    own = row.get("instruction") if opts.keep_own else None
    instruction = phrasings.pick(group, context, opts.seed, own)
    meta = {"task": "halueval", "label": row["label"], "instruction": instruction}
    if phrasings.split:
        meta["phrasing"] = group
    return Example(
        messages=[
            {"role": "user", "content": f"{context}\n\n\n{instruction}"},
            {"role": "assistant", "content": answer},
        ],
        meta=meta,
    )
