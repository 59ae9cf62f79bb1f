"""Hostile and careless input (issue 19): each is one line on stderr, exit 2, naming the file:line or the
config key, refused before any model loads, with nothing written. Also the help texts and --debug."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from cli_runner import one_line_error, run_cli

from delia.cli import app, main, split_debug
from delia.core import models
from delia.core.errors import DataError

TURNS = [{"role": "user", "content": "Say hi <sep>"}, {"role": "assistant", "content": "hi"}]
NO_ANSWER = {"messages": TURNS[:1]}
EMPTY_ANSWER = {"messages": [TURNS[0], {"role": "assistant", "content": "   "}]}
ANSWER = "a training record must end with the answer"


@pytest.fixture()
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any model or tokenizer load through delia fails the test: the input must be refused before."""

    def loaded(spec: str) -> str:
        raise AssertionError(f"model {spec} loaded before the bad input was refused")

    monkeypatch.setattr(models, "resolve_model_dir", loaded)


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def run_config(tmp_path: Path, **sections: Any) -> Path:
    config = {"name": "r", "run_dir": str(tmp_path / "runs"), **sections}
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


def commands(tmp_path: Path, bad: Path) -> dict[str, list[str]]:
    good = write_rows(tmp_path / "good.jsonl", [{"messages": TURNS}] * 3)
    out = str(tmp_path / "out.jsonl")
    return {
        "data inspect": ["data", "inspect", str(bad)],
        "mix task": ["mix", "--task", str(bad), "--diverse", str(good), "--ratio", "1", "--out", out],
        "mix diverse": ["mix", "--task", str(good), "--diverse", str(bad), "--ratio", "1", "--out", out],
        "train": ["train", "--data", str(bad), "--out", str(tmp_path / "trained")],
        "train eval data": [
            "train",
            "--data",
            str(good),
            "--eval-data",
            str(bad),
            "--out",
            str(tmp_path / "t"),
        ],
        "synth diversify": ["synth", "diversify", "--task", str(bad), "--out", out, "--no-llm"],
        "run task": ["run", str(run_config(tmp_path, task={"train": str(bad)}))],
        "run diverse": [
            "run",
            str(run_config(tmp_path, task={"train": str(good)}, sample={"data": str(bad)})),
        ],
    }


@pytest.mark.parametrize("record", [NO_ANSWER, EMPTY_ANSWER], ids=["no final assistant turn", "empty answer"])
@pytest.mark.parametrize(
    "command",
    [
        "data inspect",
        "mix task",
        "mix diverse",
        "train",
        "train eval data",
        "synth diversify",
        "run task",
        "run diverse",
    ],
)
def test_a_record_without_an_answer_is_refused_at_read_time(
    tmp_path: Path,
    command: str,
    record: dict[str, Any],
    no_model: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = write_rows(tmp_path / "bad.jsonl", [{"messages": TURNS}, record, {"messages": TURNS}])
    args = commands(tmp_path, bad)[command]
    created = sorted(p.name for p in tmp_path.iterdir())  # the inputs and configs of the command
    line = one_line_error(*run_cli(args, capsys, monkeypatch)[::2])
    what = (
        "no final assistant turn (the last message is the user's)"
        if record is NO_ANSWER
        else "the final assistant turn is empty"
    )
    assert line == f"error: {bad}:2: {what}: {ANSWER} (format messages)"
    assert sorted(p.name for p in tmp_path.iterdir()) == created  # nothing written: no out, no run dir


def test_inspect_accepts_queries_when_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    queries = write_rows(tmp_path / "queries.jsonl", [NO_ANSWER, {"messages": TURNS}])
    code, out, err = run_cli(["data", "inspect", str(queries), "--queries", "--json"], capsys, monkeypatch)
    assert code == 0, err
    assert json.loads(out)["records"] == 2


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            ["--set", "train.epochs=0"],
            "config train.epochs (--set train.epochs=0): Input should be greater than 0",
        ),
        (["--set", "train.lr=-1"], "config train.lr (--set train.lr=-1): Input should be greater than 0"),
        (
            ["--set", "train.micro_batch_size=0"],
            "config train.micro_batch_size (--set train.micro_batch_size=0): "
            "Input should be greater than or equal to 1",
        ),
    ],
)
def test_values_that_cannot_train_are_refused_at_config_load(
    tmp_path: Path,
    given: list[str],
    message: str,
    no_model: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = write_rows(tmp_path / "task.jsonl", [{"messages": TURNS}] * 2)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "trained"), *given]
    assert one_line_error(*run_cli(args, capsys, monkeypatch)[::2]) == f"error: {message}"
    assert not (tmp_path / "trained").exists()


def test_a_bad_value_in_the_run_config_names_the_file_and_key(
    tmp_path: Path, no_model: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = run_config(tmp_path, train={"epochs": 0})
    line = one_line_error(*run_cli(["run", str(config)], capsys, monkeypatch)[::2])
    assert line == f"error: config train.epochs ({config}): Input should be greater than 0"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("=3", "error: config --set =3: expected section.key=value, got nothing before '=' (e.g. --set "),
        (
            "mix=3",
            "error: config mix (--set mix=3): is a section, not a value: set one of its keys (schedule, ",
        ),
        (
            "mix.ratoi=2",
            "error: config mix.ratoi (--set mix.ratoi=2): unknown key 'ratoi'; did you mean 'ratio'?",
        ),
        ("trian.lr=1", "error: config trian (--set trian.lr=1): unknown key 'trian'; did you mean 'train'?"),
    ],
)
def test_a_bad_set_flag_says_what_was_expected(
    tmp_path: Path,
    override: str,
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = run_config(tmp_path, train={"lr": 0.001})  # a valid file: the flag is to blame
    line = one_line_error(*run_cli(["run", str(config), "--set", override], capsys, monkeypatch)[::2])
    assert line.startswith(expected)
    assert not (tmp_path / "runs").exists()


def test_an_unknown_method_makes_no_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = run_config(tmp_path, method="nope")
    line = one_line_error(*run_cli(["run", str(config)], capsys, monkeypatch)[::2])
    assert line.startswith("error: config method: unknown method 'nope'; choose one of base, common_it,")
    assert not (tmp_path / "runs").exists()


# --- help texts ----------------------------------------------------------------------------------------


def leaf_commands() -> list[tuple[list[str], Any]]:
    """(path, click command) of every `delia` command that runs something."""
    from delia.cli import _register_all

    _register_all()
    found: list[tuple[list[str], Any]] = []

    def walk(command: Any, path: list[str]) -> None:
        subcommands = getattr(command, "commands", {})
        for name, sub in subcommands.items():
            walk(sub, [*path, name])
        if not subcommands:
            found.append((path, command))

    walk(typer.main.get_command(app), [])
    return found


def test_every_option_of_every_command_is_described() -> None:
    def description(help_text: str | None) -> str:
        return re.sub(r"\(config [^)]*\)", "", help_text or "").strip()  # the key note alone is none

    undescribed = [
        f"delia {' '.join(path)} {param.opts[0]}"
        for path, command in leaf_commands()
        for param in command.params
        if param.param_type_name == "option" and not description(param.help)
    ]
    assert undescribed == []


def test_help_shows_no_placeholder_after_a_flag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    for path in (["synth", "sample"], ["eval"], ["data", "inspect"], ["mix"]):
        code, out, _ = run_cli([*path, "--help"], capsys, monkeypatch)
        assert code == 0
        assert "--json" in out or "--in-context" in out
        assert "<bool>" not in out, f"delia {' '.join(path)} --help"
        assert "<int>" in out or "<str>" in out or "<path>" in out  # options that take a value keep theirs
    code, out, _ = run_cli(["mix", "--help"], capsys, monkeypatch)
    assert "<section.key=value>" in out and "<list[str]>" not in out


def test_debug_works_after_the_command_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = write_rows(tmp_path / "bad.jsonl", [NO_ANSWER])
    monkeypatch.setattr(sys, "argv", ["delia", "data", "inspect", str(bad), "--debug"])
    with pytest.raises(DataError, match=r"bad\.jsonl:1: no final assistant turn"):
        main()  # --debug: the error itself, with its traceback, instead of the one line
    code, _, err = run_cli(["data", "inspect", str(bad)], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err
    assert split_debug(["run", "--debug", "c.yaml", "--", "--debug"]) == (
        ["run", "c.yaml", "--", "--debug"],
        True,
    )
    assert split_debug(["run", "c.yaml"]) == (["run", "c.yaml"], False)


# --- data inspect: no tokenizer unless asked, long values cut -----------------------------------------


def test_inspect_loads_no_tokenizer_unless_asked_and_cuts_long_values(tmp_path: Path) -> None:
    huge = "word " * 200_000  # a 1 MB answer
    data = write_rows(
        tmp_path / "task.jsonl", [{"messages": [TURNS[0], {"role": "assistant", "content": huge}]}]
    )
    script = (
        "import sys; from delia.cli import main; main(); "
        "print('TRANSFORMERS' if 'transformers' in sys.modules else 'NO TRANSFORMERS')"
    )
    for extra in ([], ["--json"]):
        done = subprocess.run(
            [sys.executable, "-c", script, "data", "inspect", str(data), *extra],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.rstrip().endswith("NO TRANSFORMERS")
        assert len(done.stdout) < 5_000 and "more characters" in done.stdout
        if extra:
            report = json.loads(done.stdout.rsplit("\n", 2)[0])
            assert report["characters"]["max"] == len(TURNS[0]["content"]) + len(huge)
            assert report["first"]["messages"][1]["content"].endswith(f"({len(huge) - 300} more characters)")
