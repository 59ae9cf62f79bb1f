"""Readers for each input format and crash-safe JSONL writers (the Example record itself is delia.core)."""

from delia.data.io import (
    FORMATS,
    AppendLog,
    detect_format,
    iter_json_records,
    read_examples,
    read_examples_with_format,
    write_jsonl,
)

__all__ = [
    "FORMATS",
    "AppendLog",
    "detect_format",
    "iter_json_records",
    "read_examples",
    "read_examples_with_format",
    "write_jsonl",
]
