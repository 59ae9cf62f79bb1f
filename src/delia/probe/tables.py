"""CSV and Markdown tables from lists of flat dicts (the probes' tabular outputs)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from rich.table import Table

from delia.core.markdown import markdown_table


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    """Every key, in first-seen order (rows may differ in keys)."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns_of(rows), restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_table(out_dir: Path, stem: str, rows: list[dict[str, Any]]) -> None:
    """`rows` as `stem.csv` and `stem.md` in out_dir (cells to 4 significant digits in the markdown)."""
    write_csv(out_dir / f"{stem}.csv", rows)
    (out_dir / f"{stem}.md").write_text(markdown_table(rows, fmt=format_cell) + "\n", encoding="utf-8")


def rich_table(title: str, rows: list[dict[str, Any]]) -> Table:

    table = Table(title=title)
    columns = columns_of(rows)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(format_cell(row.get(c)) for c in columns))
    return table


def merge_mean_std(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For display: each `x_mean` / `x_std` pair becomes one `x` column reading "mean ± std"."""
    merged = []
    for row in rows:
        out: dict[str, Any] = {}
        for key, value in row.items():
            if key.endswith("_std") and f"{key[:-4]}_mean" in row:
                continue
            if key.endswith("_mean") and f"{key[:-5]}_std" in row:
                std = row[f"{key[:-5]}_std"]
                out[key[:-5]] = "-" if value is None else f"{format_cell(value)} ± {format_cell(std)}"
            else:
                out[key] = value
        merged.append(out)
    return merged
