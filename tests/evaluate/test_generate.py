"""evaluate_model on the tiny model, and the `delia score` / `delia eval` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

from delia.core.config import EvalConfig
from delia.core.errors import DeliaError
from delia.core.example import Example
from delia.data import write_jsonl
from delia.evaluate import evaluate_model


def _examples(n: int) -> list[Example]:
    return [
        Example(
            messages=[
                {
                    "role": "user",
                    "content": f"Context {i}: is the answer made up? Reply in the <sep> format.",
                },
                {
                    "role": "assistant",
                    "content": f"{{'thought': 'case {i}', 'hallucination': '{'yes' if i % 2 else 'no'}'}}",
                },
            ]
        )
        for i in range(n)
    ]


def test_evaluate_model_writes_predictions_and_metrics(
    tiny_model: Any, tokenizer: Any, tmp_path: Path
) -> None:
    examples = _examples(5)
    cfg = EvalConfig(limit=4, max_new_tokens=6, batch_size=3, bootstrap=100)
    tiny_model.train()
    metrics = evaluate_model(tiny_model, tokenizer, examples, cfg, tmp_path, progress=False)
    assert tiny_model.training  # the caller's mode is restored

    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [ex.id for ex in examples[:4]]
    for row, ex in zip(rows, examples, strict=False):
        assert row["prompt"] == ex.prompt_messages
        assert row["reference"] == ex.response
        assert isinstance(row["prediction"], str)
        assert 0 <= row["new_tokens"] <= 6
        assert row["hit_limit"] == (row["new_tokens"] == 6)
        assert row["truncated"] == (row["hit_limit"] and row["scores"]["unclosed"])
        assert {"json_format", "strict_json", "label_correct"} <= set(row["scores"])

    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert metrics["metric"] == "json_format" and metrics["n"] == 4
    for name in ("json_format", "strict_json", "label_accuracy", "truncated"):
        fig = metrics["values"][name]
        assert fig["n"] == 4 and fig["ci_low"] <= fig["value"] <= fig["ci_high"]
    generation = metrics["generation"]
    assert generation["new_tokens"] == sum(r["new_tokens"] for r in rows)
    assert generation["tokens_per_second"] > 0 and metrics["seconds"] > 0
    assert "per_example" not in metrics


def test_evaluate_model_is_greedy_and_repeatable(tiny_model: Any, tokenizer: Any, tmp_path: Path) -> None:
    cfg = EvalConfig(max_new_tokens=5, batch_size=2, bootstrap=10, metric="exact")
    evaluate_model(tiny_model, tokenizer, _examples(3), cfg, tmp_path / "a", progress=False)
    evaluate_model(tiny_model, tokenizer, _examples(3), cfg, tmp_path / "b", progress=False)
    first = (tmp_path / "a" / "predictions.jsonl").read_text()
    assert first == (tmp_path / "b" / "predictions.jsonl").read_text()
    assert "truncated" in json.loads((tmp_path / "a" / "metrics.json").read_text())["values"]


def test_generation_options_reach_the_backend(tiny_model: Any, tokenizer: Any, tmp_path: Path) -> None:
    """A method's logits processor (CTG's hook) shapes the answers: here it forces "{" then end-of-turn."""
    from transformers import LogitsProcessor, LogitsProcessorList

    brace = tokenizer.convert_tokens_to_ids("{")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")

    class FirstStep(LogitsProcessor):
        def __init__(self) -> None:
            self.start: int | None = None

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            self.start = input_ids.shape[1] if self.start is None else self.start
            forced = scores.new_full(scores.shape, float("-inf"))
            forced[:, brace if input_ids.shape[1] == self.start else end] = 0.0
            return forced

    options = {"logits_processor_factory": lambda model, tok: LogitsProcessorList([FirstStep()])}
    cfg = EvalConfig(max_new_tokens=4, bootstrap=10)
    metrics = evaluate_model(
        tiny_model, tokenizer, _examples(2), cfg, tmp_path, progress=False, generation_options=options
    )
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in rows] == ["{", "{"]
    assert [r["new_tokens"] for r in rows] == [1, 1]
    assert metrics["values"]["unclosed"]["value"] == 1.0 and metrics["values"]["truncated"]["value"] == 0.0


def test_evaluate_model_rejects_nothing_to_do(tiny_model: Any, tokenizer: Any, tmp_path: Path) -> None:
    with pytest.raises(DeliaError, match="no evaluation examples"):
        evaluate_model(tiny_model, tokenizer, _examples(2), EvalConfig(limit=0), tmp_path, progress=False)


def _app(module: Any) -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Keeps sub-commands named."""

    module.register(app)
    return app


ISSUE_ROWS = [
    {"prediction": "{'thought': 'it is fine', 'hallucination': 'yes'}"},
    {"prediction": 'Let me check. {"thought": "x", "hallucination": "no"}'},
    {"prediction": '{"thought": "x"}'},
    {"prediction": "No hallucination here."},
]


def test_score_command_issue_check(tmp_path: Path) -> None:
    from delia.cli import score as score_cli

    path = tmp_path / "preds.jsonl"
    write_jsonl(path, ISSUE_ROWS)
    args = ["score", "json_format", "--predictions", str(path), "--keys", "thought,hallucination"]
    result = CliRunner().invoke(_app(score_cli), [*args, "--label-key", "hallucination", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["values"]["json_format"]["value"] == 0.5
    assert report["per_example"][0]["label"] == "yes"
    table = CliRunner().invoke(_app(score_cli), args)
    assert table.exit_code == 0 and "json_format" in table.output and "95% CI" in table.output


def test_score_command_with_references_and_limits(tmp_path: Path) -> None:
    from delia.cli import score as score_cli

    rows = [
        {"prediction": "{'thought': 'a', 'hallucination': 'yes'}", "reference": "yes", "hit_limit": False},
        {"prediction": "{'thought': 'a cut-off answ", "reference": "no", "hit_limit": True},
    ]
    path = tmp_path / "preds.jsonl"
    write_jsonl(path, rows)
    result = CliRunner().invoke(
        _app(score_cli), ["score", "json_format", "--predictions", str(path), "--json"]
    )
    report = json.loads(result.output)
    assert report["values"]["label_accuracy"]["value"] == 0.5
    assert report["values"]["truncated"]["value"] == 0.5


def test_score_command_names_a_bad_line(tmp_path: Path) -> None:
    from delia.cli import score as score_cli

    path = tmp_path / "bad.jsonl"
    path.write_text('{"prediction": "a"}\n{"answer": "b"}\n')
    result = CliRunner().invoke(_app(score_cli), ["score", "exact", "--predictions", str(path)])
    assert isinstance(result.exception, DeliaError)
    assert f"{path}:2" in str(result.exception)


def test_delia_score_entry_point_issue_check(tmp_path: Path) -> None:
    """The issue's check, through the real `delia` entry point."""
    path = tmp_path / "preds.jsonl"
    write_jsonl(path, ISSUE_ROWS)
    command = [sys.executable, "-c", "from delia.cli import main; main()", "score", "json_format"]
    options = ["--predictions", str(path), "--keys", "thought,hallucination", "--label-key", "hallucination"]
    done = subprocess.run([*command, *options, "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["values"]["json_format"]["value"] == 0.5
    assert report["per_example"][0]["label"] == "yes"


def test_eval_command_on_a_model_directory(tiny_model_dir: Path, tmp_path: Path) -> None:
    from delia.cli import eval as eval_cli

    data = tmp_path / "eval.jsonl"
    write_jsonl(data, _examples(3))
    out = tmp_path / "out"
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out)]
    result = CliRunner().invoke(
        _app(eval_cli), [*args, "--max-new-tokens", "4", "--bootstrap", "20", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["n"] == 3
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 3
    bad = CliRunner().invoke(_app(eval_cli), [*args, "--metric", "rouge"])
    assert isinstance(bad.exception, DeliaError) and "eval.metric" in str(bad.exception)


def test_eval_command_follows_the_free_cores(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU another job keeps busy, eval generates with the one free core (83 s vs 8 s measured)."""
    from delia.cli import eval as eval_cli
    from delia.generation import threads

    monkeypatch.setattr(threads, "busy_cores", lambda: (os.cpu_count() or 1) - 0.5)
    checked: list[int] = []
    record = lambda policy: checked.append(torch.get_num_threads())  # noqa: E731
    monkeypatch.setattr(threads, "install_thread_policy", record)
    before = torch.get_num_threads()
    data = tmp_path / "eval.jsonl"
    write_jsonl(data, _examples(2))
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "out")]
    try:
        result = CliRunner().invoke(_app(eval_cli), [*args, "--max-new-tokens", "2", "--bootstrap", "5"])
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    assert checked == [1]


def test_eval_command_with_an_adapter(tiny_model_dir: Path, tokenizer: Any, tmp_path: Path) -> None:
    """--adapter goes through delia.methods.load_trained; without --model the adapter names its base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from delia.cli import eval as eval_cli

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapter = tmp_path / "adapter"
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    (adapter / "delia_adapter.json").write_text(json.dumps({"base_model": str(tiny_model_dir)}))
    data = tmp_path / "eval.jsonl"
    write_jsonl(data, _examples(2))
    out = tmp_path / "out"
    args = [
        "eval",
        "--adapter",
        str(adapter),
        "--data",
        str(data),
        "--out",
        str(out),
        "--max-new-tokens",
        "3",
    ]
    result = CliRunner().invoke(_app(eval_cli), args)
    assert result.exit_code == 0, result.output
    assert "json_format" in result.output
    assert json.loads((out / "metrics.json").read_text())["n"] == 2


def test_auto_budget_is_twice_the_longest_reference_in_tokens(tokenizer: Any) -> None:
    from delia.evaluate.budget import AUTO_FLOOR, resolve_budget

    examples = _examples(3)
    longest = max(len(tokenizer(ex.response, add_special_tokens=False)["input_ids"]) for ex in examples)
    cfg, record = resolve_budget(EvalConfig(max_new_tokens="auto"), examples, tokenizer)
    assert cfg.max_new_tokens == record["max_new_tokens"] == max(AUTO_FLOOR, 2 * longest)
    assert record == {**record, "max_new_tokens_config": "auto", "longest_reference_tokens": longest}
    short = [Example(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "no"}])]
    assert resolve_budget(EvalConfig(max_new_tokens="auto"), short, tokenizer)[0].max_new_tokens == AUTO_FLOOR
    fixed = EvalConfig(max_new_tokens=7)
    assert resolve_budget(fixed, examples, tokenizer) == (
        fixed,
        {"max_new_tokens": 7, "max_new_tokens_config": 7},
    )
    unanswered = [Example(messages=[{"role": "user", "content": "q"}])]
    with pytest.raises(DeliaError, match=r"eval\.max_new_tokens.*reference"):
        resolve_budget(EvalConfig(max_new_tokens="auto"), unanswered, tokenizer)


def test_auto_budget_also_covers_the_answers_the_model_was_trained_to_write(tokenizer: Any) -> None:
    """Short eval references (Halu-CoT-JSON's dev thoughts) must not cut off the task's longer answers."""
    from delia.evaluate.budget import resolve_budget

    def answered(text: str) -> Example:
        return Example(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": text}])

    short, long_answer = answered("yes"), answered("a long trained answer " * 20)
    longest_task = len(tokenizer(long_answer.response, add_special_tokens=False)["input_ids"])
    cfg, record = resolve_budget(EvalConfig(max_new_tokens="auto"), [short], tokenizer, [long_answer])
    assert cfg.max_new_tokens == 2 * longest_task > 2 * record["longest_reference_tokens"]
    assert record["longest_task_answer_tokens"] == longest_task
    eval_only = resolve_budget(EvalConfig(max_new_tokens="auto"), [], tokenizer, [long_answer])[0]
    assert eval_only.max_new_tokens == 2 * longest_task  # eval references without answers: the task's count


def test_evaluate_model_resolves_auto_and_scores_each_phrasing(
    tiny_model: Any, tokenizer: Any, tmp_path: Path
) -> None:
    examples = [
        Example(messages=ex.messages, meta={"phrasing": "seen" if i % 2 else "unseen"})
        for i, ex in enumerate(_examples(4))
    ]
    cfg = EvalConfig(max_new_tokens="auto", batch_size=4, bootstrap=20, limit=3)
    metrics = evaluate_model(tiny_model, tokenizer, examples, cfg, tmp_path, progress=False)
    generation = metrics["generation"]
    # The budget comes from all four references, not only the three evaluated.
    longest = max(len(tokenizer(ex.response, add_special_tokens=False)["input_ids"]) for ex in examples)
    assert (
        generation["max_new_tokens"] == max(16, 2 * longest) and generation["max_new_tokens_config"] == "auto"
    )
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["phrasing"] for r in rows] == ["unseen", "seen", "unseen"]
    assert all(r["hit_limit"] == (r["new_tokens"] >= generation["max_new_tokens"]) for r in rows)
    by_phrasing = metrics["by_phrasing"]
    assert {g: v["n"] for g, v in by_phrasing.items()} == {"seen": 1, "unseen": 2}
    unseen = [r["scores"]["json_format"] for r in rows if r["phrasing"] == "unseen"]
    assert by_phrasing["unseen"]["values"]["json_format"]["value"] == sum(unseen) / 2
    assert {"json_format", "label_accuracy", "truncated"} <= set(by_phrasing["seen"]["values"])
    plain = evaluate_model(tiny_model, tokenizer, _examples(2), cfg, tmp_path / "plain", progress=False)
    assert "by_phrasing" not in plain  # no phrasing groups in the examples' meta: no block
