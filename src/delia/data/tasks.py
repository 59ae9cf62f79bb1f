"""Task builders: raw records -> task or eval Examples, selected by `task.builder` / `eval.builder`.

  halueval     HaluEval general records (or Halu-CoT-JSON prompts) -> the `<sep>` hallucination-check task
  translation  en/is sentence-pair JSONL -> translation requests (optionally with a `<sep>` format token)
  demo         the project's own field-extraction task, generated from word lists (no file needed)

Each builder takes `(path, options)`; options are validated so a typo names its field.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from delia.core.errors import ConfigError, DataError
from delia.core.example import Example
from delia.data.io import iter_json_records, read_examples

Builder = Callable[[str | None, dict[str, Any], str], list[Example]]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offset: int = 0  # skip this many records (after filtering), so train and eval can take disjoint parts
    limit: int | None = None
    seed: int = 0


def parse_options(cls: type[Options], options: dict[str, Any], field: str) -> Any:
    try:
        return cls.model_validate(options)
    except ValidationError as err:
        first = err.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "(root)"
        message = "unknown option" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"{field}.{name}", message) from None


def window(items: list[Any], opts: Options) -> list[Any]:
    end = None if opts.limit is None else opts.offset + opts.limit
    return items[opts.offset : end]


def stable_pick(options: list[str], key: str, salt: int = 0) -> str:
    """The same record always gets the same phrasing, independent of its position in the file."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


def last_paragraph(text: str) -> str:
    return text.rsplit("\n\n", 1)[-1].strip()


def instructions_from_file(path: str) -> list[str]:
    """The distinct last paragraphs of a task file's user turns (its instructions), in file order."""
    seen: dict[str, None] = {}
    for example in read_examples(path):
        seen.setdefault(last_paragraph(example.instruction), None)
    if not seen:
        raise DataError(path, None, "no instructions found")
    return list(seen)


def require_path(path: str | None, builder: str, field: str) -> str:
    if not path:
        raise ConfigError(field, f"the {builder!r} builder needs a file of raw records")
    if not Path(path).exists():
        raise DataError(path, None, "file does not exist")
    return path


# --------------------------------------------------------------------------------------------- halueval

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


class HaluevalOptions(Options):
    instructions: list[str] | None = None  # explicit phrasings
    instructions_from: str | None = None  # a task file whose instructions (last paragraphs) to reuse
    instruction_set: Literal["train", "heldout", "all"] = "train"  # which built-in phrasings
    quote_style: Literal["json", "python"] = "json"  # python: the delia-reproduce dict style
    exclude_queries_from: str | None = None  # drop records whose user_query appears in this task file
    teacher: dict[str, Any] | None = None  # a synth BackendConfig: the thought comes from this LLM
    teacher_max_new_tokens: int = 120


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
        user = next((m["content"] for m in record["messages"] if m.get("role") == "user"), "")
        match = _CONTEXT.search(user.rsplit("\n\n\n", 1)[0])
        if match:
            relatives, query, response = match.groups()
            return {"relatives": relatives, "user_query": query, "chatgpt_response": response, "label": ""}
    return None


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
    from delia.core.config import BackendConfig, SamplingConfig
    from delia.generation import make_backend

    try:
        backend_cfg = BackendConfig.model_validate(options.teacher)
    except ValidationError as err:
        raise ConfigError("builder_options.teacher", err.errors()[0]["msg"]) from None
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


def build_halueval(
    path: str | None, options: dict[str, Any], field: str = "builder_options"
) -> list[Example]:
    opts: HaluevalOptions = parse_options(HaluevalOptions, options, field)
    path = require_path(path, "halueval", field)
    excluded = set()
    if opts.exclude_queries_from:
        for line_row in iter_json_records(opts.exclude_queries_from):
            row = halueval_record(line_row[1])
            if row:
                excluded.add(row["user_query"].strip())
    rows = []
    for where, record in iter_json_records(path):
        row = halueval_record(record)
        if row is None:
            raise DataError(path, where, "not a HaluEval general or Halu-CoT-JSON record")
        if row["label"] not in ("yes", "no"):
            raise DataError(path, where, f"hallucination label must be yes or no, got {row['label']!r}")
        if row["user_query"].strip() not in excluded:
            rows.append(row)
    rows = window(rows, opts)
    if opts.instructions:
        instructions = opts.instructions
    elif opts.instructions_from:
        instructions = instructions_from_file(opts.instructions_from)
    else:
        instructions = HALUEVAL_SETS[opts.instruction_set]
    thoughts = teacher_thoughts(rows, opts) if opts.teacher else [templated_thought(r) for r in rows]
    examples = []
    for row, thought in zip(rows, thoughts, strict=True):
        context = context_block(row)
        instruction = stable_pick(instructions, context, opts.seed)
        examples.append(
            Example(
                messages=[
                    {"role": "user", "content": f"{context}\n\n\n{instruction}"},
                    {
                        "role": "assistant",
                        "content": halueval_answer(thought, row["label"], opts.quote_style),
                    },
                ],
                meta={"task": "halueval", "label": row["label"], "instruction": instruction},
            )
        )
    return examples


# ------------------------------------------------------------------------------------------ translation

LANGUAGES = {"en": "English", "is": "Icelandic"}
TRANSLATION_INSTRUCTIONS = [
    "Translate the {src} text above into {tgt}.",
    "Please translate this from {src} to {tgt}.",
    "Render the sentence above in {tgt}.",
    "What is the {tgt} translation of the {src} text above?",
    "Give a {tgt} version of the text above.",
    "Translate it into {tgt}.",
]
SEP_SUFFIX = " Answer in the <sep> format."


class TranslationOptions(Options):
    direction: Literal["en-is", "is-en"] = "en-is"  # source-target languages of the examples
    records: str | None = None  # keep only records whose `direction` field equals this (original language)
    instructions: list[str] | None = None  # templates with {src} and {tgt}
    sep: bool = False  # True: every instruction ends with a request for the <sep> format (answer only)


def build_translation(
    path: str | None, options: dict[str, Any], field: str = "builder_options"
) -> list[Example]:
    opts: TranslationOptions = parse_options(TranslationOptions, options, field)
    path = require_path(path, "translation", field)
    src_code, tgt_code = opts.direction.split("-")
    templates = opts.instructions or TRANSLATION_INSTRUCTIONS
    pairs = []
    for where, record in iter_json_records(path):
        if not isinstance(record.get(src_code), str) or not isinstance(record.get(tgt_code), str):
            raise DataError(
                path, where, f"a translation record needs string fields {src_code!r} and {tgt_code!r}"
            )
        if opts.records is None or record.get("direction") == opts.records:
            pairs.append(record)
    examples = []
    for record in window(pairs, opts):
        source, target = record[src_code].strip(), record[tgt_code].strip()
        template = stable_pick(templates, source, opts.seed)
        instruction = template.format(src=LANGUAGES[src_code], tgt=LANGUAGES[tgt_code])
        if opts.sep:
            instruction += SEP_SUFFIX
        examples.append(
            Example(
                messages=[
                    {"role": "user", "content": f"{source}\n\n{instruction}"},
                    {"role": "assistant", "content": target},
                ],
                meta={
                    "task": "translation",
                    "direction": opts.direction,
                    "instruction": instruction,
                    "source_text": source,
                },
            )
        )
    return examples


# ------------------------------------------------------------------------------------------------ demo


def words(text: str) -> list[str]:
    return text.split()


# Disjoint value pools: held-out examples use names, cities and jobs never seen in training.
FIRST_NAMES = words(
    "Mara Tomas Ines Oskar Lena Felix Nora Hugo Alma Jonas Clara Emil Ada Leon Vera Anton Ida Paul Rosa Max "
    "Elsa Karl Mila Otto Lisa Finn Hanna Erik Sara Jan Lucia Marco Eva Nils Greta Ivan Olga Pablo Yara Theo "
    "Irene Bruno Dora Kai Maya Rafael Tilda Viktor Zoe Amir"
)
SURNAMES = words(
    "Lind Berg Costa Novak Weber Silva Moreau Jensen Rossi Kowal Brandt Duarte Holm Keller Petrov Ortega "
    "Lang Vogel Marin Falk Sato Okafor Nagy Ruiz Dahl Sorensen Castro Meyer Varga Quint"
)
CITIES = words(
    "Oslo Lisbon Vienna Porto Dublin Zurich Prague Lyon Bergen Krakow Seville Turin Ghent Malmo Tallinn "
    "Bilbao Geneva Leipzig Nantes Aarhus Bologna Riga Split Graz Utrecht Cork Lille Naples Bremen Salzburg "
    "Toulouse Valencia Gdansk Tampere Basel Verona Antwerp Dresden Brno Galway"
)
JOBS = words(
    "baker nurse pilot teacher plumber chemist farmer lawyer painter dentist carpenter librarian architect "
    "florist journalist mechanic tailor pharmacist firefighter surveyor butcher jeweller gardener translator "
    "potter electrician veterinarian welder"
)
SENTENCES = [
    "{name} works as {a_job} in {city}.",
    "Last year {name}, {a_job}, moved to {city}.",
    "In {city}, the {job} {name} opened a small shop.",
    "{name} has been {a_job} in {city} for ten years.",
    "My neighbour {name} is {a_job} who grew up in {city}.",
    "The {job} from {city}, {name}, won the local prize.",
    "After training as {a_job}, {name} settled in {city}.",
    "{name} commutes every day to {city}, where they work as {a_job}.",
    "Everyone in {city} knows {name}, the friendly {job}.",
    "{name}, who lives in {city}, recently became {a_job}.",
]
DEMO_KEYS = ("name", "city", "job")
DEMO_INSTRUCTIONS = {
    "train": [
        "Extract the person's details from the sentence above. Answer in the <sep> format.",
        "Pull out who is mentioned, where, and their job. Use <sep>.",
        "Give me the name, city and job from this text in the <sep> format.",
        "Read the sentence and reply with its details using the <sep> format.",
        "Fill in the record for the person above; follow <sep>.",
        "Identify the person, their city and their occupation. Respond in <sep>.",
        "From the sentence, list the details in <sep> form.",
        "Extract the fields. Format: <sep>.",
    ],
    "heldout": [
        "Who is this, where are they, and what do they do? Reply strictly as <sep>.",
        "Turn the sentence above into a <sep> record.",
        "Please capture the person's name, town and profession, formatted according to <sep>.",
        "I need the details of the person described above in the <sep> format, nothing else.",
        "Summarise the sentence's person, place and occupation using <sep>.",
        "Parse the text above and output the result as <sep>.",
    ],
}


class DemoOptions(Options):
    split: Literal["train", "heldout"] = "train"
    n: int = 64
    instructions: Literal["train", "heldout"] | None = None  # default: the split's own phrasings


def demo_pools(split: str) -> dict[str, list[str]]:
    """Every pool cut in two by a fixed rule, so train and held-out values never meet."""

    def half(values: list[str]) -> list[str]:
        cut = (len(values) * 3) // 4
        return values[:cut] if split == "train" else values[cut:]

    return {"first": half(FIRST_NAMES), "last": half(SURNAMES), "city": half(CITIES), "job": half(JOBS)}


def demo_answer(fields: dict[str, str]) -> str:
    return json.dumps({key: fields[key] for key in DEMO_KEYS}, ensure_ascii=False)


def demo_record(rng: random.Random, pools: dict[str, list[str]]) -> dict[str, str]:
    name = f"{rng.choice(pools['first'])} {rng.choice(pools['last'])}"
    return {"name": name, "city": rng.choice(pools["city"]), "job": rng.choice(pools["job"])}


def with_article(job: str) -> str:
    return f"an {job}" if job[0] in "aeiou" else f"a {job}"


def build_demo(path: str | None, options: dict[str, Any], field: str = "builder_options") -> list[Example]:
    opts: DemoOptions = parse_options(DemoOptions, options, field)
    rng = random.Random(f"demo:{opts.split}:{opts.seed}")
    pools = demo_pools(opts.split)
    instructions = DEMO_INSTRUCTIONS[opts.instructions or opts.split]
    examples: list[Example] = []
    seen: set[str] = set()
    while len(examples) < opts.offset + opts.n:
        fields = demo_record(rng, pools)
        sentence = rng.choice(SENTENCES).format(**fields, a_job=with_article(fields["job"]))
        if sentence in seen:
            continue
        seen.add(sentence)
        instruction = rng.choice(instructions)
        examples.append(
            Example(
                messages=[
                    {"role": "user", "content": f"{sentence}\n\n{instruction}"},
                    {"role": "assistant", "content": demo_answer(fields)},
                ],
                meta={"task": "demo", "fields": fields, "sentence": sentence, "instruction": instruction},
            )
        )
    return window(examples, Options(offset=opts.offset, limit=opts.n))


BUILDERS: dict[str, Callable[..., list[Example]]] = {
    "halueval": build_halueval,
    "translation": build_translation,
    "demo": build_demo,
}


def build(name: str, path: str | None, options: dict[str, Any], field: str = "task") -> list[Example]:
    """Run the named builder; `field` ("task" or "eval") locates errors in the config."""
    if name not in BUILDERS:
        raise ConfigError(
            f"{field}.builder", f"unknown builder {name!r}; choose one of {', '.join(BUILDERS)}"
        )
    examples = BUILDERS[name](path, dict(options), f"{field}.builder_options")
    if not examples:
        raise ConfigError(
            f"{field}.builder_options", f"the {name!r} builder produced no examples (check offset/limit)"
        )
    return examples
