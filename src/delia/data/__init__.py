"""Example records, readers for each input format, and crash-safe writers."""

from delia.core.example import Example, content_id
from delia.core.io import write_json
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
    "Example",
    "content_id",
    "detect_format",
    "iter_json_records",
    "read_examples",
    "read_examples_with_format",
    "write_json",
    "write_jsonl",
]
