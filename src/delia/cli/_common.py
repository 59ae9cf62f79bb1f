"""Small helpers shared by the command modules."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def print_mapping(title: str, mapping: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in mapping.items():
        table.add_row(str(key), str(value))
    console.print(table)


MODEL_OPTION_HELP = (
    "Model spec: smollm2-135m-instruct (embedded), a local directory, a .gguf file, or an HF id."
)
