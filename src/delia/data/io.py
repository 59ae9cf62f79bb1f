"""Readers for every supported input format and crash-safe JSONL writers.

Formats (auto-detected from the first record, or forced):
  messages    {"messages": [{"role", "content"}, ...]}            JSONL (our own Example records too)
  alpaca      {"instruction", "input", "output"}                  JSON array or JSONL
  prompt      {"prompt", "completion"|"response"} or {"query", "response"}   JSONL
Any of them may be gzipped (".gz"). Errors name `file:line` (in a JSON array, the line its record starts on).
Training data (task and diverse files) is read with `require_response`: each record must end with a non-empty
assistant turn, checked as the file is read, so a bad record is refused before any model loads.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import ValidationError

from delia.core.errors import DataError
from delia.core.example import Example
from delia.core.io import atomic_write_lines

Format = Literal["auto", "messages", "alpaca", "prompt"]
FORMATS: tuple[str, ...] = ("messages", "alpaca", "prompt")


def _open_text(path: Path) -> str:
    if not path.exists():
        raise DataError(str(path), None, "file does not exist")
    if path.is_dir():
        raise DataError(str(path), None, "is a directory, expected a data file")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(str(path), None, f"not a valid gzip file ({err})") from None
    try:
        # utf-8-sig: a leading byte-order mark (common from Windows tools) is not part of the JSON.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(str(path), line, f"not UTF-8 text (byte 0x{raw[err.start]:02x})") from None


def iter_json_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line, object) from JSON Lines or a JSON array (for an array, the line a record starts on)."""
    path = Path(path)
    text = _open_text(path)
    stripped = text.lstrip()
    if not stripped:
        raise DataError(str(path), None, "file is empty: expected JSON Lines or a JSON array of records")
    if stripped.startswith("["):
        yield from _iter_json_array(text, str(path))
        return
    # Split on "\n" only: str.splitlines() also splits on U+2028/U+0085, which JSON strings may hold raw.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield lineno, parse_json_line(line, str(path), lineno)


def parse_json_line(line: str | bytes, path: str, lineno: int) -> dict[str, Any]:
    """One JSON Lines record, or a DataError naming path:lineno."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(path, lineno, f"not UTF-8 text (byte 0x{line[err.start]:02x})") from None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(path, lineno, _invalid_json(err)) from None
    if not isinstance(record, dict):
        raise DataError(path, lineno, f"expected a JSON object, got {type(record).__name__}")
    return record


def _invalid_json(err: json.JSONDecodeError) -> str:
    where = "column" if err.msg.endswith(" at") else "at column"  # "Unterminated string starting at"
    return f"invalid JSON ({err.msg} {where} {err.colno})"


_WHITESPACE = " \t\n\r"


def _iter_json_array(text: str, path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    # json.loads gives no positions; raw_decode per element lets an error name its record's own line.
    decoder = json.JSONDecoder()
    end_of_text = len(text)

    def skip(pos: int) -> int:
        while pos < end_of_text and text[pos] in _WHITESPACE:
            pos += 1
        return pos

    counted = [0, 1]  # (position, line there): counting forward only keeps a big array linear

    def line_at(pos: int) -> int:
        counted[1] += text.count("\n", counted[0], pos)
        counted[0] = pos
        return counted[1]

    pos = skip(text.index("[") + 1)
    if pos < end_of_text and text[pos] == "]":
        pos = skip(pos + 1)
    else:
        while True:
            try:
                record, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as err:
                raise DataError(path, err.lineno, _invalid_json(err)) from None
            line = line_at(pos)
            if not isinstance(record, dict):
                raise DataError(path, line, f"expected a JSON object, got {type(record).__name__}")
            yield line, record
            pos = skip(end)
            if pos < end_of_text and text[pos] == ",":
                pos = skip(pos + 1)
                continue
            if pos < end_of_text and text[pos] == "]":
                pos = skip(pos + 1)
                break
            raise DataError(path, line_at(pos), "invalid JSON (expected ',' or ']' after a record)")
    if pos != end_of_text:
        raise DataError(path, line_at(pos), "invalid JSON (extra data after the closing ']')")


def detect_format(record: dict[str, Any]) -> str:
    if "messages" in record:
        return "messages"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if ("prompt" in record or "query" in record) and ("completion" in record or "response" in record):
        return "prompt"
    raise ValueError(
        "unknown record format: expected 'messages', or 'instruction'/'input'/'output', "
        f"or 'prompt'/'completion'; got keys {sorted(record)}"
    )


def _alpaca_user_turn(record: dict[str, Any]) -> str:
    extra = str(record.get("input") or "").strip()
    return f"{record['instruction']}\n\n{extra}" if extra else str(record["instruction"])


def record_to_example(record: dict[str, Any], fmt: str, source: str) -> Example:
    """Convert one raw record of a known format to an Example (ValueError/KeyError on bad fields)."""
    if fmt == "messages":
        return Example(
            messages=record["messages"],
            source=record.get("source", source),
            meta=record.get("meta", {}),
            id=record.get("id", ""),
        )
    if fmt == "alpaca":
        messages = [{"role": "user", "content": _alpaca_user_turn(record)}]
        if str(record["output"]).strip():
            messages.append({"role": "assistant", "content": str(record["output"])})
        return Example(messages=messages, source=source)
    if fmt == "prompt":
        prompt = record.get("prompt", record.get("query"))
        completion = record.get("completion", record.get("response"))
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise ValueError("'prompt' and 'completion' must be strings")
        return Example(
            messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
            source=source,
        )
    raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")


def read_examples(
    path: str | Path, fmt: Format | str = "auto", source: str = "task", *, require_response: bool = False
) -> list[Example]:
    """Read every record of a file as Examples; raise DataError naming file:line on the first bad one
    (with `require_response`, also on one without a final non-empty assistant turn)."""
    examples, _ = read_examples_with_format(path, fmt, source, require_response=require_response)
    return examples


def read_examples_with_format(
    path: str | Path, fmt: Format | str = "auto", source: str = "task", *, require_response: bool = False
) -> tuple[list[Example], str]:
    examples: list[Example] = []
    resolved = fmt
    for example, detected in iter_examples(path, fmt, source, require_response):
        examples.append(example)
        resolved = detected
    return examples, resolved


def iter_examples(
    path: str | Path, fmt: Format | str = "auto", source: str = "task", require_response: bool = False
) -> Iterator[tuple[Example, str]]:
    """Yield (example, its format) for each record, the format detected from the first record for "auto"."""
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(str(path), None, f"unknown format {fmt!r}; choose auto or one of {FORMATS}")
    resolved = fmt
    for line, record in iter_json_records(path):
        if resolved == "auto":
            try:
                resolved = detect_format(record)
            except ValueError as err:
                raise DataError(str(path), line, str(err)) from None
        yield example_from_record(record, resolved, source, str(path), line, require_response), resolved


def example_from_record(
    record: dict[str, Any], fmt: str, source: str, path: str, line: int, require_response: bool = False
) -> Example:
    """record_to_example, with any problem raised as a DataError naming path:line; `require_response`: a
    record that does not end with a non-empty assistant turn is one (it would train on nothing)."""
    try:
        example = record_to_example(record, fmt, source)
    except (ValueError, KeyError, TypeError, ValidationError) as err:
        raise DataError(path, line, f"{_short_error(err)} (format {fmt})") from None
    missing = missing_response(example, fmt) if require_response else None
    if missing:
        raise DataError(path, line, f"{missing}: a training record must end with the answer (format {fmt})")
    return example


# What a record of each format lacks when it has no answer, in that format's own field names.
_EMPTY_ANSWER = {"alpaca": "empty 'output'", "prompt": "empty 'completion'"}


def missing_response(example: Example, fmt: str = "messages") -> str | None:
    """Why `example` has no answer to train on (no final assistant turn, or an empty one); None if it has."""
    last = example.messages[-1]
    if last["role"] == "assistant" and last["content"].strip():
        return None
    if fmt in _EMPTY_ANSWER:
        return _EMPTY_ANSWER[fmt]
    if last["role"] != "assistant":
        return f"no final assistant turn (the last message is the {last['role']}'s)"
    return "the final assistant turn is empty"


def check_training_file(path: str | Path, fmt: Format | str = "auto", source: str = "task") -> int:
    """Read `path` as training data without keeping it, so a bad record (file:line) is refused before a
    long run reaches the stage that reads it; returns the number of records."""
    return sum(1 for _ in iter_examples(path, fmt, source, require_response=True))


def _short_error(err: Exception) -> str:
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        message = first["msg"].removeprefix("Value error, ")  # pydantic prefixes a validator's own message
        where = ".".join(str(p) for p in first["loc"])
        return f"{message} at {where}" if where else message
    if isinstance(err, KeyError):
        return f"missing field {err.args[0]!r}"
    return str(err)


def write_jsonl(path: str | Path, rows: Iterable[Example | dict[str, Any]]) -> int:
    """Write rows atomically (temp file + rename): a crash leaves the old file or the new one, never half."""
    return atomic_write_lines(
        path,
        (row.to_json() if isinstance(row, Example) else json.dumps(row, ensure_ascii=False) for row in rows),
    )


class AppendLog:
    """Append-only JSONL with fsync'd lines; a torn last line from a crash is cut off on open.

    Used for resumable caches (sampling, training logs): reopening after SIGKILL loses at most the line
    being written, never an earlier one, and never leaves a partial line behind.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as handle:
                handle.truncate(keep)

    def records(self) -> list[dict[str, Any]]:
        rows = []
        # "\n" only, as in iter_json_records; a corrupt line names file:line, not a bare JSONDecodeError.
        for lineno, line in enumerate(self.path.read_text(encoding="utf-8").split("\n"), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(str(self.path), lineno, f"corrupt cache line ({err.msg})") from None
        return rows

    def append(self, row: dict[str, Any]) -> None:
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
