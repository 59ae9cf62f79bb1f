"""`--adapter` takes an adapter directory or a run directory holding adapter/ in every command, through one
resolver; eval and score score with the keys the adapter's own run saved, and warn when no answer holds
the keys they score with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_runner import run_cli

from delia.core.adapters import resolve_adapter_dir, saved_eval_settings
from delia.core.config import RunConfig
from delia.core.errors import DeliaError

OWN_KEYS = ["sentiment", "aspect"]
OWN_ANSWER = '{"sentiment": "positive", "aspect": "price"}'


def saved_run(run_dir: Path, **eval_settings: Any) -> Path:
    """A run directory whose adapter/ holds a PEFT config and the run config it was trained with."""
    adapter = run_dir / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}", encoding="utf-8")
    config = RunConfig(eval=eval_settings)
    (adapter / "config.yaml").write_text(config.to_yaml(adapter), encoding="utf-8")
    return run_dir


def predictions(path: Path, answers: list[str]) -> Path:
    rows = [{"prediction": answer, "reference": OWN_ANSWER} for answer in answers]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_one_resolver_takes_a_run_or_an_adapter_directory(tmp_path: Path) -> None:
    from delia.probe import loading

    run = saved_run(tmp_path / "run")
    assert resolve_adapter_dir(run) == run / "adapter"
    assert resolve_adapter_dir(run / "adapter") == run / "adapter"
    assert loading.resolve_adapter_dir is resolve_adapter_dir  # chat and the probes use this one too
    with pytest.raises(DeliaError, match=r"^adapter .*nope does not exist$"):
        resolve_adapter_dir(tmp_path / "nope")
    with pytest.raises(DeliaError, match="holds no adapter"):
        resolve_adapter_dir(tmp_path)


def test_saved_settings_are_validated_and_located(tmp_path: Path) -> None:
    run = saved_run(tmp_path / "run", keys=OWN_KEYS, label_key=None)
    assert saved_eval_settings(run / "adapter", ("keys", "label_key")) == {
        "keys": OWN_KEYS,
        "label_key": None,
    }
    (run / "adapter" / "config.yaml").write_text("eval:\n  keys: 3\n", encoding="utf-8")
    with pytest.raises(DeliaError, match=r"config eval\.keys \(.*config\.yaml\)"):
        saved_eval_settings(run / "adapter", ("keys",))


@pytest.mark.parametrize("command", [["eval", "--data", "x.jsonl", "--out", "o"], ["chat", "hi"]])
def test_a_missing_adapter_does_not_exist(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli([*command, "--adapter", "runs/gone"], capsys, monkeypatch)
    assert code == 2
    assert err.strip() == "error: adapter runs/gone does not exist"


def test_score_takes_the_keys_the_adapters_run_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = saved_run(tmp_path / "run", keys=OWN_KEYS, label_key="sentiment")
    preds = predictions(tmp_path / "p.jsonl", [OWN_ANSWER, OWN_ANSWER])
    args = ["score", "json_format", "--predictions", str(preds), "--json", "--bootstrap", "0"]
    code, out, err = run_cli([*args, "--adapter", str(run)], capsys, monkeypatch)
    assert code == 0, err
    result = json.loads(out)
    assert result["details"]["keys"] == OWN_KEYS and result["details"]["label_key"] == "sentiment"
    assert result["values"]["json_format"]["value"] == 1.0
    assert "eval.keys=sentiment,aspect" in err and str(run / "adapter" / "config.yaml") in err
    code, out, _ = run_cli(args, capsys, monkeypatch)  # no adapter: the paper's keys
    assert code == 0 and json.loads(out)["details"]["keys"] == ["thought", "hallucination"]


@pytest.mark.parametrize(
    "given", [["--keys", "sentiment"], ["--set", "eval.keys=[sentiment]"], ["--config", "CONFIG"]]
)
def test_a_flag_set_or_config_beats_the_saved_keys(
    given: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = saved_run(tmp_path / "run", keys=OWN_KEYS, label_key=None)
    config = tmp_path / "mine.yaml"
    config.write_text("eval:\n  keys: [sentiment]\n", encoding="utf-8")
    given = [str(config) if item == "CONFIG" else item for item in given]
    preds = predictions(tmp_path / "p.jsonl", ['{"sentiment": "ok"}'])
    args = ["score", "json_format", "--predictions", str(preds), "--json", "--adapter", str(run), *given]
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 0, err
    result = json.loads(out)
    assert result["details"]["keys"] == ["sentiment"]
    assert result["details"]["label_key"] is None  # not given, so still the saved one
    assert "eval.keys=" not in err


def test_no_answer_holding_the_keys_is_one_loud_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    preds = predictions(tmp_path / "p.jsonl", [OWN_ANSWER, "no json here", OWN_ANSWER])
    args = ["score", "json_format", "--predictions", str(preds), "--bootstrap", "0"]
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 0
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "thought, hallucination" in warnings[0] and "the answers hold sentiment, aspect" in warnings[0]
    assert "--keys" in warnings[0]
    mixed = predictions(tmp_path / "q.jsonl", [OWN_ANSWER, "{'thought': 'x', 'hallucination': 'no'}"])
    code, _, err = run_cli(["score", "json_format", "--predictions", str(mixed)], capsys, monkeypatch)
    assert code == 0 and "warning:" not in err  # one answer holds them: no warning


def test_eval_takes_a_run_directory_and_its_saved_keys(
    tiny_model_dir: Path,
    tokenizer: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = tmp_path / "runs" / "mine"
    adapter = run / "adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    (adapter / "delia_adapter.json").write_text(json.dumps({"base_model": str(tiny_model_dir)}))
    saved = RunConfig(eval={"keys": OWN_KEYS, "label_key": "sentiment"})
    (adapter / "config.yaml").write_text(saved.to_yaml(adapter), encoding="utf-8")
    data = tmp_path / "eval.jsonl"
    turns = [
        {"role": "user", "content": "Review: cheap and good."},
        {"role": "assistant", "content": OWN_ANSWER},
    ]
    data.write_text(json.dumps({"messages": turns}) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["eval", "--adapter", str(run), "--data", str(data), "--out", str(out), "--max-new-tokens", "3"]
    code, _, err = run_cli([*args, "--bootstrap", "0"], capsys, monkeypatch)
    assert code == 0, err
    details = json.loads((out / "metrics.json").read_text())["details"]
    assert details["keys"] == OWN_KEYS and details["label_key"] == "sentiment"
    assert "eval.keys=sentiment,aspect" in err
