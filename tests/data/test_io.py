"""Readers for every input format, their errors (file:line), and the crash-safe writers."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delia.core.errors import DataError
from delia.core.example import Example
from delia.core.io import write_json
from delia.data import AppendLog, read_examples, read_examples_with_format, write_jsonl
from delia.data.io import check_training_file

TURNS = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]


def write_lines(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def user_and_response(examples: list[Example]) -> list[tuple[str, str]]:
    return [(ex.instruction, ex.response) for ex in examples]


# --- each format --------------------------------------------------------------------------------


def test_messages_jsonl(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "m.jsonl", [{"messages": TURNS}, {"messages": TURNS[:1], "source": "diverse"}]
    )
    examples, fmt = read_examples_with_format(path)
    assert fmt == "messages"
    assert [ex.source for ex in examples] == ["task", "diverse"]
    assert examples[0].response == "hi" and examples[1].response == ""  # a bare query has no response


def test_our_own_records_round_trip_with_id_and_meta(tmp_path: Path) -> None:
    original = Example(messages=TURNS, source="diverse", meta={"model": "m", "n": 3})
    write_jsonl(tmp_path / "e.jsonl", [original])
    assert read_examples(tmp_path / "e.jsonl") == [original]


def test_alpaca_json_array_and_jsonl(tmp_path: Path) -> None:
    records = [
        {"instruction": "Add", "input": "2 and 3", "output": "5"},
        {"instruction": "Greet", "input": "", "output": "Hello"},
    ]
    (tmp_path / "a.json").write_text(json.dumps(records, indent=4), encoding="utf-8")
    write_lines(tmp_path / "a.jsonl", records)
    for name in ("a.json", "a.jsonl"):
        examples, fmt = read_examples_with_format(tmp_path / name)
        assert fmt == "alpaca"
        assert user_and_response(examples) == [("Add\n\n2 and 3", "5"), ("Greet", "Hello")]


@pytest.mark.parametrize(
    "record",
    [
        {"prompt": "Q", "completion": "A"},
        {"prompt": "Q", "response": "A"},
        {"query": "Q", "response": "A"},
    ],
)
def test_prompt_formats(tmp_path: Path, record: dict[str, str]) -> None:
    examples, fmt = read_examples_with_format(write_lines(tmp_path / "p.jsonl", [record]))
    assert fmt == "prompt" and user_and_response(examples) == [("Q", "A")]


def test_gzip(tmp_path: Path) -> None:
    plain = write_lines(tmp_path / "m.jsonl", [{"messages": TURNS}] * 3)
    gz = tmp_path / "m.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_examples(gz) == read_examples(plain)


def test_forced_format(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "p.jsonl", [{"prompt": "Q", "completion": "A"}])
    assert read_examples_with_format(path, "prompt")[1] == "prompt"
    with pytest.raises(DataError, match=r"p\.jsonl:1: missing field 'messages' \(format messages\)"):
        read_examples(path, "messages")
    with pytest.raises(DataError, match="unknown format 'csv'"):
        read_examples(path, "csv")


def test_byte_order_mark_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + b"\r\n".join(json.dumps({"messages": TURNS}).encode() for _ in range(2))
    )
    assert len(read_examples(path)) == 2


def test_line_separators_inside_strings_do_not_split_records(tmp_path: Path) -> None:
    content = "a\u2028b\u0085c\u2029d\x0ce"  # str.splitlines() would cut a JSON Lines record at each of these
    original = Example(messages=[{"role": "user", "content": content}])
    write_jsonl(tmp_path / "sep.jsonl", [original])
    assert read_examples(tmp_path / "sep.jsonl") == [original]


def test_a_json_file_holding_json_lines_reports_lines(tmp_path: Path) -> None:
    path = tmp_path / "lines.json"  # like halueval/general_data.json: JSON Lines under a .json name
    path.write_text(
        json.dumps({"messages": TURNS}) + "\n" + json.dumps({"messages": []}) + "\n", encoding="utf-8"
    )
    with pytest.raises(DataError, match=r"lines\.json:2: messages is empty"):
        read_examples(path)


def test_shared_data_files(shared_data: Path) -> None:
    task, fmt = read_examples_with_format(shared_data / "delia-reproduce" / "train_dataset.jsonl")
    assert (len(task), fmt) == (100, "messages")
    assert all("<sep>" in ex.instruction for ex in task)
    alpaca, fmt = read_examples_with_format(shared_data / "alpaca" / "alpaca_data.json.gz")
    assert (len(alpaca), fmt) == (52002, "alpaca")
    translation, fmt = read_examples_with_format(shared_data / "tell-is-en-news" / "dev-en-is.jsonl")
    assert fmt == "prompt" and translation[0].response


# --- bad input: one DataError naming file:line -------------------------------------------------------------


def broken_third_line(path: Path) -> Path:
    lines = [json.dumps({"messages": TURNS})] * 4
    lines[2] = lines[2][:25]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_malformed_json_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"bad\.jsonl:3: invalid JSON \(.* at column \d+\)") as err:
        read_examples(broken_third_line(tmp_path / "bad.jsonl"))
    assert err.value.line == 3 and err.value.path.endswith("bad.jsonl")


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (
            [{"text": "hello", "label": 1}],
            r"u\.jsonl:1: unknown record format: .*got keys \['label', 'text'\]",
        ),
        ([{"messages": TURNS}, {"instruction": "a", "output": "b"}], r"u\.jsonl:2: missing field 'messages'"),
        (
            [{"messages": TURNS}, {"messages": [{"role": "bot", "content": "x"}]}],
            r"u\.jsonl:2: .*needs a role",
        ),
        (
            [{"messages": TURNS}, {"messages": [{"role": "user"}]}],
            r"u\.jsonl:2: .*string content, got \{'role': 'user'\}",
        ),
        ([{"messages": TURNS}, {"messages": TURNS, "meta": "x"}], r"u\.jsonl:2: .*valid dictionary at meta"),
        (
            [{"prompt": "Q", "completion": "A"}, {"prompt": 3, "completion": "A"}],
            r"u\.jsonl:2: .*must be strings",
        ),
        ([{"messages": TURNS}, [1, 2]], r"u\.jsonl:2: expected a JSON object, got list"),
    ],
)
def test_unknown_or_wrong_fields(tmp_path: Path, records: list[Any], message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_examples(write_lines(tmp_path / "u.jsonl", records))


def test_empty_files(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    (tmp_path / "blank.jsonl").write_text("\n  \n", encoding="utf-8")
    for name in ("empty.jsonl", "blank.jsonl"):
        with pytest.raises(DataError, match=rf"{name}: file is empty"):
            read_examples(tmp_path / name)
    (tmp_path / "empty.jsonl.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(DataError, match="file is empty"):
        read_examples(tmp_path / "empty.jsonl.gz")


def test_non_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    good = json.dumps({"messages": TURNS}).encode()
    path.write_bytes(good + b"\n" + '{"prompt": "caf\u00e9", "completion": "x"}'.encode("latin-1") + b"\n")
    with pytest.raises(DataError, match=r"latin1\.jsonl:2: not UTF-8 text \(byte 0xe9\)"):
        read_examples(path)


def test_json_array_errors_name_the_record_line(tmp_path: Path) -> None:
    records = [{"instruction": "a", "output": "b"}, {"instruction": "c"}]
    path = tmp_path / "arr.json"
    path.write_text(json.dumps(records, indent=2), encoding="utf-8")  # the second record starts on line 6
    with pytest.raises(DataError, match=r"arr\.json:6: missing field 'output' \(format alpaca\)"):
        read_examples(path)
    path.write_text('[\n{"instruction": "a", "output": "b"},\n"oops"\n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"arr\.json:3: expected a JSON object, got str"):
        read_examples(path)
    path.write_text('[\n{"instruction": "a", "output": "b"},\n{"instruction": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"arr\.json:4: invalid JSON"):
        read_examples(path)
    path.write_text('[{"instruction": "a", "output": "b"}] x', encoding="utf-8")
    with pytest.raises(DataError, match=r"arr\.json:1: invalid JSON \(extra data"):
        read_examples(path)


def test_missing_file_directory_and_bad_gzip(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.jsonl: file does not exist"):
        read_examples(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="is a directory"):
        read_examples(tmp_path)
    (tmp_path / "fake.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match=r"fake\.jsonl\.gz: not a valid gzip file"):
        read_examples(tmp_path / "fake.jsonl.gz")


# --- training data: every record ends with an answer ------------------------------------------------

ANSWER = "a training record must end with the answer"
USER_ONLY = [{"role": "user", "content": "q"}]
EMPTY_TURN = "the final assistant turn is empty"
GOOD = {
    "messages": {"messages": TURNS},
    "alpaca": {"instruction": "q", "output": "a"},
    "prompt": {"prompt": "q", "completion": "a"},
}


@pytest.mark.parametrize(
    ("record", "fmt", "message"),
    [
        ({"messages": USER_ONLY}, "messages", "no final assistant turn (the last message is the user's)"),
        ({"messages": [*TURNS, {"role": "user", "content": "more?"}]}, "messages", "no final assistant turn"),
        ({"messages": [TURNS[0], {"role": "assistant", "content": ""}]}, "messages", EMPTY_TURN),
        ({"messages": [TURNS[0], {"role": "assistant", "content": " \n\t"}]}, "messages", EMPTY_TURN),
        ({"instruction": "q", "input": "", "output": ""}, "alpaca", "empty 'output'"),
        ({"prompt": "q", "completion": "  "}, "prompt", "empty 'completion'"),
    ],
)  # fmt: skip
def test_a_record_without_an_answer_is_refused_with_its_line(
    tmp_path: Path, record: dict[str, Any], fmt: str, message: str
) -> None:
    good = {"messages": TURNS} if fmt == "messages" else None
    good = good or (
        {"instruction": "q", "output": "a"} if fmt == "alpaca" else {"prompt": "q", "completion": "a"}
    )
    path = write_lines(tmp_path / "task.jsonl", [good, good, record, good])
    expected = f"{path}:3: {message}"
    with pytest.raises(DataError) as err:
        read_examples(path, require_response=True)
    assert str(err.value).startswith(expected) and f"{ANSWER} (format {fmt})" in str(err.value)
    with pytest.raises(DataError) as err:
        check_training_file(path)
    assert str(err.value).startswith(expected)
    assert len(read_examples(path)) == 4  # as queries (no answer needed) the same file reads


def test_a_json_array_names_the_line_of_the_record_without_an_answer(tmp_path: Path) -> None:
    path = tmp_path / "task.json"
    rows = [{"instruction": "q1", "output": "a1"}, {"instruction": "q2", "output": ""}]
    path.write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"task\.json:3: empty 'output': {ANSWER}"):
        read_examples(path, require_response=True)


def test_check_training_file_counts_the_records_it_accepts(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "task.jsonl", [{"messages": TURNS}] * 3)
    assert check_training_file(path) == 3


# --- writers --------------------------------------------------------------------------------


def test_write_jsonl_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"a": 1}])

    def rows_then_crash() -> Any:
        yield {"a": 2}
        yield {"a": 3}
        raise KeyboardInterrupt  # a crash in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(path, rows_then_crash())
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left behind
    assert write_jsonl(path, iter([{"b": 1}, {"b": 2}])) == 2


def test_write_json_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_json(path, {"ok": True})
    with pytest.raises(TypeError):
        write_json(path, {("a", "tuple"): "keys must be strings"})  # fails in the middle of json.dump
    assert json.loads(path.read_text(encoding="utf-8")) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_append_log_repairs_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    with AppendLog(path) as log:
        log.append({"i": 1})
        log.append({"i": 2})
    with open(path, "ab") as handle:
        handle.write(b'{"i": 3, "text": "half writ')  # SIGKILL in the middle of a line
    with AppendLog(path) as log:
        assert log.records() == [{"i": 1}, {"i": 2}]
        log.append({"i": 3})
    assert path.read_text(encoding="utf-8").endswith("\n")
    assert AppendLog(path).records() == [{"i": 1}, {"i": 2}, {"i": 3}]


def test_append_log_names_a_corrupt_line(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    path.write_text('{"i": 1}\nnot json\n{"i": 2}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"cache\.jsonl:2: corrupt cache line"):
        AppendLog(path).records()


# --- properties --------------------------------------------------------------------------------

text = st.text(max_size=40)
turn = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": text})
examples = st.lists(
    st.builds(
        Example,
        messages=st.lists(turn, min_size=1, max_size=4),
        source=st.sampled_from(["task", "diverse", "fact"]),
        meta=st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), text, st.booleans()), max_size=3),
    ),
    min_size=1,
    max_size=8,
)
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(examples, st.booleans())
def test_messages_round_trip(originals: list[Example], gzipped: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "e.jsonl"
        write_jsonl(path, originals)
        if gzipped:
            path = path.rename(path.with_suffix(".jsonl.gz"))
            path.write_bytes(gzip.compress(path.read_bytes()))
        assert read_examples(path) == originals


alpaca_records = st.lists(
    st.fixed_dictionaries(
        {"instruction": text.filter(str.strip), "input": text, "output": text.filter(str.strip)}
    ),
    min_size=1,
    max_size=8,
)


@PROPERTY_SETTINGS
@given(alpaca_records, st.booleans())
def test_alpaca_round_trip(records: list[dict[str, str]], as_array: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("a.json" if as_array else "a.jsonl")
        if as_array:
            path.write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")
        else:
            write_jsonl(path, records)
        loaded, fmt = read_examples_with_format(path)
    assert fmt == "alpaca" and len(loaded) == len(records)
    for example, record in zip(loaded, records, strict=True):
        extra = record["input"].strip()
        assert example.instruction == (
            f"{record['instruction']}\n\n{extra}" if extra else record["instruction"]
        )
        assert example.response == record["output"]


@PROPERTY_SETTINGS
@given(st.lists(st.tuples(text, text), min_size=1, max_size=8), st.sampled_from(["completion", "response"]))
def test_prompt_round_trip(pairs: list[tuple[str, str]], answer_key: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.jsonl"
        write_jsonl(path, [{"prompt": p, answer_key: c} for p, c in pairs])
        loaded = read_examples(path)
    assert user_and_response(loaded) == pairs


@PROPERTY_SETTINGS
@given(st.lists(st.dictionaries(st.text(max_size=5), text, max_size=3), min_size=1, max_size=6))
def test_append_log_keeps_every_whole_line(rows: list[dict[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.jsonl"
        with AppendLog(path) as log:
            for row in rows:
                log.append(row)
        with open(path, "ab") as handle:
            handle.write(json.dumps({"torn": "x" * 10}).encode()[:-3])
        assert AppendLog(path).records() == rows
