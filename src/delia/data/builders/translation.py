"""translation: en/is sentence-pair JSONL -> translation requests (optionally with a `<sep>` format token)."""

from __future__ import annotations

from typing import Any, Literal

from delia.core.errors import DataError
from delia.core.example import Example
from delia.core.registry import TASK_BUILDERS
from delia.data.builders._common import Options, options_and_file, stable_pick, window
from delia.data.io import iter_json_records

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


@TASK_BUILDERS.register("translation")
def build_translation(
    path: str | None, options: dict[str, Any], field: str = "builder_options"
) -> list[Example]:
    opts, path = options_and_file(TranslationOptions, "translation", path, options, field)
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
