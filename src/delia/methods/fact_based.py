"""Fact-based knowledge injection (Mecklenburg et al. 2024, "Injecting New Knowledge into Large Language
Models via Supervised Fine-Tuning"): an LLM splits a document (here: the description of the task's target
format) into atomic facts, then writes questions each fact answers; the question/fact pairs are trained
as extra examples (source "fact") mixed with the task data. No diverse data, no diversification, the
format token stays plain text (as in common instruction tuning).

The description is `fact_based.description`, or one read off the task answers (keys, value types,
quoting). The LLM is `sample.backend` (default: the model being tuned), greedy. A fact is kept only when
it restates the description (most of its content words occur there); a question only when it is a short
question. When no LLM fact passes, the facts are derived deterministically from the answers' structure
instead; `plan.notes` says which was used. Knobs: `fact_based.n_facts`, `fact_based.qa_per_fact`.

Generating the facts needs a model, so it is the method's own stage (`facts/`, cached like the pipeline's
stages); the plan only reads the stage's facts.json."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from delia.core.config import Section
from delia.core.errors import DeliaError
from delia.core.example import Example
from delia.core.io import read_json, write_json
from delia.core.stage import Stage, StageContext
from delia.data.io import read_examples
from delia.methods._common import (
    FormatSummary,
    example_answer,
    format_token,
    long_description,
    quoted_keys,
    summarize_format,
    task_only_plan,
)
from delia.methods.base import Method, MethodPlan, StageDirs

if TYPE_CHECKING:
    from delia.core.config import RunConfig
    from delia.generation.base import Backend

FACT_PROMPT = (
    "Here is the description of an answer format:\n\n{description}\n\n"
    "Split this description into {n} atomic facts: short, self-contained sentences that each state one "
    "thing the description says and each name the format. Write one fact per line and nothing else."
)
QUESTION_PROMPT = (
    "Fact: {fact}\n\nWrite {n} different questions that this fact answers, one per line, each ending "
    "with a question mark. Write nothing else."
)
BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d+[.)]|(?:fact|question|q)\s*\d*\s*[:.)])\s*", re.I)
SENTENCE_BREAK = re.compile(r"[.!?]\s+[A-Z]")
CONTENT_WORD = re.compile(r"[a-z0-9_<>]{3,}")
STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "the and for are its this that with has have from you your each one not but all any can was were "
        "will into than then them they their there which what when where who how why",
    )
)
FACTS_STAGE = "facts"
FACTS_FILE = "facts.json"
TASK_FILE = Path("task") / "task.jsonl"  # the task stage's examples, upstream of the facts stage
FACT_TOKENS = 48  # generation budget per requested fact (a fact is one sentence)
QUESTION_TOKENS = 32  # per requested question
MIN_GROUNDING = 0.6  # share of a fact's content words that must occur in the description
MAX_FACT_WORDS = 35  # an atomic fact is one short sentence, not a copy of the description


class FactOptions(Section):
    description: str | None = None
    n_facts: int = Field(8, ge=1)
    qa_per_fact: int = Field(2, ge=1)


@dataclass
class Fact:
    statement: str
    questions: list[str] = field(default_factory=list)


def content_words(text: str) -> set[str]:
    """Lower-cased words of 3+ characters minus stop words, plural "s" dropped (values ~ value)."""
    words = (w for w in CONTENT_WORD.findall(text.lower()) if w not in STOPWORDS)
    return {w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words}


def clean_lines(text: str) -> list[str]:
    """Model output -> its non-empty lines without bullets or numbering."""
    lines = (BULLET.sub("", line).strip().strip('"').strip() for line in text.splitlines())
    return [line for line in lines if line]


def valid_fact(fact: str, description_words: set[str]) -> bool:
    """One short, finished sentence (a line cut by the token limit is not), most of whose content words
    come from the description."""
    words = content_words(fact)
    if not 4 <= len(fact.split()) <= MAX_FACT_WORDS or len(words) < 2 or SENTENCE_BREAK.search(fact):
        return False
    if not fact.endswith((".", "!")):
        return False
    return len(words & description_words) >= MIN_GROUNDING * len(words)


def valid_question(question: str, fact: str) -> bool:
    """A short question about the fact: at least half of its content words occur in the fact."""
    words = content_words(question)
    if not question.endswith("?") or not 3 <= len(question.split()) <= 40 or not words:
        return False
    return len(words & content_words(fact)) >= 0.5 * len(words)


def unique(items: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for item in items:
        seen.setdefault(item.lower(), item)
    return list(seen.values())


def confirm_question(fact: str) -> str:
    """A question any fact answers, for when the LLM wrote too few valid ones."""
    body = fact.rstrip(" .")
    return f"Is it true that {body[0].lower()}{body[1:]}?"


# ------------------------------------------------------------------------------------------ from an LLM


def llm_facts(description: str, backend: Backend, opts: FactOptions, seed: int) -> tuple[list[Fact], int]:
    """(validated facts with their questions, number of candidate lines the LLM wrote)."""
    from delia.core.config import SamplingConfig

    prompt = [{"role": "user", "content": FACT_PROMPT.format(description=description, n=opts.n_facts)}]
    reply = backend.generate(
        [prompt], SamplingConfig(temperature=0.0, max_new_tokens=FACT_TOKENS * opts.n_facts + 32, seed=seed)
    )[0]
    candidates = clean_lines(reply)
    description_words = content_words(description)
    statements = unique([c for c in candidates if valid_fact(c, description_words)])[: opts.n_facts]
    if not statements:
        return [], len(candidates)
    prompts = [
        [{"role": "user", "content": QUESTION_PROMPT.format(fact=s, n=opts.qa_per_fact)}] for s in statements
    ]
    replies = backend.generate(
        prompts,
        SamplingConfig(temperature=0.0, max_new_tokens=QUESTION_TOKENS * opts.qa_per_fact + 16, seed=seed),
    )
    facts = []
    for statement, reply in zip(statements, replies, strict=True):
        questions = unique([q for q in clean_lines(reply) if valid_question(q, statement)])
        facts.append(Fact(statement, questions))
    return facts, len(candidates)


# ------------------------------------------------------------------------------- from the answers' shape


def structural_facts(summary: FormatSummary, token: str | None) -> list[Fact]:
    """Facts read off the answers themselves, each with its own questions (no LLM needed)."""
    name = f"the {token} format" if token else "the answer format"
    title = name[0].upper() + name[1:]
    if summary.kind == "text":
        facts = [
            Fact(
                f"{title} is plain text, with no extra formatting or commentary.",
                [f"What does {name} look like?", f"Does {name} use any special formatting?"],
            )
        ]
        if summary.mean_words:
            facts.append(
                Fact(
                    f"An answer in {name} is about {summary.mean_words} words long.",
                    [f"How long is an answer in {name}?", f"About how many words does {name} use?"],
                )
            )
        return facts
    container = "a Python dictionary literal" if summary.quoting == "python" else "a JSON object"
    facts = [
        Fact(
            f"An answer in {name} is a single {container.split(' ', 1)[1]} and nothing else.",
            [f"What does an answer in {name} consist of?", f"What kind of output does {name} ask for?"],
        ),
        Fact(
            f"{title} has exactly {len(summary.keys)} keys: {quoted_keys(summary.keys)}, in this order.",
            [f"Which keys does {name} have?", f"In what order do the keys of {name} appear?"],
        ),
    ]
    for key in summary.keys:
        if key in summary.choices:
            options = " or ".join(f"'{v}'" for v in summary.choices[key])
            value = f"either {options}" if len(summary.choices[key]) > 1 else options
        else:
            value = f"a {summary.value_types.get(key, 'value')}"
        facts.append(
            Fact(
                f"In {name}, the value of '{key}' is {value}.",
                [f"What is the value of '{key}' in {name}?", f"What values can '{key}' take in {name}?"],
            )
        )
    if summary.quoting == "python":
        facts.append(
            Fact(
                f"{title} is written the way Python prints a dict, with keys in single quotes, "
                "so it is not strict JSON.",
                [f"How are the keys quoted in {name}?", f"Is {name} strict JSON?"],
            )
        )
    else:
        facts.append(
            Fact(
                f"{title} is strict JSON, with keys and strings in double quotes.",
                [f"How are the keys quoted in {name}?", f"Is {name} strict JSON?"],
            )
        )
    facts.append(
        Fact(
            f"An example of {name} is {example_answer(summary)}",
            [f"Can you show an example of {name}?", f"What does an answer in {name} look like?"],
        )
    )
    return facts


def qa_examples(facts: list[Fact], qa_per_fact: int, origin: str) -> list[Example]:
    """Each fact answers qa_per_fact questions; missing questions become "Is it true that ...?"."""
    examples = []
    for index, fact in enumerate(facts):
        questions = fact.questions[:qa_per_fact]
        if len(questions) < qa_per_fact:
            questions.append(confirm_question(fact.statement))
        for question in questions:
            examples.append(
                Example(
                    messages=[
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": fact.statement},
                    ],
                    source="fact",
                    meta={"fact_origin": origin, "fact_index": index},
                )
            )
    return examples


def build_facts(
    description: str,
    summary: FormatSummary,
    token: str | None,
    backend: Backend | None,
    opts: FactOptions,
    seed: int,
) -> tuple[list[Example], str]:
    """(QA examples, a note saying whether the LLM's facts or the structural fallback were used)."""
    if backend is not None:
        facts, candidates = llm_facts(description, backend, opts, seed)
        if facts:
            examples = qa_examples(facts, opts.qa_per_fact, "llm")
            return examples, f"facts from the LLM: {len(facts)} of {candidates} line(s) passed validation"
        reason = f"no LLM fact passed validation, of {candidates} line(s) written"
    else:
        reason = "no LLM backend"
    facts = structural_facts(summary, token)[: opts.n_facts]
    examples = qa_examples(facts, opts.qa_per_fact, "structure")
    return examples, f"facts from the answers' structure (fallback: {reason}): {len(facts)} facts"


def facts_description(config: RunConfig, task: list[Example]) -> tuple[str, FormatSummary]:
    """(the document the facts are split from, the task's answer format it describes)."""
    summary = summarize_format(task)
    options = config.options(FactBased.name)
    return options.description or long_description(summary, format_token(config)), summary


def generate_facts(context: StageContext, out: Path) -> dict[str, Any]:
    """The facts stage: the LLM's (or the structural fallback's) QA examples, written to facts.json so a
    rerun whose stages are all cached loads no model."""
    config = context.config
    task = read_examples(context.dir / TASK_FILE)
    description, summary = facts_description(config, task)
    backend = context.backend(config.sample.backend)
    options = config.options(FactBased.name)
    examples, note = build_facts(description, summary, format_token(config), backend, options, config.seed)
    write_json(out / FACTS_FILE, {"note": note, "examples": [ex.model_dump() for ex in examples]})
    return {"counts": {"facts": len(examples)}}


class FactBased(Method):
    name = "fact_based"
    description = "atomic facts about the target format (LLM-extracted) as QA examples mixed with the task"
    Options = FactOptions

    def stages(self, config: RunConfig) -> list[Stage]:
        # The facts read the model (as the LLM), the format token, the sampling backend and the task.
        return [Stage(FACTS_STAGE, ("model", "fact_based", "tokens", "sample", "seed"), generate_facts)]

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        """Without the facts stage's directory (the grid planning ahead) the plan has no fact examples."""
        facts_dir = (stage_dirs or {}).get(FACTS_STAGE)
        if facts_dir is None:
            return task_only_plan(notes=["facts not generated yet: the facts stage has not run"])
        facts = read_json(facts_dir / FACTS_FILE)
        if facts is None:
            raise DeliaError(f"{facts_dir / FACTS_FILE} is missing or unreadable: rerun the facts stage")
        examples = [Example.model_validate(row) for row in facts["examples"]]
        return task_only_plan(
            extra_task_examples=examples,
            notes=[
                f"{facts['note']}; {len(examples)} QA examples (source 'fact') mixed with {len(task)} task "
                "examples"
            ],
        )
