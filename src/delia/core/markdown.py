"""The one markdown table renderer (run summaries, experiment reports, probe tables)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def format_value(value: Any) -> str:
    """None as "-", floats to 2 decimals (whole numbers from 100 up), the rest as str."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def markdown_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    fmt: Callable[[Any], str] = format_value,
) -> str:
    """Rows of dicts as a GitHub table; the columns are `columns`, else every key in first-seen order."""
    if columns is None:
        seen: list[str] = []
        for row in rows:
            seen.extend(c for c in row if c not in seen)
        columns = seen
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
