"""Task builders: raw records -> task or eval Examples, selected by `task.builder` / `eval.builder`.

  halueval     HaluEval general records (or Halu-CoT-JSON prompts) -> the `<sep>` hallucination-check task
  translation  en/is sentence-pair JSONL -> translation requests (optionally with a `<sep>` format token)
  demo         the project's own field-extraction task, generated from word lists (no file needed)

Each is one module here that registers `(path, options, field) -> examples` in TASK_BUILDERS; options are
validated so a typo names its field.
"""

from __future__ import annotations

from typing import Any

from delia.core.errors import ConfigError
from delia.core.example import Example
from delia.core.registry import TASK_BUILDERS


def build(name: str, path: str | None, options: dict[str, Any], field: str = "task") -> list[Example]:
    """Run the named builder; `field` ("task" or "eval") locates errors in the config."""
    if name not in TASK_BUILDERS:
        raise ConfigError(
            f"{field}.builder", f"unknown builder {name!r}; choose one of {', '.join(TASK_BUILDERS.names())}"
        )
    examples = TASK_BUILDERS.get(name)(path, dict(options), f"{field}.builder_options")
    if not examples:
        raise ConfigError(
            f"{field}.builder_options", f"the {name!r} builder produced no examples (check offset/limit)"
        )
    return examples
